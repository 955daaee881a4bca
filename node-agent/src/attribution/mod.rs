//! Attribution: which process, container, pod, workload and image an event belongs to,
//! and the event in the model's terms.
//!
//! The [`pipeline`] takes decoded kernel events; the bounded [`proctable`] (seeded from
//! /proc through [`procfs`], whose reads are [`bounded_read`]) gives the process and its
//! exec session, [`cgroup`] the container, [`pods`] the pod and its owner; [`argv`] renders
//! what the kernel read, and [`translate`] hands the result to learning and evaluation.

pub mod argv;
pub mod bounded_read;
pub mod cgroup;
pub mod idhash;
pub mod pipeline;
pub mod pods;
pub mod procfs;
pub mod proctable;
pub mod translate;
