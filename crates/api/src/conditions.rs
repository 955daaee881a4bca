//! Conditions on herdwatch's resources: the type and reason strings (shared with the model,
//! which decides them) and small constructors that build `metav1.Condition`s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub use herdwatch_model::condition::{
    Status, BOUNDED, COMPLETE, INCOMPLETE, LEARNING, REASON_AGENT_ATTACHED_LATE,
    REASON_ENTRIES_DROPPED, REASON_EVENTS_LOST, REASON_FOUND, REASON_INCOMPLETE, REASON_LEARNING,
    REASON_LEARNING_COMPLETE, REASON_MIN_DURATION, REASON_MODE_LEARN, REASON_NOT_STABLE,
    REASON_PROMOTED, REASON_SET_BY_USER, REASON_TARGET_NOT_FOUND, REASON_TOO_FEW_REPLICAS,
    REASON_TOO_LARGE, REASON_TOO_MANY_ENTRIES, REASON_WITHIN_LIMITS, TARGET_FOUND,
};

/// A condition of `type_` with `status`, `reason` and `message`, observed at `generation`,
/// transitioning `now` (see [`merge`] for keeping earlier transition times).
pub fn condition(
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The API form of a condition the model decided.
pub fn from_model(
    c: &herdwatch_model::condition::Condition,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    condition(
        c.type_,
        c.status,
        c.reason,
        c.message.clone(),
        generation,
        now,
    )
}

/// `TargetFound=True`: the profile's workload exists.
pub fn target_found(kind: &str, name: &str, generation: Option<i64>, now: &Time) -> Condition {
    condition(
        TARGET_FOUND,
        Status::True,
        REASON_FOUND,
        format!("{kind} {name} exists"),
        generation,
        now,
    )
}

/// `TargetFound=False`: the profile's workload does not exist.
pub fn target_not_found(kind: &str, name: &str, generation: Option<i64>, now: &Time) -> Condition {
    condition(
        TARGET_FOUND,
        Status::False,
        REASON_TARGET_NOT_FOUND,
        format!("{kind} {name} does not exist in this namespace: fix spec.targetRef or delete this profile"),
        generation,
        now,
    )
}

/// Replaces conditions by type with `updates`, keeping the earlier `lastTransitionTime` of a
/// condition whose status did not change (as the API conventions ask), and keeping existing
/// conditions of other types. The order is stable: existing types first, new ones after.
pub fn merge(
    existing: &[Condition],
    updates: impl IntoIterator<Item = Condition>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing.to_vec();
    for mut update in updates {
        match out.iter_mut().find(|c| c.type_ == update.type_) {
            Some(current) => {
                if current.status == update.status {
                    update.last_transition_time = current.last_transition_time.clone();
                }
                *current = update;
            }
            None => out.push(update),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::to_time;
    use herdwatch_model::Timestamp;

    #[test]
    fn merge_keeps_transition_time_while_status_holds() {
        let t0 = to_time(Timestamp(1_000));
        let t1 = to_time(Timestamp(2_000));
        let old = vec![
            condition(
                COMPLETE,
                Status::False,
                REASON_INCOMPLETE,
                "a",
                Some(1),
                &t0,
            ),
            target_found("Deployment", "web", Some(1), &t0),
        ];
        let merged = merge(
            &old,
            [condition(
                COMPLETE,
                Status::False,
                REASON_INCOMPLETE,
                "b",
                Some(2),
                &t1,
            )],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].last_transition_time, t0, "same status: time kept");
        assert_eq!(merged[0].message, "b");
        assert_eq!(merged[0].observed_generation, Some(2));
        let flipped = merge(
            &merged,
            [condition(
                COMPLETE,
                Status::True,
                REASON_LEARNING_COMPLETE,
                "done",
                Some(2),
                &t1,
            )],
        );
        assert_eq!(
            flipped[0].last_transition_time, t1,
            "status changed: new time"
        );
        let added = merge(
            &flipped,
            [target_not_found("Deployment", "web", Some(2), &t1)],
        );
        assert_eq!(added[1].reason, REASON_TARGET_NOT_FOUND);
        assert!(added[1].message.contains("spec.targetRef"));
    }
}
