//! The operator's Prometheus metrics. Every label is bounded: controller names, results,
//! error kinds, phases, and for violations the namespace, workload, rule reference and the
//! action taken (never pod names, which change with every replacement).

use std::time::Duration;

use herdwatch_api::common::Phase;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::Result;

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
    /// `herdwatch_profiles{phase}`.
    profiles: IntGaugeVec,
    /// `herdwatch_violations_total{namespace,workload,rule,action}`.
    violations: IntCounterVec,
    /// `herdwatch_operator_leader` (1 while this replica leads).
    leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
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
                "herdwatch_profiles",
                "BehaviorProfiles by phase (reported by the leading replica).",
            ),
            &["phase"],
        )?;
        let violations = IntCounterVec::new(
            Opts::new(
                "herdwatch_violations_total",
                "Violations answered by the operator, by namespace, workload, rule and the action taken (recorded, tagged, evicted, refused, dry-run).",
            ),
            &["namespace", "workload", "rule", "action"],
        )?;
        let leader = IntGauge::new(
            "herdwatch_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(profiles.clone()))?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            profiles,
            violations,
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

    /// Counts one violation answered with `action`.
    pub fn violation(&self, namespace: &str, workload: &str, rule: &str, action: &str) {
        self.violations
            .with_label_values(&[namespace, workload, rule, action])
            .inc();
    }

    /// Sets the profiles-by-phase gauge from a count per phase; `None` clears it (a replica
    /// that does not lead reports no profiles, so sums over replicas stay right).
    pub fn set_profiles(&self, counts: Option<[(Phase, i64); 3]>) {
        self.profiles.reset();
        if let Some(counts) = counts {
            for (phase, n) in counts {
                self.profiles
                    .with_label_values(&[phase_label(phase)])
                    .set(n);
            }
        }
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

    #[test]
    fn exposes_every_metric_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        m.reconciled("profile", true, Duration::from_millis(20));
        m.reconciled("violation", false, Duration::from_millis(5));
        m.failed("violation", "api_conflict");
        m.violation("shop", "Deployment/web", "profile/processes", "tagged");
        m.set_profiles(Some([
            (Phase::Learning, 2),
            (Phase::Monitoring, 1),
            (Phase::Enforcing, 0),
        ]));
        m.set_leader(true);
        let text = m.encode().unwrap();
        for line in [
            r#"herdwatch_operator_reconcile_total{controller="profile",result="ok"} 1"#,
            r#"herdwatch_operator_reconcile_total{controller="violation",result="error"} 1"#,
            r#"herdwatch_operator_reconcile_errors_total{controller="violation",reason="api_conflict"} 1"#,
            r#"herdwatch_operator_reconcile_duration_seconds_count{controller="profile"} 1"#,
            r#"herdwatch_profiles{phase="Learning"} 2"#,
            r#"herdwatch_profiles{phase="Enforcing"} 0"#,
            r#"herdwatch_violations_total{action="tagged",namespace="shop",rule="profile/processes",workload="Deployment/web"} 1"#,
            "herdwatch_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.set_profiles(None);
        assert!(!m.encode().unwrap().contains("herdwatch_profiles{"));
    }
}
