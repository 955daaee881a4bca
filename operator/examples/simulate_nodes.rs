//! The load side of the operator benchmark (`bench/operator.sh`): acts as the node agents of
//! a cluster of `--nodes` nodes against an API server that a herdwatch operator watches, and
//! measures what the operator does with it.
//!
//! It creates opted-in namespaces holding `--workloads` Deployments (nothing runs them: the
//! operator only needs the objects to create a BehaviorProfile per container), waits until
//! the operator has created every profile, then publishes BehaviorObservations the way the
//! agent's publisher does (`node-agent/src/learn/publish.rs`): one object per (workload,
//! container, image digest, node), built by the model's `Observation::observe` from events,
//! applied whole by server-side apply with the field manager `herdwatch-agent`, each node
//! writing its observations one after the other. Every write carries one file prefix no
//! write carried before, so every merge does real work, and a watch on the profiles tells
//! when that prefix reached the profile: that is one observation merged.
//!
//! Phases: a seed (every node publishes every observation once), a pause with nothing new
//! (the operator just holds the profiles), a small load (each node changes
//! `--small-changes` observations per interval) and the busy load (`--busy-changes`; with
//! `--busy-changes 30` every node changes every observation every interval, more than a
//! 2-CPU API server takes). Per phase it prints observations written and merged per
//! second, the write-to-merge latency, the operator's resident memory (VmRSS sampled every
//! second, and VmHWM, the kernel's high-water mark) and its CPU time, read from `/proc`, and
//! its profile reconciles from `/metrics`. It fails (exit status 1) when the run does not
//! measure what it claims: the profiles never all exist, the seed is never all merged, a
//! phase merges nothing, or the operator exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use herdwatch_api::observation::AGENT_FIELD_MANAGER;
use herdwatch_api::{BehaviorObservation, BehaviorProfile};
use herdwatch_model::files::learned_path;
use herdwatch_model::net::Protocol;
use herdwatch_model::sketch::ReplicaId;
use herdwatch_model::WorkloadKey;
use herdwatch_model::{Access, Event, EventKind, Limits, Observation, Process, Timestamp};
use herdwatch_operator::{LEARN_ENABLED, LEARN_LABEL};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Simulates herdwatch node agents publishing observations, and measures the operator.
#[derive(Parser, Debug)]
struct Args {
    /// Process id of the operator, whose memory and CPU time are read from /proc.
    #[arg(long, env = "HERDWATCH_BENCH_OPERATOR_PID")]
    operator_pid: u32,
    /// host:port of the operator's /metrics.
    #[arg(long, env = "HERDWATCH_BENCH_OPERATOR_METRICS")]
    operator_metrics: String,
    /// Opted-in namespaces the workloads are spread over.
    #[arg(long, env = "HERDWATCH_BENCH_NAMESPACES", default_value_t = 20)]
    namespaces: usize,
    /// Deployments in all (one container each, so one profile each).
    #[arg(long, env = "HERDWATCH_BENCH_WORKLOADS", default_value_t = 1000)]
    workloads: usize,
    /// Simulated nodes, each publishing as one agent.
    #[arg(long, env = "HERDWATCH_BENCH_NODES", default_value_t = 100)]
    nodes: usize,
    /// Replicas per workload, each on another node (so observations per workload).
    #[arg(long, env = "HERDWATCH_BENCH_REPLICAS", default_value_t = 3)]
    replicas: usize,
    /// The agents' publish interval.
    #[arg(long, env = "HERDWATCH_BENCH_INTERVAL", default_value = "10s", value_parser = duration)]
    interval: Duration,
    /// Observations each node changes per interval in the small load.
    #[arg(long, env = "HERDWATCH_BENCH_SMALL_CHANGES", default_value_t = 1)]
    small_changes: usize,
    /// Observations each node changes per interval in the busy load.
    #[arg(long, env = "HERDWATCH_BENCH_BUSY_CHANGES", default_value_t = 3)]
    busy_changes: usize,
    /// How long each load phase lasts.
    #[arg(long, env = "HERDWATCH_BENCH_PHASE", default_value = "45s", value_parser = duration)]
    phase: Duration,
    /// How long the operator just holds the profiles before its memory is read.
    #[arg(long, env = "HERDWATCH_BENCH_SETTLE", default_value = "20s", value_parser = duration)]
    settle: Duration,
    /// Longest wait for the profiles to exist, and for a phase's merges to finish.
    #[arg(long, env = "HERDWATCH_BENCH_TIMEOUT", default_value = "240s", value_parser = duration)]
    timeout: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    herdwatch_model::time::parse_duration(s).map_err(|e| e.to_string())
}

/// Syscalls a typical server makes (the agent reports each once per container).
const SYSCALLS: &[&str] = &[
    "read",
    "write",
    "openat",
    "close",
    "fstat",
    "newfstatat",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "ioctl",
    "pread64",
    "readv",
    "writev",
    "access",
    "pipe2",
    "sched_yield",
    "madvise",
    "dup2",
    "nanosleep",
    "getpid",
    "socket",
    "connect",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "clone3",
    "execve",
    "exit_group",
    "wait4",
    "kill",
    "uname",
    "fcntl",
    "flock",
    "fsync",
    "getdents64",
    "getcwd",
    "chdir",
    "rename",
    "mkdir",
    "unlink",
    "readlink",
    "umask",
    "gettimeofday",
    "getrlimit",
    "getuid",
    "getgid",
    "geteuid",
    "getegid",
    "setuid",
    "setgid",
    "futex",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "set_robust_list",
    "prlimit64",
    "getrandom",
    "statx",
    "rseq",
    "clock_gettime",
];

/// Executables a typical server runs.
const PROCESSES: &[(&str, u32)] = &[
    ("/usr/local/bin/server", 1000),
    ("/usr/local/bin/healthcheck", 1000),
    ("/bin/sh", 1000),
    ("/usr/bin/env", 1000),
    ("/usr/local/bin/migrate", 1000),
    ("/usr/bin/tini", 0),
];

/// File prefixes a typical server opens (`learned_path` makes them what agents send).
const FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/server/config.yaml",
    "/etc/localtime",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/proc/self/status",
    "/proc/self/cgroup",
    "/sys/fs/cgroup/memory.max",
    "/var/lib/server/data",
    "/tmp/upload-1234",
    "/dev/urandom",
    "/dev/null",
];

fn namespace_name(i: usize) -> String {
    format!("bench-{i:02}")
}

fn workload_name(w: usize) -> String {
    format!("svc-{w:04}")
}

fn node_name(n: usize) -> String {
    format!("bench-node-{n:03}")
}

/// One simulated replica of one workload on one node, and what its agent accumulated.
struct Replica {
    workload: usize,
    replica: ReplicaId,
    observation: Observation,
    /// Writes of this observation so far (numbers its new file prefixes).
    writes: u64,
}

/// Which nodes run workload `w`: `replicas` distinct nodes, spread evenly.
fn nodes_of(w: usize, replicas: usize, nodes: usize) -> Vec<usize> {
    (0..replicas.min(nodes))
        .map(|k| (w + k * nodes.div_ceil(replicas.max(1))) % nodes)
        .collect()
}

fn wall_clock() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The observation an agent on `node` has of one replica of workload `w`: what the image
/// does, from events through the model, as the agent's learner records them.
fn base_observation(args: &Args, w: usize, node: usize, replica: ReplicaId) -> Observation {
    let now = wall_clock();
    let key = WorkloadKey {
        namespace: namespace_name(w % args.namespaces),
        owner_kind: "Deployment".into(),
        owner_name: workload_name(w),
        container: "app".into(),
    };
    let digest = format!("sha256:{:064x}", w + 1);
    let mut o = Observation::new(key, &digest, &node_name(node), now);
    o.attach_replica(replica, false, now);
    let limits = Limits::DEFAULT;
    let process = |exe, uid| Process {
        exe,
        file_name: None,
        argv: &[],
        uid,
        exec_session: false,
        in_image: Some(true),
    };
    let server = process(PROCESSES[0].0, PROCESSES[0].1);
    // Workloads differ a little: not all of them use every syscall, file and process.
    for (i, (exe, uid)) in PROCESSES.iter().enumerate() {
        if i < 3 || (w + i).is_multiple_of(3) {
            o.observe(&Event::exec(process(exe, *uid)), replica, now, &limits);
        }
    }
    for (i, name) in SYSCALLS.iter().enumerate() {
        if !(w + i).is_multiple_of(5) {
            let e = Event {
                process: server,
                kind: EventKind::Syscall { name },
            };
            o.observe(&e, replica, now, &limits);
        }
    }
    for path in FILES {
        let e = Event {
            process: server,
            kind: EventKind::File {
                path,
                access: Access::READ,
            },
        };
        o.observe(&e, replica, now, &limits);
    }
    let peers = [
        ("10.96.0.10", 53, Protocol::Udp),
        ("10.96.0.10", 53, Protocol::Tcp),
        ("10.96.12.40", 5432, Protocol::Tcp),
        ("10.96.30.7", 6379, Protocol::Tcp),
        ("10.96.44.2", 443, Protocol::Tcp),
    ];
    for (ip, port, protocol) in peers {
        let e = Event {
            process: server,
            kind: EventKind::Connect {
                ip: ip.parse().expect("literal address"),
                port,
                protocol,
            },
        };
        o.observe(&e, replica, now, &limits);
    }
    let e = Event {
        process: server,
        kind: EventKind::Listen {
            port: 8080,
            protocol: Protocol::Tcp,
        },
    };
    o.observe(&e, replica, now, &limits);
    o
}

/// Records something new in `r` (a file prefix no write carried before, and a new backend
/// peer every fourth time) and returns the file prefix, as the profile will hold it.
fn something_new(r: &mut Replica, node: usize) -> String {
    r.writes += 1;
    let now = wall_clock();
    let path = format!("/var/cache/server/n{node:03}w{:02}", r.writes);
    let server = Process {
        exe: PROCESSES[0].0,
        file_name: None,
        argv: &[],
        uid: PROCESSES[0].1,
        exec_session: false,
        in_image: Some(true),
    };
    let e = Event {
        process: server,
        kind: EventKind::File {
            path: &path,
            access: Access::READ | Access::WRITE,
        },
    };
    r.observation.observe(&e, r.replica, now, &Limits::DEFAULT);
    if r.writes.is_multiple_of(4) {
        let ip = std::net::Ipv4Addr::new(10, 88, (node % 250) as u8, (r.writes % 250) as u8 + 1);
        let e = Event {
            process: server,
            kind: EventKind::Connect {
                ip: ip.into(),
                port: 8443,
                protocol: Protocol::Tcp,
            },
        };
        r.observation.observe(&e, r.replica, now, &Limits::DEFAULT);
    }
    learned_path(&path).expect("an absolute path is learnable")
}

/// Written file prefixes not yet seen in their profile, per (namespace, workload).
#[derive(Default)]
struct Pending {
    waiting: HashMap<(String, String), Vec<(String, Instant)>>,
    /// Write-to-merge latencies of the merges seen, with when they were seen.
    merged: Vec<(Instant, Duration)>,
}

impl Pending {
    fn outstanding(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }
}

/// Counters shared by the writers.
#[derive(Default)]
struct Writes {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Operator memory (kB) and CPU time (ticks), from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    rss_kb: u64,
    hwm_kb: u64,
    cpu_ticks: u64,
}

fn read_proc(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the operator (pid {pid}) is gone"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unreadable {line:?}"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        cpu_ticks: ticks(11) + ticks(12),
    })
}

/// Linux reports process CPU time in USER_HZ ticks, which is 100 on every architecture
/// the kernel exports to user space through /proc.
const TICKS_PER_SECOND: f64 = 100.0;

/// `herdwatch_operator_reconcile_total{controller="profile",result="ok"}` from /metrics.
async fn profile_reconciles(addr: &str) -> anyhow::Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the operator's /metrics at {addr}"))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("herdwatch_operator_reconcile_total{")
                && l.contains(r#"controller="profile""#)
                && l.contains(r#"result="ok""#)
        })
        .context("the operator's /metrics has no herdwatch_operator_reconcile_total{controller=\"profile\",result=\"ok\"}")?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    Ok(value
        .parse::<f64>()
        .with_context(|| format!("unreadable {line:?}"))? as u64)
}

/// What one phase measured.
struct PhaseResult {
    name: String,
    seconds: f64,
    written: u64,
    failed: u64,
    merged: usize,
    latencies: Vec<Duration>,
    rss_max_kb: u64,
    hwm_kb: u64,
    cpu_seconds: f64,
    reconciles: u64,
    backlog: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 * 1024.0 / 1e6)
}

impl PhaseResult {
    fn row(&self) -> String {
        let rate = |n: f64| {
            if self.seconds > 0.0 {
                format!("{:.1}", n / self.seconds)
            } else {
                "-".into()
            }
        };
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let lat = match (percentile(&sorted, 0.5), percentile(&sorted, 0.99)) {
            (Some(a), Some(b)) => format!("{:.2} s / {:.2} s", a.as_secs_f64(), b.as_secs_f64()),
            _ => "-".into(),
        };
        let per_cpu = if self.cpu_seconds > 0.0 && self.merged > 0 {
            format!(
                "; {:.0} merges per CPU-s",
                self.merged as f64 / self.cpu_seconds
            )
        } else {
            String::new()
        };
        let share = if self.seconds > 0.0 {
            100.0 * self.cpu_seconds / self.seconds
        } else {
            0.0
        };
        format!(
            "| {} | {:.0} s | {} ({} failed) | {} | {} | {} | {} | {:.1} s ({share:.0}% of a core{per_cpu}) | {} |",
            self.name,
            self.seconds,
            rate(self.written as f64),
            self.failed,
            rate(self.merged as f64),
            lat,
            mb(self.rss_max_kb),
            mb(self.hwm_kb),
            self.cpu_seconds,
            rate(self.reconciles as f64),
        )
    }
}

/// Everything the phases share.
struct Bench {
    args: Args,
    client: Client,
    /// Per node, its replicas.
    nodes: Vec<Mutex<Vec<Replica>>>,
    pending: Arc<Mutex<Pending>>,
    writes: Writes,
}

impl Bench {
    /// Applies `r`'s observation as the agent does, expecting `marker` in the profile.
    async fn publish(&self, node: usize, index: usize) {
        let (ns, workload, marker, object) = {
            let mut replicas = self.nodes[node].lock().expect("no panics while held");
            let r = &mut replicas[index];
            let marker = something_new(r, node);
            let object = BehaviorObservation::from(&r.observation);
            (
                namespace_name(r.workload % self.args.namespaces),
                workload_name(r.workload),
                marker,
                object,
            )
        };
        let key = (ns.clone(), workload);
        self.pending
            .lock()
            .expect("no panics while held")
            .waiting
            .entry(key.clone())
            .or_default()
            .push((marker.clone(), Instant::now()));
        let api: Api<BehaviorObservation> = Api::namespaced(self.client.clone(), &ns);
        let name = object.name_any();
        let params = PatchParams::apply(AGENT_FIELD_MANAGER).force();
        match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(_) => {
                self.writes.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                eprintln!("write of {ns}/{name} failed: {error}");
                self.writes.failed.fetch_add(1, Ordering::Relaxed);
                let mut p = self.pending.lock().expect("no panics while held");
                if let Some(list) = p.waiting.get_mut(&key) {
                    list.retain(|(m, _)| *m != marker);
                }
            }
        }
    }

    /// Every node publishes every one of its observations once, one after the other.
    async fn seed(self: &Arc<Self>) {
        let tasks: Vec<_> = (0..self.nodes.len())
            .map(|node| {
                let bench = self.clone();
                tokio::spawn(async move {
                    let n = bench.nodes[node]
                        .lock()
                        .expect("no panics while held")
                        .len();
                    for i in 0..n {
                        bench.publish(node, i).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Each node, every interval, changes and publishes `per_round` of its observations
    /// (round-robin), until `stop`.
    async fn load(self: &Arc<Self>, per_round: usize, until: Instant) {
        let tasks: Vec<_> = (0..self.nodes.len())
            .map(|node| {
                let bench = self.clone();
                tokio::spawn(async move {
                    let n = bench.nodes[node]
                        .lock()
                        .expect("no panics while held")
                        .len();
                    if n == 0 {
                        return;
                    }
                    // Nodes start their intervals at different moments, as agents do.
                    let offset = bench
                        .args
                        .interval
                        .mul_f64(node as f64 / bench.nodes.len() as f64);
                    tokio::time::sleep(offset).await;
                    let mut next = 0usize;
                    let mut tick = tokio::time::interval(bench.args.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        if Instant::now() >= until {
                            return;
                        }
                        for _ in 0..per_round.min(n) {
                            if Instant::now() >= until {
                                return;
                            }
                            bench.publish(node, next % n).await;
                            next += 1;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// A phase of `changes` new entries per node and interval (at most `per_node`), for
    /// the benchmark's phase duration; `noun` agrees with the count in the label.
    async fn load_phase(
        self: &Arc<Self>,
        label: &str,
        noun: &str,
        changes: usize,
        per_node: usize,
    ) -> anyhow::Result<PhaseResult> {
        let a = &self.args;
        let per_round = changes.min(per_node);
        let offered = (a.nodes * per_round) as f64 / a.interval.as_secs_f64();
        self.phase(
            &format!(
                "{label}: {} nodes × {per_round} {noun} per {:?} (≈{offered:.0}/s offered)",
                a.nodes, a.interval
            ),
            self.load(changes, Instant::now() + a.phase),
            false,
        )
        .await
    }

    /// Runs `work`, sampling the operator every second, then waits up to the timeout for the
    /// writes' merges; counts the merges seen within the phase's time.
    async fn phase<F>(&self, name: &str, work: F, drain: bool) -> anyhow::Result<PhaseResult>
    where
        F: std::future::Future<Output = ()>,
    {
        let pid = self.args.operator_pid;
        let before = read_proc(pid)?;
        let reconciles_before = profile_reconciles(&self.args.operator_metrics).await?;
        let written_before = self.writes.ok.load(Ordering::Relaxed);
        let failed_before = self.writes.failed.load(Ordering::Relaxed);
        let start = Instant::now();
        let done = AtomicBool::new(false);
        let rss_max = AtomicU64::new(before.rss_kb);
        let sampler = async {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = read_proc(pid) {
                    rss_max.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let work = async {
            work.await;
            if drain {
                let deadline = Instant::now() + self.args.timeout;
                while self
                    .pending
                    .lock()
                    .expect("no panics while held")
                    .outstanding()
                    > 0
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            done.store(true, Ordering::Relaxed);
        };
        tokio::join!(sampler, work);
        let end = Instant::now();
        let after = read_proc(pid)?;
        let reconciles_after = profile_reconciles(&self.args.operator_metrics).await?;
        let mut p = self.pending.lock().expect("no panics while held");
        let latencies: Vec<Duration> = p
            .merged
            .iter()
            .filter(|(at, _)| *at >= start && *at <= end)
            .map(|(_, l)| *l)
            .collect();
        p.merged.retain(|(at, _)| *at > end);
        Ok(PhaseResult {
            name: name.to_owned(),
            seconds: end.duration_since(start).as_secs_f64(),
            written: self.writes.ok.load(Ordering::Relaxed) - written_before,
            failed: self.writes.failed.load(Ordering::Relaxed) - failed_before,
            merged: latencies.len(),
            latencies,
            rss_max_kb: rss_max.load(Ordering::Relaxed).max(after.rss_kb),
            hwm_kb: after.hwm_kb,
            cpu_seconds: (after.cpu_ticks - before.cpu_ticks) as f64 / TICKS_PER_SECOND,
            reconciles: reconciles_after.saturating_sub(reconciles_before),
            backlog: p.outstanding(),
        })
    }

    /// Waits until every write so far is merged (or the timeout).
    async fn drain(&self) -> usize {
        let deadline = Instant::now() + self.args.timeout;
        loop {
            let left = self
                .pending
                .lock()
                .expect("no panics while held")
                .outstanding();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Watches the profiles and moves pending file prefixes that reached them to `merged`.
async fn watch_merges(client: Client, pending: Arc<Mutex<Pending>>) -> anyhow::Result<()> {
    let api: Api<BehaviorProfile> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(profile) = events.try_next().await? {
        let ns = profile.namespace().unwrap_or_default();
        let key = (ns, profile.spec.target_ref.name.clone());
        let mut p = pending.lock().expect("no panics while held");
        let Some(list) = p.waiting.get_mut(&key) else {
            continue;
        };
        if list.is_empty() {
            continue;
        }
        let now = Instant::now();
        let files = &profile.spec.allowed.files;
        let mut seen = Vec::new();
        list.retain(|(marker, at)| {
            if files
                .iter()
                .any(|f| f.path.as_deref() == Some(marker.as_str()))
            {
                seen.push((now, now.duration_since(*at)));
                false
            } else {
                true
            }
        });
        p.merged.extend(seen);
    }
    bail!("the watch of BehaviorProfiles ended")
}

async fn count_profiles(client: &Client) -> anyhow::Result<usize> {
    let api: Api<BehaviorProfile> = Api::all(client.clone());
    let mut params = ListParams::default().limit(500);
    let mut n = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        n += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(n),
        }
    }
}

/// Creates the opted-in namespaces and the Deployments (idempotent).
async fn create_workloads(client: &Client, args: &Args) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..args.namespaces {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": namespace_name(i),
                "labels": { LEARN_LABEL: LEARN_ENABLED },
            }
        }))?;
        match namespaces.create(&pp, &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating a namespace"),
        }
    }
    futures::stream::iter(0..args.workloads)
        .map(|w| {
            let client = client.clone();
            let ns = namespace_name(w % args.namespaces);
            async move {
                let name = workload_name(w);
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": { "name": name, "namespace": ns },
                    "spec": {
                        "replicas": 3,
                        "selector": { "matchLabels": { "app": name } },
                        "template": {
                            "metadata": { "labels": { "app": name } },
                            "spec": { "containers": [{ "name": "app", "image": "registry.example/bench/server:1" }] },
                        },
                    },
                }))?;
                match Api::<Deployment>::namespaced(client, &ns)
                    .create(&PostParams::default(), &d)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e).context(format!("creating {ns}/{name}"))),
                }
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.namespaces > 0 && args.nodes > 0 && args.replicas > 0,
        "--namespaces, --nodes and --replicas must be above zero"
    );
    let client = Client::try_default()
        .await
        .context("reading KUBECONFIG for the benchmark's API server")?;
    let started = Instant::now();

    create_workloads(&client, &args).await?;
    eprintln!(
        "created {} Deployments in {} opted-in namespaces in {:.1} s; waiting for the operator's profiles",
        args.workloads,
        args.namespaces,
        started.elapsed().as_secs_f64()
    );
    let profiles_since = Instant::now();
    loop {
        let n = count_profiles(&client).await?;
        if n >= args.workloads {
            eprintln!(
                "{n} BehaviorProfiles exist, {:.1} s after the Deployments",
                profiles_since.elapsed().as_secs_f64()
            );
            break;
        }
        if profiles_since.elapsed() > args.timeout {
            bail!(
                "invalid run: only {n} of {} BehaviorProfiles exist after {:?}",
                args.workloads,
                args.timeout
            );
        }
        read_proc(args.operator_pid)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut nodes: Vec<Vec<Replica>> = (0..args.nodes).map(|_| Vec::new()).collect();
    for w in 0..args.workloads {
        for (k, node) in nodes_of(w, args.replicas, args.nodes)
            .into_iter()
            .enumerate()
        {
            let replica = ReplicaId::from_pod_uid(&format!("{:08x}-0000-4000-8000-{:012x}", w, k));
            nodes[node].push(Replica {
                workload: w,
                replica,
                observation: base_observation(&args, w, node, replica),
                writes: 0,
            });
        }
    }
    let observations: usize = nodes.iter().map(Vec::len).sum();
    let per_node = nodes.iter().map(Vec::len).max().unwrap_or(0);
    let pending = Arc::new(Mutex::new(Pending::default()));
    let watch = tokio::spawn(watch_merges(client.clone(), pending.clone()));
    let bench = Arc::new(Bench {
        args,
        client,
        nodes: nodes.into_iter().map(Mutex::new).collect(),
        pending,
        writes: Writes::default(),
    });
    let a = &bench.args;

    let mut results = Vec::new();
    let seed = bench
        .phase(
            &format!("seed: every node publishes its observations once ({observations})"),
            bench.seed(),
            true,
        )
        .await?;
    if seed.backlog > 0 || seed.merged < observations {
        bail!(
            "invalid run: {} of {observations} seed observations merged within {:?} ({} still waiting)",
            seed.merged,
            a.timeout,
            seed.backlog
        );
    }
    results.push(seed);

    let idle = bench
        .phase(
            &format!("holding {} profiles, nothing new", a.workloads),
            tokio::time::sleep(a.settle),
            false,
        )
        .await?;
    results.push(idle);

    let small = bench
        .load_phase("small load", "change", a.small_changes, per_node)
        .await?;
    results.push(small);
    let left = bench.drain().await;
    ensure!(
        left == 0,
        "invalid run: {left} writes of the small load never merged"
    );

    let full = bench
        .load_phase("busy load", "changes", a.busy_changes, per_node)
        .await?;
    results.push(full);
    let drain_started = Instant::now();
    let left = bench.drain().await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    watch.abort();

    println!();
    println!(
        "| phase | time | observations written/s | merged/s | write→merge p50 / p99 | operator RSS (max sampled) | VmHWM | operator CPU | profile reconciles/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!("{}", r.row());
    }
    println!();
    println!(
        "{} workloads in {} namespaces, {} nodes, {} replicas each ({observations} observations, {per_node} per node at most); busy-load backlog at its end: {}, merged {:.1} s later{}",
        a.workloads,
        a.namespaces,
        a.nodes,
        a.replicas,
        results.last().map_or(0, |r| r.backlog),
        drain_seconds,
        if left > 0 { format!(", {left} never merged") } else { String::new() }
    );
    for r in &results[2..] {
        if r.merged == 0 {
            bail!("invalid run: phase {:?} merged nothing", r.name);
        }
    }
    ensure!(
        left == 0,
        "invalid run: {left} writes of the busy load never merged within {:?}",
        a.timeout
    );
    read_proc(a.operator_pid).context("the operator exited during the run")?;
    Ok(())
}
