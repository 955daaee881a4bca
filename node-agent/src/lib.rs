//! herdwatch node agent: what runs on every node.
//!
//! The source is laid out by stage, in the order events go through them:
//! - [`capture`]: loads the eBPF programs and yields decoded `herdwatch_abi::Event`s;
//! - [`attribution`]: its pipeline gives each event its process (the bounded process
//!   table, seeded from /proc, exec sessions marked), its cgroup and container, and, in a
//!   cluster, its pod, workload and image digest from the node-local pod watch; then it is
//!   translated into the model's terms;
//! - [`learn`]: observations published as BehaviorObservations;
//! - [`evaluate`]: judged locally against the BehaviorProfiles and ClusterBehaviorPolicies
//!   the agent watches (drift tells executables of the image from those written later);
//! - [`respond`]: metrics, BehaviorViolation records and killed processes.
//!
//! The standalone [`observe`] mode prints attributed events; the DaemonSet ([`agent`])
//! wires every stage through the [`engine`]. Counters leave through [`metrics`] on
//! `/metrics`. [`synth`] builds events and in-memory hosts so that
//! all of this runs in tests and benchmarks without a kernel.
//!
//! Every decision about what is allowed lives in `herdwatch_model`; this crate is the IO
//! around it. Nothing here trusts the kernel's bytes to be UTF-8, processes to outlive
//! their events, or cgroups to exist: such cases are counted, never fatal.

pub mod agent;
pub mod args;
pub mod attribution;
pub mod capture;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod learn;
pub mod metrics;
pub mod observe;
pub mod respond;
pub mod synth;

pub use error::{Error, Result};
