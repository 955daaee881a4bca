//! herdwatch node agent: what runs on every node.
//!
//! Data enters from the kernel: [`capture`] loads the eBPF programs and yields decoded
//! `herdwatch_abi::Event`s. The [`pipeline`] attributes each one: its process from the
//! bounded [`proctable`] (seeded from /proc by [`procfs`], exec sessions marked), its
//! cgroup and container from [`cgroup`], and, in a cluster, its pod, workload and image
//! digest from the node-local pod watch in [`pods`]. Attributed events leave as lines of
//! the standalone [`observe`] mode, or (in the DaemonSet, [`agent`]) go through the
//! [`engine`]: [`translate`]d into the model's terms, they feed [`learn`]ing (observations
//! published as BehaviorObservations) and are judged locally by [`evaluate`] against the
//! BehaviorProfiles and ClusterBehaviorPolicies that the agent watches; violations leave
//! through [`respond`] as metrics, BehaviorViolation records and killed processes.
//! [`drift`] tells executables of the image from those written later. Counters leave
//! through [`metrics`] on `/metrics`. [`synth`] builds events and in-memory hosts so that
//! all of this runs in tests and benchmarks without a kernel.
//!
//! Every decision about what is allowed lives in `herdwatch_model`; this crate is the IO
//! around it. Nothing here trusts the kernel's bytes to be UTF-8, processes to outlive
//! their events, or cgroups to exist: such cases are counted, never fatal.

pub mod agent;
pub mod args;
pub mod argv;
pub mod bounded_read;
pub mod capture;
pub mod cgroup;
pub mod drift;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod idhash;
pub mod learn;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod pods;
pub mod procfs;
pub mod proctable;
pub mod respond;
pub mod synth;
pub mod syscalls;
pub mod translate;

pub use error::{Error, Result};
