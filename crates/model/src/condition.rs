//! Conditions the model decides on, with their type and reason strings. The API crate turns
//! them into `metav1.Condition`s (adding times and the observed generation).

use serde::{Deserialize, Serialize};

/// Condition type: the profile is learning.
pub const LEARNING: &str = "Learning";
/// Condition type: learning is complete (every requirement met).
pub const COMPLETE: &str = "Complete";
/// Condition type: learning is incomplete; the reason says which requirement is missing.
pub const INCOMPLETE: &str = "Incomplete";
/// Condition type: every category is within its entry limit and the object within its size
/// budget.
pub const BOUNDED: &str = "Bounded";
/// Condition type: the profile's target workload exists.
pub const TARGET_FOUND: &str = "TargetFound";

/// Reason: learning, requirements not yet met.
pub const REASON_LEARNING: &str = "Learning";
/// Reason: the mode is Learn, so the profile stays learning.
pub const REASON_MODE_LEARN: &str = "ModeLearn";
/// Reason: learning completed and the profile was promoted automatically.
pub const REASON_PROMOTED: &str = "Promoted";
/// Reason: the user set the mode with autoPromote off.
pub const REASON_SET_BY_USER: &str = "SetByUser";
/// Reason: every requirement is met.
pub const REASON_LEARNING_COMPLETE: &str = "LearningComplete";
/// Reason: some requirement is not met (used on `Complete`).
pub const REASON_INCOMPLETE: &str = "Incomplete";
/// Reason: agents lost events while learning.
pub const REASON_EVENTS_LOST: &str = "EventsLost";
/// Reason: containers started before the agent attached to them.
pub const REASON_AGENT_ATTACHED_LATE: &str = "AgentAttachedLate";
/// A program not known as a container runtime started processes in the containers.
pub const REASON_UNRECOGNISED_RUNTIME: &str = "UnrecognisedRuntime";
/// Reason: entries were dropped at a category limit.
pub const REASON_ENTRIES_DROPPED: &str = "EntriesDropped";
/// Reason: fewer replicas than `minReplicas` were observed.
pub const REASON_TOO_FEW_REPLICAS: &str = "TooFewReplicas";
/// Reason: `minDuration` has not elapsed.
pub const REASON_MIN_DURATION: &str = "MinDurationNotElapsed";
/// Reason: new behaviour was seen within `stableFor`.
pub const REASON_NOT_STABLE: &str = "NotStable";
/// Reason: a category holds as many entries as allowed.
pub const REASON_TOO_MANY_ENTRIES: &str = "TooManyEntries";
/// Reason: the object is near its size budget.
pub const REASON_TOO_LARGE: &str = "TooLarge";
/// Reason: all limits respected.
pub const REASON_WITHIN_LIMITS: &str = "WithinLimits";
/// Reason: the target workload exists.
pub const REASON_FOUND: &str = "Found";
/// Reason: the target workload does not exist.
pub const REASON_TARGET_NOT_FOUND: &str = "TargetNotFound";

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known.
    Unknown,
}

impl Status {
    /// `"True"`, `"False"` or `"Unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// True when `b`, False otherwise.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Status::True
        } else {
            Status::False
        }
    }
}

/// A condition without times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// Type (one of the consts above).
    pub type_: &'static str,
    /// Status.
    pub status: Status,
    /// CamelCase reason (one of the consts above).
    pub reason: &'static str,
    /// Human-readable message saying what to do.
    pub message: String,
}

impl Condition {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}
