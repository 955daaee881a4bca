//! The mocked API server for the agent's writers, shared with the operator's tests: a
//! scenario lists the requests the code must make, in order, each with its answer (see
//! `herdwatch_test_support`).

pub use herdwatch_test_support::{mock, verify, Exchange};
