//! The operator's Prometheus metrics. Every label is bounded: controller names, results,
//! error kinds, phases, condition and refusal reasons, and for responses and profiles the
//! namespace and workload (owner kind/name), never pod names, which change with every
//! replacement.
//!
//! Responses are counted once per answered BehaviorViolation, by the action taken
//! (`recorded`, `tagged`, `evicted`, `refused`, `dry_run`); an eviction refused by one of
//! herdwatch's safety limits is also counted by the limit that refused it. The profile
//! gauges are reported by the leading replica only, so sums over replicas stay right.

use std::time::Duration;

use herdwatch_api::common::{Mode, Phase};
use herdwatch_api::violation::Outcome;
use herdwatch_api::BehaviorProfile;
use herdwatch_model::condition as cond;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::Result;

/// `reason` of `herdwatch_operator_kills_refused_total` for a refusal the operator does not
/// know by name (kept so that the label set stays bounded whatever the record says).
pub const OTHER_REASON: &str = "Other";

/// The safety limits that refuse an eviction: the reasons `Refusal::reason` gives. A test
/// checks that every refusal is listed.
pub const REFUSAL_REASONS: [&str; 5] = [
    "NoControllerOwner",
    "ProtectedNamespace",
    "KillLimitReached",
    "BelowMinReadyReplicas",
    "ReadyReplicasUnknown",
];

/// The `Incomplete` reasons of a profile, most serious first (the model's order).
pub const INCOMPLETE_REASONS: [&str; 6] = [
    cond::REASON_EVENTS_LOST,
    cond::REASON_AGENT_ATTACHED_LATE,
    cond::REASON_ENTRIES_DROPPED,
    cond::REASON_TOO_FEW_REPLICAS,
    cond::REASON_MIN_DURATION,
    cond::REASON_NOT_STABLE,
];

/// The operator's metrics and the registry that holds them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `herdwatch_operator_reconcile_total{controller,result}`.
    reconciles: IntCounterVec,
    /// `herdwatch_operator_reconcile_errors_total{controller,reason}`.
    errors: IntCounterVec,
    /// `herdwatch_operator_reconcile_duration_seconds{controller}`.
    duration: HistogramVec,
    /// `herdwatch_operator_profiles{phase}`.
    profiles: IntGaugeVec,
    /// `herdwatch_operator_profiles_incomplete{namespace,workload,reason}`.
    incomplete: IntGaugeVec,
    /// `herdwatch_operator_responses_total{namespace,workload,action}`.
    responses: IntCounterVec,
    /// `herdwatch_operator_kills_refused_total{namespace,workload,reason}`.
    kills_refused: IntCounterVec,
    /// `herdwatch_operator_leader` (1 while this replica leads).
    leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        // The standard process_* series (CPU seconds, resident memory, open fds), which
        // the dashboard's CPU and memory panels and users' generic alerts read.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let reconciles = IntCounterVec::new(
            Opts::new(
                "herdwatch_operator_reconcile_total",
                "Reconciles by controller and result (ok or error).",
            ),
            &["controller", "result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "herdwatch_operator_reconcile_errors_total",
                "Failed reconciles by controller and kind of failure.",
            ),
            &["controller", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "herdwatch_operator_reconcile_duration_seconds",
                "Time spent in one reconcile, by controller.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )?;
        let profiles = IntGaugeVec::new(
            Opts::new(
                "herdwatch_operator_profiles",
                "BehaviorProfiles by phase (reported by the leading replica).",
            ),
            &["phase"],
        )?;
        let incomplete = IntGaugeVec::new(
            Opts::new(
                "herdwatch_operator_profiles_incomplete",
                "BehaviorProfiles still Learning towards Monitor or Enforce whose Incomplete condition is True, by namespace, workload and the condition's reason (reported by the leading replica).",
            ),
            &["namespace", "workload", "reason"],
        )?;
        let responses = IntCounterVec::new(
            Opts::new(
                "herdwatch_operator_responses_total",
                "Violations answered by the operator, by namespace, workload and the action taken (recorded, tagged, evicted, refused, dry_run).",
            ),
            &["namespace", "workload", "action"],
        )?;
        let kills_refused = IntCounterVec::new(
            Opts::new(
                "herdwatch_operator_kills_refused_total",
                "Evictions refused by a safety limit (the pod was tagged instead), by namespace, workload and the limit that refused them.",
            ),
            &["namespace", "workload", "reason"],
        )?;
        let leader = IntGauge::new(
            "herdwatch_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(profiles.clone()))?;
        registry.register(Box::new(incomplete.clone()))?;
        registry.register(Box::new(responses.clone()))?;
        registry.register(Box::new(kills_refused.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            profiles,
            incomplete,
            responses,
            kills_refused,
            leader,
        })
    }

    /// Counts one reconcile of `controller` that took `took`.
    pub fn reconciled(&self, controller: &str, ok: bool, took: Duration) {
        self.reconciles
            .with_label_values(&[controller, if ok { "ok" } else { "error" }])
            .inc();
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    /// Counts one failed reconcile of `controller`, by kind of failure.
    pub fn failed(&self, controller: &str, reason: &str) {
        self.errors.with_label_values(&[controller, reason]).inc();
    }

    /// Counts one violation of `workload` (owner kind/name) answered with `outcome`; a
    /// refusal is also counted by the safety limit named in `reason`. Outcomes that are no
    /// answer (pending, failed) are not counted here: failures count as reconcile errors.
    pub fn response(
        &self,
        namespace: &str,
        workload: &str,
        outcome: Outcome,
        reason: Option<&str>,
    ) {
        let Some(action) = action_label(outcome) else {
            return;
        };
        self.responses
            .with_label_values(&[namespace, workload, action])
            .inc();
        if outcome == Outcome::Refused {
            self.kills_refused
                .with_label_values(&[namespace, workload, refusal_label(reason)])
                .inc();
        }
    }

    /// Sets the profile gauges from every profile the leader holds.
    pub fn set_profiles<'a>(&self, profiles: impl IntoIterator<Item = &'a BehaviorProfile>) {
        self.clear_profiles();
        let mut phases = [
            (Phase::Learning, 0),
            (Phase::Monitoring, 0),
            (Phase::Enforcing, 0),
        ];
        for p in profiles {
            let phase = p.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            if let Some(count) = phases.iter_mut().find(|(ph, _)| *ph == phase) {
                count.1 += 1;
            }
            if let Some(reason) = stuck_reason(p) {
                let target = &p.spec.target_ref;
                let workload = format!("{}/{}", target.kind.as_str(), target.name);
                let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
                self.incomplete
                    .with_label_values(&[namespace, &workload, reason])
                    .inc();
            }
        }
        for (phase, n) in phases {
            self.profiles
                .with_label_values(&[phase_label(phase)])
                .set(n);
        }
    }

    /// Clears the profile gauges: a replica that does not lead reports no profiles, so sums
    /// over replicas stay right.
    pub fn clear_profiles(&self) {
        self.profiles.reset();
        self.incomplete.reset();
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

/// The `action` label of an outcome; `None` for outcomes that are not an answer.
pub fn action_label(o: Outcome) -> Option<&'static str> {
    match o {
        Outcome::Recorded => Some("recorded"),
        Outcome::Tagged => Some("tagged"),
        Outcome::Evicted => Some("evicted"),
        Outcome::Refused => Some("refused"),
        Outcome::DryRun => Some("dry_run"),
        Outcome::Rejected => Some("rejected"),
        Outcome::Pending | Outcome::Failed => None,
    }
}

fn refusal_label(reason: Option<&str>) -> &'static str {
    reason
        .and_then(|r| REFUSAL_REASONS.iter().find(|known| **known == r))
        .copied()
        .unwrap_or(OTHER_REASON)
}

/// The reason a profile waits for promotion, when it does: it is Learning, its mode asks
/// for Monitor or Enforce (in Learn nothing waits), and its Incomplete condition is True.
fn stuck_reason(p: &BehaviorProfile) -> Option<&'static str> {
    let status = p.status.as_ref()?;
    if status.phase.unwrap_or_default() != Phase::Learning || p.spec.mode == Mode::Learn {
        return None;
    }
    let incomplete = status
        .conditions
        .iter()
        .find(|c| c.type_ == cond::INCOMPLETE && c.status == "True")?;
    Some(
        INCOMPLETE_REASONS
            .iter()
            .find(|known| **known == incomplete.reason)
            .copied()
            .unwrap_or(OTHER_REASON),
    )
}

fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::Learning => "Learning",
        Phase::Monitoring => "Monitoring",
        Phase::Enforcing => "Enforcing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdwatch_api::profile::{BehaviorProfileSpec, BehaviorProfileStatus, TargetRef};
    use herdwatch_model::response::Refusal;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn exposes_every_metric_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        m.reconciled("profile", true, Duration::from_millis(20));
        m.reconciled("violation", false, Duration::from_millis(5));
        m.failed("violation", "api_conflict");
        m.response("shop", "Deployment/web", Outcome::Tagged, None);
        m.response(
            "shop",
            "Deployment/web",
            Outcome::DryRun,
            Some("WouldEvict"),
        );
        m.response(
            "shop",
            "Deployment/web",
            Outcome::Refused,
            Some("KillLimitReached"),
        );
        m.response("shop", "Deployment/web", Outcome::Refused, Some("made up"));
        m.response(
            "shop",
            "Deployment/web",
            Outcome::Failed,
            Some("ResponseFailed"),
        );
        m.set_profiles(&[
            profile("a", Phase::Learning, Mode::Monitor, None),
            profile("b", Phase::Learning, Mode::Enforce, None),
            profile("c", Phase::Monitoring, Mode::Monitor, None),
        ]);
        m.set_leader(true);
        let text = m.encode().unwrap();
        for line in [
            r#"herdwatch_operator_reconcile_total{controller="profile",result="ok"} 1"#,
            r#"herdwatch_operator_reconcile_total{controller="violation",result="error"} 1"#,
            r#"herdwatch_operator_reconcile_errors_total{controller="violation",reason="api_conflict"} 1"#,
            r#"herdwatch_operator_reconcile_duration_seconds_count{controller="profile"} 1"#,
            r#"herdwatch_operator_profiles{phase="Learning"} 2"#,
            r#"herdwatch_operator_profiles{phase="Enforcing"} 0"#,
            r#"herdwatch_operator_responses_total{action="tagged",namespace="shop",workload="Deployment/web"} 1"#,
            r#"herdwatch_operator_responses_total{action="dry_run",namespace="shop",workload="Deployment/web"} 1"#,
            r#"herdwatch_operator_responses_total{action="refused",namespace="shop",workload="Deployment/web"} 2"#,
            r#"herdwatch_operator_kills_refused_total{namespace="shop",reason="KillLimitReached",workload="Deployment/web"} 1"#,
            r#"herdwatch_operator_kills_refused_total{namespace="shop",reason="Other",workload="Deployment/web"} 1"#,
            "herdwatch_operator_leader 1",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("failed"), "a failure is no answer:\n{text}");
        assert!(
            !text.contains("dry-run"),
            "label values use underscores:\n{text}"
        );
        m.clear_profiles();
        assert!(!m.encode().unwrap().contains("herdwatch_operator_profiles{"));
    }

    #[test]
    fn every_safety_refusal_has_its_own_reason() {
        for refusal in [
            Refusal::NoControllerOwner,
            Refusal::ProtectedNamespace("kube-system".into()),
            Refusal::KillLimitReached { kills: 3, limit: 3 },
            Refusal::BelowMinReadyReplicas { ready: 1, min: 2 },
            Refusal::ReadyReplicasUnknown,
        ] {
            assert_eq!(refusal_label(Some(refusal.reason())), refusal.reason());
        }
        assert_eq!(refusal_label(None), OTHER_REASON);
    }

    #[test]
    fn profiles_waiting_on_an_incomplete_condition_are_counted_by_reason() {
        let m = Metrics::new().unwrap();
        m.set_profiles(&[
            // Two containers of one workload that lost events.
            profile(
                "web-nginx",
                Phase::Learning,
                Mode::Enforce,
                Some(cond::REASON_EVENTS_LOST),
            ),
            profile(
                "web-sidecar",
                Phase::Learning,
                Mode::Monitor,
                Some(cond::REASON_EVENTS_LOST),
            ),
            profile(
                "api",
                Phase::Learning,
                Mode::Monitor,
                Some(cond::REASON_TOO_FEW_REPLICAS),
            ),
            // Learn waits for nothing; a promoted profile is not stuck.
            profile(
                "batch",
                Phase::Learning,
                Mode::Learn,
                Some(cond::REASON_EVENTS_LOST),
            ),
            profile(
                "db",
                Phase::Enforcing,
                Mode::Enforce,
                Some(cond::REASON_EVENTS_LOST),
            ),
            profile("odd", Phase::Learning, Mode::Monitor, Some("SomethingNew")),
        ]);
        let text = m.encode().unwrap();
        for line in [
            r#"herdwatch_operator_profiles_incomplete{namespace="shop",reason="EventsLost",workload="Deployment/web"} 2"#,
            r#"herdwatch_operator_profiles_incomplete{namespace="shop",reason="TooFewReplicas",workload="Deployment/api"} 1"#,
            r#"herdwatch_operator_profiles_incomplete{namespace="shop",reason="Other",workload="Deployment/odd"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        for absent in ["Deployment/batch", "Deployment/db"] {
            assert!(!text.contains(absent), "{absent} is not waiting:\n{text}");
        }
        m.set_profiles(&[profile("web-nginx", Phase::Learning, Mode::Enforce, None)]);
        assert!(
            !m.encode()
                .unwrap()
                .contains("herdwatch_operator_profiles_incomplete{"),
            "a profile that completed leaves the gauge"
        );
    }

    /// A profile named `<workload>[-<container>]` in namespace shop; `incomplete` sets the
    /// Incomplete condition True with that reason, `None` sets it False.
    fn profile(name: &str, phase: Phase, mode: Mode, incomplete: Option<&str>) -> BehaviorProfile {
        let workload = name.split('-').next().unwrap();
        let mut p = BehaviorProfile::new(
            name,
            BehaviorProfileSpec {
                target_ref: TargetRef {
                    kind: Default::default(),
                    name: workload.into(),
                },
                container: "c".into(),
                mode,
                learning: Default::default(),
                response: Default::default(),
                limits: Default::default(),
                allowed: Default::default(),
            },
        );
        p.metadata.namespace = Some("shop".into());
        p.status = Some(BehaviorProfileStatus {
            phase: Some(phase),
            conditions: vec![Condition {
                type_: cond::INCOMPLETE.into(),
                status: if incomplete.is_some() {
                    "True"
                } else {
                    "False"
                }
                .into(),
                reason: incomplete.unwrap_or(cond::REASON_LEARNING_COMPLETE).into(),
                message: String::new(),
                last_transition_time: Time(Default::default()),
                observed_generation: None,
            }],
            ..Default::default()
        });
        p
    }
}
