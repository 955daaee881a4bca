//! The eBPF programs, for real: each test loads them into the running kernel, runs
//! processes in a fresh cgroup of its own, and checks what the capture reports with that
//! cgroup's id. Root only; a test that cannot run fails, it never skips. The in-kernel
//! kill tests write the enforcement maps through the agent's own `KernelEnforcer`.
//!
//! Run with `cargo test -p herdwatch-node-agent --test ebpf` as root.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdwatch_abi::{
    AgentState, Event, EventKind, ExecEvent, FileEvent, IdentityEvent, NetEvent, ACCESS_CREATE,
    ACCESS_READ, ACCESS_TRUNCATE, ACCESS_WRITE, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP,
    NET_ACCEPT, NET_CONNECT, NET_LISTEN, NET_UDP_SEND, SYSCALL_PACKET_SOCKET, SYSCALL_RAW_SOCKET,
};
use herdwatch_model::policy::{ClusterPolicy, Deny, Exceptions, PolicyRule};
use herdwatch_model::response::ResponseAction;
use herdwatch_node_agent::capture::{Capture, CaptureConfig, CaptureError};
use herdwatch_node_agent::evaluate::kernel::{add_policy_denies, ExecRules, KernelEnforcer};

/// The programs see the whole machine: tests take turns, and each also looks only at its
/// own cgroup.
static KERNEL: Mutex<()> = Mutex::new(());

const PYTHON: &str = "/usr/bin/python3";
const WAIT: Duration = Duration::from_secs(10);

const NR_EXECVE: u32 = 59;
const NR_EXIT_GROUP: u32 = 231;
const NR_RT_SIGACTION: u32 = 13;
const NR_SETUID: u32 = 105;

fn assert_root() {
    let uid = fs::metadata("/proc/self")
        .expect("reading /proc/self")
        .uid();
    assert_eq!(
        uid, 0,
        "eBPF tests must run as root (they load BPF programs and create cgroups)"
    );
}

/// One test's turn with the kernel: the lock, a capture, a tokio runtime to poll it, and
/// every event seen so far.
struct Harness {
    capture: Capture,
    runtime: tokio::runtime::Runtime,
    events: Vec<Event>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(&CaptureConfig::default())
    }

    fn with_config(config: &CaptureConfig) -> Harness {
        assert_root();
        // A test that failed while holding the lock poisons it; the next one can still run.
        let turn = KERNEL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let capture = Capture::load(config).unwrap_or_else(|e| {
            panic!(
                "loading the eBPF programs failed: {:#}",
                anyhow::Error::new(e)
            )
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        Harness {
            capture,
            runtime,
            events: Vec::new(),
            _turn: turn,
        }
    }

    /// Polls the capture until `done` holds for the events of `cgroup` seen so far, or
    /// panics after a while saying what was expected and what was seen.
    fn wait_for(&mut self, cgroup: &TestCgroup, what: &str, done: impl Fn(&[Event]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mine = cgroup.events(&self.events);
            if done(&mine) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {what} in cgroup {} (id {}); its events: {}",
                    cgroup.path.display(),
                    cgroup.id,
                    describe(&mine)
                );
            }
            let (capture, events) = (&mut self.capture, &mut self.events);
            let polled = self.runtime.block_on(async {
                tokio::time::timeout(deadline - now, capture.next_batch(events)).await
            });
            if let Ok(result) = polled {
                result.expect("reading the ring buffer");
            }
            assert_eq!(
                self.capture.decode_errors(),
                0,
                "records that did not decode"
            );
        }
    }

    /// Drains for a moment more, for the negative checks ("not reported again").
    fn settle(&mut self) {
        let (capture, events) = (&mut self.capture, &mut self.events);
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if capture.next_batch(events).await.is_err() {
                        return;
                    }
                }
            })
            .await
        });
    }
}

/// A cgroup v2 directory made for one test, removed when dropped.
struct TestCgroup {
    path: PathBuf,
    /// Its inode: what `bpf_get_current_cgroup_id()` reports for tasks in it.
    id: u64,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let mount = cgroup2_mount();
        TestCgroup::at(mount.join(format!("herdwatch-test-{}-{name}", std::process::id())))
    }

    /// A cgroup inside this one (a container inside its pod's cgroup). Drop it first.
    fn child(&self, name: &str) -> TestCgroup {
        TestCgroup::at(self.path.join(name))
    }

    fn at(path: PathBuf) -> TestCgroup {
        // Left over from an aborted run of this same process id: reuse it.
        if !path.exists() {
            fs::create_dir(&path)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
        }
        let id = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .ino();
        TestCgroup { path, id }
    }

    /// A command that moves itself into this cgroup, then execs `program` with `args`.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.path.join("cgroup.procs"))
            .arg(program)
            .args(args);
        command
    }

    /// Runs `program` in this cgroup to completion; panics unless it succeeds.
    fn run(&self, program: &str, args: &[&str]) -> (u32, Output) {
        let child = self
            .command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let pid = child.id();
        let output = child.wait_with_output().expect("waiting for the child");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        (pid, output)
    }

    fn python(&self, script: &str, args: &[&str]) -> (u32, Output) {
        let mut all = vec!["-c", script];
        all.extend_from_slice(args);
        self.run(PYTHON, &all)
    }

    fn events(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| e.header().cgroup_id == self.id)
            .copied()
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The last process may take a moment to leave after it was reaped.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// The cgroup2 mount point, from /proc/self/mountinfo (on hybrid machines it is not
/// /sys/fs/cgroup).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            // "id parent major:minor root mount-point options [optional...] - fstype ..."
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 mount in /proc/self/mountinfo: these tests need cgroup v2")
}

fn describe(events: &[Event]) -> String {
    let mut by_kind: HashMap<&str, usize> = HashMap::new();
    let mut lines = Vec::new();
    for event in events {
        *by_kind.entry(event.kind().name()).or_default() += 1;
        match event {
            Event::Syscall(_) => {}
            other => lines.push(format!("{other:?}")),
        }
    }
    format!(
        "counts {by_kind:?}; non-syscall events:\n{}",
        lines.join("\n")
    )
}

fn execs(events: &[Event]) -> impl Iterator<Item = &ExecEvent> {
    events.iter().filter_map(|e| match e {
        Event::Exec(x) => Some(x),
        _ => None,
    })
}

fn nets(events: &[Event]) -> impl Iterator<Item = &NetEvent> {
    events.iter().filter_map(|e| match e {
        Event::Net(x) => Some(x),
        _ => None,
    })
}

fn files(events: &[Event]) -> impl Iterator<Item = &FileEvent> {
    events.iter().filter_map(|e| match e {
        Event::File(x) => Some(x),
        _ => None,
    })
}

fn identities(events: &[Event]) -> impl Iterator<Item = &IdentityEvent> {
    events.iter().filter_map(|e| match e {
        Event::Identity(x) => Some(x),
        _ => None,
    })
}

fn syscall_nrs(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Syscall(s) => Some(s.nr),
            _ => None,
        })
        .collect()
}

fn exited(events: &[Event], pid: u32) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Exit(x) if x.header.pid == pid))
}

fn v4(addr: Ipv4Addr) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..4].copy_from_slice(&addr.octets());
    bytes
}

#[test]
fn exec_is_seen_with_path_argv_uid_and_parent() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("exec");
    // setpriv drops to nobody and execs echo: the second exec runs as uid/gid 65534.
    let (pid, _) = cgroup.run(
        "/usr/bin/setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/echo",
            "herdwatch-exec-test",
            "second arg",
        ],
    );
    h.wait_for(&cgroup, "the exec of /bin/echo and its exit", |events| {
        execs(events).any(|e| e.filename() == b"/bin/echo") && exited(events, pid)
    });
    let mine = cgroup.events(&h.events);
    let echo = execs(&mine)
        .find(|e| e.filename() == b"/bin/echo")
        .expect("exec of /bin/echo");
    assert_eq!(echo.header.kind, EventKind::Exec as u32);
    assert_eq!(echo.header.pid, pid, "pid of the exec");
    assert_eq!(
        echo.header.tid, pid,
        "tid of a single-threaded process is its pid"
    );
    assert_eq!(
        echo.argv().collect::<Vec<_>>(),
        [&b"/bin/echo"[..], b"herdwatch-exec-test", b"second arg"],
        "argv"
    );
    assert!(!echo.argv_truncated());
    assert_eq!(
        (echo.header.uid, echo.header.gid),
        (65534, 65534),
        "real uid/gid"
    );
    assert_eq!((echo.euid, echo.egid), (65534, 65534), "effective uid/gid");
    assert_eq!(
        echo.ppid,
        std::process::id(),
        "the test process is the parent"
    );
    assert!(echo.start_time_ns > 0 && echo.start_time_ns <= echo.header.ktime_ns);
    // The parent's start time is this test process's (its leader's, whichever thread
    // spawned the child), as /proc says it: within a clock tick.
    let stat = fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[19].parse().expect("starttime");
    let own_start_ns = ticks * 10_000_000;
    assert!(
        echo.parent_start_time_ns.abs_diff(own_start_ns) <= 20_000_000,
        "parent start {} vs /proc {own_start_ns}",
        echo.parent_start_time_ns
    );
    // The process before it (same pid) ran setpriv as root.
    let setpriv = execs(&mine)
        .find(|e| e.filename() == b"/usr/bin/setpriv")
        .expect("exec of setpriv");
    assert_eq!(
        (setpriv.header.pid, setpriv.header.uid, setpriv.euid),
        (pid, 0, 0)
    );
    assert_eq!(
        setpriv.start_time_ns, echo.start_time_ns,
        "same process, same start"
    );

    let exit = mine
        .iter()
        .find_map(|e| match e {
            Event::Exit(x) if x.header.pid == pid => Some(*x),
            _ => None,
        })
        .expect("exit event");
    assert_eq!(exit.exit_code, 0);
}

/// The exec of `filename` the capture saw, and the name of the file it really ran.
fn real_name_of(events: &[Event], filename: &str) -> Option<Option<String>> {
    execs(events)
        .find(|e| e.filename() == filename.as_bytes())
        .map(|e| {
            e.real_file_name()
                .map(|n| String::from_utf8_lossy(n).into_owned())
        })
}

#[test]
fn exec_reports_the_name_of_the_file_really_run() {
    // `sh` linking to a program named busybox, as /bin/sh does on busybox images. A copy
    // of true stands in for busybox: only the name matters.
    let dir = std::env::temp_dir().join(format!("herdwatch-real-name-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating a temporary directory");
    let busybox = dir.join("busybox");
    fs::copy(real_path("/bin/true"), &busybox).expect("copying true as busybox");
    let sh = dir.join("sh");
    std::os::unix::fs::symlink(&busybox, &sh).expect("linking sh to busybox");
    let sh = sh.to_str().expect("UTF-8").to_owned();
    // A script names its interpreter; /proc/self/exe names the program it links to.
    let script = Script::new("real-name-script");
    let sh_name = real_path("/bin/sh").rsplit('/').next().map(str::to_owned);
    let bash_name = real_path("/bin/bash").rsplit('/').next().map(str::to_owned);

    let mut h = Harness::new();
    let cgroup = TestCgroup::new("real-name");
    cgroup.run(&sh, &["-c", "exit 0"]);
    cgroup.run(&script.path, &[]);
    assert!(script.ran(), "the script ran");
    cgroup.run(
        "/bin/bash",
        &["-c", "exec -a herdwatch-self /proc/self/exe -c 'exit 0'"],
    );
    let expected = [
        (sh.as_str(), Some("busybox".to_owned())),
        (script.path.as_str(), sh_name),
        ("/proc/self/exe", bash_name),
    ];
    h.wait_for(&cgroup, "the three execs", |events| {
        expected
            .iter()
            .all(|(filename, _)| real_name_of(events, filename).is_some())
    });
    let mine = cgroup.events(&h.events);
    for (filename, name) in &expected {
        assert_eq!(
            real_name_of(&mine, filename),
            Some(name.clone()),
            "the file really run by the exec of {filename}; {}",
            describe(&mine)
        );
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn long_argv_is_truncated_and_flagged() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("argv");
    let long = "x".repeat(600);
    let (pid, _) = cgroup.run("/bin/echo", &[&long]);
    h.wait_for(&cgroup, "the exec of /bin/echo", |events| {
        execs(events).any(|e| e.header.pid == pid && e.filename() == b"/bin/echo")
    });
    let mine = cgroup.events(&h.events);
    let echo = execs(&mine)
        .find(|e| e.filename() == b"/bin/echo")
        .expect("exec");
    assert!(
        echo.argv_truncated(),
        "600-byte argument fits no 512-byte block"
    );
    assert_eq!(echo.argv_len as usize, herdwatch_abi::MAX_ARGV);
}

#[test]
fn first_sighting_of_each_syscall_is_reported_once_per_cgroup() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("syscalls");
    // The launcher that moves itself into the cgroup and execs is like a container
    // runtime's init: its own calls are not the cgroup's. So the program is a shell that
    // execs /bin/true itself, whose execve is the workload's.
    let (first, _) = cgroup.run("/bin/sh", &["-c", "exec /bin/true"]);
    h.wait_for(&cgroup, "exit of the first /bin/true", |events| {
        exited(events, first)
    });
    let seen = syscall_nrs(&cgroup.events(&h.events));
    for nr in [NR_EXECVE, NR_EXIT_GROUP] {
        assert!(
            seen.contains(&nr),
            "syscall {nr} not reported; saw {seen:?}"
        );
    }
    // The syscall events carry the process that made the call.
    let pids: Vec<u32> = cgroup
        .events(&h.events)
        .iter()
        .filter(|e| matches!(e, Event::Syscall(_)))
        .map(|e| e.header().pid)
        .collect();
    assert!(
        pids.iter().all(|p| *p == first),
        "pids {pids:?}, expected {first}"
    );

    // The same program again in the same cgroup makes the same calls: nothing new.
    let (second, _) = cgroup.run("/bin/sh", &["-c", "exec /bin/true"]);
    h.wait_for(&cgroup, "exit of the second /bin/true", |events| {
        exited(events, second)
    });
    h.settle();
    let all = syscall_nrs(&cgroup.events(&h.events));
    let mut unique = all.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        all.len(),
        unique.len(),
        "a syscall was reported twice in one cgroup: {all:?}"
    );
    assert_eq!(
        all.len(),
        seen.len(),
        "the second run reported new syscalls: {all:?}"
    );

    // Another cgroup has its own bitmap.
    let other = TestCgroup::new("syscalls-other");
    let (third, _) = other.run("/bin/sh", &["-c", "exec /bin/true"]);
    h.wait_for(&other, "exit of /bin/true in another cgroup", |events| {
        exited(events, third)
    });
    let others = syscall_nrs(&other.events(&h.events));
    assert!(others.contains(&NR_EXECVE) && others.contains(&NR_EXIT_GROUP));
}

/// A raw IP socket and a packet socket are each reported once, as syscalls of their own
/// (`socket_raw`, `socket_packet`); a plain UDP socket is neither.
#[test]
fn raw_and_packet_sockets_are_reported_as_their_own_syscalls() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("rawsock");
    let script = "import socket\n\
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\n\
        for _ in range(2):\n\
        \x20   socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP).close()\n\
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()\n";
    cgroup.run(PYTHON, &["-c", script]);
    h.wait_for(&cgroup, "the raw and packet sockets", |events| {
        let nrs = syscall_nrs(events);
        nrs.contains(&SYSCALL_RAW_SOCKET) && nrs.contains(&SYSCALL_PACKET_SOCKET)
    });
    h.settle();
    let nrs = syscall_nrs(&cgroup.events(&h.events));
    for pseudo in [SYSCALL_RAW_SOCKET, SYSCALL_PACKET_SOCKET] {
        assert_eq!(
            nrs.iter().filter(|n| **n == pseudo).count(),
            1,
            "{pseudo} once: {nrs:?}"
        );
    }

    // A UDP socket alone is only `socket`.
    let other = TestCgroup::new("udpsock");
    let (pid, _) = other.run(
        PYTHON,
        &[
            "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()",
        ],
    );
    h.wait_for(&other, "the exit of the UDP program", |events| {
        exited(events, pid)
    });
    let nrs = syscall_nrs(&other.events(&h.events));
    assert!(nrs.contains(&41), "socket itself is seen: {nrs:?}");
    assert!(
        !nrs.contains(&SYSCALL_RAW_SOCKET) && !nrs.contains(&SYSCALL_PACKET_SOCKET),
        "{nrs:?}"
    );
}

/// After the agent forgets a cgroup, what it does is reported once more: the same program
/// run again reports its syscalls and its file again, where without forgetting it reports
/// nothing new.
#[test]
fn a_forgotten_cgroup_reports_its_behaviour_again() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("forget");
    let run = |h: &mut Harness| {
        let (pid, _) = cgroup.run("/bin/sh", &["-c", "exec /bin/cat /etc/hostname"]);
        h.wait_for(&cgroup, "the exit of cat", |events| exited(events, pid));
        h.settle();
    };
    let reported = |h: &Harness| {
        let mine = cgroup.events(&h.events);
        let opens = files(&mine)
            .filter(|f| f.path() == b"/etc/hostname")
            .count();
        (
            syscall_nrs(&mine)
                .iter()
                .filter(|n| **n == NR_EXECVE)
                .count(),
            opens,
        )
    };
    run(&mut h);
    assert_eq!(reported(&h), (1, 1), "first run: execve and the open once");
    run(&mut h);
    assert_eq!(reported(&h), (1, 1), "the same again is not reported");

    let forgotten = h
        .capture
        .forget_cgroup(cgroup.id)
        .expect("forgetting the cgroup");
    assert!(
        forgotten >= 2,
        "the bitmap and the file entry at least: {forgotten}"
    );
    run(&mut h);
    assert_eq!(
        reported(&h),
        (2, 2),
        "after forgetting, both are reported once more"
    );
}

#[test]
fn tcp_connect_to_loopback_is_seen_for_ipv4_and_ipv6() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("connect");
    let v4_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
    let v6_listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind ::1");
    let v4_port = v4_listener.local_addr().unwrap().port();
    let v6_port = v6_listener.local_addr().unwrap().port();
    let (pid, _) = cgroup.python(
        "import socket, sys\n\
         socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n\
         socket.create_connection(('::1', int(sys.argv[2]))).close()\n\
         socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n",
        &[&v4_port.to_string(), &v6_port.to_string()],
    );
    h.wait_for(&cgroup, "TCP connects to 127.0.0.1 and ::1", |events| {
        nets(events).filter(|n| n.op == NET_CONNECT).count() >= 2
    });
    h.settle();
    let mine = cgroup.events(&h.events);
    let connects: Vec<&NetEvent> = nets(&mine).filter(|n| n.op == NET_CONNECT).collect();
    let v4_connect = connects
        .iter()
        .find(|n| n.family == AF_INET)
        .expect("IPv4 connect");
    assert_eq!(v4_connect.protocol, IPPROTO_TCP);
    assert_eq!(v4_connect.daddr, v4(Ipv4Addr::LOCALHOST));
    assert_eq!(v4_connect.dport, v4_port);
    assert_eq!(v4_connect.header.pid, pid);
    let v6_connect = connects
        .iter()
        .find(|n| n.family == AF_INET6)
        .expect("IPv6 connect");
    assert_eq!(v6_connect.daddr, Ipv6Addr::LOCALHOST.octets());
    assert_eq!(v6_connect.dport, v6_port);
    assert_eq!(
        connects.len(),
        2,
        "the second connect to the same peer must be deduplicated: {connects:?}"
    );
}

#[test]
fn listen_and_accept_are_attributed_to_the_listening_cgroup() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("accept");
    // A server in the cgroup: listens, says its port, accepts one connection.
    let mut server: Child = cgroup
        .command(
            PYTHON,
            &[
                "-c",
                "import socket\n\
                 s = socket.socket()\n\
                 s.bind(('127.0.0.1', 0))\n\
                 s.listen()\n\
                 print(s.getsockname()[1], flush=True)\n\
                 c, _ = s.accept()\n\
                 c.close()\n",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("server stdout"))
        .read_line(&mut line)
        .expect("reading the server's port");
    let port: u16 = line.trim().parse().expect("server port");
    // The client is the test process, outside the cgroup: the handshake completes in
    // softirq context, on whatever task was running.
    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    let client_port = client.local_addr().unwrap().port();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(
        server.wait().expect("server").success(),
        "the server failed"
    );

    h.wait_for(&cgroup, "the listen and the accept", |events| {
        nets(events).any(|n| n.op == NET_LISTEN) && nets(events).any(|n| n.op == NET_ACCEPT)
    });
    let mine = cgroup.events(&h.events);
    let listen = nets(&mine).find(|n| n.op == NET_LISTEN).expect("listen");
    assert_eq!((listen.family, listen.protocol), (AF_INET, IPPROTO_TCP));
    assert_eq!(listen.sport, port, "listening port");
    assert_eq!(listen.saddr, v4(Ipv4Addr::LOCALHOST));
    assert_eq!(listen.header.pid, server.id());
    let accept = nets(&mine).find(|n| n.op == NET_ACCEPT).expect("accept");
    assert_eq!(accept.sport, port, "local port of the accepted connection");
    assert_eq!(accept.daddr, v4(Ipv4Addr::LOCALHOST), "peer address");
    assert_eq!(accept.dport, client_port, "peer port");
    assert_eq!(
        accept.header.pid,
        server.id(),
        "the accept is credited to the process that listened"
    );
}

#[test]
fn udp_destinations_are_seen_from_sendto_sendmsg_and_connected_sends() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("udp");
    let sink4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1");
    let sink6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind udp ::1");
    let connected = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1");
    let (p4, p6, pc) = (
        sink4.local_addr().unwrap().port(),
        sink6.local_addr().unwrap().port(),
        connected.local_addr().unwrap().port(),
    );
    let (pid, _) = cgroup.python(
        "import socket, sys\n\
         p4, p6, pc = (int(a) for a in sys.argv[1:4])\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'dns?', ('127.0.0.1', p4))\n\
         s.sendto(b'again', ('127.0.0.1', p4))\n\
         s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s6.sendmsg([b'v6'], [], 0, ('::1', p6))\n\
         c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         c.connect(('127.0.0.1', pc))\n\
         c.send(b'connected')\n",
        &[&p4.to_string(), &p6.to_string(), &pc.to_string()],
    );
    h.wait_for(&cgroup, "three UDP destinations", |events| {
        nets(events).filter(|n| n.protocol == IPPROTO_UDP).count() >= 3
    });
    h.settle();
    let mine = cgroup.events(&h.events);
    let udp: Vec<&NetEvent> = nets(&mine).filter(|n| n.protocol == IPPROTO_UDP).collect();
    assert_eq!(udp.len(), 3, "two sends to one peer count once: {udp:?}");
    let sendto = udp
        .iter()
        .find(|n| n.op == NET_UDP_SEND && n.family == AF_INET)
        .expect("sendto 127.0.0.1");
    assert_eq!((sendto.daddr, sendto.dport), (v4(Ipv4Addr::LOCALHOST), p4));
    assert_eq!(sendto.header.pid, pid);
    let sendmsg = udp
        .iter()
        .find(|n| n.op == NET_UDP_SEND && n.family == AF_INET6)
        .expect("sendmsg ::1");
    assert_eq!(
        (sendmsg.daddr, sendmsg.dport),
        (Ipv6Addr::LOCALHOST.octets(), p6)
    );
    let connected_send = udp
        .iter()
        .find(|n| n.op == NET_UDP_SEND && n.dport == pc)
        .expect("send on a connected UDP socket");
    assert_eq!(connected_send.daddr, v4(Ipv4Addr::LOCALHOST));
    assert!(
        nets(&mine).all(|n| n.protocol == IPPROTO_UDP),
        "no TCP event from UDP sockets: {:?}",
        nets(&mine).collect::<Vec<_>>()
    );
}

#[test]
fn file_opens_are_seen_with_access_and_deduplicated() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("files");
    let path = format!("/tmp/herdwatch-test-{}-file", std::process::id());
    // Two writes (one event), then a read (another: the access differs).
    let (pid, _) = cgroup.run(
        "/bin/sh",
        &[
            "-c",
            r#"echo a > "$1"; echo b > "$1"; read x < "$1""#,
            "sh",
            &path,
        ],
    );
    let _ = fs::remove_file(&path);
    h.wait_for(
        &cgroup,
        "a write open and a read open of the file",
        |events| {
            files(events)
                .filter(|f| f.path() == path.as_bytes())
                .count()
                >= 2
        },
    );
    h.settle();
    let mine = cgroup.events(&h.events);
    let opens: Vec<&FileEvent> = files(&mine)
        .filter(|f| f.path() == path.as_bytes())
        .collect();
    assert_eq!(opens.len(), 2, "one event per (path, access): {opens:?}");
    let write = opens
        .iter()
        .find(|f| f.access & ACCESS_WRITE != 0)
        .expect("write open");
    // Python's "w" is O_WRONLY | O_CREAT | O_TRUNC: emptying the file is its own access.
    assert_eq!(write.access, ACCESS_WRITE | ACCESS_CREATE | ACCESS_TRUNCATE);
    assert_eq!(write.header.pid, pid);
    assert_eq!(write.path_len as usize, path.len());
    let read = opens
        .iter()
        .find(|f| f.access == ACCESS_READ)
        .expect("read open");
    assert_eq!(read.open_flags & 0o3, 0, "O_RDONLY");

    // Opens are seen as asked for: one that fails is reported too.
    let missing = format!("{path}-missing");
    let mut cat = cgroup
        .command("/bin/cat", &[&missing])
        .stderr(Stdio::null())
        .spawn()
        .expect("running cat");
    let cat_pid = cat.id();
    assert_eq!(
        cat.wait().expect("cat").code(),
        Some(1),
        "cat of a missing file"
    );
    h.wait_for(&cgroup, "the failed open of the missing file", |events| {
        files(events).any(|f| f.path() == missing.as_bytes() && f.access == ACCESS_READ)
            && exited(events, cat_pid)
    });
    let exit_code = cgroup
        .events(&h.events)
        .iter()
        .find_map(|e| match e {
            Event::Exit(x) if x.header.pid == cat_pid => Some(x.exit_code),
            _ => None,
        })
        .expect("exit of cat");
    assert_eq!(exit_code, 1 << 8, "exit status 1, as wait(2) encodes it");
}

/// An exec of a relative path carries the directory it was resolved against, read by the
/// kernel at the exec (a CGI is gone before /proc can be read); a directory on another
/// mount than the root's is left unresolved rather than guessed.
#[test]
fn a_relative_exec_carries_its_working_directory() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("relexec");
    cgroup.run("/bin/sh", &["-c", "cd /usr/bin && ./env true"]);
    cgroup.run("/bin/sh", &["-c", "cd /proc && ../usr/bin/env true"]);
    cgroup.run("/bin/sh", &["-c", "cd / && usr/bin/env true"]);
    h.wait_for(&cgroup, "the three relative execs", |events| {
        execs(events)
            .filter(|e| !e.filename().starts_with(b"/"))
            .count()
            >= 3
    });
    let mine = cgroup.events(&h.events);
    let dir_of = |name: &[u8]| {
        execs(&mine)
            .find(|e| e.filename() == name)
            .unwrap_or_else(|| {
                panic!(
                    "no exec of {:?}: {}",
                    String::from_utf8_lossy(name),
                    describe(&mine)
                )
            })
            .working_directory()
    };
    assert_eq!(dir_of(b"./env").as_deref(), Some(&b"/usr/bin"[..]));
    assert_eq!(dir_of(b"../usr/bin/env"), None, "/proc is another mount");
    assert_eq!(dir_of(b"usr/bin/env").as_deref(), Some(&b"/"[..]));
    // An absolute exec reads no directory.
    let sh = execs(&mine)
        .find(|e| e.filename() == b"/bin/sh")
        .expect("the shell's exec");
    assert_eq!(sh.working_directory(), None);
}

/// A child that forks and never execs can be gone before user space reads /proc: the
/// header names its parent, whose program it runs.
#[test]
fn events_of_a_fork_name_its_parent() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("fork");
    let path = format!("/tmp/herdwatch-test-{}-fork", std::process::id());
    fs::write(&path, "x\n").expect("writing the test file");
    // The subshell is a fork of sh; it opens the file itself and exits.
    let (shell, _) = cgroup.run(
        "/bin/sh",
        &["-c", r#"( read x < "$1" ); true"#, "sh", &path],
    );
    h.wait_for(&cgroup, "the subshell's open of the file", |events| {
        files(events).any(|f| f.path() == path.as_bytes())
    });
    let _ = fs::remove_file(&path);
    let mine = cgroup.events(&h.events);
    let open = files(&mine)
        .find(|f| f.path() == path.as_bytes())
        .expect("the open");
    assert_ne!(open.header.pid, shell, "the subshell is its own process");
    assert_eq!(
        open.header.ppid,
        shell,
        "the subshell's events name the shell as its parent: {}",
        describe(&mine)
    );
    // The shell's own exec names the test as its parent too.
    let exec = execs(&mine)
        .find(|e| e.header.pid == shell)
        .expect("the shell's exec");
    assert_eq!(exec.header.ppid, exec.ppid, "header and exec record agree");
}

#[test]
fn setuid_is_seen_with_old_and_new_ids() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("setuid");
    let (pid, _) = cgroup.python("import os\nos.setgid(65534)\nos.setuid(65534)\n", &[]);
    h.wait_for(&cgroup, "the setuid", |events| {
        identities(events).any(|i| i.syscall_nr == NR_SETUID)
    });
    let mine = cgroup.events(&h.events);
    let setuid = identities(&mine)
        .find(|i| i.syscall_nr == NR_SETUID)
        .expect("setuid");
    assert_eq!(setuid.header.pid, pid);
    assert_eq!(setuid.ret, 0);
    assert_eq!(
        (setuid.old_uid, setuid.new_uid),
        (0, 65534),
        "effective uid"
    );
    assert_eq!(setuid.args[0], 65534, "requested uid");
    assert_eq!(setuid.header.uid, 65534, "real uid after the call");
    assert_eq!(setuid.new_gid, 65534, "the setgid before it took effect");

    // A refused change is reported as such: nobody asking for root.
    let (refused_pid, _) = cgroup.run(
        "/usr/bin/setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            PYTHON,
            "-c",
            "import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n    pass\n",
        ],
    );
    h.wait_for(&cgroup, "the refused setuid(0)", |events| {
        identities(events).any(|i| i.header.pid == refused_pid && i.syscall_nr == NR_SETUID)
    });
    let mine = cgroup.events(&h.events);
    let refused = identities(&mine)
        .find(|i| i.header.pid == refused_pid && i.syscall_nr == NR_SETUID)
        .expect("refused setuid");
    assert_eq!(refused.ret, -1, "setuid(0) as nobody does not take effect");
    assert_eq!(refused.args[0], 0, "requested uid");
    assert_eq!((refused.old_uid, refused.new_uid), (65534, 65534));
}

#[test]
fn a_full_ring_buffer_is_counted_as_lost() {
    const EXECS: u64 = 64;
    // One page: room for four exec records (848 bytes each) and nothing is drained.
    let mut h = Harness::with_config(&CaptureConfig {
        ring_buffer_bytes: 4096,
        ..CaptureConfig::default()
    });
    let lost_before = h.capture.lost_counts().expect("lost counts");
    let emitted_before = h.capture.emitted_counts().expect("emitted counts");
    let cgroup = TestCgroup::new("overflow");
    cgroup.run(
        "/bin/sh",
        &[
            "-c",
            &format!("i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done"),
        ],
    );
    let lost = h.capture.lost_counts().expect("lost counts");
    let emitted = h.capture.emitted_counts().expect("emitted counts");
    let exec = EventKind::Exec as usize;
    let lost_execs = lost[exec] - lost_before[exec];
    let emitted_execs = emitted[exec] - emitted_before[exec];
    assert!(
        lost_execs >= EXECS - 4,
        "at least {} of {EXECS} execs cannot fit, but only {lost_execs} were counted lost",
        EXECS - 4
    );
    assert!(
        lost_execs + emitted_execs > EXECS,
        "every exec is either submitted or counted lost ({emitted_execs} + {lost_execs})"
    );
    // What was submitted is what is in the ring: nothing vanished.
    let mut drained = Vec::new();
    while h.capture.try_drain(&mut drained) > 0 {}
    let submitted: u64 = emitted.iter().sum::<u64>() - emitted_before.iter().sum::<u64>();
    assert!(
        drained.len() as u64 >= submitted,
        "{submitted} events submitted, {} drained",
        drained.len()
    );
    h.events = drained;
}

#[test]
fn map_memory_is_reported_and_config_is_checked() {
    let h = Harness::new();
    let bytes = h.capture.map_memory_bytes();
    // The 4 MiB ring buffer alone.
    assert!(bytes >= 4 << 20, "map memory {bytes} bytes");
    drop(h);
    let err = Capture::load(&CaptureConfig {
        ring_buffer_bytes: 5000,
        ..CaptureConfig::default()
    })
    .err()
    .expect("a ring buffer of 5000 bytes is refused");
    assert!(matches!(err, CaptureError::Config(_)), "{err}");
    assert!(err.to_string().contains("power of two"), "{err}");
}

/// Runs [`unprivileged_child`] in a copy of this test binary without capabilities.
#[test]
fn without_privileges_the_error_says_what_to_grant() {
    assert_root();
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("/usr/bin/setpriv")
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture"])
        .output()
        .expect("running setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the unprivileged load did not fail as expected:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "run by without_privileges_the_error_says_what_to_grant, with no capabilities"]
fn unprivileged_child() {
    let err = Capture::load(&CaptureConfig::default())
        .err()
        .expect("loading without capabilities must fail");
    assert!(
        err.to_string()
            .starts_with("BPF not permitted: run as root or grant CAP_BPF and CAP_PERFMON"),
        "{err}"
    );
}

/// Runs [`tracefs_free_child`] as a freshly booted node's agent pod would be: in a mount
/// namespace of its own where no tracefs is mounted, and without CAP_SYS_ADMIN, so that it
/// cannot mount one either. The host's mounts are left as they are.
#[test]
fn a_node_without_tracefs_is_watched_all_the_same() {
    assert_root();
    let exe = std::env::current_exe().expect("test binary path");
    let script = r#"
        for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do
          umount -l "$m" 2>/dev/null || true
        done
        exec /usr/bin/setpriv --inh-caps=-sys_admin --ambient-caps=-sys_admin \
          --bounding-set=-sys_admin -- "$0" --exact tracefs_free_child --ignored --nocapture
    "#;
    let output = Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .arg(exe)
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the agent could not load and watch without tracefs:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "run by a_node_without_tracefs_is_watched_all_the_same, without tracefs or CAP_SYS_ADMIN"]
fn tracefs_free_child() {
    for dir in [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ] {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists: the test's mount namespace still has a tracefs"
        );
    }
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("no-tracefs");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    cgroup.python(
        "import socket, sys\nsocket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n",
        &[&port.to_string()],
    );
    h.wait_for(&cgroup, "a TCP connect seen without tracefs", |events| {
        nets(events).any(|n| n.op == NET_CONNECT && n.dport == port)
    });
}

/// The path the kernel reports for an exec of `program`: its real path, so that the tests
/// do not depend on /bin being a link to /usr/bin.
fn real_path(program: &str) -> String {
    fs::canonicalize(program)
        .unwrap_or_else(|e| panic!("{program} is needed by this test: {e}"))
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

/// A shell script that would leave a file behind if it ran, in a directory of its own.
struct Script {
    dir: PathBuf,
    path: String,
    marker: PathBuf,
}

impl Script {
    fn new(name: &str) -> Script {
        let dir =
            std::env::temp_dir().join(format!("herdwatch-kill-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a temporary directory");
        let marker = dir.join("ran");
        let path = dir.join(name);
        fs::write(
            &path,
            format!("#!/bin/sh\necho ran > '{}'\n", marker.display()),
        )
        .expect("writing the script");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Script {
            path: path.to_str().expect("UTF-8").to_owned(),
            dir,
            marker,
        }
    }

    fn ran(&self) -> bool {
        self.marker.exists()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program` in `cgroup` and returns how it ended.
fn status_of(cgroup: &TestCgroup, program: &str) -> std::process::ExitStatus {
    cgroup
        .command(program, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"))
}

fn killed_by_sigkill(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL)
}

fn allow_only(paths: &[&str]) -> Arc<ExecRules> {
    Arc::new(ExecRules {
        allow: Some(Arc::new(
            paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
        )),
        ..ExecRules::default()
    })
}

#[test]
fn an_exec_outside_the_allow_list_dies_before_it_runs() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("allow");
    let truth = real_path("/bin/true");
    let script = Script::new("not-allowed.sh");
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth]))]),
    );

    let status = status_of(&cgroup, &script.path);
    assert!(
        killed_by_sigkill(status),
        "{} is not on the allow list: {status}",
        script.path
    );
    assert!(!script.ran(), "the script ran before it was killed");
    h.wait_for(
        &cgroup,
        "the exec of the script, flagged as killed",
        |events| {
            execs(events).any(|e| e.filename() == script.path.as_bytes() && e.killed_in_kernel())
        },
    );

    let status = status_of(&cgroup, &truth);
    assert!(status.success(), "{truth} is allowed: {status}");
    h.wait_for(&cgroup, "the exec of true, not flagged", |events| {
        execs(events).any(|e| e.filename() == truth.as_bytes() && !e.killed_in_kernel())
    });

    // The allowed program run by a relative path from its directory is not killed in the
    // kernel: the path is the agent's to resolve (against the directory the event carries).
    let (dir, name) = truth.rsplit_once('/').expect("an absolute path");
    let relative = format!("./{name}");
    let status = cgroup
        .command(&relative, &[])
        .current_dir(if dir.is_empty() { "/" } else { dir })
        .status()
        .expect("running true by a relative path");
    assert!(
        status.success(),
        "{relative} from {dir} is left to user space: {status}"
    );
    h.wait_for(
        &cgroup,
        "the relative exec of true, not flagged",
        |events| {
            execs(events).any(|e| e.filename() == relative.as_bytes() && !e.killed_in_kernel())
        },
    );
    assert_eq!(enforcer.stats().write_errors, 0);
}

/// A container's PID 1 (the init of its pid namespace) whose exec is denied is spared
/// unless the rules ask for it: killing it restarts the container, and a rule against shells
/// would crash-loop every image whose entrypoint is one. Other processes still die.
#[test]
fn a_containers_init_is_spared_unless_the_rules_ask() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("init");
    let truth = real_path("/bin/true");
    let unshare = real_path("/usr/bin/unshare");
    let mut enforcer = KernelEnforcer::new();
    let rules = |spare_init: bool| {
        BTreeMap::from([(
            cgroup.id,
            Arc::new(ExecRules {
                deny_paths: [truth.as_bytes().to_vec()].into(),
                spare_init,
                ..ExecRules::default()
            }),
        )])
    };
    let as_init = |cgroup: &TestCgroup| {
        cgroup
            .command(&unshare, &["--pid", "--fork", &truth])
            .status()
            .expect("running unshare")
    };
    // In a new pid namespace, a shell (PID 1) forks the denied program (PID 2).
    let as_child = |cgroup: &TestCgroup| {
        cgroup
            .command(
                &unshare,
                &[
                    "--pid",
                    "--fork",
                    "/bin/sh",
                    "-c",
                    &format!("{truth}; exit $?"),
                ],
            )
            .status()
            .expect("running unshare")
    };

    enforcer.sync(&mut h.capture, &rules(true));
    let status = as_init(&cgroup);
    assert!(status.success(), "the namespace's init is spared: {status}");
    let status = as_child(&cgroup);
    assert_eq!(status.code(), Some(128 + 9), "a child is killed: {status}");

    enforcer.sync(&mut h.capture, &rules(false));
    let status = as_init(&cgroup);
    assert!(
        !status.success(),
        "asked for, the init is killed too: {status}"
    );
    h.wait_for(&cgroup, "the execs of true", |events| {
        execs(events)
            .filter(|e| e.filename() == truth.as_bytes())
            .count()
            >= 3
    });
    let flags: Vec<bool> = execs(&cgroup.events(&h.events))
        .filter(|e| e.filename() == truth.as_bytes())
        .map(|e| e.killed_in_kernel())
        .collect();
    assert_eq!(flags, [false, true, true], "spared, killed, killed");
}

#[test]
fn a_denied_executable_dies_and_nothing_else_does() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("deny");
    let truth = real_path("/bin/true");
    let env = real_path("/usr/bin/env");
    let echo = real_path("/bin/echo");
    let mut enforcer = KernelEnforcer::new();
    let rules = ExecRules {
        deny_paths: [truth.as_bytes().to_vec()].into(),
        // By name, wherever it is.
        deny_names: [b"env".to_vec()].into(),
        ..ExecRules::default()
    };
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(cgroup.id, Arc::new(rules))]),
    );
    for denied in [&truth, &env] {
        let status = status_of(&cgroup, denied);
        assert!(killed_by_sigkill(status), "{denied} is denied: {status}");
    }
    let status = status_of(&cgroup, &echo);
    assert!(status.success(), "{echo} is not denied: {status}");
    h.wait_for(&cgroup, "the execs, the denied ones flagged", |events| {
        let flagged = |path: &str| {
            execs(events)
                .find(|e| e.filename() == path.as_bytes())
                .map(|e| e.killed_in_kernel())
        };
        flagged(&truth) == Some(true)
            && flagged(&env) == Some(true)
            && flagged(&echo) == Some(false)
    });
}

#[test]
fn cgroups_without_an_entry_are_never_touched_and_removing_it_stops_the_killing() {
    let mut h = Harness::new();
    let enforced = TestCgroup::new("enforced");
    let other = TestCgroup::new("other");
    let truth = real_path("/bin/true");
    let script = Script::new("elsewhere.sh");
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(enforced.id, allow_only(&[&truth]))]),
    );

    let status = status_of(&other, &script.path);
    assert!(status.success(), "a cgroup without an entry: {status}");
    assert!(script.ran());
    fs::remove_file(&script.marker).expect("removing the marker");

    assert!(killed_by_sigkill(status_of(&enforced, &script.path)));
    assert!(!script.ran());

    // The container's profile goes back to Monitoring (or the cgroup goes away).
    enforcer.sync(&mut h.capture, &BTreeMap::new());
    let status = status_of(&enforced, &script.path);
    assert!(status.success(), "no entry any more: {status}");
    assert!(script.ran());
    h.settle();
    assert!(
        execs(&other.events(&h.events)).all(|e| !e.killed_in_kernel()),
        "nothing flagged in the other cgroup"
    );
}

#[test]
fn a_full_ring_buffer_does_not_stop_the_killing() {
    // One page and nothing drained: after a few execs nothing fits.
    let mut h = Harness::with_config(&CaptureConfig {
        ring_buffer_bytes: 4096,
        ..CaptureConfig::default()
    });
    let filler = TestCgroup::new("filler");
    let enforced = TestCgroup::new("enforced-full");
    let truth = real_path("/bin/true");
    let script = Script::new("unrecorded.sh");
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(enforced.id, allow_only(&[&truth]))]),
    );
    let lost_before = h.capture.lost_counts().expect("lost counts")[EventKind::Exec as usize];
    filler.run(
        "/bin/sh",
        &[
            "-c",
            "i=0; while [ $i -lt 16 ]; do /bin/true; i=$((i+1)); done",
        ],
    );
    let status = status_of(&enforced, &script.path);
    let lost = h.capture.lost_counts().expect("lost counts")[EventKind::Exec as usize];
    assert!(lost > lost_before, "the ring buffer was not full");
    assert!(killed_by_sigkill(status), "{status}");
    assert!(!script.ran());

    // Names in the arguments are read there too.
    let named = TestCgroup::new("named-full");
    let by_name = ExecRules {
        deny_names: [b"herdwatch-denied".to_vec()].into(),
        ..ExecRules::default()
    };
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([
            (enforced.id, allow_only(&[&truth])),
            (named.id, Arc::new(by_name)),
        ]),
    );
    let status = bash_status(
        &named,
        "exec -a herdwatch-denied /proc/self/exe -c 'exit 0'",
    );
    let lost_after = h.capture.lost_counts().expect("lost counts")[EventKind::Exec as usize];
    assert!(lost_after > lost, "the ring buffer is still full");
    assert!(
        killed_by_sigkill(status),
        "run as herdwatch-denied: {status}"
    );
}

/// Runs `bash -c script` in `cgroup` and returns how it ended.
fn bash_status(cgroup: &TestCgroup, script: &str) -> std::process::ExitStatus {
    let bash = real_path("/bin/bash");
    cgroup
        .command(&bash, &["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("starting {bash} -c {script:?}: {e}"))
}

/// The exec of `filename` whose `argv[0]` is `argv0`, if the capture saw one, and whether
/// the kernel flagged it as killed.
fn flagged(events: &[Event], filename: &str, argv0: &str) -> Option<bool> {
    execs(events)
        .find(|e| e.filename() == filename.as_bytes() && e.argv().next() == Some(argv0.as_bytes()))
        .map(|e| e.killed_in_kernel())
}

#[test]
fn a_name_denied_as_argv0_dies_whatever_path_runs_it() {
    // busybox runs its `wget` applet as execve("/proc/self/exe", ["wget", ...]): the path
    // says nothing, argv[0] names the program. bash's `exec -a` does the same.
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("argv0");
    let mut enforcer = KernelEnforcer::new();
    let rules = ExecRules {
        deny_names: [b"herdwatch-denied".to_vec()].into(),
        ..ExecRules::default()
    };
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(cgroup.id, Arc::new(rules))]),
    );

    for argv0 in ["herdwatch-denied", "/opt/tools/herdwatch-denied"] {
        let status = bash_status(
            &cgroup,
            &format!("exec -a {argv0} /proc/self/exe -c 'exit 0'"),
        );
        assert!(
            killed_by_sigkill(status),
            "/proc/self/exe run as {argv0}: {status}"
        );
    }
    for argv0 in ["herdwatch-denied-not", "herdwatch"] {
        let status = bash_status(
            &cgroup,
            &format!("exec -a {argv0} /proc/self/exe -c 'exit 0'"),
        );
        assert!(status.success(), "/proc/self/exe run as {argv0}: {status}");
    }
    h.wait_for(
        &cgroup,
        "the execs of /proc/self/exe, the denied ones flagged",
        |events| {
            let exe = "/proc/self/exe";
            flagged(events, exe, "herdwatch-denied") == Some(true)
                && flagged(events, exe, "/opt/tools/herdwatch-denied") == Some(true)
                && flagged(events, exe, "herdwatch-denied-not") == Some(false)
                && flagged(events, exe, "herdwatch") == Some(false)
        },
    );
    assert_eq!(enforcer.stats().write_errors, 0);
}

#[test]
fn a_multi_call_binary_dies_as_a_denied_applet_and_nothing_else_does() {
    // A link named busybox to bash: the kernel sees the path of the link, as it sees
    // /bin/busybox when /bin/sh links to it.
    let dir = std::env::temp_dir().join(format!("herdwatch-multi-call-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating a temporary directory");
    let busybox = dir.join("busybox");
    std::os::unix::fs::symlink(real_path("/bin/bash"), &busybox).expect("linking busybox");
    let busybox = busybox.to_str().expect("UTF-8").to_owned();

    let mut h = Harness::new();
    let cgroup = TestCgroup::new("applet");
    let mut enforcer = KernelEnforcer::new();
    let rules = ExecRules {
        deny_applets: [b"sh".to_vec()].into(),
        ..ExecRules::default()
    };
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(cgroup.id, Arc::new(rules))]),
    );

    let cases = [
        // (script, argv[0] the exec shows, killed)
        (
            format!("exec -a sh {busybox} -c 'exit 0'"),
            busybox.as_str(),
            "sh",
            true,
        ),
        (
            format!("exec -a busybox {busybox} sh"),
            busybox.as_str(),
            "busybox",
            true,
        ),
        (
            format!("exec -a /bin/busybox {busybox} -c 'exit 0'"),
            busybox.as_str(),
            "/bin/busybox",
            false,
        ),
        // Not a multi-call binary: argv[0] alone does not make a shell.
        (
            "exec -a sh /proc/self/exe -c 'exit 0'".to_owned(),
            "/proc/self/exe",
            "sh",
            false,
        ),
    ];
    for (script, _, _, killed) in &cases {
        let status = bash_status(&cgroup, script);
        if *killed {
            assert!(killed_by_sigkill(status), "{script}: {status}");
        } else {
            assert!(status.success(), "{script}: {status}");
        }
    }
    h.wait_for(&cgroup, "the execs, the shells flagged", |events| {
        cases
            .iter()
            .all(|(_, exe, argv0, killed)| flagged(events, exe, argv0) == Some(*killed))
    });
    let _ = fs::remove_dir_all(&dir);
}

/// The exec of `filename` whose arguments start with `args`, if the capture saw one, and
/// whether the kernel flagged it as killed.
fn flagged_run(events: &[Event], filename: &str, args: &[&str]) -> Option<bool> {
    execs(events)
        .find(|e| {
            e.filename() == filename.as_bytes()
                && e.argv()
                    .take(args.len())
                    .eq(args.iter().map(|a| a.as_bytes()))
        })
        .map(|e| e.killed_in_kernel())
}

#[test]
fn a_binaries_deny_kills_the_applet_a_multi_call_binary_is_asked_to_be() {
    // `busybox wget` runs wget. A link named busybox to bash stands in for busybox, as in
    // the test above, and a script named wget for the applet: bash runs the script when
    // the exec is not killed, so an exec that should have died exits instead.
    let dir = std::env::temp_dir().join(format!(
        "herdwatch-multi-call-binaries-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("creating a temporary directory");
    let busybox = dir.join("busybox");
    std::os::unix::fs::symlink(real_path("/bin/bash"), &busybox).expect("linking busybox");
    let busybox = busybox.to_str().expect("UTF-8").to_owned();
    fs::write(dir.join("wget"), "exit 0\n").expect("writing the wget script");
    let bash = real_path("/bin/bash");

    let mut h = Harness::new();
    let cgroup = TestCgroup::new("binaries-applet");
    // The rules the agent derives from a policy with `deny: Binaries: [wget]`.
    let policy = ClusterPolicy {
        name: "fetchers".into(),
        rules: vec![PolicyRule {
            name: "no-wget".into(),
            deny: Deny::Binaries(vec!["wget".into()]),
            action: ResponseAction::Kill,
            kill_process: true,
            kill_container_init: false,
            exceptions: Exceptions::default(),
        }],
        ..ClusterPolicy::default()
    };
    let mut rules = ExecRules::default();
    add_policy_denies(&policy, "app", &mut rules);
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(cgroup.id, Arc::new(rules))]),
    );

    let cases = [
        // (exec, the exec's path, its first arguments, killed)
        (
            format!("exec -a busybox {busybox} wget"),
            busybox.as_str(),
            ["busybox", "wget"],
            true,
        ),
        (
            format!("exec -a /bin/busybox {busybox} wget"),
            busybox.as_str(),
            ["/bin/busybox", "wget"],
            true,
        ),
        // busybox runs the last component: wget. (bash would fail on the option.)
        (
            format!("exec -a busybox {busybox} -/wget"),
            busybox.as_str(),
            ["busybox", "-/wget"],
            true,
        ),
        // The applet re-executed through /proc/self/exe, named by argv[0].
        (
            "exec -a wget /proc/self/exe -c 'exit 0'".to_owned(),
            "/proc/self/exe",
            ["wget", "-c"],
            true,
        ),
        // An option is not an applet: bash runs the script.
        (
            format!("exec -a busybox {busybox} --norc wget"),
            busybox.as_str(),
            ["busybox", "--norc"],
            false,
        ),
        // Not a multi-call binary: its argv[1] is only an argument.
        (
            format!("exec -a bash {bash} wget"),
            bash.as_str(),
            ["bash", "wget"],
            false,
        ),
    ];
    for (exec, _, _, killed) in &cases {
        let script = format!("cd '{}' && {exec}", dir.display());
        let status = bash_status(&cgroup, &script);
        if *killed {
            assert!(killed_by_sigkill(status), "{exec}: {status}");
        } else {
            assert!(status.success(), "{exec}: {status}");
        }
    }
    h.wait_for(&cgroup, "the execs, the wget ones flagged", |events| {
        cases
            .iter()
            .all(|(_, exe, args, killed)| flagged_run(events, exe, args) == Some(*killed))
    });
    assert_eq!(enforcer.stats().write_errors, 0);
    let _ = fs::remove_dir_all(&dir);
}

/// Syscalls only a container runtime's set-up makes here (x86_64 numbers).
const RUNTIME_SETUP_SYSCALLS: [(u32, &str); 7] = [
    (155, "pivot_root"),
    (165, "mount"),
    (166, "umount2"),
    (170, "sethostname"),
    (250, "keyctl"),
    (272, "unshare"),
    (308, "setns"),
];

/// A runc bundle of the static busybox: `sh`, `cat` and `sleep`, and an /etc/hostname
/// for the workload to read.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    /// A bundle running `args` in `cgroup`.
    fn new(name: &str, args: &[&str], cgroup: &TestCgroup) -> Bundle {
        let cgroups_path = format!(
            "/{}",
            cgroup
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("the test cgroup has a name")
        );
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: apt-get install busybox-static (make unit-test installs it)"
        );
        let dir = std::env::temp_dir().join(format!("herdwatch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(sub)).expect("creating the bundle's rootfs");
        }
        fs::copy(busybox, rootfs.join("bin/busybox")).expect("copying busybox");
        for applet in ["sh", "cat", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("linking an applet");
        }
        fs::write(rootfs.join("etc/hostname"), "herdwatch-runc-test\n").expect("writing hostname");
        let spec = Command::new(runc())
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .expect("running runc spec");
        assert!(spec.status.success(), "runc spec: {spec:?}");
        let path = dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("reading config.json"))
                .expect("runc's config.json is JSON");
        config["process"]["terminal"] = serde_json::json!(false);
        config["process"]["args"] = serde_json::json!(args);
        config["root"]["readonly"] = serde_json::json!(false);
        config["linux"]["cgroupsPath"] = serde_json::json!(cgroups_path);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).expect("writing config.json");
        Bundle { dir }
    }

    /// `runc run` of this bundle as container `<prefix>-<test pid>` (a leftover of that
    /// name deleted first): its id and the running `runc`.
    fn run(&self, prefix: &str) -> (String, std::process::Child) {
        let id = format!("{prefix}-{}", std::process::id());
        let _ = Command::new(runc())
            .args(["delete", "--force", &id])
            .output();
        let child = Command::new(runc())
            .args(["run", "--bundle"])
            .arg(&self.dir)
            .arg(&id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting runc run");
        (id, child)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Debian's runc; the test fails saying how to get it when it is missing.
fn runc() -> &'static str {
    const RUNC: &str = "/usr/sbin/runc";
    assert!(
        Path::new(RUNC).exists(),
        "{RUNC} is missing: apt-get install runc (make unit-test installs it)"
    );
    RUNC
}

fn syscall_names(events: &[Event], of: &[(u32, &'static str)]) -> Vec<&'static str> {
    let seen = syscall_nrs(events);
    of.iter()
        .filter(|(nr, _)| seen.contains(nr))
        .map(|(_, name)| *name)
        .collect()
}

fn file_paths(events: &[Event]) -> Vec<String> {
    files(events)
        .map(|f| String::from_utf8_lossy(&f.path[..f.path_len as usize]).into_owned())
        .collect()
}

/// A real runc container: what runc's init does in the container's cgroup before it execs
/// the entrypoint (mount, pivot_root, sethostname, keyctl, opening its state and the
/// bundle on the host, capset) is not reported, and what the entrypoint does is. The same
/// for `runc exec` into it: its set-up (setns) is not reported, its command is.
#[test]
fn a_runc_containers_set_up_is_not_its_workload() {
    let runc = runc();
    let cgroup = TestCgroup::new("runc");
    let bundle = Bundle::new(
        "runc",
        &[
            "/bin/sh",
            "-c",
            "cat /etc/hostname; sleep 3; cat /etc/hostname",
        ],
        &cgroup,
    );
    let mut h = Harness::new();
    let (id, container) = bundle.run("herdwatch-test");
    h.wait_for(
        &cgroup,
        "the entrypoint's exec and its open of /etc/hostname",
        |events| file_paths(events).iter().any(|p| p == "/etc/hostname"),
    );
    // While it sleeps: an exec session, as kubectl exec and exec probes make one.
    let exec = Command::new(runc)
        .args(["exec", &id, "/bin/cat", "/etc/hostname"])
        .output()
        .expect("running runc exec");
    assert!(exec.status.success(), "runc exec: {exec:?}");
    let output = container.wait_with_output().expect("waiting for runc run");
    assert!(output.status.success(), "runc run: {output:?}");
    h.settle();

    let mine = cgroup.events(&h.events);
    let programs: Vec<String> = execs(&mine)
        .map(|e| String::from_utf8_lossy(&e.filename[..e.filename_len as usize]).into_owned())
        .collect();
    assert!(
        programs.iter().any(|p| p == "/bin/sh") && programs.iter().any(|p| p == "/bin/cat"),
        "the entrypoint and the exec session's command are seen: {programs:?}"
    );
    // runc starting its own init again inside the cgroup (a sealed copy of itself in a
    // memfd, run as /dev/fd/N or /proc/self/exe) is the runtime, not the workload.
    let runtime_execs: Vec<String> = execs(&mine)
        .filter(|e| {
            e.real_file_name()
                .is_some_and(|n| n.starts_with(b"memfd:runc") || n == b"runc")
        })
        .map(|e| String::from_utf8_lossy(&e.filename[..e.filename_len as usize]).into_owned())
        .collect();
    assert!(
        runtime_execs.is_empty(),
        "runc's own re-exec was reported as the container's: {runtime_execs:?}"
    );
    assert_no_runtime_setup(&mine, &bundle);
    // The workload's own calls are reported.
    let seen = syscall_nrs(&mine);
    assert!(
        seen.contains(&NR_EXECVE) && seen.contains(&NR_EXIT_GROUP),
        "the workload's execve (sh running cat) and exit_group are reported: {seen:?}"
    );
}

/// What runc does in the container's cgroup before the entrypoint's exec (mounts, pivot,
/// namespaces, its own files, id and capability changes) was reported as none of the
/// container's.
fn assert_no_runtime_setup(mine: &[Event], bundle: &Bundle) {
    let setup = syscall_names(mine, &RUNTIME_SETUP_SYSCALLS);
    assert!(
        setup.is_empty(),
        "the runtime's set-up was reported as the container's: {setup:?}; {}",
        describe(mine)
    );
    let paths = file_paths(mine);
    let bundle_dir = bundle.dir.display().to_string();
    let runtime_files: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with(&bundle_dir) || p.contains("runc") || p.starts_with("/run/"))
        .collect();
    assert!(
        runtime_files.is_empty(),
        "the runtime's own files were reported as the container's: {runtime_files:?}"
    );
    let identities: Vec<&IdentityEvent> = identities(mine).collect();
    assert!(
        identities.is_empty(),
        "the runtime's capset and id changes were reported as the container's: {identities:?}"
    );
}

/// The pod sandbox's process (the e2e cluster's static `pause`) run by runc: its exec is
/// seen, and runc's set-up around it is not, as for any other entrypoint.
#[test]
fn a_pause_containers_set_up_is_not_its_workload() {
    let runc = runc();
    let cgroup = TestCgroup::new("pause");
    let bundle = Bundle::new("pause", &["/pause"], &cgroup);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/images/pause/pause.c");
    let gcc = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(bundle.dir.join("rootfs/pause"))
        .arg(&source)
        .output()
        .expect("gcc is missing: apt-get install gcc libc6-dev (make unit-test installs them)");
    assert!(gcc.status.success(), "building pause: {gcc:?}");
    let mut h = Harness::new();
    let (id, mut container) = bundle.run("herdwatch-pause");
    h.wait_for(&cgroup, "the exec of /pause", |events| {
        execs(events).any(|e| e.filename() == b"/pause")
    });
    let kill = Command::new(runc)
        .args(["kill", &id, "TERM"])
        .output()
        .expect("running runc kill");
    assert!(kill.status.success(), "runc kill: {kill:?}");
    let status = container.wait().expect("waiting for runc run");
    assert!(status.success(), "pause exits 0 on SIGTERM: {status}");
    h.settle();

    let mine = cgroup.events(&h.events);
    let programs: Vec<&[u8]> = execs(&mine).map(|e| e.filename()).collect();
    assert_eq!(
        programs,
        [&b"/pause"[..]],
        "the sandbox's only exec is its own: {}",
        describe(&mine)
    );
    assert_no_runtime_setup(&mine, &bundle);
    // pause's own start-up is reported: it installs its signal handlers.
    let seen = syscall_nrs(&mine);
    assert!(
        seen.contains(&NR_RT_SIGACTION),
        "pause's rt_sigaction: {seen:?}"
    );
}

/// A BPF filesystem of the test's own, unmounted (with whatever is pinned in it) when
/// dropped: the host's /sys/fs/bpf is left alone.
struct PrivateBpffs {
    dir: PathBuf,
}

impl PrivateBpffs {
    fn new(name: &str) -> PrivateBpffs {
        let dir =
            std::env::temp_dir().join(format!("herdwatch-bpffs-{}-{name}", std::process::id()));
        let _ = Command::new("umount")
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        fs::create_dir_all(&dir).expect("creating the mount point");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a BPF filesystem on {}: {status}",
            dir.display()
        );
        PrivateBpffs { dir }
    }

    fn config(&self, ring_buffer_bytes: u32) -> CaptureConfig {
        CaptureConfig {
            ring_buffer_bytes,
            pin_root: Some(self.dir.join("herdwatch")),
            ..CaptureConfig::default()
        }
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Whether `check` holds within a few seconds.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn load(config: &CaptureConfig) -> Capture {
    Capture::load(config).unwrap_or_else(|e| {
        panic!(
            "loading the eBPF programs failed: {:#}",
            anyhow::Error::new(e)
        )
    })
}

/// Drains `capture` (without a runtime) until an exec of `path` in `cgroup` shows up;
/// returns whether the kernel flagged it as killed.
fn drained_exec(capture: &mut Capture, cgroup: &TestCgroup, path: &str) -> Option<bool> {
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(e) = execs(&cgroup.events(&events)).find(|e| e.filename() == path.as_bytes()) {
            return Some(e.killed_in_kernel());
        }
        if capture.try_drain(&mut events) == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(capture.decode_errors(), 0, "records that did not decode");
    }
    None
}

/// The agent going away (a crash, an OOM kill, a restart) leaves its pinned programs
/// attached: the kernel goes on killing at exec and capturing, and the next agent adopts
/// the maps, rules and all, and reads what was captured meanwhile. Unpinned, they detach.
#[test]
fn pinned_programs_keep_killing_while_no_agent_runs_and_are_adopted() {
    assert_root();
    let _turn = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    let bpffs = PrivateBpffs::new("adopt");
    let config = bpffs.config(1 << 20);
    let cgroup = TestCgroup::new("pinned");
    let truth = real_path("/bin/true");
    let script = Script::new("while-away.sh");

    let mut first = load(&config);
    let pinned = first.pinned().expect("pinned").clone();
    assert!(!pinned.adopted && pinned.earlier.is_empty());
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut first,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth]))]),
    );
    first
        .set_agent_state(AgentState::Heartbeat, 1_000)
        .expect("writing the heartbeat");
    // As a real agent does, the first one has read events: the ring's positions are far
    // from zero when the next one adopts it.
    assert!(status_of(&cgroup, &truth).success());
    assert_eq!(drained_exec(&mut first, &cgroup, &truth), Some(false));
    drop(first);

    // No agent now.
    assert!(
        killed_by_sigkill(status_of(&cgroup, &script.path)),
        "the kernel still kills what the rules do not allow"
    );
    assert!(!script.ran());
    assert!(status_of(&cgroup, &truth).success());

    let mut second = load(&config);
    let adopted = second.pinned().expect("pinned").clone();
    assert!(adopted.adopted, "the same build adopts the pinned set");
    assert_eq!(adopted.set, pinned.set);
    assert_eq!(second.agent_state(AgentState::Heartbeat).unwrap(), 1_000);
    assert_eq!(second.agent_state(AgentState::Adoptions).unwrap(), 1);
    assert_eq!(
        drained_exec(&mut second, &cgroup, &script.path),
        Some(true),
        "the exec killed while no agent ran is in the ring buffer for the next agent"
    );
    // And it reads on from there: what happens now arrives too, time and again (the ring
    // is read from the position the kernel holds, not from a fresh reader's zero).
    for _ in 0..3 {
        assert!(status_of(&cgroup, &truth).success());
        assert_eq!(drained_exec(&mut second, &cgroup, &truth), Some(false));
    }

    // The new agent takes the rules over, and changes them without a gap.
    let mut enforcer = KernelEnforcer::new();
    enforcer.adopt(
        second.enforcement().expect("reading the enforcement"),
        second.exe_rule_keys().expect("reading the rules"),
    );
    assert_eq!(enforcer.generation(cgroup.id), Some(1));
    enforcer.sync(
        &mut second,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth, &script.path]))]),
    );
    assert_eq!(enforcer.generation(cgroup.id), Some(2));
    assert!(status_of(&cgroup, &script.path).success(), "now allowed");
    assert!(script.ran());
    fs::remove_file(&script.marker).expect("removing the marker");
    enforcer.sync(
        &mut second,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth]))]),
    );
    assert!(killed_by_sigkill(status_of(&cgroup, &script.path)));

    // Uninstalled: the pins go, and the programs with the last agent.
    second.unpin().expect("unpinning");
    assert!(!pinned.set.dir().exists());
    drop(second);
    assert!(
        eventually(|| status_of(&cgroup, &script.path).success()),
        "nothing of herdwatch is left in the kernel"
    );
    assert!(script.ran());
}

/// An upgrade: the new build's set is loaded beside the earlier one, which keeps killing
/// until the new agent's rules are written and it is retired.
#[test]
fn an_earlier_builds_programs_keep_killing_until_the_new_agent_retires_them() {
    assert_root();
    let _turn = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    let bpffs = PrivateBpffs::new("upgrade");
    let cgroup = TestCgroup::new("upgrade");
    let truth = real_path("/bin/true");
    let script = Script::new("during-upgrade.sh");

    // Another ring buffer size stands for another build: another object id.
    let mut earlier = load(&bpffs.config(1 << 20));
    KernelEnforcer::new().sync(
        &mut earlier,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth]))]),
    );
    earlier
        .set_agent_state(AgentState::Heartbeat, 2_000)
        .unwrap();
    let earlier_set = earlier.pinned().unwrap().set.clone();
    drop(earlier);

    let mut upgraded = load(&bpffs.config(1 << 21));
    let pinned = upgraded.pinned().unwrap().clone();
    assert!(!pinned.adopted);
    assert_eq!(pinned.earlier, vec![earlier_set.clone()]);
    assert_eq!(Capture::pinned_agent_times(&earlier_set), Some((2_000, 0)));
    assert!(
        killed_by_sigkill(status_of(&cgroup, &script.path)),
        "the earlier build's programs kill until the new agent's rules are in"
    );
    let mut enforcer = KernelEnforcer::new();
    enforcer.sync(
        &mut upgraded,
        &BTreeMap::from([(cgroup.id, allow_only(&[&truth]))]),
    );
    assert_eq!(upgraded.retire_earlier().unwrap(), 1);
    assert!(!earlier_set.dir().exists());
    assert!(
        killed_by_sigkill(status_of(&cgroup, &script.path)),
        "the new rules kill"
    );
    enforcer.sync(&mut upgraded, &BTreeMap::new());
    // The kernel frees an unpinned link after a grace period, not at the unlink.
    assert!(
        eventually(|| status_of(&cgroup, &script.path).success()),
        "with the earlier programs detached and no rule, nothing kills"
    );
    upgraded.unpin().unwrap();
}

/// A container created since the agent last wrote (a restart) has no entry of its own: its
/// pod's inherited entry judges it from its first exec. The pod's cgroup itself is not
/// judged by an entry meant for its containers, and a container's own entry comes first.
#[test]
fn a_new_container_is_judged_by_its_pods_entry_from_its_first_exec() {
    let mut h = Harness::new();
    let pod = TestCgroup::new("pod");
    let restarted = pod.child("restarted");
    let truth = real_path("/bin/true");
    let script = Script::new("in-a-new-container.sh");
    let mut enforcer = KernelEnforcer::new();
    let common = ExecRules::common_to(&[
        (*allow_only(&[&truth])).clone(),
        (*allow_only(&[&truth])).clone(),
    ]);
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([(pod.id, Arc::new(common))]),
    );

    assert!(
        killed_by_sigkill(status_of(&restarted, &script.path)),
        "the pod's rules judge a container without an entry"
    );
    assert!(!script.ran());
    assert!(status_of(&restarted, &truth).success());
    h.wait_for(
        &restarted,
        "the exec of the script, flagged as killed",
        |events| {
            execs(events).any(|e| e.filename() == script.path.as_bytes() && e.killed_in_kernel())
        },
    );

    assert!(
        status_of(&pod, &script.path).success(),
        "an entry for the containers below does not judge the pod's own cgroup"
    );
    assert!(script.ran());
    fs::remove_file(&script.marker).expect("removing the marker");

    // The agent writes the container's own entry: it comes first.
    enforcer.sync(
        &mut h.capture,
        &BTreeMap::from([
            (
                pod.id,
                Arc::new(ExecRules::common_to(&[(*allow_only(&[&truth])).clone()])),
            ),
            (restarted.id, allow_only(&[&truth, &script.path])),
        ]),
    );
    assert!(
        status_of(&restarted, &script.path).success(),
        "its own entry allows it"
    );
    assert!(script.ran());
    drop(restarted);
}

/// An overlay mount of the test's own (an image's layer below, a writable layer on top),
/// unmounted when dropped.
struct TestOverlay {
    dir: PathBuf,
    merged: PathBuf,
}

impl TestOverlay {
    fn new(name: &str) -> TestOverlay {
        let dir =
            std::env::temp_dir().join(format!("herdwatch-overlay-{}-{name}", std::process::id()));
        let merged = dir.join("merged");
        let _ = Command::new("umount")
            .arg(&merged)
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&dir);
        for sub in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(dir.join(sub)).expect("creating the overlay's directories");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            dir.join("lower").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        // The image's file, in the lower layer before the mount.
        fs::copy(real_path("/bin/true"), dir.join("lower/from-image")).expect("copying true");
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting an overlay on {}: {status}",
            merged.display()
        );
        TestOverlay { dir, merged }
    }
}

impl Drop for TestOverlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Drift as the kernel sees it: a file only in the image's layer is from the image; one
/// written in the container (in the writable layer), or changed there, is not, whatever
/// path runs it.
#[test]
fn the_kernel_tells_the_overlay_layer_of_the_file_an_exec_runs() {
    let mut h = Harness::new();
    let cgroup = TestCgroup::new("layers");
    let overlay = TestOverlay::new("layers");
    let image = overlay.merged.join("from-image");
    let written = overlay.merged.join("written-later");
    fs::copy(real_path("/bin/true"), &written).expect("writing a file in the container");
    let link = overlay.merged.join("link-to-written");
    std::os::unix::fs::symlink(&written, &link).expect("a symbolic link");

    let path = |p: &Path| p.to_str().expect("UTF-8").to_owned();
    for p in [&image, &written, &link] {
        assert!(
            status_of(&cgroup, &path(p)).success(),
            "running {}",
            p.display()
        );
    }
    let layer_of = |h: &mut Harness, p: &Path| {
        let p = path(p);
        h.wait_for(&cgroup, &format!("the exec of {p}"), |events| {
            execs(events).any(|e| e.filename() == p.as_bytes())
        });
        let mine = cgroup.events(&h.events);
        let e = execs(&mine)
            .find(|e| e.filename() == p.as_bytes())
            .copied()
            .unwrap();
        assert_ne!(e.exe_ino, 0, "the inode of {p}");
        (e.exe_in_image(), e.exe_ino)
    };
    let (from_image, image_ino) = layer_of(&mut h, &image);
    assert_eq!(from_image, Some(true), "only in the image's layer");
    assert_eq!(
        layer_of(&mut h, &image).1,
        image_ino,
        "the same file, the same inode"
    );
    assert_eq!(
        layer_of(&mut h, &written).0,
        Some(false),
        "written after start"
    );
    assert_eq!(
        layer_of(&mut h, &link).0,
        Some(false),
        "a link names the written file: the kernel judges the file, not the path"
    );

    // Changed in the container: copied up into the writable layer.
    fs::OpenOptions::new()
        .append(true)
        .open(&image)
        .expect("opening the image's file for writing");
    let changed = fs::read(&image).expect("reading");
    fs::write(&image, changed).expect("changing the image's file");
    assert!(status_of(&cgroup, &path(&image)).success());
    h.settle();
    let mine = cgroup.events(&h.events);
    let last = execs(&mine)
        .filter(|e| e.filename() == path(&image).as_bytes())
        .last()
        .copied()
        .unwrap();
    assert_eq!(last.exe_in_image(), Some(false), "changed after start");
    assert_ne!(last.exe_ino, 0);

    // Not on an overlay (a tmpfs, as an emptyDir in memory): the kernel does not tell, and
    // the drift probe judges by the mounts.
    let tmpfs = overlay.dir.join("tmpfs");
    fs::create_dir_all(&tmpfs).expect("creating the tmpfs mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&tmpfs)
        .status()
        .expect("running mount");
    assert!(status.success(), "mounting a tmpfs: {status}");
    let elsewhere = tmpfs.join("true");
    fs::copy(real_path("/bin/true"), &elsewhere).expect("copying true");
    assert!(status_of(&cgroup, &path(&elsewhere)).success());
    let layer = layer_of(&mut h, &elsewhere).0;
    let _ = Command::new("umount").arg(&tmpfs).status();
    assert_eq!(layer, None, "a file on a tmpfs is on no overlay");
}
