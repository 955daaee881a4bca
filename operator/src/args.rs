//! Command-line flags (each also read from a `HERDWATCH_…` environment variable) and the
//! settings the reconcilers use, derived from them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use herdwatch_api::common::Mode;
use herdwatch_model::response::Retention;

/// Reads a duration written as whole hours, minutes and seconds (`15s`, `10m`, `720h`).
fn duration(s: &str) -> Result<Duration, String> {
    herdwatch_model::time::parse_duration(s).map_err(|e| e.to_string())
}

/// Checks a duration for a profile's `learning` settings, keeping it as written.
fn learning_duration(s: &str) -> Result<String, String> {
    duration(s).map(|_| s.to_owned())
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The mode of profiles the operator creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Learn only.
    Learn,
    /// Learn, then record and tag violations.
    Monitor,
    /// Learn, then answer violations as `response` says.
    Enforce,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Learn => Mode::Learn,
            ModeArg::Monitor => Mode::Monitor,
            ModeArg::Enforce => Mode::Enforce,
        }
    }
}

/// herdwatch operator: learns a BehaviorProfile per workload container from what the node
/// agents observe, promotes it when learning is complete, and answers violations by tagging
/// or evicting pods within safety limits.
#[derive(Parser, Debug, Clone)]
#[command(name = "herdwatch-operator", version)]
pub struct Args {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "HERDWATCH_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `herdwatch_operator=debug,info`.
    #[arg(long, env = "HERDWATCH_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "HERDWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name of this pod (set from the downward API's metadata.name): the leader election
    /// identity and the reporting instance of Events. Defaults to the host name.
    #[arg(long, env = "HERDWATCH_POD_NAME")]
    pub pod_name: Option<String>,

    /// Namespace herdwatch runs in (set from the downward API's metadata.namespace). The
    /// leader Lease lives here, and pods here are never evicted.
    #[arg(long, env = "HERDWATCH_POD_NAMESPACE", default_value = "herdwatch")]
    pub pod_namespace: String,

    /// Elect a leader with a Lease so that only one replica acts. Turn off only when exactly
    /// one replica runs (e.g. a local development run).
    #[arg(long, env = "HERDWATCH_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the coordination.k8s.io/v1 Lease used for leader election.
    #[arg(
        long,
        env = "HERDWATCH_LEASE_NAME",
        default_value = "herdwatch-operator"
    )]
    pub lease_name: String,

    /// How long a leader's Lease stays valid without renewal; another replica takes over
    /// this long after the leader stops renewing.
    #[arg(long, env = "HERDWATCH_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,

    /// How often the leader renews its Lease (and others check it). Must be well under the
    /// lease duration.
    #[arg(long, env = "HERDWATCH_LEASE_RENEW_INTERVAL", default_value = "5s", value_parser = duration)]
    pub lease_renew_interval: Duration,

    /// More namespaces where pods are never evicted, comma-separated (kube-system and this
    /// pod's namespace always are).
    #[arg(long, env = "HERDWATCH_PROTECTED_NAMESPACES", value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,

    /// Decide and record every response, but change no pod (a dry run for the whole cluster).
    #[arg(long, env = "HERDWATCH_DRY_RUN", default_value_t = false, action = ArgAction::Set)]
    pub dry_run: bool,

    /// BehaviorViolation records kept per profile (or per policy and namespace); the least
    /// recently seen beyond this are deleted.
    #[arg(
        long,
        env = "HERDWATCH_VIOLATION_RETENTION_COUNT",
        default_value_t = 500
    )]
    pub violation_retention_count: usize,

    /// BehaviorViolation records not seen again for this long are deleted.
    #[arg(long, env = "HERDWATCH_VIOLATION_RETENTION_AGE", default_value = "720h", value_parser = duration)]
    pub violation_retention_age: Duration,

    /// BehaviorObservations not updated for this long are deleted (their content was merged
    /// into the profile long before; an agent still running the workload rewrites its
    /// observation whenever something new is seen).
    #[arg(long, env = "HERDWATCH_OBSERVATION_RETENTION", default_value = "168h", value_parser = duration)]
    pub observation_retention: Duration,

    /// How often stale BehaviorObservations and those of vanished nodes are collected.
    #[arg(long, env = "HERDWATCH_OBSERVATION_GC_INTERVAL", default_value = "10m", value_parser = duration)]
    pub observation_gc_interval: Duration,

    /// Profiles the operator created are deleted this long after their workload disappeared
    /// (with their violation records). Hand-written profiles are never deleted.
    #[arg(long, env = "HERDWATCH_ORPHAN_PROFILE_RETENTION", default_value = "168h", value_parser = duration)]
    pub orphan_profile_retention: Duration,

    /// Mode of the profiles the operator creates.
    #[arg(long, env = "HERDWATCH_DEFAULT_MODE", value_enum, ignore_case = true, default_value_t = ModeArg::Monitor)]
    pub default_mode: ModeArg,

    /// learning.minDuration of the profiles the operator creates.
    #[arg(long, env = "HERDWATCH_DEFAULT_MIN_DURATION", default_value = "24h", value_parser = learning_duration)]
    pub default_min_duration: String,

    /// learning.stableFor of the profiles the operator creates.
    #[arg(long, env = "HERDWATCH_DEFAULT_STABLE_FOR", default_value = "4h", value_parser = learning_duration)]
    pub default_stable_for: String,

    /// How late an agent's report of what it saw may arrive (a few of the agents'
    /// --publish-interval). For this long after a profile is promoted, entries first seen
    /// before the promotion are still learned.
    #[arg(long, env = "HERDWATCH_REPORT_DELAY", default_value = "30s", value_parser = duration)]
    pub report_delay: Duration,
}

impl Args {
    /// Checks relations between flags that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_renew_interval * 2 > self.lease_duration {
            return Err(format!(
                "--lease-renew-interval ({:?}) must be at most half of --lease-duration ({:?}), so that a missed renewal does not lose the lease",
                self.lease_renew_interval, self.lease_duration
            ));
        }
        if self.lease_renew_interval.is_zero() || self.observation_gc_interval.is_zero() {
            return Err(
                "--lease-renew-interval and --observation-gc-interval must be above zero".into(),
            );
        }
        Ok(())
    }

    /// The identity of this replica: the pod name, else the host name.
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| format!("herdwatch-operator-{}", std::process::id()))
    }

    /// The settings the reconcilers use.
    pub fn settings(&self) -> Settings {
        let mut protected = vec!["kube-system".to_owned(), self.pod_namespace.clone()];
        for ns in &self.protected_namespaces {
            let ns = ns.trim();
            if !ns.is_empty() && !protected.iter().any(|p| p == ns) {
                protected.push(ns.to_owned());
            }
        }
        Settings {
            protected_namespaces: protected,
            dry_run: self.dry_run,
            retention: Retention {
                max_count: self.violation_retention_count,
                max_age: self.violation_retention_age,
            },
            observation_retention: self.observation_retention,
            orphan_profile_retention: self.orphan_profile_retention,
            report_delay: self.report_delay,
            defaults: ProfileDefaults {
                mode: self.default_mode.into(),
                min_duration: self.default_min_duration.clone(),
                stable_for: self.default_stable_for.clone(),
            },
        }
    }
}

/// Settings of the profiles the operator creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileDefaults {
    /// `spec.mode`.
    pub mode: Mode,
    /// `spec.learning.minDuration`.
    pub min_duration: String,
    /// `spec.learning.stableFor`.
    pub stable_for: String,
}

/// What the reconcilers need from the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Namespaces where pods are never evicted.
    pub protected_namespaces: Vec<String>,
    /// Change no pod: every response is a dry run.
    pub dry_run: bool,
    /// Violation record retention, per profile (or policy and namespace).
    pub retention: Retention,
    /// Observations not updated for this long are deleted.
    pub observation_retention: Duration,
    /// Created profiles are deleted this long after their workload disappeared.
    pub orphan_profile_retention: Duration,
    /// How late an agent's report may arrive; see `--report-delay`.
    pub report_delay: Duration,
    /// Settings of created profiles.
    pub defaults: ProfileDefaults,
}

impl Default for Settings {
    /// The settings of a run with the default flags, in the namespace `herdwatch`.
    fn default() -> Self {
        Self {
            protected_namespaces: vec!["kube-system".into(), "herdwatch".into()],
            dry_run: false,
            retention: Retention::default(),
            observation_retention: Duration::from_secs(168 * 3600),
            orphan_profile_retention: Duration::from_secs(168 * 3600),
            report_delay: herdwatch_model::profile::DEFAULT_REPORT_DELAY,
            defaults: ProfileDefaults {
                mode: Mode::Monitor,
                min_duration: "24h".into(),
                stable_for: "4h".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_matches_the_default_flags() {
        assert_eq!(
            Settings::default(),
            Args::parse_from(["herdwatch-operator"]).settings()
        );
    }

    #[test]
    fn defaults_protect_kube_system_and_our_namespace() {
        let a = Args::parse_from([
            "herdwatch-operator",
            "--pod-namespace",
            "security",
            "--protected-namespaces",
            "payments, kube-system,",
        ]);
        a.validate().unwrap();
        let s = a.settings();
        assert_eq!(
            s.protected_namespaces,
            vec!["kube-system", "security", "payments"]
        );
        assert_eq!(s.retention.max_count, 500);
        assert_eq!(s.retention.max_age, Duration::from_secs(720 * 3600));
        assert_eq!(s.defaults.mode, Mode::Monitor);
        assert!(!s.dry_run);
        assert!(a.leader_election);
    }

    #[test]
    fn flags_parse_durations_and_refuse_bad_ones() {
        let a = Args::parse_from([
            "herdwatch-operator",
            "--lease-duration",
            "30s",
            "--lease-renew-interval",
            "10s",
            "--leader-election",
            "false",
            "--dry-run",
            "true",
            "--default-min-duration",
            "1m",
            "--default-mode",
            "Enforce",
        ]);
        assert_eq!(a.lease_duration, Duration::from_secs(30));
        assert!(!a.leader_election);
        assert!(a.settings().dry_run);
        assert_eq!(a.settings().defaults.min_duration, "1m");
        assert_eq!(
            a.settings().defaults.mode,
            Mode::Enforce,
            "as the CRD spells it"
        );
        assert!(
            Args::try_parse_from(["herdwatch-operator", "--default-stable-for", "soon"]).is_err()
        );
        let slow = Args::parse_from([
            "herdwatch-operator",
            "--lease-duration",
            "15s",
            "--lease-renew-interval",
            "10s",
        ]);
        assert!(slow.validate().unwrap_err().contains("at most half"));
    }
}
