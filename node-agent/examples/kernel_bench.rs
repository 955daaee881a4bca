//! Kernel-side cost of herdwatch: the same workloads with the eBPF programs detached
//! ("off") and attached and drained ("on"), alternated within one run, as ratios.
//!
//! - `dd if=/dev/zero of=/dev/null bs=512`: two syscalls per block (the sys_enter and
//!   sys_exit programs run on both);
//! - a getpid loop in this process: the cheapest syscall there is;
//! - an exec storm: /bin/true spawned and waited for, one after the other, with the exec
//!   events that did not fit in the ring buffer counted.
//!
//! With `--enforce other`, the "on" runs also have an in-kernel enforcement entry for a
//! cgroup the benchmark is not in (every exec pays the lookup that misses); with
//! `--enforce own`, a deny list that matches nothing for the benchmark's own cgroup (every
//! exec pays the lookup, the hashing of its path and the rule lookups).
//!
//! Run as root: `bench/kernel.sh` (or `cargo run --release --example kernel_bench`).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use herdwatch_abi::EventKind;
use herdwatch_node_agent::capture::{Capture, CaptureConfig};
use herdwatch_node_agent::cgroup::{find_cgroup2_mount, CgroupSource, FsCgroupSource};
use herdwatch_node_agent::evaluate::kernel::{ExecRules, KernelEnforcer};

/// Measures what herdwatch's eBPF programs add to syscalls and execs.
#[derive(Parser, Debug)]
struct Args {
    /// 512-byte blocks dd copies per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    dd_blocks: u64,
    /// getpid calls per measurement.
    #[arg(long, default_value_t = 5_000_000)]
    getpid_calls: u64,
    /// /bin/true executions per measurement.
    #[arg(long, default_value_t = 3_000)]
    execs: u64,
    /// Off/on pairs; each figure is the median of its rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// In-kernel enforcement entries present while the agent is on.
    #[arg(long, value_enum, default_value_t = Enforce::None)]
    enforce: Enforce,
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

/// One measurement of every workload.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Seconds dd reported for its copy.
    dd_secs: f64,
    getpid_secs: f64,
    exec_secs: f64,
    /// Exec events the kernel could not submit (on only).
    execs_lost: u64,
    /// Exec events submitted (on only).
    execs_emitted: u64,
    /// Events the drain thread received (on only).
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

fn dd(blocks: u64) -> Result<f64> {
    let output = Command::new("dd")
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=512",
            &format!("count={blocks}"),
        ])
        .output()
        .context("running dd")?;
    if !output.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    // "1024000000 bytes (1.0 GB, 977 MiB) copied, 1.23 s, 830 MB/s"
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| {
            let (_, after) = line.split_once("copied, ")?;
            after.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no time in dd's output: {stderr}"))
}

fn getpid_loop(calls: u64) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..calls {
        // A real getpid(2) each time: glibc stopped caching the pid in 2.25.
        sum = sum.wrapping_add(u64::from(std::process::id()));
    }
    std::hint::black_box(sum);
    start.elapsed().as_secs_f64()
}

fn exec_storm(execs: u64) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..execs {
        let status = Command::new("/bin/true")
            .status()
            .context("running /bin/true")?;
        if !status.success() {
            bail!("/bin/true failed: {status}");
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn measure(args: &Args, on: bool) -> Result<Sample> {
    let agent = if on {
        Some(Agent::start(args.enforce)?)
    } else {
        None
    };
    // Let the first sightings of every cgroup on the machine pass before measuring.
    std::thread::sleep(Duration::from_millis(300));
    let mut sample = Sample {
        dd_secs: dd(args.dd_blocks)?,
        getpid_secs: getpid_loop(args.getpid_calls),
        ..Sample::default()
    };
    sample.exec_secs = exec_storm(args.execs)?;
    if let Some(agent) = agent {
        // Give the drain thread a moment to catch up before its counters are read.
        std::thread::sleep(Duration::from_millis(200));
        let (capture, drained) = agent.stop()?;
        let exec = EventKind::Exec as usize;
        sample.execs_lost = capture.lost_counts()?[exec];
        sample.execs_emitted = capture.emitted_counts()?[exec];
        sample.drained = drained;
        if sample.drained == 0 {
            bail!("the agent drained no events: is the capture attached?");
        }
    }
    Ok(sample)
}

/// One line of the result table.
struct Row {
    name: String,
    /// Operations per measurement (syscalls, calls, execs).
    ops: f64,
    unit: &'static str,
    secs: fn(&Sample) -> f64,
    goal: &'static str,
    /// Seconds to the unit of the "added" column.
    scale: f64,
    added_unit: &'static str,
}

/// One workload's times over all rounds, summarised.
struct Figure {
    best_off: f64,
    best_on: f64,
    /// Per-round throughput ratios on/off (= time off / time on).
    median_ratio: f64,
    min_ratio: f64,
    max_ratio: f64,
}

impl Figure {
    fn new(off: &[Sample], on: &[Sample], secs: fn(&Sample) -> f64) -> Figure {
        let best = |samples: &[Sample]| samples.iter().map(secs).fold(f64::MAX, f64::min);
        // Each round's pair ran back to back, so its ratio cancels slow drift.
        let ratios: Vec<f64> = off.iter().zip(on).map(|(a, b)| secs(a) / secs(b)).collect();
        Figure {
            best_off: best(off),
            best_on: best(on),
            min_ratio: ratios.iter().copied().fold(f64::MAX, f64::min),
            max_ratio: ratios.iter().copied().fold(f64::MIN, f64::max),
            median_ratio: median(ratios),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let memory = Capture::load(&CaptureConfig::default())
        .context("loading capture (run as root)")?
        .map_memory_bytes();
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 1..=args.rounds {
        // Alternate which goes first, so drift (thermal, other load) hits both alike.
        let pair = if round % 2 == 1 {
            let a = measure(&args, false)?;
            (a, measure(&args, true)?)
        } else {
            let b = measure(&args, true)?;
            (measure(&args, false)?, b)
        };
        eprintln!(
            "round {round}/{}: off {:?}\n             on  {:?}",
            args.rounds, pair.0, pair.1
        );
        off.push(pair.0);
        on.push(pair.1);
    }
    let dd_syscalls = 2.0 * args.dd_blocks as f64;
    let calls = args.getpid_calls as f64;
    let execs = args.execs as f64;
    let lost: u64 = on.iter().map(|s| s.execs_lost).sum();
    let emitted: u64 = on.iter().map(|s| s.execs_emitted).sum();
    let stormed = args.execs * args.rounds as u64;

    println!(
        "herdwatch kernel benchmark: {} rounds, each with the agent off and on back to back; \
         in-kernel enforcement: {:?}.",
        args.rounds, args.enforce
    );
    println!(
        "best: fastest off run vs fastest on run (the cost itself, least disturbed by other \
         load); median: median of the per-round ratios, [min-max]."
    );
    println!();
    println!(
        "| workload | agent off (best) | agent on (best) | ratio on/off, best | ratio on/off, median [range] | goal | added (best) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        Row {
            name: format!("dd bs=512, {} blocks (read+write)", args.dd_blocks),
            ops: dd_syscalls,
            unit: "M syscalls/s",
            secs: |s| s.dd_secs,
            goal: ">= 0.95, <= 20 ns",
            scale: 1e9,
            added_unit: "ns/syscall",
        },
        Row {
            name: format!("getpid loop, {} calls", args.getpid_calls),
            ops: calls,
            unit: "M calls/s",
            secs: |s| s.getpid_secs,
            goal: "<= 20 ns",
            scale: 1e9,
            added_unit: "ns/syscall",
        },
        Row {
            name: format!("exec storm, {} x fork+exec /bin/true", args.execs),
            ops: execs,
            unit: "execs/s",
            secs: |s| s.exec_secs,
            goal: ">= 0.97, 0 lost",
            scale: 1e6,
            added_unit: "us/exec",
        },
    ];
    for Row {
        name,
        ops,
        unit,
        secs,
        goal,
        scale,
        added_unit,
    } in rows
    {
        let fig = Figure::new(&off, &on, secs);
        // Millions for syscalls, plain for execs.
        let per_sec = |t: f64| {
            if unit.starts_with('M') {
                ops / t / 1e6
            } else {
                ops / t
            }
        };
        println!(
            "| {name} | {:.2} {unit} | {:.2} {unit} | {:.3} | {:.3} [{:.3}-{:.3}] | {goal} | {:.1} {added_unit} |",
            per_sec(fig.best_off),
            per_sec(fig.best_on),
            fig.best_off / fig.best_on,
            fig.median_ratio,
            fig.min_ratio,
            fig.max_ratio,
            (fig.best_on - fig.best_off) / ops * scale,
        );
    }
    println!();
    println!(
        "exec events in the 'on' rounds: {emitted} submitted, {lost} lost \
         ({stormed} from the storms, the rest from the machine)"
    );
    println!(
        "BPF map memory: {:.1} MiB",
        memory as f64 / (1 << 20) as f64
    );
    if lost > 0 {
        bail!("{lost} exec events were lost");
    }
    Ok(())
}
