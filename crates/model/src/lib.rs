//! herdwatch's behaviour model: every decision herdwatch makes, as pure functions without IO.
//!
//! Data enters as plain values built by the agent and the operator: [`event::Event`]s the agent
//! decoded from the kernel, [`observation::Observation`]s the agents publish, profiles and
//! policies converted from the custom resources by `herdwatch-api`, and the current time as a
//! [`time::Timestamp`] argument (nothing here reads a clock). It leaves as values the callers
//! act on: a [`matching::Verdict`] per event, a [`profile::MergeOutcome`] per merged
//! observation, a [`learning::Evaluation`] (phase, conditions, next check) per profile, a
//! [`response::Decision`] per violation, and the names of records to delete.
//!
//! - [`behavior`]: behaviour sets (processes, syscalls, egress, listen, files) with per-entry
//!   first/last seen and replica counts; merge, diff and limits.
//! - [`observation`]: the agent-side accumulator and the bounded-rate delta channel.
//! - [`profile`]: merging observations into a profile; revision history and image sections.
//! - [`learning`]: the Learning → Monitoring/Enforcing state machine.
//! - [`files`]: file path patterns: what learning records, sensitive paths, matching.
//! - [`matching`] and [`policy`]: judging events against a profile and against
//!   ClusterBehaviorPolicy rules; [`selector`] for label selectors.
//! - [`response`]: safety of responses, deduplication, rate limiting, retention.

pub mod behavior;
pub mod condition;
pub mod event;
pub mod files;
pub mod learning;
pub mod matching;
pub mod net;
pub mod observation;
pub mod pattern;
pub mod policy;
pub mod profile;
pub mod response;
pub mod selector;
pub mod sketch;
pub mod text;
pub mod time;

pub use behavior::{
    Access, BehaviorDiff, BehaviorSet, Category, Changes, Entry, Limits, Rules, Seen,
};
pub use event::{Event, EventKind, Process};
pub use learning::{evaluate, Evaluation, LearningSpec, LearningState, Mode, Phase};
pub use matching::{ProfileIndex, RuleRef, Verdict, Violation};
pub use observation::{Observation, WorkloadKey};
pub use profile::Profile;
pub use time::Timestamp;

/// Errors from parsing user-written values into model types.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A duration string that is not `<n>h`, `<n>m`, `<n>s` groups.
    #[error(
        "invalid duration {0:?}: use whole hours, minutes and seconds such as 30m, 24h or 1h30m"
    )]
    InvalidDuration(String),
    /// A network that is not an IP address or CIDR.
    #[error("invalid network {0:?}: use an IP address or a CIDR such as 10.0.0.0/8")]
    InvalidCidr(String),
    /// A malformed label selector.
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// A replica sketch that is not groups of four hex digits.
    #[error("invalid replica sketch {0:?}: expected groups of four hex digits")]
    InvalidSketch(String),
    /// Some other field has a value the model cannot use.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field path.
        field: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// Result with the model's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
