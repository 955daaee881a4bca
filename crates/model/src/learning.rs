//! The learning state machine.
//!
//! A profile is in one of three phases: `Learning`, `Monitoring` (violations are recorded and
//! tagged, nothing is evicted) or `Enforcing`. The user sets the target with `spec.mode`:
//!
//! - `Learn`: stay in Learning. Conditions still say whether learning is complete, so the user
//!   knows when switching is safe.
//! - `Monitor` / `Enforce` with `autoPromote: true`: stay in Learning until learning is
//!   complete, then move to Monitoring / Enforcing. Once promoted, a switch between Monitor
//!   and Enforce applies at once.
//! - `Monitor` / `Enforce` with `autoPromote: false`: the user vouches for the profile (a
//!   hand-written one, or a learned one they reviewed), so the phase follows the mode at once;
//!   the conditions still report anything incomplete.
//!
//! Learning is complete only when all of these hold: `minDuration` has passed since learning
//! started; nothing new was learned for `stableFor`; at least `minReplicas` distinct replicas
//! were observed; no agent lost events; every observed container was started after the agent
//! attached to it; and no entry was dropped at a limit. The last three never heal by waiting:
//! the profile stays Incomplete until learning is restarted (or the user promotes it by hand).
//!
//! [`evaluate`] is a pure function of (mode, spec, state, now); it returns the phase, the
//! conditions and when to look again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::condition::{self as cond, Condition, Status};
use crate::sketch::WorkloadReplicas;
use crate::time::{format_duration, Timestamp};

/// What the user wants the profile to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Learn only; never respond.
    #[default]
    Learn,
    /// Record and tag violations; evictions are dry runs.
    Monitor,
    /// Respond as `response` says.
    Enforce,
}

/// Where the profile is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Learning: events are recorded into the profile, not judged.
    #[default]
    Learning,
    /// Events outside the profile are violations; no evictions.
    Monitoring,
    /// Events outside the profile are violations, answered by `response`.
    Enforcing,
}

impl Phase {
    /// `"Learning"`, `"Monitoring"` or `"Enforcing"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Learning => "Learning",
            Phase::Monitoring => "Monitoring",
            Phase::Enforcing => "Enforcing",
        }
    }

    /// Whether events are judged against the profile in this phase.
    pub fn evaluates(self) -> bool {
        self != Phase::Learning
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When learning is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearningSpec {
    /// Learn at least this long.
    pub min_duration: Duration,
    /// Nothing new for this long.
    pub stable_for: Duration,
    /// Observe at least this many distinct replicas.
    pub min_replicas: u32,
    /// Promote by itself when complete.
    pub auto_promote: bool,
}

impl Default for LearningSpec {
    fn default() -> Self {
        Self {
            min_duration: Duration::from_secs(24 * 3600),
            stable_for: Duration::from_secs(4 * 3600),
            min_replicas: 2,
            auto_promote: true,
        }
    }
}

/// Most nodes named in an events-lost message; more are counted, not named.
pub const MAX_LOSSY_NODES: usize = 8;

/// What learning has established so far. Kept in the profile's status, so an operator restart
/// loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearningState {
    /// Current phase.
    pub phase: Phase,
    /// When learning (re)started.
    pub started: Timestamp,
    /// When something new was last learned.
    pub last_change: Option<Timestamp>,
    /// Distinct replicas observed.
    pub replicas: WorkloadReplicas,
    /// Replicas whose containers started before the agent attached to them.
    pub late_attach: WorkloadReplicas,
    /// Largest count of lost events any agent reported while learning.
    pub events_lost: u64,
    /// Some of the nodes whose agents lost events (at most [`MAX_LOSSY_NODES`]).
    pub lossy_nodes: Vec<String>,
    /// Entries dropped at category limits while learning.
    pub entries_dropped: u64,
    /// When the profile left Learning.
    pub promoted_at: Option<Timestamp>,
    /// Programs not known as container runtimes that started processes in the workload's
    /// containers while it learned (see [`crate::observation::Observation::unrecognised_runtimes`]).
    #[serde(default)]
    pub unrecognised_runtimes: Vec<String>,
}

impl LearningState {
    /// Learning that starts at `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            started: now,
            ..Self::default()
        }
    }

    /// Starts learning over at `now`: forgets losses, late attachment, replicas and
    /// promotion, and goes back to Learning. The learned entries themselves are kept.
    pub fn restart(&mut self, now: Timestamp) {
        *self = Self::new(now);
    }

    /// Records that an agent on `node` reported `events_lost` lost events in total.
    pub fn note_loss(&mut self, node: &str, events_lost: u64) {
        if events_lost == 0 {
            return;
        }
        self.events_lost = self.events_lost.max(events_lost);
        if !self.lossy_nodes.iter().any(|n| n == node) && self.lossy_nodes.len() < MAX_LOSSY_NODES {
            self.lossy_nodes.push(node.to_owned());
            self.lossy_nodes.sort();
        }
    }
}

/// A requirement of complete learning that is not met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncompleteReason {
    /// Agents lost events, so the profile may miss behaviour.
    EventsLost {
        /// Lost events (largest single report).
        events: u64,
        /// Some of the nodes.
        nodes: Vec<String>,
    },
    /// A program herdwatch does not know as a container runtime started processes in the
    /// containers: what it did after its first exec there may have been learned as the
    /// workload's.
    UnrecognisedRuntime {
        /// Its names (a few).
        names: Vec<String>,
    },
    /// Containers started before the agent attached, so their start-up was not seen.
    AgentAttachedLate {
        /// Replicas affected.
        replicas: u32,
    },
    /// Entries were dropped at a limit, so the profile is missing behaviour.
    EntriesDropped {
        /// Entries dropped.
        count: u64,
    },
    /// Too few replicas observed.
    TooFewReplicas {
        /// Observed.
        seen: u32,
        /// Required.
        need: u32,
    },
    /// `minDuration` not yet over.
    MinDurationNotElapsed {
        /// Time left.
        remaining: Duration,
    },
    /// Something new was learned within `stableFor`.
    NotStable {
        /// Time left.
        remaining: Duration,
    },
}

impl IncompleteReason {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            IncompleteReason::EventsLost { .. } => cond::REASON_EVENTS_LOST,
            IncompleteReason::AgentAttachedLate { .. } => cond::REASON_AGENT_ATTACHED_LATE,
            IncompleteReason::UnrecognisedRuntime { .. } => cond::REASON_UNRECOGNISED_RUNTIME,
            IncompleteReason::EntriesDropped { .. } => cond::REASON_ENTRIES_DROPPED,
            IncompleteReason::TooFewReplicas { .. } => cond::REASON_TOO_FEW_REPLICAS,
            IncompleteReason::MinDurationNotElapsed { .. } => cond::REASON_MIN_DURATION,
            IncompleteReason::NotStable { .. } => cond::REASON_NOT_STABLE,
        }
    }

    /// Whether waiting alone can resolve it.
    pub fn heals_with_time(&self) -> bool {
        matches!(
            self,
            IncompleteReason::MinDurationNotElapsed { .. } | IncompleteReason::NotStable { .. }
        )
    }
}

impl fmt::Display for IncompleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncompleteReason::EventsLost { events, nodes } => write!(
                f,
                "agents lost {events} events while learning (nodes: {}); the profile may miss behaviour, so it is not promoted: restart learning or promote by hand with autoPromote false",
                if nodes.is_empty() { "unknown".to_owned() } else { nodes.join(", ") }
            ),
            IncompleteReason::UnrecognisedRuntime { names } => write!(
                f,
                "processes were started in the containers by {}, which herdwatch does not know as a container runtime (runc, crun, runsc, youki, a containerd shim, conmon), so its own set-up may have been learned as the workload's: check the profile's entries and promote by hand (autoPromote false), or run a known runtime",
                names.join(", ")
            ),
            IncompleteReason::AgentAttachedLate { replicas } => write!(
                f,
                "{replicas} replicas started before the herdwatch agent attached, so their start-up was not observed; restart those pods and learning"
            ),
            IncompleteReason::EntriesDropped { count } => write!(
                f,
                "{count} entries were dropped at the per-category limits; raise spec.limits or narrow the workload"
            ),
            IncompleteReason::TooFewReplicas { seen, need } => write!(
                f,
                "observed {seen} of learning.minReplicas {need} replicas; scale the workload up or lower learning.minReplicas"
            ),
            IncompleteReason::MinDurationNotElapsed { remaining } => {
                write!(f, "learning.minDuration not over: {} left", format_duration(*remaining))
            }
            IncompleteReason::NotStable { remaining } => {
                write!(f, "new behaviour was learned recently; stable for learning.stableFor in {} at the earliest", format_duration(*remaining))
            }
        }
    }
}

/// What [`evaluate`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The phase the profile is in now.
    pub phase: Phase,
    /// When it left Learning (kept from the state, set now, or cleared).
    pub promoted_at: Option<Timestamp>,
    /// Requirements not met, most serious first; empty when complete.
    pub incomplete: Vec<IncompleteReason>,
    /// `Learning`, `Complete` and `Incomplete` conditions.
    pub conditions: Vec<Condition>,
    /// When time alone could change the outcome; `None` when only new data can.
    pub next_check: Option<Timestamp>,
}

impl Evaluation {
    /// Whether learning is complete.
    pub fn complete(&self) -> bool {
        self.incomplete.is_empty()
    }
}

fn remaining(until: Timestamp, now: Timestamp) -> Duration {
    until.since(now)
}

/// Computes the phase and conditions of a profile.
pub fn evaluate(
    mode: Mode,
    spec: &LearningSpec,
    state: &LearningState,
    now: Timestamp,
) -> Evaluation {
    let mut incomplete = Vec::new();
    if state.events_lost > 0 {
        incomplete.push(IncompleteReason::EventsLost {
            events: state.events_lost,
            nodes: state.lossy_nodes.clone(),
        });
    }
    if !state.unrecognised_runtimes.is_empty() {
        incomplete.push(IncompleteReason::UnrecognisedRuntime {
            names: state.unrecognised_runtimes.clone(),
        });
    }
    if !state.late_attach.is_empty() {
        incomplete.push(IncompleteReason::AgentAttachedLate {
            replicas: state.late_attach.count(),
        });
    }
    if state.entries_dropped > 0 {
        incomplete.push(IncompleteReason::EntriesDropped {
            count: state.entries_dropped,
        });
    }
    let seen = state.replicas.count();
    let need = spec.min_replicas.max(1);
    if seen < need {
        incomplete.push(IncompleteReason::TooFewReplicas { seen, need });
    }
    let min_until = state.started + spec.min_duration;
    if now < min_until {
        incomplete.push(IncompleteReason::MinDurationNotElapsed {
            remaining: remaining(min_until, now),
        });
    }
    let stable_until = state.last_change.unwrap_or(state.started) + spec.stable_for;
    if now < stable_until {
        incomplete.push(IncompleteReason::NotStable {
            remaining: remaining(stable_until, now),
        });
    }
    let complete = incomplete.is_empty();
    let next_check = incomplete
        .iter()
        .any(IncompleteReason::heals_with_time)
        .then(|| min_until.max(stable_until));

    let target = match mode {
        Mode::Learn => Phase::Learning,
        Mode::Monitor => Phase::Monitoring,
        Mode::Enforce => Phase::Enforcing,
    };
    let (phase, learning_reason) = match mode {
        Mode::Learn => (Phase::Learning, cond::REASON_MODE_LEARN),
        _ if !spec.auto_promote => (target, cond::REASON_SET_BY_USER),
        _ if state.phase != Phase::Learning || complete => (target, cond::REASON_PROMOTED),
        _ => (Phase::Learning, cond::REASON_LEARNING),
    };
    let promoted_at = match phase {
        Phase::Learning => None,
        _ => Some(state.promoted_at.unwrap_or(now)),
    };

    let details = incomplete
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut conditions = Vec::with_capacity(3);
    let learning_message = match (phase, learning_reason) {
        (Phase::Learning, cond::REASON_MODE_LEARN) => {
            "mode is Learn: set mode to Monitor or Enforce to use the profile".to_owned()
        }
        (Phase::Learning, _) => format!("learning until complete, then {}", target.as_str()),
        (p, cond::REASON_SET_BY_USER) => format!("{p} as set by the user (autoPromote is off)"),
        (p, _) => format!("learning complete; promoted to {p}"),
    };
    conditions.push(Condition::new(
        cond::LEARNING,
        Status::from_bool(phase == Phase::Learning),
        learning_reason,
        learning_message,
    ));
    if complete {
        let msg = format!("{seen} replicas observed, stable, nothing lost");
        conditions.push(Condition::new(
            cond::COMPLETE,
            Status::True,
            cond::REASON_LEARNING_COMPLETE,
            msg.clone(),
        ));
        conditions.push(Condition::new(
            cond::INCOMPLETE,
            Status::False,
            cond::REASON_LEARNING_COMPLETE,
            msg,
        ));
    } else {
        conditions.push(Condition::new(
            cond::COMPLETE,
            Status::False,
            cond::REASON_INCOMPLETE,
            details.clone(),
        ));
        conditions.push(Condition::new(
            cond::INCOMPLETE,
            Status::True,
            incomplete[0].reason(),
            details,
        ));
    }

    Evaluation {
        phase,
        promoted_at,
        incomplete,
        conditions,
        next_check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::ReplicaId;

    const H: u64 = 3600;

    fn spec() -> LearningSpec {
        LearningSpec {
            min_duration: Duration::from_secs(24 * H),
            stable_for: Duration::from_secs(4 * H),
            min_replicas: 2,
            auto_promote: true,
        }
    }

    fn healthy(start: i64) -> LearningState {
        LearningState {
            started: Timestamp(start),
            last_change: Some(Timestamp(start + 3600)),
            replicas: WorkloadReplicas::from_ids([ReplicaId(1), ReplicaId(2), ReplicaId(3)]),
            ..LearningState::default()
        }
    }

    fn reasons(e: &Evaluation) -> Vec<&'static str> {
        e.incomplete.iter().map(IncompleteReason::reason).collect()
    }

    fn condition<'a>(e: &'a Evaluation, t: &str) -> &'a Condition {
        e.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn well_behaved_workload_is_promoted_by_itself() {
        let state = healthy(0);
        let early = evaluate(Mode::Enforce, &spec(), &state, Timestamp(2 * H as i64));
        assert_eq!(early.phase, Phase::Learning);
        assert_eq!(
            reasons(&early),
            vec![cond::REASON_MIN_DURATION, cond::REASON_NOT_STABLE]
        );
        assert_eq!(early.next_check, Some(Timestamp(24 * H as i64)));
        assert_eq!(condition(&early, cond::INCOMPLETE).status, Status::True);

        let now = Timestamp(24 * H as i64);
        let done = evaluate(Mode::Enforce, &spec(), &state, now);
        assert_eq!(done.phase, Phase::Enforcing);
        assert_eq!(done.promoted_at, Some(now));
        assert!(done.complete());
        assert_eq!(done.next_check, None);
        assert_eq!(condition(&done, cond::COMPLETE).status, Status::True);
        assert_eq!(
            condition(&done, cond::LEARNING).reason,
            cond::REASON_PROMOTED
        );

        let monitor = evaluate(Mode::Monitor, &spec(), &state, now);
        assert_eq!(monitor.phase, Phase::Monitoring);
    }

    #[test]
    fn recent_change_delays_promotion_until_stable() {
        let mut state = healthy(0);
        state.last_change = Some(Timestamp(23 * H as i64));
        let e = evaluate(Mode::Enforce, &spec(), &state, Timestamp(25 * H as i64));
        assert_eq!(e.phase, Phase::Learning);
        assert_eq!(reasons(&e), vec![cond::REASON_NOT_STABLE]);
        assert_eq!(e.next_check, Some(Timestamp(27 * H as i64)));
        assert!(e.incomplete[0].to_string().contains("2h"));
        assert_eq!(
            evaluate(Mode::Enforce, &spec(), &state, Timestamp(27 * H as i64)).phase,
            Phase::Enforcing
        );
    }

    #[test]
    fn lost_events_block_promotion_forever() {
        let mut state = healthy(0);
        state.note_loss("node-b", 17);
        state.note_loss("node-a", 3);
        assert_eq!(state.events_lost, 17);
        for hours in [24, 100, 10_000] {
            let e = evaluate(Mode::Enforce, &spec(), &state, Timestamp(hours * H as i64));
            assert_eq!(e.phase, Phase::Learning, "after {hours}h");
            assert_eq!(reasons(&e), vec![cond::REASON_EVENTS_LOST]);
            assert_eq!(e.next_check, None, "waiting does not help");
            let inc = condition(&e, cond::INCOMPLETE);
            assert_eq!(
                (inc.status, inc.reason),
                (Status::True, cond::REASON_EVENTS_LOST)
            );
            assert!(inc.message.contains("node-a, node-b"), "{}", inc.message);
        }
        state.restart(Timestamp(0));
        assert_eq!(state.events_lost, 0);
    }

    #[test]
    fn an_unrecognised_runtime_blocks_promotion_and_is_named() {
        let now = Timestamp(48 * H as i64);
        let mut state = healthy(0);
        state.unrecognised_runtimes = vec!["myruntime".into()];
        let e = evaluate(Mode::Enforce, &spec(), &state, now);
        assert_eq!(e.phase, Phase::Learning);
        assert_eq!(reasons(&e), vec![cond::REASON_UNRECOGNISED_RUNTIME]);
        assert_eq!(e.next_check, None, "waiting does not help");
        let inc = condition(&e, cond::INCOMPLETE);
        assert!(inc.message.contains("myruntime"), "{}", inc.message);
        assert!(inc.message.contains("promote by hand"), "{}", inc.message);
    }

    #[test]
    fn late_attach_too_few_replicas_and_drops_block() {
        let now = Timestamp(48 * H as i64);
        let mut late = healthy(0);
        late.late_attach.insert(ReplicaId(9));
        assert_eq!(
            reasons(&evaluate(Mode::Enforce, &spec(), &late, now)),
            vec![cond::REASON_AGENT_ATTACHED_LATE]
        );

        let mut few = healthy(0);
        few.replicas = WorkloadReplicas::from_ids([ReplicaId(1)]);
        let e = evaluate(Mode::Enforce, &spec(), &few, now);
        assert_eq!(reasons(&e), vec![cond::REASON_TOO_FEW_REPLICAS]);
        assert!(e.incomplete[0]
            .to_string()
            .contains("observed 1 of learning.minReplicas 2"));
        let one = LearningSpec {
            min_replicas: 1,
            ..spec()
        };
        assert_eq!(
            evaluate(Mode::Enforce, &one, &few, now).phase,
            Phase::Enforcing
        );

        let mut dropped = healthy(0);
        dropped.entries_dropped = 4;
        assert_eq!(
            reasons(&evaluate(Mode::Enforce, &spec(), &dropped, now)),
            vec![cond::REASON_ENTRIES_DROPPED]
        );
    }

    #[test]
    fn learn_mode_never_promotes_but_reports_completeness() {
        let e = evaluate(Mode::Learn, &spec(), &healthy(0), Timestamp(48 * H as i64));
        assert_eq!(e.phase, Phase::Learning);
        assert!(e.complete());
        assert_eq!(
            condition(&e, cond::LEARNING).reason,
            cond::REASON_MODE_LEARN
        );
        assert_eq!(e.promoted_at, None);
    }

    #[test]
    fn manual_mode_follows_the_user_and_still_warns() {
        let manual = LearningSpec {
            auto_promote: false,
            ..spec()
        };
        let mut state = healthy(0);
        state.note_loss("n", 1);
        let e = evaluate(Mode::Enforce, &manual, &state, Timestamp(H as i64));
        assert_eq!(e.phase, Phase::Enforcing);
        assert_eq!(
            condition(&e, cond::LEARNING).reason,
            cond::REASON_SET_BY_USER
        );
        assert_eq!(condition(&e, cond::COMPLETE).status, Status::False);
    }

    #[test]
    fn promotion_is_sticky_and_mode_switches_apply() {
        let mut state = healthy(0);
        let now = Timestamp(30 * H as i64);
        let first = evaluate(Mode::Monitor, &spec(), &state, now);
        state.phase = first.phase;
        state.promoted_at = first.promoted_at;
        // New behaviour after promotion does not demote...
        state.last_change = Some(now);
        let later = Timestamp(31 * H as i64);
        let e = evaluate(Mode::Enforce, &spec(), &state, later);
        assert_eq!(
            e.phase,
            Phase::Enforcing,
            "Monitor → Enforce applies directly once promoted"
        );
        assert_eq!(e.promoted_at, Some(now), "promotion time is kept");
        // ...but mode Learn does.
        let back = evaluate(Mode::Learn, &spec(), &state, later);
        assert_eq!((back.phase, back.promoted_at), (Phase::Learning, None));
    }
}
