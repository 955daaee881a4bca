//! Command line of `herdwatch-agent`. Every flag also reads a `HERDWATCH_…` environment
//! variable, which is how the chart configures the DaemonSet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use herdwatch_model::selector::LabelSelector;

use crate::error::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    name = "herdwatch-agent",
    version,
    about = "herdwatch node agent: sees what runs in each container of this node and whose it is"
)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "HERDWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Which logs to show, as a tracing filter (e.g. `info` or `warn,herdwatch_node_agent=debug`).
    #[arg(long, env = "HERDWATCH_LOG", default_value = "info", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start and moved into its mode; boxing would buy nothing"
)]
pub enum Command {
    /// Print what runs on this host, one line per event, then a summary per cgroup.
    /// Needs no Kubernetes: try herdwatch on any Linux host (as root).
    Observe(ObserveArgs),
    /// Run as the node agent of a cluster (the DaemonSet): capture, pod watch, metrics.
    Run(RunArgs),
    /// Mount a BPF filesystem at PATH unless one is there. The DaemonSet's init container
    /// runs this on the host's /sys/fs/bpf, which a freshly booted node may lack, so that
    /// the agent can pin its programs there.
    MountBpffs(MountBpffsArgs),
    /// Remove herdwatch's pinned programs and maps from this node, which detaches them:
    /// nothing of herdwatch stays in the kernel. The agent does this itself when it stops
    /// and its DaemonSet is gone; this is for a node it left behind otherwise.
    Unpin(UnpinArgs),
}

#[derive(Clone, Debug, Args)]
pub struct MountBpffsArgs {
    /// Where to mount it (a directory that exists).
    #[arg(env = "HERDWATCH_BPFFS_PATH", default_value = "/sys/fs/bpf")]
    pub path: PathBuf,

    /// Mount it in this mount namespace (a path like `/proc/1/ns/mnt`), or `parent`: the
    /// namespace of this process's parent, which for a container's first process is the
    /// container runtime's shim, in the host's namespace. No mount propagation from the
    /// container is needed, which many hosts do not allow for /sys. Empty: this process's
    /// own.
    #[arg(long, env = "HERDWATCH_BPFFS_MOUNT_NAMESPACE", default_value = "")]
    pub mount_namespace: String,
}

#[derive(Clone, Debug, Args)]
pub struct UnpinArgs {
    /// The directory the agent pins under (its --pin-root).
    #[arg(long, env = "HERDWATCH_PIN_ROOT", default_value = crate::capture::pins::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Text,
    /// One JSON object per line, for tools.
    Json,
}

/// Flags of every mode that captures.
#[derive(Clone, Debug, Args)]
pub struct CaptureArgs {
    /// Where the cgroup2 hierarchy is mounted. Found in /proc/self/mountinfo when unset
    /// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).
    #[arg(long, env = "HERDWATCH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

    /// The proc filesystem to read the host's processes from (the agent needs the host's
    /// pid namespace).
    #[arg(long, env = "HERDWATCH_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,

    /// Most processes the process table holds; the least recently active are dropped
    /// beyond that (and counted).
    #[arg(long, env = "HERDWATCH_MAX_PROCESSES", default_value_t = 32_768)]
    pub max_processes: usize,

    /// Size of the kernel's event ring buffer in bytes (a power of two). Events that do
    /// not fit are counted as lost.
    #[arg(long, env = "HERDWATCH_RING_BUFFER_BYTES", default_value_t = 4 << 20)]
    pub ring_buffer_bytes: u32,
}

#[derive(Clone, Debug, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,

    /// Stop after this long (e.g. 30s, 5m, 1h30m). Without it, runs until Ctrl-C.
    #[arg(long, env = "HERDWATCH_OBSERVE_DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,

    /// Output format.
    #[arg(long, env = "HERDWATCH_OBSERVE_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,

    /// Name of this node: only its pods are watched. The chart sets it from spec.nodeName.
    #[arg(long, env = "HERDWATCH_NODE_NAME")]
    pub node_name: Option<String>,

    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(long, env = "HERDWATCH_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// How often the metrics are brought up to date (and held-back violation counts are
    /// sent).
    #[arg(long, env = "HERDWATCH_METRICS_INTERVAL", default_value = "1s", value_parser = parse_duration_arg)]
    pub metrics_interval: Duration,

    /// /healthz fails once the event loop has gone this long without a round (it goes
    /// round at least every --metrics-interval), so that the kubelet restarts an agent
    /// that is stuck rather than one that is only slow to answer.
    #[arg(long, env = "HERDWATCH_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration_arg)]
    pub stall_timeout: Duration,

    /// How often changed BehaviorObservations are written: each observation at most once
    /// per interval, however many events changed it.
    #[arg(long, env = "HERDWATCH_PUBLISH_INTERVAL", default_value = "10s", value_parser = parse_duration_arg)]
    pub publish_interval: Duration,

    /// Most BehaviorObservation writes per publish interval; the rest wait for the next.
    #[arg(long, env = "HERDWATCH_PUBLISH_MAX_WRITES", default_value_t = 50)]
    pub publish_max_writes: usize,

    /// Most observations (workload container and image digest) held in memory; workloads
    /// beyond it are not learned on this node (counted).
    #[arg(long, env = "HERDWATCH_MAX_OBSERVATIONS", default_value_t = 2048)]
    pub max_observations: usize,

    /// Violation record writes allowed in a burst (the token bucket's size).
    #[arg(long, env = "HERDWATCH_VIOLATION_WRITE_BURST", default_value_t = 20)]
    pub violation_write_burst: u32,

    /// Violation record writes allowed per minute once the burst is spent; sightings held
    /// back are still counted and go out with the next write.
    #[arg(
        long,
        env = "HERDWATCH_VIOLATION_WRITES_PER_MINUTE",
        default_value_t = 60
    )]
    pub violation_writes_per_minute: u32,

    /// Shortest time between two writes of one violation record.
    #[arg(long, env = "HERDWATCH_VIOLATION_UPDATE_INTERVAL", default_value = "30s", value_parser = parse_duration_arg)]
    pub violation_update_interval: Duration,

    /// Violation records (pod, rule, subject) tracked in memory; the least recently seen
    /// are forgotten beyond it (their records stay in the API).
    #[arg(long, env = "HERDWATCH_VIOLATION_RECORDS", default_value_t = 4096)]
    pub violation_records: usize,

    /// Violation writes queued for the writer; when full, writes are counted as dropped
    /// and sent again later.
    #[arg(long, env = "HERDWATCH_VIOLATION_QUEUE", default_value_t = 1024)]
    pub violation_queue: usize,

    /// Process kills each profile and each policy may ask this agent for per minute (a
    /// burst of as many); beyond them the offending process lives and its record says why.
    /// Kills the kernel makes at exec are not counted. 0: no limit.
    #[arg(long, env = "HERDWATCH_PROCESS_KILLS_PER_MINUTE", default_value_t = 30)]
    pub process_kills_per_minute: u32,

    /// How late the operator still learns what agents saw before a promotion (its own
    /// --report-delay). That long after a profile is promoted, the agent makes the kernel
    /// forget what the profile's containers reported while learning, so that whatever never
    /// reached the profile is reported, and judged, the next time it happens.
    #[arg(long, env = "HERDWATCH_REPORT_DELAY", default_value = "30s", value_parser = parse_duration_arg)]
    pub report_delay: Duration,

    /// Kill offending processes when a profile in Enforcing or a policy rule asks for it.
    /// With false, such violations record that the kill was not done.
    #[arg(long, env = "HERDWATCH_KILL_PROCESSES", default_value_t = true, action = clap::ArgAction::Set)]
    pub kill_processes: bool,

    /// Paths that file entries of profiles never cover unless they name them literally
    /// (learned patterns with `*`, hand-written prefixes): comma-separated patterns where
    /// `*` is one path component (or part of one) and `**` any number of components.
    /// Replaces the default list: /etc/shadow, /etc/gshadow, /etc/sudoers(.d), service
    /// account tokens (/var/run/secrets, /run/secrets), /proc/*/environ, /proc/*/mem,
    /// /proc/sys/kernel/core_pattern, /root, SSH, cloud and kube credentials under /home,
    /// SSH host keys, /etc/ssl/private, release_agent and /sys/fs/cgroup.
    #[arg(long, env = "HERDWATCH_SENSITIVE_PATHS", value_delimiter = ',', value_parser = parse_sensitive_path)]
    pub sensitive_paths: Vec<String>,

    /// More namespaces where processes are never killed, comma-separated (kube-system and
    /// this pod's namespace always are). The chart passes the operator's list here too, so
    /// that the agent spares the namespaces where the operator never evicts.
    #[arg(long, env = "HERDWATCH_PROTECTED_NAMESPACES", value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,

    /// Learn and judge only pods of the namespaces this label selector picks, in the form
    /// `kubectl -l` takes (e.g. `env=prod,team in (a,b)`). Empty: every namespace.
    #[arg(long, env = "HERDWATCH_NAMESPACE_SELECTOR", default_value = "", value_parser = parse_selector_arg)]
    pub namespace_selector: LabelSelector,

    /// Where the host's root filesystem is visible to the agent: container overlay upper
    /// directories are read below it to tell executables written after start (drift) from
    /// the image's. Empty turns drift detection off.
    #[arg(long, env = "HERDWATCH_HOST_ROOT", default_value = "/proc/1/root")]
    pub host_root: PathBuf,

    /// Where the programs and their maps are pinned (a directory on a BPF filesystem), so
    /// that the kernel goes on capturing, and killing at exec, while the agent restarts or
    /// is upgraded; the next agent adopts them. Empty: nothing is pinned, and the programs
    /// stop with the agent.
    #[arg(long, env = "HERDWATCH_PIN_ROOT", default_value = crate::capture::pins::DEFAULT_PIN_ROOT)]
    pub pin_root: String,

    /// The DaemonSet this agent runs in (in its own namespace). When the agent stops and
    /// the DaemonSet is gone or being deleted (herdwatch is being uninstalled), it removes
    /// its pins, so that nothing of herdwatch stays in the kernel; otherwise the pins stay
    /// for the next agent. Empty: the pins are removed at every clean stop.
    #[arg(long, env = "HERDWATCH_DAEMONSET", default_value = "")]
    pub daemonset: String,
}

/// Parses `500ms`, `30s`, `5m`, `1h`, and sums like `1h30m`. A bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let invalid = || Error::InvalidDuration {
        input: input.to_owned(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(invalid)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        };
        total = total.checked_add(unit).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn parse_selector_arg(input: &str) -> Result<LabelSelector, String> {
    LabelSelector::parse(input).map_err(|e| e.to_string())
}

fn parse_sensitive_path(s: &str) -> Result<String, String> {
    herdwatch_model::files::SensitivePaths::check_pattern(s).map(|()| s.to_owned())
}

fn parse_duration_arg(input: &str) -> Result<Duration, String> {
    parse_duration(input).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        for bad in ["", "s", "10x", "1.5s", "-1s", "m5", "99999999999999999999h"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("e.g. 500ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn pinning_is_on_by_default_and_an_empty_root_turns_it_off() {
        let run = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => run.pin_root,
            other => panic!("{other:?}"),
        };
        assert_eq!(run(&["herdwatch-agent", "run"]), "/sys/fs/bpf/herdwatch");
        assert_eq!(run(&["herdwatch-agent", "run", "--pin-root", ""]), "");
        match Cli::try_parse_from([
            "herdwatch-agent",
            "mount-bpffs",
            "--mount-namespace",
            "parent",
        ])
        .map(|c| c.command)
        {
            Ok(Command::MountBpffs(m)) => {
                assert_eq!(
                    (m.mount_namespace.as_str(), m.path.as_path()),
                    ("parent", Path::new("/sys/fs/bpf"))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_is_consistent_and_every_flag_has_an_env_var_and_help() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        cmd.build();
        let mut commands = vec![cmd.clone()];
        commands.extend(cmd.get_subcommands().cloned());
        for c in &commands {
            for arg in c.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("--{id} of {} has no env var", c.get_name()));
                assert!(env.to_string_lossy().starts_with("HERDWATCH_"), "--{id}");
                assert!(arg.get_help().is_some(), "--{id} has no help");
            }
        }
    }

    #[test]
    fn sensitive_paths_replace_the_default_and_must_be_absolute() {
        let cli = Cli::try_parse_from([
            "herdwatch-agent",
            "run",
            "--sensitive-paths",
            "/etc/shadow,/srv/keys/**,**/release_agent",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            r.sensitive_paths,
            ["/etc/shadow", "/srv/keys/**", "**/release_agent"]
        );
        let Err(err) =
            Cli::try_parse_from(["herdwatch-agent", "run", "--sensitive-paths", "etc/shadow"])
        else {
            panic!("a relative pattern is refused");
        };
        assert!(err.to_string().contains("must be absolute"), "{err}");
    }

    #[test]
    fn run_flags_have_working_defaults() {
        let cli = Cli::try_parse_from(["herdwatch-agent", "run", "--node-name", "n1"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.publish_interval, Duration::from_secs(10));
        assert_eq!(r.violation_update_interval, Duration::from_secs(30));
        assert!(r.kill_processes);
        assert_eq!(r.host_root, PathBuf::from("/proc/1/root"));
        assert_eq!(r.namespace_selector, LabelSelector::default());
        assert!(r.protected_namespaces.is_empty());
        let cli = Cli::try_parse_from([
            "herdwatch-agent",
            "run",
            "--kill-processes",
            "false",
            "--publish-interval",
            "2s",
            "--namespace-selector",
            "herdwatch.dev/agent-test=yes",
            "--protected-namespaces",
            "payments,ledger",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(!r.kill_processes);
        assert_eq!(r.protected_namespaces, ["payments", "ledger"]);
        assert_eq!(r.publish_interval, Duration::from_secs(2));
        assert_eq!(
            r.namespace_selector
                .match_labels
                .get("herdwatch.dev/agent-test")
                .map(String::as_str),
            Some("yes")
        );
        let err = Cli::try_parse_from(["herdwatch-agent", "run", "--namespace-selector", "a in b"])
            .unwrap_err();
        assert!(err.to_string().contains("parentheses"), "{err}");
    }

    #[test]
    fn observe_flags_parse() {
        let cli = Cli::try_parse_from([
            "herdwatch-agent",
            "observe",
            "--duration",
            "2s",
            "--format",
            "json",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Observe(o) = cli.command else {
            panic!("not observe")
        };
        assert_eq!(o.duration, Some(Duration::from_secs(2)));
        assert_eq!(o.format, OutputFormat::Json);
        assert_eq!(o.capture.proc_root, PathBuf::from("/proc"));
        let err =
            Cli::try_parse_from(["herdwatch-agent", "observe", "--duration", "soon"]).unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }
}
