//! The agent's Prometheus metrics and its small HTTP server (`/metrics`, `/healthz`,
//! `/readyz`).
//!
//! The pipeline counts in plain integers ([`PipelineStats`]); [`Metrics::update`] copies
//! them into the registry once in a while, so the hot path never touches a metric. Labels
//! are bounded: event kinds and failure reasons, never pods or pids. Violations are counted
//! by namespace, workload (owner kind/name), rule and mode (Monitor or Enforce): bounded by
//! what the cluster runs and what its policies name, still never pods or pids.
//!
//! The server answers one request per connection (HTTP/1.1 with `Connection: close`),
//! which is all Prometheus and the kubelet's probes need; requests are bounded in size
//! and time, and connections in number.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdwatch_abi::{EventKind, EVENT_KIND_SLOTS};
use herdwatch_api::common::Mode;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::attribution::pipeline::{FailureReason, PipelineStats};
use crate::attribution::pods::PodStore;
use crate::error::{Error, Result};

const SLOTS: usize = EVENT_KIND_SLOTS as usize;

/// Name of the violation counter.
pub const VIOLATIONS: &str = "herdwatch_agent_violations_total";
/// Labels of [`VIOLATIONS`], in the order [`AgentCounters::violations`] takes them.
pub const VIOLATION_LABELS: [&str; 4] = ["namespace", "workload", "rule", "mode"];

/// The `mode` label of a violation: the mode of the profile or policy that judged it.
/// Learn never judges, so it has no label of its own.
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "Enforce",
        Mode::Monitor | Mode::Learn => "Monitor",
    }
}

/// A counter fed from a running total kept elsewhere (the pipeline, the kernel).
#[derive(Clone, Debug)]
struct Mirrored {
    counter: IntCounter,
    last: u64,
}

impl Mirrored {
    fn new(counter: IntCounter) -> Self {
        Mirrored { counter, last: 0 }
    }

    fn set_total(&mut self, total: u64) {
        // A total that went down (a per-CPU map read racing an update cannot, but a
        // reloaded program would) restarts the mirror without making the counter go back.
        if total > self.last {
            self.counter.inc_by(total - self.last);
        }
        self.last = total;
    }
}

fn kind_counters(registry: &Registry, name: &str, help: &str) -> Result<Vec<Option<Mirrored>>> {
    let vec = IntCounterVec::new(Opts::new(name, help), &["kind"])?;
    registry.register(Box::new(vec.clone()))?;
    let mut out: Vec<Option<Mirrored>> = (0..SLOTS).map(|_| None).collect();
    for kind in EventKind::ALL {
        out[kind as usize] = Some(Mirrored::new(vec.with_label_values(&[kind.name()])));
    }
    Ok(out)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<Mirrored> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(Mirrored::new(c))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// What the capture reports about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Ring buffer reserve failures by `EventKind as usize`.
    pub lost: [u64; SLOTS],
    /// Events submitted by the kernel programs by `EventKind as usize`.
    pub emitted: [u64; SLOTS],
    pub decode_errors: u64,
    pub map_memory_bytes: u64,
}

/// Metrics of learning, evaluation and response, written from several tasks (the handles
/// are shared with the registry).
#[derive(Clone, Debug)]
pub struct AgentCounters {
    /// `herdwatch_agent_violations_total{namespace, workload, rule, mode}`.
    pub violations: IntCounterVec,
    /// Violation record writes that did not fit in the writer's queue (sent again later).
    pub violation_writes_dropped: IntCounter,
    /// Offending processes the agent tried to kill, by result.
    pub process_kills: IntCounterVec,
    /// Writes to the API, by resource and result.
    pub api_writes: IntCounterVec,
    /// Errors of the profile, policy and namespace watches, by resource.
    pub watch_errors: IntCounterVec,
    /// Profiles and policies left out of evaluation because they could not be read.
    pub invalid_objects: IntCounterVec,
    /// Times this node went without an agent, by what the kernel ran meanwhile
    /// (`kernel`: `adopted`, `earlier` or `none`; see [`crate::capture::pins::GapKernel`]).
    pub agent_gaps: IntCounterVec,
    /// How long those gaps lasted, summed, in seconds.
    pub agent_gap_seconds: IntCounterVec,
    observations: IntGauge,
    observations_pending: IntGauge,
    observed_events: Mirrored,
    not_learned: Mirrored,
    learn_over_capacity: Mirrored,
    deferred: Mirrored,
    deferred_dropped: Mirrored,
    forgotten: Mirrored,
    profiles: IntGauge,
    policies: IntGauge,
    violation_records: IntGauge,
}

impl AgentCounters {
    fn new(r: &Registry) -> Result<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let api_writes = vec(
            "herdwatch_agent_api_writes_total",
            "Writes of BehaviorObservations and BehaviorViolations, by result.",
            &["resource", "result"],
        )?;
        let process_kills = vec(
            "herdwatch_agent_process_kills_total",
            "Offending processes the agent was asked to kill, by result (killed, killed_in_kernel, failed, disabled, protected).",
            &["result"],
        )?;
        for resource in ["behaviorobservations", "behaviorviolations"] {
            for result in ["ok", "error"] {
                api_writes.with_label_values(&[resource, result]);
            }
        }
        for result in [
            "killed",
            "killed_in_kernel",
            "failed",
            "disabled",
            "protected",
        ] {
            process_kills.with_label_values(&[result]);
        }
        let agent_gaps = vec(
            "herdwatch_agent_gaps_total",
            "Times this node went without a running agent (a restart, crash or upgrade), by what the kernel ran meanwhile: kernel=adopted (the pinned programs went on capturing and killing at exec, and the next agent adopted them), kernel=earlier (an earlier build's programs went on killing at exec; what they captured is lost), kernel=none (nothing).",
            &["kernel"],
        )?;
        let agent_gap_seconds = vec(
            "herdwatch_agent_gap_seconds_total",
            "How long this node went without a running agent, summed over its gaps, by the same kernel label.",
            &["kernel"],
        )?;
        for kernel in ["adopted", "earlier", "none"] {
            agent_gaps.with_label_values(&[kernel]);
            agent_gap_seconds.with_label_values(&[kernel]);
        }
        let dropped = IntCounter::new(
            "herdwatch_agent_violation_writes_dropped_total",
            "Violation record writes that found the writer's queue full (the record is sent again later).",
        )?;
        r.register(Box::new(dropped.clone()))?;
        Ok(AgentCounters {
            violations: vec(
                VIOLATIONS,
                "Violations seen, by namespace, workload (owner kind/name), rule and the mode (Monitor or Enforce) of the profile or policy that judged them.",
                &VIOLATION_LABELS,
            )?,
            violation_writes_dropped: dropped,
            agent_gaps,
            agent_gap_seconds,
            process_kills,
            api_writes,
            watch_errors: vec(
                "herdwatch_agent_watch_errors_total",
                "Errors of the agent's watches of profiles, policies and namespaces, by resource.",
                &["resource"],
            )?,
            invalid_objects: vec(
                "herdwatch_agent_invalid_objects_total",
                "Profiles and policies left out of evaluation because the agent could not read them.",
                &["resource"],
            )?,
            observations: gauge(r, "herdwatch_agent_observations", "Workload observations the agent holds.")?,
            observations_pending: gauge(
                r,
                "herdwatch_agent_observations_pending",
                "Observations changed since their last successful write.",
            )?,
            observed_events: counter(r, "herdwatch_agent_learned_events_total", "Events recorded into observations.")?,
            not_learned: counter(
                r,
                "herdwatch_agent_unlearned_events_total",
                "Events of containers herdwatch does not learn (no targetable workload, no image digest, debug containers).",
            )?,
            learn_over_capacity: counter(
                r,
                "herdwatch_agent_observations_refused_total",
                "Events and replicas not learned because the agent held --max-observations already.",
            )?,
            deferred: counter(
                r,
                "herdwatch_agent_events_deferred_total",
                "Events of new containers kept until the kubelet reported their container id.",
            )?,
            deferred_dropped: counter(
                r,
                "herdwatch_agent_events_deferred_dropped_total",
                "Kept events no pod claimed in time (or that did not fit), dropped unjudged.",
            )?,
            forgotten: counter(
                r,
                "herdwatch_agent_cgroups_forgotten_total",
                "Containers whose first sightings the kernel forgot once their profile judged them, so that what learning missed is reported again.",
            )?,
            profiles: gauge(r, "herdwatch_agent_profiles_judging", "BehaviorProfiles in Monitoring or Enforcing the agent judges events by.")?,
            policies: gauge(r, "herdwatch_agent_policies", "ClusterBehaviorPolicies the agent judges events by.")?,
            violation_records: gauge(
                r,
                "herdwatch_agent_violation_records_tracked",
                "Violation records (pod, rule, subject) the agent tracks in memory.",
            )?,
        })
    }

    /// Copies the learner's and the evaluator's state into the metrics.
    pub fn update(
        &mut self,
        learn: &crate::learn::LearnStats,
        engine: &crate::engine::EngineStats,
        judging: (usize, usize),
        records: usize,
    ) {
        self.observations.set(clamp(learn.observations));
        self.observations_pending.set(clamp(learn.pending));
        self.observed_events.set_total(learn.events);
        self.not_learned.set_total(learn.not_learned);
        self.learn_over_capacity.set_total(learn.over_capacity);
        self.deferred.set_total(engine.deferred);
        self.deferred_dropped.set_total(engine.deferred_dropped);
        self.forgotten.set_total(engine.forgotten);
        self.profiles.set(clamp(judging.0 as u64));
        self.policies.set(clamp(judging.1 as u64));
        self.violation_records.set(clamp(records as u64));
    }
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    events: Vec<Option<Mirrored>>,
    lost: Vec<Option<Mirrored>>,
    emitted: Vec<Option<Mirrored>>,
    failures: Vec<Mirrored>,
    decode_errors: Mirrored,
    proc_vanished: Mirrored,
    inherited: Mirrored,
    unrecognised_runtime: Mirrored,
    exec_paths_cut: Mirrored,
    proc_read_timeouts: Mirrored,
    cgroup_walks: Mirrored,
    evictions: Mirrored,
    exec_sessions: Mirrored,
    parent_unknown: Mirrored,
    pod_watch_errors: Mirrored,
    owner_lookup_failures: Mirrored,
    containers: IntGauge,
    pods: IntGauge,
    processes: IntGauge,
    map_memory: IntGauge,
    agent: AgentCounters,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let r = Registry::new();
        // The standard process_* series (CPU seconds, resident memory, open fds), which
        // the dashboard's CPU and memory panels and users' generic alerts read.
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let failures_vec = IntCounterVec::new(
            Opts::new(
                "herdwatch_agent_attribution_failures_total",
                "Events that could not be fully attributed to a process, container or pod, by reason.",
            ),
            &["reason"],
        )?;
        r.register(Box::new(failures_vec.clone()))?;
        let failures = FailureReason::ALL
            .iter()
            .map(|reason| Mirrored::new(failures_vec.with_label_values(&[reason.as_str()])))
            .collect();
        Ok(Metrics {
            events: kind_counters(&r, "herdwatch_agent_events_total", "Events received from the kernel, by kind.")?,
            lost: kind_counters(
                &r,
                "herdwatch_agent_events_lost_total",
                "Events the kernel could not submit because the ring buffer was full, by kind.",
            )?,
            emitted: kind_counters(
                &r,
                "herdwatch_agent_events_emitted_total",
                "Events the kernel programs submitted to the ring buffer, by kind.",
            )?,
            failures,
            decode_errors: counter(
                &r,
                "herdwatch_agent_decode_errors_total",
                "Ring buffer records that could not be decoded.",
            )?,
            proc_vanished: counter(
                &r,
                "herdwatch_agent_proc_vanished_total",
                "Processes that exited while the agent read them from /proc.",
            )?,
            inherited: counter(
                &r,
                "herdwatch_agent_processes_inherited_total",
                "Processes gone before /proc could be read, recorded as forks of their parent.",
            )?,
            unrecognised_runtime: counter(
                &r,
                "herdwatch_agent_unrecognised_runtime_total",
                "Execs that entered a container from a program herdwatch does not know as a container runtime (its set-up may be learned as the workload's; the profile says so).",
            )?,
            proc_read_timeouts: counter(
                &r,
                "herdwatch_agent_proc_read_timeouts_total",
                "Reads of /proc files given up after 250 ms (a process can make reading its own memory slow); the process is judged by what the kernel reported of it.",
            )?,
            exec_paths_cut: counter(
                &r,
                "herdwatch_agent_exec_paths_cut_total",
                "Execs whose path was longer than the kernel reads (256 bytes): the whole path is read from /proc, or, with the process gone, the cut path is marked so that no exact entry matches it.",
            )?,
            cgroup_walks: counter(
                &r,
                "herdwatch_agent_cgroup_walks_total",
                "Walks of the cgroup2 hierarchy to resolve unknown cgroup ids.",
            )?,
            evictions: counter(
                &r,
                "herdwatch_agent_process_table_evictions_total",
                "Live processes dropped from the full process table.",
            )?,
            exec_sessions: counter(
                &r,
                "herdwatch_agent_exec_sessions_total",
                "Processes that entered a running container from outside it (kubectl exec).",
            )?,
            parent_unknown: counter(
                &r,
                "herdwatch_agent_exec_parent_unknown_total",
                "Processes entering a container whose parent was unknown, so exec-session detection had no evidence.",
            )?,
            pod_watch_errors: counter(&r, "herdwatch_agent_pod_watch_errors_total", "Errors of the node's pod watch.")?,
            owner_lookup_failures: counter(
                &r,
                "herdwatch_agent_owner_lookup_failures_total",
                "ReplicaSet or Job lookups that failed while resolving a pod's workload.",
            )?,
            containers: gauge(&r, "herdwatch_agent_containers_tracked", "Container cgroups on this node.")?,
            pods: gauge(&r, "herdwatch_agent_pods_tracked", "Pods of this node in the agent's pod index.")?,
            processes: gauge(&r, "herdwatch_agent_processes_tracked", "Entries in the process table.")?,
            map_memory: gauge(
                &r,
                "herdwatch_agent_bpf_map_memory_bytes",
                "Kernel memory used by the agent's BPF maps.",
            )?,
            agent: AgentCounters::new(&r)?,
            registry: r,
        })
    }

    /// The metrics of learning, evaluation and response.
    pub fn agent(&mut self) -> &mut AgentCounters {
        &mut self.agent
    }

    /// The registry, for the HTTP server (a cheap handle to the same metrics).
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Copies the pipeline's totals into the metrics.
    pub fn update(&mut self, stats: &PipelineStats, pods: Option<&PodStore>) {
        for (m, total) in self.events.iter_mut().zip(stats.events) {
            if let Some(m) = m {
                m.set_total(total);
            }
        }
        for (m, total) in self.failures.iter_mut().zip(stats.failures) {
            m.set_total(total);
        }
        self.proc_vanished
            .set_total(stats.proc_vanished + stats.cgroups.vanished);
        self.inherited.set_total(stats.inherited);
        self.unrecognised_runtime
            .set_total(stats.unrecognised_runtime);
        self.exec_paths_cut.set_total(stats.exec_paths_cut);
        self.proc_read_timeouts.set_total(stats.proc_read_timeouts);
        self.cgroup_walks.set_total(stats.cgroups.walks);
        self.evictions.set_total(stats.table.evicted);
        self.exec_sessions.set_total(stats.table.exec_sessions);
        self.parent_unknown.set_total(stats.table.parent_unknown);
        self.containers.set(clamp(stats.cgroups.containers));
        self.processes.set(clamp(stats.processes));
        self.pods.set(clamp(stats.pods));
        if let Some(store) = pods {
            self.pod_watch_errors
                .set_total(store.watch_errors.load(Ordering::Relaxed));
            self.owner_lookup_failures
                .set_total(store.owner_lookup_failures.load(Ordering::Relaxed));
        }
    }

    /// Copies the capture's counters into the metrics.
    pub fn update_capture(&mut self, capture: &CaptureStats) {
        for (m, total) in self.lost.iter_mut().zip(capture.lost) {
            if let Some(m) = m {
                m.set_total(total);
            }
        }
        for (m, total) in self.emitted.iter_mut().zip(capture.emitted) {
            if let Some(m) = m {
                m.set_total(total);
            }
        }
        self.decode_errors.set_total(capture.decode_errors);
        self.map_memory.set(clamp(capture.map_memory_bytes));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Liveness and readiness.
#[derive(Debug)]
pub struct Health {
    attached: AtomicBool,
    /// Present when the agent runs in Kubernetes: ready needs its first list.
    pods: Option<Arc<PodStore>>,
    /// When the event loop last went round, in milliseconds since `epoch`.
    heartbeat_ms: AtomicU64,
    epoch: Instant,
    /// How long the event loop may go without a round before the agent is not live.
    stall_after: Duration,
}

impl Health {
    pub fn new(pods: Option<Arc<PodStore>>, stall_after: Duration) -> Self {
        Health {
            attached: AtomicBool::new(false),
            pods,
            heartbeat_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stall_after,
        }
    }

    pub fn set_attached(&self) {
        self.beat();
        self.attached.store(true, Ordering::Release);
    }

    /// The event loop went round.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        self.heartbeat_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// None when ready, else what is missing.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.attached.load(Ordering::Acquire) {
            return Some("the eBPF programs are not attached yet");
        }
        if self.pods.as_ref().is_some_and(|p| !p.synced()) {
            return Some("the pod watch has not synced yet");
        }
        None
    }

    /// How long the event loop has been stuck at `now`, when that is longer than allowed.
    /// Loading the programs can take a while and counts as progress: only an attached
    /// agent can stall.
    pub fn stalled_at(&self, now: Instant) -> Option<Duration> {
        if !self.attached.load(Ordering::Acquire) {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.heartbeat_ms.load(Ordering::Acquire));
        let quiet = now.saturating_duration_since(last);
        (quiet > self.stall_after).then_some(quiet)
    }
}

/// An HTTP response, before it is written.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: headers only.
    pub head_only: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Answers one request, given its request line.
pub fn route(request_line: &str, registry: &Registry, health: &Health) -> Response {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Response::text(400, "bad request\n");
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "only GET and HEAD\n"),
    };
    let path = target.split('?').next().unwrap_or(target);
    let mut response = match path {
        "/metrics" => match TextEncoder::new().encode_to_string(&registry.gather()) {
            Ok(body) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body,
                head_only,
            },
            Err(e) => Response::text(500, format!("cannot encode metrics: {e}\n")),
        },
        "/healthz" => match health.stalled_at(Instant::now()) {
            None => Response::text(200, "ok\n"),
            Some(quiet) => Response::text(
                503,
                format!(
                    "stalled: the event loop has made no progress for {}s\n",
                    quiet.as_secs()
                ),
            ),
        },
        "/readyz" => match health.not_ready() {
            None => Response::text(200, "ready\n"),
            Some(why) => Response::text(503, format!("not ready: {why}\n")),
        },
        _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
    };
    response.head_only = head_only;
    response
}

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Registry, health: Arc<Health>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors, usually: wait rather than spin.
                warn!(%error, "metrics server cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many metrics connections; closing");
            continue;
        };
        let (registry, health) = (registry.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(error) = handle(stream, &registry, &health).await {
                debug!(%peer, %error, "metrics request failed");
            }
            drop(permit);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    registry: &Registry,
    health: &Health,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_REQUEST_BYTES {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) => return Ok(()),
    }
    let head = String::from_utf8_lossy(&buf);
    let response = match head.split("\r\n").next() {
        Some(line) if buf.len() < MAX_REQUEST_BYTES => route(line, registry, health),
        _ => Response::text(400, "bad request\n"),
    };
    stream.write_all(&response.to_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(m: &Metrics) -> String {
        route(
            "GET /metrics HTTP/1.1",
            &m.registry(),
            &Health::new(None, STALL),
        )
        .body
    }

    #[test]
    fn series_exist_at_zero_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        let body = body_of(&m);
        for line in [
            "herdwatch_agent_events_total{kind=\"exec\"} 0",
            "herdwatch_agent_events_lost_total{kind=\"net\"} 0",
            "herdwatch_agent_attribution_failures_total{reason=\"unknown_cgroup\"} 0",
            "herdwatch_agent_attribution_failures_total{reason=\"process_gone\"} 0",
            "herdwatch_agent_containers_tracked 0",
            "herdwatch_agent_pods_tracked 0",
            "herdwatch_agent_processes_tracked 0",
            "herdwatch_agent_bpf_map_memory_bytes 0",
            "herdwatch_agent_decode_errors_total 0",
            "herdwatch_agent_api_writes_total{resource=\"behaviorobservations\",result=\"error\"} 0",
            "herdwatch_agent_process_kills_total{result=\"killed\"} 0",
            "herdwatch_agent_violation_writes_dropped_total 0",
            "herdwatch_agent_observations_pending 0",
            "herdwatch_agent_profiles_judging 0",
        ] {
            assert!(body.contains(line), "missing {line:?} in\n{body}");
        }
    }

    #[test]
    fn totals_become_counters_that_never_go_back() {
        let mut m = Metrics::new().unwrap();
        let mut stats = PipelineStats::default();
        stats.events[EventKind::File as usize] = 41;
        stats.failures[FailureReason::PodNotFound as usize] = 3;
        stats.processes = 250;
        stats.cgroups.containers = 330;
        stats.pods = 110;
        m.update(&stats, None);
        stats.events[EventKind::File as usize] = 42;
        m.update(&stats, None);
        let mut capture = CaptureStats {
            decode_errors: 2,
            map_memory_bytes: 17_000_000,
            ..Default::default()
        };
        capture.lost[EventKind::Exec as usize] = 9;
        m.update_capture(&capture);
        capture.lost[EventKind::Exec as usize] = 5; // a reload restarted the kernel totals
        m.update_capture(&capture);
        capture.lost[EventKind::Exec as usize] = 6;
        m.update_capture(&capture);

        let body = body_of(&m);
        for line in [
            "herdwatch_agent_events_total{kind=\"file\"} 42",
            "herdwatch_agent_attribution_failures_total{reason=\"pod_not_found\"} 3",
            "herdwatch_agent_processes_tracked 250",
            "herdwatch_agent_containers_tracked 330",
            "herdwatch_agent_pods_tracked 110",
            "herdwatch_agent_events_lost_total{kind=\"exec\"} 10",
            "herdwatch_agent_decode_errors_total 2",
            "herdwatch_agent_bpf_map_memory_bytes 17000000",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
        ] {
            assert!(body.contains(line), "missing {line:?} in\n{body}");
        }
    }

    #[test]
    fn readiness_needs_the_capture_and_the_pod_sync() {
        let store = Arc::new(PodStore::default());
        let health = Health::new(Some(store.clone()), STALL);
        let r = Registry::new();
        let resp = route("GET /readyz HTTP/1.1", &r, &health);
        assert_eq!(resp.status, 503);
        assert!(resp.body.contains("not attached"), "{}", resp.body);
        health.set_attached();
        assert!(route("GET /readyz HTTP/1.1", &r, &health)
            .body
            .contains("pod watch"));
        store.replace_all(Vec::new());
        assert_eq!(route("GET /readyz HTTP/1.1", &r, &health).status, 200);
        // Without Kubernetes, attached is enough.
        let standalone = Health::new(None, STALL);
        standalone.set_attached();
        assert_eq!(route("GET /readyz HTTP/1.1", &r, &standalone).status, 200);
        // Liveness does not depend on either.
        assert_eq!(
            route("GET /healthz HTTP/1.1", &r, &Health::new(None, STALL)).status,
            200
        );
    }

    const STALL: Duration = Duration::from_secs(60);

    #[test]
    fn liveness_fails_when_the_event_loop_stops_going_round() {
        let health = Health::new(None, STALL);
        let start = Instant::now();
        // Loading the programs may take long: not attached is not stalled.
        assert_eq!(health.stalled_at(start + 10 * STALL), None);
        health.set_attached();
        health.beat_at(start);
        assert_eq!(health.stalled_at(start + STALL / 2), None);
        let quiet = health.stalled_at(start + STALL + Duration::from_secs(5));
        assert!(quiet.is_some_and(|q| q > STALL), "{quiet:?}");
        // A round brings it back.
        health.beat_at(start + STALL + Duration::from_secs(6));
        assert_eq!(
            health.stalled_at(start + STALL + Duration::from_secs(7)),
            None
        );

        // Through HTTP: a loop that has not gone round for longer than allowed fails /healthz
        // with the reason.
        let stuck = Health::new(None, Duration::ZERO);
        stuck.set_attached();
        std::thread::sleep(Duration::from_millis(5));
        let resp = route("GET /healthz HTTP/1.1", &Registry::new(), &stuck);
        assert_eq!(resp.status, 503, "{}", resp.body);
        assert!(resp.body.contains("no progress"), "{}", resp.body);
    }

    #[test]
    fn routing_of_odd_requests() {
        let r = Registry::new();
        let h = Health::new(None, STALL);
        assert_eq!(route("GET /nope HTTP/1.1", &r, &h).status, 404);
        assert_eq!(route("POST /metrics HTTP/1.1", &r, &h).status, 405);
        assert_eq!(route("", &r, &h).status, 400);
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1", &r, &h).status, 200);
        let head = route("HEAD /healthz HTTP/1.1", &r, &h);
        assert!(head.head_only);
        let bytes = String::from_utf8(head.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(bytes.contains("Content-Length: 3\r\n"));
        assert!(bytes.ends_with("\r\n\r\n"), "HEAD has no body: {bytes:?}");
    }

    #[tokio::test]
    async fn server_answers_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(Health::new(None, STALL));
        let server = tokio::spawn(serve(listener, metrics.registry(), health));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("herdwatch_agent_events_total"));
        // A client that sends nothing does not hold the server.
        let _idle = TcpStream::connect(addr).await.unwrap();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        server.abort();
    }
}
