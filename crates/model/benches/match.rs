//! Plain-timing benchmarks of the two hot paths (no harness; prints ns/op and merges/s):
//!
//! 1. checking one event against a profile of 1,000 entries (goal: ≤ 1 µs);
//! 2. the operator's load: 1,000 profiles, each merging the observations of 100 nodes
//!    (merges per second, and the resident memory of holding the profiles).
//!
//! Run with `cargo bench -p herdwatch-model --bench match`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use herdwatch_model::behavior::{EgressRule, FileRule, ListenRule, ProcessRule, SyscallRule};
use herdwatch_model::net::Protocol;
use herdwatch_model::sketch::ReplicaId;
use herdwatch_model::{
    Access, BehaviorSet, Entry, Event, EventKind, Limits, Observation, Process, Profile,
    ProfileIndex, Rules, Timestamp, WorkloadKey,
};

fn profile_of_1000() -> BehaviorSet {
    let mut s = BehaviorSet::new();
    s.processes = Rules::from_entries((0..250).map(|i| {
        Entry::manual(ProcessRule {
            exe: format!("/usr/lib/app/bin/worker-{i}"),
            argv: None,
            uid: Some(1000),
        })
    }));
    s.syscalls = Rules::from_entries((0..300).map(|i| {
        Entry::manual(SyscallRule {
            name: format!("syscall_{i}"),
        })
    }));
    s.egress = Rules::from_entries((0..190).map(|i| {
        Entry::manual(EgressRule {
            peer: herdwatch_model::net::Cidr::host(IpAddr::from([
                10,
                1,
                (i / 250) as u8,
                (i % 250) as u8,
            ])),
            port: Some(443),
            protocol: Protocol::Tcp,
        })
    }));
    s.egress.merge_entry(
        &Entry::manual(EgressRule {
            peer: "10.96.0.0/12".parse().unwrap(),
            port: Some(53),
            protocol: Protocol::Udp,
        }),
        usize::MAX,
    );
    s.listen = Rules::from_entries((0..10).map(|i| {
        Entry::manual(ListenRule {
            port: 8000 + i,
            protocol: Protocol::Tcp,
        })
    }));
    s.files = Rules::from_entries((0..249).map(|i| {
        Entry::manual(FileRule::below(
            &format!("/srv/data/tenant-{i}/store"),
            Access::READ | Access::WRITE,
        ))
    }));
    assert_eq!(s.len(), 1000);
    s
}

fn time_per_op(label: &str, iterations: u32, mut f: impl FnMut(u32) -> bool) -> f64 {
    // Warm up caches and the branch predictor first.
    for i in 0..iterations / 10 {
        black_box(f(i));
    }
    let start = Instant::now();
    let mut allowed = 0u32;
    for i in 0..iterations {
        allowed += u32::from(black_box(f(i)));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("match  {label:<40} {ns:>8.1} ns/op   ({allowed}/{iterations} allowed)");
    ns
}

fn bench_match() {
    let set = profile_of_1000();
    let idx = ProfileIndex::build(&set);
    let argv = vec!["worker".to_owned(), "--serve".to_owned()];
    let exes: Vec<String> = (0..256)
        .map(|i| format!("/usr/lib/app/bin/worker-{}", i % 260))
        .collect();
    let paths: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "/srv/data/tenant-{}/store/objects/ab/cdef0123.blob",
                i % 260
            )
        })
        .collect();
    let names: Vec<String> = (0..256)
        .map(|i| format!("syscall_{}", i * 7 % 310))
        .collect();
    let n = 2_000_000;

    let mut worst: f64 = 0.0;
    worst = worst.max(time_per_op("exec (exe + uid + argv)", n, |i| {
        let p = Process {
            exe: &exes[(i % 256) as usize],
            file_name: None,
            argv: &argv,
            uid: 1000,
            exec_session: false,
            in_image: Some(true),
        };
        idx.check(&Event::exec(p)).is_allowed()
    }));
    let p = Process {
        exe: "/usr/lib/app/bin/worker-1",
        file_name: None,
        argv: &argv,
        uid: 1000,
        exec_session: false,
        in_image: Some(true),
    };
    worst = worst.max(time_per_op("file (7 components deep)", n, |i| {
        idx.check(&Event {
            process: p,
            kind: EventKind::File {
                path: &paths[(i % 256) as usize],
                access: Access::READ,
            },
        })
        .is_allowed()
    }));
    worst = worst.max(time_per_op("syscall", n, |i| {
        idx.check(&Event {
            process: p,
            kind: EventKind::Syscall {
                name: &names[(i % 256) as usize],
            },
        })
        .is_allowed()
    }));
    worst = worst.max(time_per_op("connect", n, |i| {
        let ip = IpAddr::from([10, 1, 0, (i % 256) as u8]);
        idx.check(&Event {
            process: p,
            kind: EventKind::Connect {
                ip,
                port: 443,
                protocol: Protocol::Tcp,
            },
        })
        .is_allowed()
    }));
    worst = worst.max(time_per_op("listen", n, |i| {
        idx.check(&Event {
            process: p,
            kind: EventKind::Listen {
                port: 8000 + (i % 16) as u16,
                protocol: Protocol::Tcp,
            },
        })
        .is_allowed()
    }));
    println!("match  worst kind: {worst:.1} ns/op against a 1,000-entry profile (goal ≤ 1000 ns; misses include formatting the violation)");
}

fn key(w: usize) -> WorkloadKey {
    WorkloadKey {
        namespace: format!("ns-{}", w % 50),
        owner_kind: "Deployment".into(),
        owner_name: format!("app-{w}"),
        container: "main".into(),
    }
}

/// One node's observation of one workload: about 90 entries drawn from a universe of about
/// 270, so that the 100 nodes together teach each profile all of it.
fn node_observation(w: usize, node: usize) -> Observation {
    let mut o = Observation::new(
        key(w),
        "sha256:0123456789abcdef",
        &format!("node-{node}"),
        Timestamp(1_700_000_000),
    );
    let argv = vec![];
    let limits = Limits::DEFAULT;
    for pod in 0..2 {
        let r = ReplicaId::from_pod_uid(&format!("{w}-{node}-{pod}"));
        o.attach_replica(r, false, Timestamp(1_700_000_000));
        for j in 0..45 {
            let k = (node * 7 + j * 13 + pod) % 300;
            let at = Timestamp(1_700_000_000 + (node * 60) as i64);
            let exe = format!("/usr/lib/app/bin/worker-{k}");
            let p = Process {
                exe: &exe,
                file_name: None,
                argv: &argv,
                uid: 1000,
                exec_session: false,
                in_image: Some(true),
            };
            let name;
            let path;
            let kind = match k % 10 {
                0..=4 => {
                    name = format!("syscall_{k}");
                    EventKind::Syscall { name: &name }
                }
                5 => EventKind::Exec,
                6 => EventKind::Connect {
                    ip: IpAddr::from([10, 2, 0, k as u8]),
                    port: 443,
                    protocol: Protocol::Tcp,
                },
                7 => EventKind::Listen {
                    port: 8080 + (k % 3) as u16,
                    protocol: Protocol::Tcp,
                },
                _ => {
                    path = format!("/srv/data/part-{k}/file");
                    EventKind::File {
                        path: &path,
                        access: Access::READ,
                    }
                }
            };
            o.observe(&Event { process: p, kind }, r, at, &limits);
        }
    }
    o
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_merge() {
    const PROFILES: usize = 1000;
    const NODES: usize = 100;
    let rss_before = rss_kib();
    let mut profiles: Vec<Profile> = (0..PROFILES)
        .map(|_| Profile::new(Timestamp(1_700_000_000)))
        .collect();
    // Observations are built per workload batch and dropped after merging, as the operator
    // holds profiles, not observations.
    let mut merges = 0u64;
    let mut busy = std::time::Duration::ZERO;
    for (w, profile) in profiles.iter_mut().enumerate() {
        let batch: Vec<Observation> = (0..NODES).map(|n| node_observation(w, n)).collect();
        let start = Instant::now();
        for o in &batch {
            black_box(profile.merge_observation(o, Timestamp(1_700_010_000)));
            merges += 1;
        }
        busy += start.elapsed();
    }
    let first_pass = merges as f64 / busy.as_secs_f64();
    // Steady state: the same observations again (refreshes only, as after learning).
    let batch: Vec<Observation> = (0..NODES).map(|n| node_observation(7, n)).collect();
    let start = Instant::now();
    let mut steady = 0u64;
    for profile in profiles.iter_mut() {
        for o in &batch {
            black_box(profile.merge_observation(o, Timestamp(1_700_020_000)));
            steady += 1;
        }
    }
    let steady_rate = steady as f64 / start.elapsed().as_secs_f64();
    let entries: usize = profiles.iter().map(|p| p.behavior.len()).sum();
    let rss_after = rss_kib();
    println!("merge  {merges} observations from {NODES} nodes into {PROFILES} profiles: {first_pass:>10.0} merges/s while learning");
    println!("merge  {steady} repeat merges (refresh only):                    {steady_rate:>10.0} merges/s");
    println!(
        "merge  profiles hold {entries} entries ({} per profile)",
        entries / PROFILES
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "merge  resident memory: {} MiB holding {PROFILES} profiles ({} MiB before)",
            after / 1024,
            before / 1024
        );
    }
    black_box(&profiles);
}

fn main() {
    bench_match();
    bench_merge();
}
