//! The node agent's user-space benchmark:
//!
//! 1. agent memory: 110 pod-shaped cgroups (a sandbox and two containers each) are created
//!    under the real cgroup2 mount, the real pipeline walks them, seeds its process table
//!    from the real /proc, holds 110 pods in its pod index, serves its metrics, and replays
//!    a stream of events for those containers (with the eBPF programs attached when this
//!    build has them); then it reads its own VmRSS. Needs root; the cgroups are removed
//!    afterwards, also on failure.
//! 2. pipeline throughput: synthetic events for the same 110 pods, held as ring buffer
//!    bytes, are decoded and attributed (cgroup, process table, pod) on one thread.
//!
//! Run: `cargo bench -p herdwatch-node-agent --bench pipeline`. Under `cargo test` (no
//! `--bench` argument) it runs a short smoke pass of part 2 and says so.

use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herdwatch_abi::{
    as_bytes, decode, Event, ACCESS_CREATE, ACCESS_READ, ACCESS_WRITE, IPPROTO_TCP, IPPROTO_UDP,
    NET_CONNECT, NET_UDP_SEND,
};
use herdwatch_node_agent::attribution::cgroup::{
    find_cgroup2_mount, CgroupResolver, FsCgroupSource, ResolverConfig,
};
use herdwatch_node_agent::attribution::pipeline::Pipeline;
use herdwatch_node_agent::attribution::pods::{
    ContainerKind, ContainerMeta, PodMeta, PodStore, Workload,
};
use herdwatch_node_agent::attribution::procfs::{ProcSnapshot, Procfs};
use herdwatch_node_agent::attribution::proctable::{ProcessTable, TableConfig};
use herdwatch_node_agent::capture::{Capture, CaptureConfig, CaptureError};
use herdwatch_node_agent::metrics::{self, Health, Metrics};
use herdwatch_node_agent::synth::{self, MemCgroups, MemProc};

const PODS: usize = 110;
const CONTAINERS_PER_POD: usize = 2;
const SHIM: u32 = 3;
const COMMAND: &str = "cargo bench -p herdwatch-node-agent --bench pipeline";

/// One container of the synthetic node.
struct Container {
    cgroup_id: u64,
    path: String,
    id: String,
    init_pid: u32,
    /// Processes started in it and not yet exited.
    live: Vec<u32>,
}

struct Node {
    pod_uids: Vec<String>,
    /// Pod cgroups: (id, path).
    pods: Vec<(u64, String)>,
    /// Sandboxes: (id, path).
    sandboxes: Vec<(u64, String)>,
    containers: Vec<Container>,
}

fn hex_id(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = String::with_capacity(64);
    while s.len() < 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(64);
    s
}

fn pod_uid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        0x4f1c_0000 + i,
        i,
        i,
        i,
        0xa3b4_c5d6_0000_u64 + i as u64
    )
}

impl Node {
    /// The node's layout; `cgroup_id` gives each path its id (the real inode, or a
    /// made-up number in memory).
    fn new(root: &str, mut cgroup_id: impl FnMut(&str) -> Result<u64>) -> Result<Self> {
        let mut node = Node {
            pod_uids: Vec::new(),
            pods: Vec::new(),
            sandboxes: Vec::new(),
            containers: Vec::new(),
        };
        let mut pid = 10_000;
        for p in 0..PODS {
            let uid = pod_uid(p);
            let pod_path = format!("{root}/kubepods/burstable/pod{uid}");
            node.pods.push((cgroup_id(&pod_path)?, pod_path.clone()));
            let sandbox = format!("{pod_path}/{}", hex_id(p as u64 * 16));
            node.sandboxes.push((cgroup_id(&sandbox)?, sandbox));
            for c in 0..CONTAINERS_PER_POD {
                let id = hex_id(p as u64 * 16 + 1 + c as u64);
                let path = format!("{pod_path}/{id}");
                node.containers.push(Container {
                    cgroup_id: cgroup_id(&path)?,
                    path,
                    id,
                    init_pid: pid,
                    live: Vec::new(),
                });
                pid += 1;
            }
            node.pod_uids.push(uid);
        }
        Ok(node)
    }

    fn pod_metas(&self) -> Vec<PodMeta> {
        self.pod_uids
            .iter()
            .enumerate()
            .map(|(p, uid)| PodMeta {
                uid: uid.clone(),
                namespace: format!("team-{}", p % 12),
                name: format!("svc-{}-7d4b9c-{p:05}", p % 37),
                labels: Default::default(),
                workload: Workload {
                    kind: "Deployment".into(),
                    name: format!("svc-{}", p % 37),
                    uid: Some(format!("uid-svc-{}", p % 37)),
                },
                containers: (0..CONTAINERS_PER_POD)
                    .map(|c| {
                        let container = &self.containers[p * CONTAINERS_PER_POD + c];
                        ContainerMeta {
                            name: if c == 0 {
                                "app".into()
                            } else {
                                "sidecar".into()
                            },
                            kind: ContainerKind::App,
                            image: format!("registry.local/svc-{}:1.{c}", p % 37),
                            image_id: format!(
                                "registry.local/svc@sha256:{}",
                                hex_id(9_000 + p as u64)
                            ),
                            image_digest: Some(format!("sha256:{}", hex_id(9_000 + p as u64))),
                            runtime: None,
                            container_ids: vec![container.id.clone()],
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

const BINARIES: [&[u8]; 8] = [
    b"/usr/bin/python3.11",
    b"/usr/local/bin/node",
    b"/bin/sh",
    b"/usr/bin/curl",
    b"/app/server",
    b"/usr/sbin/nginx",
    b"/usr/bin/git",
    b"/opt/java/bin/java",
];
const ARGVS: [&[u8]; 8] = [
    b"python3\0-m\0gunicorn\0app:wsgi\0--workers\x004\0--bind\x000.0.0.0:8000\0",
    b"node\0/app/dist/index.js\0--max-old-space-size=512\0",
    b"sh\0-c\0/app/healthcheck.sh --timeout 3\0",
    b"curl\0-fsS\0http://localhost:8080/healthz\0",
    b"/app/server\0--config\0/etc/app/config.yaml\0--log-level=info\0",
    b"nginx: worker process\0",
    b"git\0fetch\0--depth=1\0origin\0main\0",
    b"java\0-Xmx1g\0-jar\0/app/service.jar\0--spring.profiles.active=prod\0",
];
const PATHS: [&[u8]; 12] = [
    b"/etc/ld.so.cache",
    b"/lib/x86_64-linux-gnu/libc.so.6",
    b"/usr/lib/python3.11/encodings/__init__.py",
    b"/app/node_modules/express/lib/router/index.js",
    b"/etc/app/config.yaml",
    b"/var/cache/app/session-",
    b"/tmp/upload-",
    b"/proc/self/status",
    b"/etc/resolv.conf",
    b"/usr/share/zoneinfo/UTC",
    b"/var/log/app/access.log",
    b"/etc/ssl/certs/ca-certificates.crt",
];

/// A deterministic event stream over a node: the container inits first, then a steady
/// mix in which processes start, work and exit.
struct Stream<'n> {
    node: &'n mut Node,
    rng: u64,
    next_pid: u32,
    ktime: u64,
    started: usize,
    /// Percent of events that are execs (and as many exits).
    exec_percent: u64,
}

impl<'n> Stream<'n> {
    fn new(node: &'n mut Node, exec_percent: u64) -> Self {
        Stream {
            node,
            rng: 0x2545_f491_4f6c_dd1d,
            next_pid: 100_000,
            ktime: 1,
            started: 0,
            exec_percent,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn next_event(&mut self) -> Event {
        self.ktime += 1_000;
        if self.started < self.node.containers.len() {
            let c = &self.node.containers[self.started];
            self.started += 1;
            return synth::exec(
                c.init_pid,
                SHIM,
                0,
                c.cgroup_id,
                c.init_pid.into(),
                b"/app/server",
                ARGVS[4],
            );
        }
        let r = self.rand();
        let ci = (r >> 16) as usize % self.node.containers.len();
        let roll = r % 100;
        let e = self.exec_percent;
        let ktime = self.ktime;
        let c = &mut self.node.containers[ci];
        let pick = |live: &[u32], r: u64| {
            if live.is_empty() || r.is_multiple_of(3) {
                c.init_pid
            } else {
                live[(r >> 40) as usize % live.len()]
            }
        };
        let pid = pick(&c.live, r);
        match roll {
            x if x < e => {
                if c.live.len() >= 16 {
                    let gone = c.live.swap_remove(0);
                    return synth::exit(gone, c.cgroup_id, 0);
                }
                let child = self.next_pid;
                self.next_pid = if self.next_pid >= 4_000_000 {
                    100_000
                } else {
                    self.next_pid + 1
                };
                let b = (r >> 8) as usize % BINARIES.len();
                let ev = synth::exec(child, pid, 1000, c.cgroup_id, ktime, BINARIES[b], ARGVS[b]);
                c.live.push(child);
                ev
            }
            x if x < 2 * e => match c.live.pop() {
                Some(gone) => synth::exit(gone, c.cgroup_id, 0),
                None => synth::syscall(c.init_pid, c.cgroup_id, 39),
            },
            x if x < 2 * e + 20 => synth::syscall(pid, c.cgroup_id, ((r >> 24) % 335) as u32),
            x if x < 2 * e + 45 => {
                if r & 1 == 0 {
                    let d = [10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8];
                    synth::net(
                        pid,
                        c.cgroup_id,
                        NET_CONNECT,
                        IPPROTO_TCP,
                        d,
                        [443, 5432, 6379, 8080][(r >> 32) as usize % 4],
                    )
                } else {
                    synth::net(
                        pid,
                        c.cgroup_id,
                        NET_UDP_SEND,
                        IPPROTO_UDP,
                        [10, 96, 0, 10],
                        53,
                    )
                }
            }
            x if x < 95 => {
                let base = PATHS[(r >> 8) as usize % PATHS.len()];
                let mut path = base.to_vec();
                if base.ends_with(b"-") {
                    path.extend_from_slice(format!("{}", r % 100_000).as_bytes());
                }
                let access = [
                    ACCESS_READ,
                    ACCESS_READ,
                    ACCESS_WRITE | ACCESS_CREATE,
                    ACCESS_READ | ACCESS_WRITE,
                ][(r >> 40) as usize % 4];
                synth::file(pid, c.cgroup_id, &path, access)
            }
            _ => synth::identity(pid, c.cgroup_id, 105, 0, 1000),
        }
    }

    /// Exits for every process still running, so that a replayed recording starts over
    /// from a consistent table.
    fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for c in &mut self.node.containers {
            for pid in c.live.drain(..) {
                out.push(synth::exit(pid, c.cgroup_id, 0));
            }
        }
        out
    }
}

/// Events as the ring buffer would hold them: one byte buffer and record boundaries.
struct Recording {
    bytes: Vec<u8>,
    records: Vec<(usize, usize)>,
}

fn push_record(rec: &mut Recording, event: &Event) {
    let bytes = match event {
        Event::Exec(e) => as_bytes(e),
        Event::Exit(e) => as_bytes(e),
        Event::Syscall(e) => as_bytes(e),
        Event::Net(e) => as_bytes(e),
        Event::File(e) => as_bytes(e),
        Event::Identity(e) => as_bytes(e),
    };
    rec.records.push((rec.bytes.len(), bytes.len()));
    rec.bytes.extend_from_slice(bytes);
}

fn record(node: &mut Node, events: usize, exec_percent: u64) -> Recording {
    let mut rec = Recording {
        bytes: Vec::new(),
        records: Vec::with_capacity(events + 1024),
    };
    let mut stream = Stream::new(node, exec_percent);
    for _ in 0..events {
        let ev = stream.next_event();
        push_record(&mut rec, &ev);
    }
    for ev in stream.finish() {
        push_record(&mut rec, &ev);
    }
    rec
}

fn host_proc() -> MemProc {
    let mut proc = MemProc::default();
    for (pid, ppid, exe) in [
        (1, 0, "/sbin/init"),
        (SHIM, 1, "/usr/bin/containerd-shim-runc-v2"),
    ] {
        proc.procs.insert(
            pid,
            ProcSnapshot {
                pid,
                ppid,
                start_time_ns: 0,
                uid: 0,
                exe: Box::from(exe),
                argv: herdwatch_node_agent::attribution::argv::Argv::from_nul_block(
                    exe.as_bytes(),
                    false,
                ),
                cgroup_path: Some("/".into()),
            },
        );
    }
    proc
}

struct Throughput {
    events: u64,
    elapsed: Duration,
    table_size: u64,
    failures: u64,
}

/// Replays `rec` `rounds` times through decode and the pipeline on this thread.
fn throughput(exec_percent: u64, unique: usize, rounds: usize) -> Result<Throughput> {
    let mut next_id = 1_000;
    let mut node = Node::new("", |_| {
        next_id += 1;
        Ok(next_id)
    })?;
    let mut cgroups = MemCgroups::default();
    cgroups.cgroups.push((1, "/".into()));
    cgroups.cgroups.extend(node.pods.iter().cloned());
    cgroups.cgroups.extend(node.sandboxes.iter().cloned());
    cgroups.cgroups.extend(
        node.containers
            .iter()
            .map(|c| (c.cgroup_id, c.path.clone())),
    );
    let store = Arc::new(PodStore::default());
    store.replace_all(node.pod_metas());
    let rec = record(&mut node, unique, exec_percent);

    let resolver = CgroupResolver::new(cgroups, ResolverConfig::default());
    let mut pipeline = Pipeline::new(
        resolver,
        ProcessTable::new(TableConfig::default()),
        host_proc(),
        Some(store),
    );
    pipeline.seed_from_proc(Instant::now())?;

    // One pass to warm the tables, as a running agent's are.
    let mut events = 0u64;
    let run = |pipeline: &mut Pipeline<MemCgroups, MemProc>| -> Result<()> {
        let mut now = Instant::now();
        for (i, &(off, len)) in rec.records.iter().enumerate() {
            if i % 4096 == 0 {
                now = Instant::now();
            }
            let event = decode(&rec.bytes[off..off + len]).map_err(|e| anyhow::anyhow!("{e}"))?;
            let a = pipeline.process(&event, now);
            black_box((a.process.map(|p| p.pid), a.pod.map(|p| p.container)));
        }
        Ok(())
    };
    run(&mut pipeline)?;
    let warm = pipeline.stats();
    let start = Instant::now();
    for _ in 0..rounds {
        run(&mut pipeline)?;
        events += rec.records.len() as u64;
    }
    let elapsed = start.elapsed();
    let stats = pipeline.stats();
    Ok(Throughput {
        events,
        elapsed,
        table_size: stats.processes,
        failures: stats.failures.iter().sum::<u64>() - warm.failures.iter().sum::<u64>(),
    })
}

/// The bench's cgroups under the real hierarchy; removed on drop, deepest first.
struct BenchCgroups {
    dirs: Vec<PathBuf>,
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("warning: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

fn status_kb(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
    /// Before and right after the eBPF programs were loaded.
    rss_before_capture_kb: u64,
    rss_after_capture_kb: u64,
    /// VmRSS is anonymous memory plus mapped files and shared memory (the ring buffer).
    anon_kb: u64,
    shared_kb: u64,
    processes: u64,
    containers: u64,
    pods: u64,
    events: u64,
    failures: u64,
    map_memory: String,
}

/// Part 1: the agent's memory with 110 pods' worth of real cgroups.
fn memory() -> Result<Memory> {
    let mount = find_cgroup2_mount(Path::new("/proc/self/mountinfo"))?;
    let rel_root = format!("/herdwatch-bench-{}", std::process::id());
    let mut guard = BenchCgroups { dirs: Vec::new() };
    let mut mkdir = |rel: &str| -> Result<u64> {
        let dir = mount.mount_point.join(rel.trim_start_matches('/'));
        if !dir.exists() {
            std::fs::create_dir(&dir).with_context(|| {
                format!(
                    "cannot create cgroup {} (the memory part needs root)",
                    dir.display()
                )
            })?;
            guard.dirs.push(dir.clone());
        }
        Ok(std::fs::metadata(&dir)?.ino())
    };
    for parent in ["", "/kubepods", "/kubepods/burstable"] {
        mkdir(&format!("{rel_root}{parent}"))?;
    }
    let mut node = Node::new(&rel_root, &mut mkdir)?;
    let container_cgroups = node.containers.len() + node.sandboxes.len();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = Arc::new(PodStore::default());
    store.replace_all(node.pod_metas());
    let mut metrics = Metrics::new()?;
    let health = Arc::new(Health::new(Some(store.clone()), Duration::from_secs(60)));
    let addr = runtime.block_on(async {
        let listener = metrics::bind("127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(metrics::serve(listener, metrics.registry(), health.clone()));
        anyhow::Ok(addr)
    })?;

    let rss_before_capture_kb = status_kb("VmRSS:")?;
    let mut capture = match Capture::load(&CaptureConfig::default()) {
        Ok(c) => {
            health.set_attached();
            Some(c)
        }
        Err(CaptureError::NoObject) => None,
        Err(e) => bail!("cannot attach the eBPF programs: {e}"),
    };
    let rss_after_capture_kb = status_kb("VmRSS:")?;
    let map_memory = match &capture {
        Some(c) => format!("{:.1} MB", c.map_memory_bytes() as f64 / 1e6),
        None => "not measured: built with HERDWATCH_SKIP_EBPF".to_owned(),
    };

    let source = FsCgroupSource::new(mount.clone());
    let resolver = CgroupResolver::new(source, ResolverConfig::default());
    let mut pipeline = Pipeline::new(
        resolver,
        ProcessTable::new(TableConfig::default()),
        Procfs::new("/proc"),
        Some(store.clone()),
    );
    pipeline.seed_from_proc(Instant::now())?;

    let mut stream = Stream::new(&mut node, 5);
    let mut batch = Vec::new();
    let mut events = 0u64;
    for _ in 0..200 {
        let now = Instant::now();
        for _ in 0..10_000 {
            let event = stream.next_event();
            black_box(pipeline.process(&event, now).process.map(|p| p.pid));
        }
        events += 10_000;
        // The host's own events, too, when the programs are attached.
        if let Some(c) = capture.as_mut() {
            c.try_drain(&mut batch);
            for event in batch.drain(..) {
                pipeline.process(&event, now);
                events += 1;
            }
        }
    }
    let stats = pipeline.stats();
    metrics.update(&stats, Some(&store));
    // A scrape, as Prometheus does.
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
        let mut body = String::new();
        conn.read_to_string(&mut body).await?;
        if !body.contains("herdwatch_agent_pods_tracked 110") {
            bail!("the scrape does not show the 110 pods:\n{body}");
        }
        anyhow::Ok(())
    })?;
    let walk_sees = pipeline.cgroups().stats().containers;
    if walk_sees < container_cgroups as u64 {
        bail!(
            "the cgroup walk found {walk_sees} containers, expected at least {container_cgroups}"
        );
    }
    let memory = Memory {
        rss_kb: status_kb("VmRSS:")?,
        hwm_kb: status_kb("VmHWM:")?,
        rss_before_capture_kb,
        rss_after_capture_kb,
        anon_kb: status_kb("RssAnon:")?,
        shared_kb: status_kb("RssFile:")? + status_kb("RssShmem:")?,
        processes: stats.processes,
        containers: container_cgroups as u64,
        pods: stats.pods,
        events,
        failures: stats.failures.iter().sum(),
        map_memory,
    };
    drop(pipeline);
    drop(capture);
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(guard);
    Ok(memory)
}

fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let t = throughput(5, 20_000, 1)?;
        println!(
            "pipeline bench smoke run: {} events through the pipeline, {} attribution failures (run `{COMMAND}` for figures)",
            t.events, t.failures
        );
        if t.failures != 0 {
            bail!("synthetic events of known pods must attribute without failures");
        }
        return Ok(());
    }

    // Memory first, before the throughput part's recordings grow the heap.
    let mem = memory();
    let steady = throughput(5, 500_000, 10)?;
    let storm = throughput(40, 200_000, 10)?;

    println!();
    println!("herdwatch node agent, user space ({COMMAND})");
    println!();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    for (name, t) in [
        (
            "steady mix: 5% exec, 5% exit, 20% syscall, 25% net, 40% file, 5% identity",
            &steady,
        ),
        ("exec storm: 40% exec, 40% exit", &storm),
    ] {
        let rate = t.events as f64 / t.elapsed.as_secs_f64();
        println!(
            "| pipeline, {name}; decode + cgroup + process table + pod, 1 thread | {} events/s ({:.0} ns/event; {} events, {} failures, table {}) | ≥ 1,000,000 events/s |",
            fmt_int(rate as u64),
            t.elapsed.as_nanos() as f64 / t.events as f64,
            fmt_int(t.events),
            t.failures,
            t.table_size,
        );
    }
    match &mem {
        Ok(m) => {
            println!(
                "| agent RSS, {} pods ({} container cgroups, {} processes in the table, {} events replayed, {} failures) | {:.1} MB (peak {:.1} MB) | ≤ 50 MB |",
                m.pods,
                m.containers,
                m.processes,
                fmt_int(m.events),
                m.failures,
                m.rss_kb as f64 / 1024.0,
                m.hwm_kb as f64 / 1024.0,
            );
            println!(
                "| agent RSS breakdown | before loading the eBPF programs {:.1} MB, right after {:.1} MB; at the end {:.1} MB anonymous + {:.1} MB mapped (ring buffer, binary) | |",
                m.rss_before_capture_kb as f64 / 1024.0,
                m.rss_after_capture_kb as f64 / 1024.0,
                m.anon_kb as f64 / 1024.0,
                m.shared_kb as f64 / 1024.0,
            );
            println!(
                "| BPF map memory (kernel, not in RSS) | {} | reported |",
                m.map_memory
            );
        }
        Err(e) => println!("| agent RSS, {PODS} pods | not measured: {e:#} | ≤ 50 MB |"),
    }
    println!();
    let rate = steady.events as f64 / steady.elapsed.as_secs_f64();
    if rate < 1_000_000.0 {
        bail!("pipeline throughput {rate:.0} events/s is below the goal of 1,000,000");
    }
    if let Ok(m) = &mem {
        if m.rss_kb > 50 * 1024 {
            bail!("agent RSS {} kB is above the goal of 50 MB", m.rss_kb);
        }
    }
    mem.map(|_| ())
}
