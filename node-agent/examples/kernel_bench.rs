//! Kernel-side cost of herdwatch: the same workloads with nothing attached ("off"), with an
//! empty program on the syscall entry tracepoint ("empty hook"), and with the agent's eBPF
//! programs attached and drained as the agent runs them ("herdwatch"), alternated within
//! one run; every figure is a ratio against the "off" runs of the same run.
//!
//! - read+write 512 bytes, /dev/zero to /dev/null, in this thread: the loop of
//!   `dd bs=512`, two syscalls per block;
//! - a getpid loop in this thread: the cheapest syscall there is;
//! - an exec storm: /bin/true spawned and waited for, one after the other, with the exec
//!   events that did not fit in the ring buffer counted.
//!
//! The empty hook separates what the kernel charges for any `tp_btf/sys_enter` program
//! (the syscall slow path it switches every task to, and the program dispatch) from what
//! herdwatch's own instructions add. It runs the syscall workloads only.
//!
//! Costs are CPU time: the scheduler's account of the thread running the loop (and of the
//! exec storm's children), so that time spent waiting for a CPU that other work on the
//! machine holds does not count. That is what a program on a syscall path costs, and the
//! one reading that survives a busy machine; wall-clock ratios are printed as well.
//!
//! With `--enforce other`, the herdwatch runs also have an in-kernel enforcement entry for
//! a cgroup the benchmark is not in (every exec pays the lookup that misses); with
//! `--enforce own`, a deny list that matches nothing for the benchmark's own cgroup (every
//! exec pays the lookup, the hashing of its path and the rule lookups).
//!
//! Run as root: `bench/kernel.sh` (or `cargo run --release --example kernel_bench`).

use std::fs::File;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::programs::BtfTracePoint;
use aya::{include_bytes_aligned, Btf, Ebpf, EbpfLoader};
use clap::{Parser, ValueEnum};
use herdwatch_abi::EventKind;
use herdwatch_node_agent::attribution::cgroup::{find_cgroup2_mount, CgroupSource, FsCgroupSource};
use herdwatch_node_agent::capture::{Capture, CaptureConfig};
use herdwatch_node_agent::evaluate::kernel::{ExecRules, KernelEnforcer};

/// The agent's eBPF object, which also carries the empty benchmark program.
const EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/herdwatch-ebpf.o"));
const EMPTY_PROGRAM: &str = "bench_empty_sys_enter";

/// Measures what herdwatch's eBPF programs add to syscalls and execs.
#[derive(Parser, Debug)]
struct Args {
    /// 512-byte blocks read and written per run.
    #[arg(long, env = "HERDWATCH_BENCH_BLOCKS", default_value_t = 250_000)]
    blocks: u64,
    /// getpid calls per run.
    #[arg(long, env = "HERDWATCH_BENCH_GETPID_CALLS", default_value_t = 500_000)]
    getpid_calls: u64,
    /// Runs of each syscall loop per configuration and round; the one that took the least
    /// CPU time counts.
    #[arg(long, env = "HERDWATCH_BENCH_REPEATS", default_value_t = 5)]
    repeats: usize,
    /// /bin/true executions per measurement.
    #[arg(long, env = "HERDWATCH_BENCH_EXECS", default_value_t = 2_000)]
    execs: u64,
    /// Rounds; each measures every configuration once, in an order that rotates from one
    /// round to the next.
    #[arg(long, env = "HERDWATCH_BENCH_ROUNDS", default_value_t = 21)]
    rounds: usize,
    /// In-kernel enforcement entries present while herdwatch is on.
    #[arg(long, env = "HERDWATCH_BENCH_ENFORCE", value_enum, default_value_t = Enforce::None)]
    enforce: Enforce,
    /// Measure even though other processes hold BPF programs on the syscall tracepoints
    /// (a herdwatch agent of a local cluster, say). Every syscall then already takes the
    /// traced path in the "nothing attached" runs, so the figures understate the cost;
    /// the output says so.
    #[arg(long, env = "HERDWATCH_BENCH_ALLOW_OTHER_HOOKS")]
    allow_other_hooks: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Enforce {
    /// No cgroup is under enforcement.
    None,
    /// One cgroup is, not the benchmark's.
    Other,
    /// The benchmark's own cgroup is, with a deny list that matches none of its programs.
    Own,
}

/// What is attached while a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Off,
    EmptyHook,
    Herdwatch,
}

impl Config {
    const ALL: [Config; 3] = [Config::Off, Config::EmptyHook, Config::Herdwatch];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Config::Off => "nothing attached",
            Config::EmptyHook => "empty tp_btf/sys_enter",
            Config::Herdwatch => "herdwatch",
        }
    }

    /// The empty hook tells nothing about execs: it only runs the syscall workloads.
    fn runs_execs(self) -> bool {
        self != Config::EmptyHook
    }
}

/// A BPF link of another process on a syscall tracepoint.
struct SyscallHook {
    pid: u32,
    command: String,
    tracepoint: String,
}

/// BPF links on the syscall tracepoints held by other processes, found through their open
/// files (`/proc/<pid>/fdinfo` names a link's tracepoint). Any of them switches every
/// syscall to the traced path, which would hide the floor this benchmark measures. Links
/// pinned in bpffs and held by no process are not seen.
fn other_syscall_hooks() -> Result<Vec<SyscallHook>> {
    let own_pid = std::process::id();
    let mut hooks = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        // Processes come and go while this runs: whatever cannot be read is gone.
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            let Some(tracepoint) = info.lines().find_map(|line| line.strip_prefix("tp_name:"))
            else {
                continue;
            };
            let tracepoint = tracepoint.trim();
            if tracepoint.starts_with("sys_enter") || tracepoint.starts_with("sys_exit") {
                let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                hooks.push(SyscallHook {
                    pid,
                    command,
                    tracepoint: tracepoint.to_owned(),
                });
            }
        }
    }
    Ok(hooks)
}

fn describe_hooks(hooks: &[SyscallHook]) -> String {
    hooks
        .iter()
        .map(|hook| format!("pid {} ({}) on {}", hook.pid, hook.command, hook.tracepoint))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cgroup v2 id of this process.
fn own_cgroup_id() -> Result<u64> {
    let mount = find_cgroup2_mount("/proc/self/mountinfo".as_ref())?;
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .context("no cgroup v2 line in /proc/self/cgroup")?;
    FsCgroupSource::new(mount)
        .id_of(path)
        .with_context(|| format!("no cgroup directory for {path}"))
}

/// Writes the enforcement entries `enforce` asks for.
fn enforce(capture: &mut Capture, enforce: Enforce) -> Result<()> {
    let cgroup_id = match enforce {
        Enforce::None => return Ok(()),
        // No cgroup has this id: every exec's lookup misses, as for any cgroup without an
        // entry on a node where others have one.
        Enforce::Other => u64::MAX,
        Enforce::Own => own_cgroup_id()?,
    };
    let rules = ExecRules {
        deny_names: [b"herdwatch-bench-never-run".to_vec()].into(),
        ..ExecRules::default()
    };
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(capture, &[(cgroup_id, Arc::new(rules))].into());
    if enforcer.generation(cgroup_id).is_none() {
        bail!("could not write the enforcement entry");
    }
    Ok(())
}

/// Wall-clock and CPU seconds of one workload run.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    wall: f64,
    cpu: f64,
}

/// One measurement of the workloads under one configuration.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    read_write: Times,
    getpid: Times,
    /// Zero where the configuration does not run execs.
    exec: Times,
    /// Exec events the kernel could not submit (herdwatch only).
    execs_lost: u64,
    /// Exec events submitted (herdwatch only).
    execs_emitted: u64,
    /// Events the drain thread received (herdwatch only).
    drained: u64,
}

/// A loaded capture drained by a thread of its own, as the agent would.
struct Agent {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(Capture, u64)>>,
}

impl Agent {
    fn start(enforcement: Enforce) -> Result<Agent> {
        let mut capture = Capture::load(&CaptureConfig::default()).context("loading capture")?;
        enforce(&mut capture, enforcement)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || -> Result<(Capture, u64)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut drained = 0u64;
            let mut batch = Vec::with_capacity(8192);
            runtime.block_on(async {
                while !stopping.load(Ordering::Relaxed) {
                    let polled = tokio::time::timeout(
                        Duration::from_millis(50),
                        capture.next_batch(&mut batch),
                    )
                    .await;
                    if let Ok(result) = polled {
                        result?;
                    }
                    drained += batch.len() as u64;
                    batch.clear();
                }
                anyhow::Ok(())
            })?;
            Ok((capture, drained))
        });
        Ok(Agent { stop, thread })
    }

    fn stop(self) -> Result<(Capture, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the drain thread panicked"),
        }
    }
}

/// Loads and attaches the empty program; dropping the result detaches it.
fn attach_empty_hook(btf: &Btf) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (run as root)")?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(EMPTY_PROGRAM)
        .with_context(|| format!("the eBPF object has no program {EMPTY_PROGRAM}"))?
        .try_into()?;
    program
        .load("sys_enter", btf)
        .context("loading the empty hook")?;
    program.attach().context("attaching the empty hook")?;
    Ok(ebpf)
}

/// CPU time the calling thread has run, in seconds: the scheduler's own account
/// (`se.sum_exec_runtime`, in ns), which includes the BPF programs run in its syscalls.
fn thread_cpu_secs() -> Result<f64> {
    const PATH: &str = "/proc/thread-self/schedstat";
    let text = std::fs::read_to_string(PATH)
        .with_context(|| format!("reading {PATH} (a kernel with CONFIG_SCHED_INFO)"))?;
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("no run time in {PATH}: {text}"))?;
    Ok(nanos as f64 / 1e9)
}

/// CPU time of this process's children that have been waited for, in seconds
/// (`cutime + cstime` of /proc/self/stat, in USER_HZ ticks, which the x86_64 ABI fixes
/// at 100 per second).
fn children_cpu_secs() -> Result<f64> {
    const USER_HZ: f64 = 100.0;
    let text = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name may hold spaces; the fields after it do not. cutime and cstime are
    // the 16th and 17th fields, the 14th and 15th after the name.
    let after_name = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .map(|ticks| ticks as f64)
            .with_context(|| format!("no field {} in /proc/self/stat", index + 3))
    };
    Ok((ticks(13)? + ticks(14)?) / USER_HZ)
}

/// Runs `work` on this thread and returns its wall-clock and CPU time; `children` counts
/// the CPU time of the children it waited for too.
fn timed(children: bool, work: impl FnOnce() -> Result<()>) -> Result<Times> {
    let children_cpu = || {
        if children {
            children_cpu_secs()
        } else {
            Ok(0.0)
        }
    };
    let (cpu_before, children_before) = (thread_cpu_secs()?, children_cpu()?);
    let start = Instant::now();
    work()?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs()? - cpu_before + children_cpu()? - children_before;
    Ok(Times { wall, cpu })
}

/// What `dd if=/dev/zero of=/dev/null bs=512` does: a 512-byte read and write per block.
fn read_write_loop(blocks: u64) -> Result<Times> {
    let mut zero = File::open("/dev/zero").context("opening /dev/zero")?;
    let mut null = File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let mut block = [0u8; 512];
    timed(false, || {
        for _ in 0..blocks {
            // One read(2) and one write(2) each: /dev/zero fills and /dev/null takes all
            // 512 bytes at once.
            zero.read_exact(&mut block)?;
            null.write_all(&block)?;
        }
        Ok(())
    })
}

fn getpid_loop(calls: u64) -> Result<Times> {
    timed(false, || {
        let mut sum = 0u64;
        for _ in 0..calls {
            // A real getpid(2) each time: glibc stopped caching the pid in 2.25.
            sum = sum.wrapping_add(u64::from(std::process::id()));
        }
        std::hint::black_box(sum);
        Ok(())
    })
}

fn exec_storm(execs: u64) -> Result<Times> {
    timed(true, || {
        for _ in 0..execs {
            let status = Command::new("/bin/true")
                .status()
                .context("running /bin/true")?;
            if !status.success() {
                bail!("/bin/true failed: {status}");
            }
        }
        Ok(())
    })
}

/// The run of `work`, out of `repeats`, that took the least CPU time.
fn least_cpu(repeats: usize, mut work: impl FnMut() -> Result<Times>) -> Result<Times> {
    let mut least = work()?;
    for _ in 1..repeats {
        let times = work()?;
        if times.cpu < least.cpu {
            least = times;
        }
    }
    Ok(least)
}

/// What a configuration attached; dropping it detaches.
enum Attached {
    Nothing,
    /// Held only: dropping it detaches the program.
    EmptyHook {
        _ebpf: Ebpf,
    },
    Herdwatch(Agent),
}

fn attach(args: &Args, btf: &Btf, config: Config) -> Result<Attached> {
    let attached = match config {
        Config::Off => Attached::Nothing,
        Config::EmptyHook => Attached::EmptyHook {
            _ebpf: attach_empty_hook(btf)?,
        },
        Config::Herdwatch => Attached::Herdwatch(Agent::start(args.enforce)?),
    };
    // Let the first sightings of every cgroup on the machine pass before measuring.
    std::thread::sleep(Duration::from_millis(200));
    Ok(attached)
}

fn measure(args: &Args, btf: &Btf, config: Config) -> Result<Sample> {
    let attached = attach(args, btf, config)?;
    // The least disturbed of a few short runs: other work on the machine (on the other
    // hyperthread of the core, say) only ever slows a run down.
    let mut sample = Sample {
        read_write: least_cpu(args.repeats, || read_write_loop(args.blocks))?,
        getpid: least_cpu(args.repeats, || getpid_loop(args.getpid_calls))?,
        ..Sample::default()
    };
    if config.runs_execs() {
        sample.exec = exec_storm(args.execs)?;
    }
    if let Attached::Herdwatch(agent) = attached {
        // Give the drain thread a moment to catch up before its counters are read.
        std::thread::sleep(Duration::from_millis(100));
        let (capture, drained) = agent.stop()?;
        let exec = EventKind::Exec as usize;
        sample.execs_lost = capture.lost_counts()?[exec];
        sample.execs_emitted = capture.emitted_counts()?[exec];
        sample.drained = drained;
        if sample.execs_emitted + sample.execs_lost < args.execs {
            bail!(
                "the storm ran {} execs but the capture saw only {}: is it attached?",
                args.execs,
                sample.execs_emitted + sample.execs_lost
            );
        }
    }
    Ok(sample)
}

/// The kernel's account of one sys_enter program while the syscall loops ran.
#[derive(Clone, Copy, Debug)]
struct ProgramRuns {
    /// Mean run time of the program body, without the tracepoint's dispatch around it.
    ns_per_run: f64,
    runs: u64,
    /// Size of the whole program (every path), as the kernel holds it.
    instructions: u32,
    /// Run time of the exec and exit programs per exec of a storm (herdwatch only).
    exec_us_per_exec: f64,
}

/// The ids of the programs loaded in the kernel.
fn loaded_program_ids() -> Result<Vec<u32>> {
    aya::programs::loaded_programs()
        .map(|info| Ok(info?.id()))
        .collect()
}

/// Run time and count of the loaded program `id`.
fn program_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("BPF program {id} is gone")
}

/// Runs the syscall loops under `config` with the kernel's BPF run time statistics on
/// (BPF_ENABLE_STATS, for as long as the returned descriptor is open) and reads the
/// account of the configuration's sys_enter program. The statistics cost every program
/// two clock reads per run, so they are never on while the ratios are measured.
fn program_runs(args: &Args, btf: &Btf, config: Config) -> Result<ProgramRuns> {
    let name = match config {
        Config::Off => bail!("nothing attached: no program to account for"),
        // The kernel keeps the first 15 bytes of a program's name.
        Config::EmptyHook => &EMPTY_PROGRAM[..15],
        Config::Herdwatch => "sys_enter",
    };
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run time statistics")?;
    // Programs that other processes load meanwhile (tests, an agent restarting) could be
    // taken for ours: when the new ones are not exactly ours, try again.
    let mut attempts = 0;
    let (attached, before, id, instructions) = loop {
        let before = loaded_program_ids()?;
        let attached = attach(args, btf, config)?;
        let new_named = |wanted: &str| -> Result<Vec<(u32, u32)>> {
            let mut found = Vec::new();
            for info in aya::programs::loaded_programs() {
                let info = info?;
                if !before.contains(&info.id()) && info.name_as_str() == Some(wanted) {
                    found.push((info.id(), info.size_translated().unwrap_or(0) / 8));
                }
            }
            Ok(found)
        };
        let found = new_named(name)?;
        let exec_programs = match config {
            Config::Herdwatch => new_named("sched_process_e")?.len(),
            _ => 2,
        };
        if let ([(id, instructions)], 2) = (&found[..], exec_programs) {
            break (attached, before, *id, *instructions);
        }
        attempts += 1;
        if attempts == 5 {
            bail!(
                "other processes keep loading programs named {name}: cannot tell ours \
                 apart"
            );
        }
        drop(attached);
        std::thread::sleep(Duration::from_secs(1));
    };
    let (time_before, runs_before) = program_stats(id)?;
    for _ in 0..args.repeats {
        read_write_loop(args.blocks)?;
        getpid_loop(args.getpid_calls)?;
    }
    let (time_after, runs_after) = program_stats(id)?;
    let runs = runs_after - runs_before;
    // sched_process_exec and sched_process_exit, both "sched_process_e" to the kernel:
    // together, what one exec (and its exit) costs in programs.
    let mut exec_us_per_exec = 0.0;
    if config == Config::Herdwatch {
        let exec_programs: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(|info| info.ok())
            .filter(|info| {
                !before.contains(&info.id()) && info.name_as_str() == Some("sched_process_e")
            })
            .map(|info| info.id())
            .collect();
        if exec_programs.len() != 2 {
            bail!(
                "expected the exec and exit programs, found {}",
                exec_programs.len()
            );
        }
        let total = |ids: &[u32]| -> Result<Duration> {
            ids.iter().map(|&id| Ok(program_stats(id)?.0)).sum()
        };
        let execs = (args.execs / 4).max(1);
        let before_storm = total(&exec_programs)?;
        exec_storm(execs)?;
        let storm = total(&exec_programs)? - before_storm;
        exec_us_per_exec = storm.as_nanos() as f64 / 1e3 / execs as f64;
    }
    drop(attached);
    Ok(ProgramRuns {
        ns_per_run: (time_after - time_before).as_nanos() as f64 / runs.max(1) as f64,
        runs,
        instructions,
        exec_us_per_exec,
    })
}

/// Per-round samples of every configuration.
#[derive(Default)]
struct Samples {
    by_config: [Vec<Sample>; 3],
}

impl Samples {
    fn of(&self, config: Config) -> &[Sample] {
        &self.by_config[config.index()]
    }
}

/// One workload of the result table.
struct Workload {
    name: String,
    /// Operations per measurement (syscalls, execs).
    ops: f64,
    times: fn(&Sample) -> Times,
    goal: &'static str,
    /// The unit of the per-operation columns, and the factor from seconds to it.
    unit: &'static str,
    scale: f64,
    configs: &'static [Config],
}

/// One configuration's times against a baseline's, over all rounds.
struct Comparison {
    /// Fastest baseline run and fastest run, per operation.
    best_base: f64,
    best: f64,
    /// Per-round throughput ratios (= baseline time / time): each round's runs were close
    /// in time, so a ratio cancels slow drift in the machine's load.
    ratios: Vec<f64>,
    /// Per-round seconds added per operation.
    added: Vec<f64>,
}

impl Comparison {
    fn new(base: &[f64], other: &[f64], ops: f64) -> Comparison {
        let best = |times: &[f64]| times.iter().copied().fold(f64::MAX, f64::min) / ops;
        Comparison {
            best_base: best(base),
            best: best(other),
            ratios: base.iter().zip(other).map(|(a, b)| a / b).collect(),
            added: base.iter().zip(other).map(|(a, b)| (b - a) / ops).collect(),
        }
    }

    /// Fastest baseline run against fastest run: the cost itself, least disturbed by other
    /// load.
    fn best_ratio(&self) -> f64 {
        self.best_base / self.best
    }

    fn best_added(&self) -> f64 {
        self.best - self.best_base
    }
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// "median [min-max]" of ratios.
fn spread(values: &[f64]) -> String {
    let low = values.iter().copied().fold(f64::MAX, f64::min);
    let high = values.iter().copied().fold(f64::MIN, f64::max);
    format!("{:.3} [{low:.3}-{high:.3}]", median(values))
}

fn print_table(args: &Args, samples: &Samples) {
    const SYSCALL_CONFIGS: &[Config] = &[Config::Off, Config::EmptyHook, Config::Herdwatch];
    let workloads = [
        Workload {
            name: format!("read+write bs=512 (as dd), {} blocks", args.blocks),
            ops: 2.0 * args.blocks as f64,
            times: |s| s.read_write,
            goal: ">= 0.95, <= 20 ns",
            unit: "ns/syscall",
            scale: 1e9,
            configs: SYSCALL_CONFIGS,
        },
        Workload {
            name: format!("getpid loop, {} calls", args.getpid_calls),
            ops: args.getpid_calls as f64,
            times: |s| s.getpid,
            goal: ">= 0.95, <= 20 ns",
            unit: "ns/syscall",
            scale: 1e9,
            configs: SYSCALL_CONFIGS,
        },
        Workload {
            name: format!("exec storm, {} x fork+exec /bin/true", args.execs),
            ops: args.execs as f64,
            times: |s| s.exec,
            goal: ">= 0.97, 0 lost",
            unit: "us/exec",
            scale: 1e6,
            configs: &[Config::Off, Config::Herdwatch],
        },
    ];
    println!(
        "| workload | attached | CPU per op (best) | ratio, best | ratio, median [range] | goal | added: best | added: median | wall-clock ratio, median [range] |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for workload in &workloads {
        let cpu = |config: Config| -> Vec<f64> {
            samples
                .of(config)
                .iter()
                .map(|s| (workload.times)(s).cpu)
                .collect()
        };
        let wall = |config: Config| -> Vec<f64> {
            samples
                .of(config)
                .iter()
                .map(|s| (workload.times)(s).wall)
                .collect()
        };
        let per_op = |secs: f64| format!("{:.1} {}", secs * workload.scale, workload.unit);
        let off = cpu(Config::Off);
        let best_off = off.iter().copied().fold(f64::MAX, f64::min) / workload.ops;
        println!(
            "| {} | {} | {} | 1 | | | | | |",
            workload.name,
            Config::Off.label(),
            per_op(best_off)
        );
        // Each configuration against nothing attached, then herdwatch against the empty
        // hook: what herdwatch's own instructions add.
        let mut comparisons: Vec<(Config, Config, String)> = workload.configs[1..]
            .iter()
            .map(|&config| (Config::Off, config, config.label().to_owned()))
            .collect();
        if workload.configs.contains(&Config::EmptyHook) {
            comparisons.push((
                Config::EmptyHook,
                Config::Herdwatch,
                "herdwatch over the empty hook".to_owned(),
            ));
        }
        for (base, config, label) in comparisons {
            let vs = Comparison::new(&cpu(base), &cpu(config), workload.ops);
            let wall_ratios: Vec<f64> = wall(base)
                .iter()
                .zip(wall(config))
                .map(|(a, b)| a / b)
                .collect();
            let goal = if base == Config::Off && config == Config::Herdwatch {
                workload.goal
            } else {
                ""
            };
            println!(
                "| {} | {label} | {} | {:.3} | {} | {goal} | {} | {} | {} |",
                workload.name,
                per_op(vs.best),
                vs.best_ratio(),
                spread(&vs.ratios),
                per_op(vs.best_added()),
                per_op(median(&vs.added)),
                spread(&wall_ratios),
            );
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.repeats == 0 {
        bail!("--rounds and --repeats must be at least 1");
    }
    let started = Instant::now();
    let hooks = other_syscall_hooks()?;
    if !hooks.is_empty() && !args.allow_other_hooks {
        bail!(
            "other processes hold BPF programs on the syscall tracepoints: {}. With them, \
             every syscall takes the traced path even with nothing of this benchmark \
             attached, and the figures would understate the cost. Stop them (for a local \
             cluster's herdwatch agent: move its DaemonSet off this node), or pass \
             --allow-other-hooks to measure anyway.",
            describe_hooks(&hooks)
        );
    }
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let memory = Capture::load(&CaptureConfig::default())
        .context("loading capture (run as root)")?
        .map_memory_bytes();
    let mut samples = Samples::default();
    for round in 0..args.rounds {
        // Rotate the order, so that each configuration runs first, second and third
        // equally often and drift (thermal, other load) hits all alike.
        for step in 0..Config::ALL.len() {
            let config = Config::ALL[(round + step) % Config::ALL.len()];
            let start = Instant::now();
            let sample = measure(&args, &btf, config)?;
            eprintln!(
                "round {}/{}, {config:?} ({:.1} s): {sample:?}",
                round + 1,
                args.rounds,
                start.elapsed().as_secs_f64()
            );
            samples.by_config[config.index()].push(sample);
        }
    }
    let on = samples.of(Config::Herdwatch);
    let lost: u64 = on.iter().map(|s| s.execs_lost).sum();
    let emitted: u64 = on.iter().map(|s| s.execs_emitted).sum();
    let stormed = args.execs * args.rounds as u64;

    println!(
        "herdwatch kernel benchmark: {} rounds, each running every configuration back to back \
         in rotating order; in-kernel enforcement: {:?}.",
        args.rounds, args.enforce
    );
    println!(
        "CPU time of the thread running the loop (and of the exec storm's children). \
         ratio: throughput against nothing attached (time off / time on); best: fastest \
         run against fastest run (the cost itself, least disturbed by other load); median \
         and range: of the per-round ratios; added: CPU time added per operation."
    );
    if !hooks.is_empty() {
        println!(
            "WARNING: other programs were on the syscall tracepoints during the run ({}): \
             the \"nothing attached\" runs were not, and the ratios understate the cost.",
            describe_hooks(&hooks)
        );
    }
    println!();
    print_table(&args, &samples);
    println!();
    // The programs' own run time, alternated a few times as well.
    let mut program_stats: [Vec<ProgramRuns>; 2] = Default::default();
    for round in 0..args.rounds.min(5) {
        for step in 0..2 {
            let config = [Config::EmptyHook, Config::Herdwatch][(round + step) % 2];
            let runs = program_runs(&args, &btf, config)?;
            eprintln!("program run time, {config:?}: {runs:?}");
            program_stats[usize::from(config == Config::Herdwatch)].push(runs);
        }
    }
    println!(
        "sys_enter program run time per syscall, by the kernel's BPF statistics (the \
         program body, without the tracepoint's dispatch), least [median] of {} runs:",
        program_stats[0].len()
    );
    for (config, runs) in [Config::EmptyHook, Config::Herdwatch]
        .into_iter()
        .zip(&program_stats)
    {
        let ns: Vec<f64> = runs.iter().map(|r| r.ns_per_run).collect();
        let least = ns.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "  {}: {least:.1} [{:.1}] ns over {} program runs; {} instructions",
            config.label(),
            median(&ns),
            runs.iter().map(|r| r.runs).sum::<u64>(),
            runs.first().map_or(0, |r| r.instructions),
        );
    }
    let exec_us: Vec<f64> = program_stats[1]
        .iter()
        .map(|r| r.exec_us_per_exec)
        .collect();
    println!(
        "sched_process_exec + sched_process_exit program run time per exec of a storm: \
         {:.1} [{:.1}] us",
        exec_us.iter().copied().fold(f64::MAX, f64::min),
        median(&exec_us)
    );
    println!(
        "exec events in the herdwatch runs: {emitted} submitted, {lost} lost \
         ({stormed} from the storms, the rest from the machine)"
    );
    println!(
        "BPF map memory: {:.1} MiB",
        memory as f64 / (1 << 20) as f64
    );
    println!("benchmark time: {:.0} s", started.elapsed().as_secs_f64());
    if lost > 0 {
        bail!("{lost} exec events were lost");
    }
    Ok(())
}
