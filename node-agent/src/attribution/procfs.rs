//! Reading processes from /proc: the processes that existed before the agent started, and
//! those the event stream names before their exec was seen (a forked worker that never
//! called exec).
//!
//! Processes exit while we read them; every read here expects that and reports
//! [`ProcReadError::Gone`] instead of failing.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::attribution::argv::{escape_bytes, Argv};
use crate::attribution::bounded_read::BoundedReader;

/// `/proc/<pid>/stat` starttime is in clock ticks; USER_HZ is 100 in the Linux user ABI on
/// every architecture the agent supports (include/asm-generic/param.h).
pub const NS_PER_TICK: u64 = 1_000_000_000 / 100;
/// `PF_KTHREAD` in the stat flags field (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// What /proc says about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in nanoseconds since boot, at clock-tick (10 ms) precision.
    pub start_time_ns: u64,
    /// Real uid.
    pub uid: u32,
    /// The executable, escaped; empty when the link cannot be read.
    pub exe: Box<str>,
    pub argv: Argv,
    /// The cgroup2 path (`0::<path>` in /proc/<pid>/cgroup).
    pub cgroup_path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcReadError {
    #[error("process exited while being read")]
    Gone,
    #[error("kernel thread")]
    KernelThread,
    #[error("unexpected content in {file}")]
    Malformed { file: &'static str },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Where process information comes from: /proc in the agent, a table in tests.
pub trait ProcSource {
    /// The pids present now.
    fn pids(&mut self) -> io::Result<Vec<u32>>;
    /// One process.
    fn read(&mut self, pid: u32) -> Result<ProcSnapshot, ProcReadError>;

    /// Only the executable of a process (escaped), as its `/proc/<pid>/exe` link shows it:
    /// the whole path, however long.
    fn exe(&mut self, pid: u32) -> Option<Box<str>> {
        self.read(pid).ok().map(|s| s.exe).filter(|e| !e.is_empty())
    }

    /// Reads given up as too slow, since the start (sources that cannot be slow: 0).
    fn read_timeouts(&self) -> u64 {
        0
    }

    /// Only the cgroup2 path of a process.
    fn cgroup_path(&mut self, pid: u32) -> Result<Option<String>, ProcReadError> {
        self.read(pid).map(|s| s.cgroup_path)
    }

    /// The working directory of `pid` as the process sees it (inside its own root), to
    /// resolve a relative exec. `None` when it cannot be told (the process is gone, or its
    /// directory is outside its root). Sources without a filesystem know none.
    fn cwd_in_root(&mut self, _pid: u32) -> Option<String> {
        None
    }
}

impl<P: ProcSource + ?Sized> ProcSource for &mut P {
    fn cwd_in_root(&mut self, pid: u32) -> Option<String> {
        (**self).cwd_in_root(pid)
    }

    fn exe(&mut self, pid: u32) -> Option<Box<str>> {
        (**self).exe(pid)
    }

    fn read_timeouts(&self) -> u64 {
        (**self).read_timeouts()
    }

    fn pids(&mut self) -> io::Result<Vec<u32>> {
        (**self).pids()
    }

    fn read(&mut self, pid: u32) -> Result<ProcSnapshot, ProcReadError> {
        (**self).read(pid)
    }

    fn cgroup_path(&mut self, pid: u32) -> Result<Option<String>, ProcReadError> {
        (**self).cgroup_path(pid)
    }
}

/// The proc filesystem (the host's, mounted at `root`, for an agent with `hostPID`).
///
/// Every read goes through a [`BoundedReader`]: `cmdline` copies the process's own memory,
/// which a hostile process can make slow to read, and the agent's event loop must not wait
/// on it for longer than [`READ_TIMEOUT`]. A read that times out is an error like any other
/// (the process is judged by what the kernel reported of it).
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
    reader: BoundedReader,
}

/// How long one read of a /proc file may take.
pub const READ_TIMEOUT: Duration = Duration::from_millis(250);

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Procfs {
            root: root.into(),
            reader: BoundedReader::new(READ_TIMEOUT),
        }
    }

    fn read_file(&self, dir: &Path, name: &str) -> Result<Vec<u8>, ProcReadError> {
        let path = dir.join(name);
        self.reader
            .run(move || std::fs::read(path))
            .map_err(gone_or)
    }

    fn read_link(&self, path: PathBuf) -> io::Result<PathBuf> {
        self.reader.run(move || std::fs::read_link(path))
    }
}

fn gone_or(e: io::Error) -> ProcReadError {
    // ENOENT once the directory is gone; ESRCH from some files of a process being reaped.
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(3) {
        ProcReadError::Gone
    } else {
        ProcReadError::Io(e)
    }
}

impl ProcSource for Procfs {
    fn pids(&mut self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn cwd_in_root(&mut self, pid: u32) -> Option<String> {
        let dir = self.root.join(pid.to_string());
        let root = self.read_link(dir.join("root")).ok()?;
        let cwd = self.read_link(dir.join("cwd")).ok()?;
        path_within(&root, &cwd)
    }

    /// Reads that took longer than [`READ_TIMEOUT`] (or were refused while too many were
    /// stuck).
    fn read_timeouts(&self) -> u64 {
        self.reader.timeouts()
    }

    fn exe(&mut self, pid: u32) -> Option<Box<str>> {
        let target = self
            .read_link(self.root.join(pid.to_string()).join("exe"))
            .ok()?;
        Some(Box::from(
            escape_bytes(target.as_os_str().as_bytes()).as_ref(),
        ))
    }

    fn cgroup_path(&mut self, pid: u32) -> Result<Option<String>, ProcReadError> {
        let text = self.read_file(&self.root.join(pid.to_string()), "cgroup")?;
        Ok(parse_cgroup_v2(&String::from_utf8_lossy(&text)))
    }

    fn read(&mut self, pid: u32) -> Result<ProcSnapshot, ProcReadError> {
        let dir = self.root.join(pid.to_string());
        let stat = self.read_file(&dir, "stat")?;
        let stat = parse_stat(&String::from_utf8_lossy(&stat))
            .ok_or(ProcReadError::Malformed { file: "stat" })?;
        if stat.flags & PF_KTHREAD != 0 {
            return Err(ProcReadError::KernelThread);
        }
        let status = self.read_file(&dir, "status")?;
        let uid = parse_status_uid(&String::from_utf8_lossy(&status))
            .ok_or(ProcReadError::Malformed { file: "status" })?;
        let cmdline = self.read_file(&dir, "cmdline")?;
        let cgroup = self.read_file(&dir, "cgroup")?;
        let exe = match self.read_link(dir.join("exe")) {
            Ok(target) => Box::from(escape_bytes(target.as_os_str().as_bytes()).as_ref()),
            // A zombie has no executable any more; permission errors leave it empty too.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Err(ProcReadError::Gone)
            }
            Err(_) => Box::from(""),
        };
        Ok(ProcSnapshot {
            pid,
            ppid: stat.ppid,
            start_time_ns: stat.start_ticks.saturating_mul(NS_PER_TICK),
            uid,
            exe,
            argv: Argv::from_nul_block(&cmdline, false),
            cgroup_path: parse_cgroup_v2(&String::from_utf8_lossy(&cgroup)),
        })
    }
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    pub flags: u64,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name is in parentheses and may itself
/// contain spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // rest[0] is the state (field 3); ppid is field 4, flags field 9, starttime field 22.
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        flags: rest.get(6)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// The real uid from `/proc/<pid>/status`.
pub fn parse_status_uid(text: &str) -> Option<u32> {
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// The cgroup2 path from `/proc/<pid>/cgroup` (the `0::` line).
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    // The kernel ends lines with `\n` alone; `lines()` would also take a `\r` that ends a
    // cgroup's name for part of the line end.
    let mut unified = text.split('\n').filter_map(|l| l.strip_prefix("0::"));
    let path = unified.next()?;
    // The kernel prints cgroup names unescaped: a second `0::` line can only be a forged
    // one, from a cgroup v1 name with a newline in it. Trust neither.
    if unified.next().is_some() {
        return None;
    }
    Some(path).map(|p| {
        // A cgroup removed while the process was being moved reads "/path (deleted)".
        p.strip_suffix(" (deleted)").unwrap_or(p).to_owned()
    })
}

/// `path` as seen from inside `root` (both as the agent sees them): `/` for the root
/// itself, `None` when `path` is not below it.
pub fn path_within(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let rest = rest.to_str()?;
    Some(format!("/{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_seen_from_inside_the_process_root() {
        let root = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs");
        assert_eq!(
            path_within(root, &root.join("www/cgi-bin")).as_deref(),
            Some("/www/cgi-bin")
        );
        assert_eq!(path_within(root, root).as_deref(), Some("/"));
        assert_eq!(
            path_within(Path::new("/"), Path::new("/srv")).as_deref(),
            Some("/srv")
        );
        assert_eq!(path_within(root, Path::new("/etc")), None);
    }

    #[test]
    fn stat_with_a_hostile_command_name() {
        let text = "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 500 0 0 0 3 1 0 0 20 0 1 0 123456 9000 200 18446744073709551615\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                comm: "a) b (c".into(),
                ppid: 17,
                flags: 4_194_560,
                start_ticks: 123_456
            })
        );
    }

    #[test]
    fn stat_of_a_kernel_thread_has_the_kthread_flag() {
        let text =
            "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_ne!(stat.flags & PF_KTHREAD, 0);
        assert_eq!(stat.ppid, 0);
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert_eq!(parse_stat("12 (sh) S 1 12"), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let text = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uid(text), Some(1000));
        assert_eq!(parse_status_uid("Name:\tsh\n"), None);
    }

    #[test]
    fn cgroup_v2_line_of_a_hybrid_host() {
        let text = "12:memory:/kubepods/besteffort/podx/abc\n1:name=systemd:/kubepods\n0::/kubepods/besteffort/podx/abc\n";
        assert_eq!(
            parse_cgroup_v2(text).as_deref(),
            Some("/kubepods/besteffort/podx/abc")
        );
        assert_eq!(
            parse_cgroup_v2("0::/gone (deleted)\n").as_deref(),
            Some("/gone")
        );
        assert_eq!(parse_cgroup_v2("4:memory:/\n"), None);
    }

    #[test]
    fn a_forged_second_unified_line_makes_the_file_unreadable() {
        let forged = "5:cpu:/x\n0::/kubepods/a\n0::/kubepods/b\n";
        assert_eq!(parse_cgroup_v2(forged), None);
    }

    #[test]
    fn a_cgroup_name_may_end_with_a_carriage_return() {
        // Found by `the_cgroup_file_gives_the_v2_path`: the `\r` was dropped, naming the
        // parent cgroup.
        assert_eq!(
            parse_cgroup_v2("1:name=systemd:/\n0::/kubepods/x\r\n").as_deref(),
            Some("/kubepods/x\r")
        );
    }

    #[test]
    fn reads_this_process() {
        let mut proc = Procfs::new("/proc");
        let me = std::process::id();
        assert!(proc.pids().unwrap().contains(&me));
        let snap = proc.read(me).unwrap();
        assert_eq!(snap.pid, me);
        assert!(snap.ppid > 0);
        assert!(snap.start_time_ns > 0);
        assert!(snap.exe.contains("herdwatch_node_agent"), "{}", snap.exe);
        assert!(!snap.argv.args.is_empty());
        assert_eq!(
            snap.uid,
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap()
        );
    }

    #[test]
    fn a_vanished_process_is_gone_not_an_error() {
        let mut proc = Procfs::new("/proc");
        // Pids above pid_max never exist.
        assert!(matches!(proc.read(u32::MAX), Err(ProcReadError::Gone)));
        // A process that exited and was reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(matches!(proc.read(pid), Err(ProcReadError::Gone)));
    }

    #[test]
    fn kernel_threads_are_reported_as_such() {
        let mut proc = Procfs::new("/proc");
        // kthreadd is pid 2 in the initial pid namespace.
        assert!(matches!(proc.read(2), Err(ProcReadError::KernelThread)));
    }

    /// Property tests. A process chooses its own command name, arguments and cgroup names,
    /// so the /proc files the agent reads carry text a workload controls.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A command name as a process can set it (`prctl(PR_SET_NAME)`): up to 15 bytes of
        /// anything but NUL, parentheses, spaces and newlines included.
        fn comm() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just(')'),
                    Just('('),
                    Just(' '),
                    Just('\n'),
                    Just('é'),
                    any::<char>()
                ],
                0..8,
            )
            .prop_map(|cs| cs.into_iter().filter(|&c| c != '\0').collect::<String>())
            .prop_filter("15 bytes at most", |c| c.len() <= 15)
        }

        /// Text that looks like a /proc file in places and like anything in others.
        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(
                    prop_oneof![
                        Just("(".to_owned()),
                        Just(")".to_owned()),
                        Just("Uid:".to_owned()),
                        Just("0::".to_owned()),
                        Just(" (deleted)".to_owned()),
                        Just("\n".to_owned()),
                        "[0-9]{1,20}",
                        "-?[0-9]{1,3} ",
                        any::<String>(),
                    ],
                    0..40,
                )
                .prop_map(|parts| parts.concat()),
            ]
        }

        /// The fields of `/proc/<pid>/stat` from state (field 3) on, with the ones the agent
        /// reads at their places and anything the kernel may print in the others.
        fn stat_fields(ppid: u32, flags: u64, start_ticks: u64, others: &[i64]) -> Vec<String> {
            let mut fields = vec!["S".to_owned(), ppid.to_string()];
            fields.extend(others[..4].iter().map(i64::to_string));
            fields.push(flags.to_string());
            fields.extend(others[4..16].iter().map(i64::to_string));
            fields.push(start_ticks.to_string());
            fields.extend(others[16..].iter().map(i64::to_string));
            fields
        }

        /// Where starttime (field 22) is in [`stat_fields`].
        const START_TIME_AT: usize = 19;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_text_parses_without_panicking(text in any_text()) {
                if let Some(stat) = parse_stat(&text) {
                    let comm = format!("({})", stat.comm);
                    prop_assert!(text.contains(&comm));
                }
                let _ = parse_status_uid(&text);
                if let Some(path) = parse_cgroup_v2(&text) {
                    prop_assert!(!path.contains('\n'));
                    let line = format!("0::{path}");
                    prop_assert!(text.contains(&line));
                }
            }

            #[test]
            fn a_stat_line_reads_back_whatever_the_command_name(
                pid in any::<u32>(),
                comm in comm(),
                ppid in any::<u32>(),
                flags in any::<u64>(),
                start_ticks in any::<u64>(),
                others in prop::collection::vec(any::<i64>(), 16..36),
                newline in any::<bool>(),
            ) {
                let fields = stat_fields(ppid, flags, start_ticks, &others);
                let end = if newline { "\n" } else { "" };
                let text = format!("{pid} ({comm}) {}{end}", fields.join(" "));
                prop_assert_eq!(
                    parse_stat(&text),
                    Some(Stat { comm: comm.clone(), ppid, flags, start_ticks })
                );
                // Cut before starttime, it is not a stat line.
                let cut = format!("{pid} ({comm}) {}", fields[..START_TIME_AT].join(" "));
                prop_assert_eq!(parse_stat(&cut), None, "{}", cut);
            }

            #[test]
            fn status_gives_the_real_uid(
                name in any::<String>(),
                uids in any::<[u32; 4]>(),
                lines_before in prop::collection::vec("[A-Z][a-z_]{1,12}:\t[ -~]{0,20}", 0..10),
                lines_after in prop::collection::vec("[A-Z][a-z_]{1,12}:\t[ -~]{0,20}", 0..10),
            ) {
                // The kernel escapes the name's backslashes and newlines (proc_task_name),
                // so a name cannot start a line of its own.
                let name = name.replace('\\', "\\\\").replace('\n', "\\n");
                let before: Vec<_> =
                    lines_before.iter().filter(|l| !l.starts_with("Uid:")).collect();
                let [real, effective, saved, fs] = uids;
                let mut text = format!("Name:\t{name}\n");
                for line in before {
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str(&format!("Uid:\t{real}\t{effective}\t{saved}\t{fs}\n"));
                for line in &lines_after {
                    text.push_str(line);
                    text.push('\n');
                }
                prop_assert_eq!(parse_status_uid(&text), Some(real), "{}", text);
            }

            #[test]
            fn the_cgroup_file_gives_the_v2_path(
                v1 in prop::collection::vec(
                    (1..20u32, "[a-z_,=]{1,20}", "(/[a-z0-9_.:-]{1,12}){0,4}"),
                    0..12,
                ),
                path in "(/[^/\n]{1,20}){0,6}",
                at in any::<prop::sample::Index>(),
                deleted in any::<bool>(),
            ) {
                let path = if path.is_empty() { "/".to_owned() } else { path };
                let mut lines: Vec<String> = v1
                    .iter()
                    .map(|(id, controllers, p)| format!("{id}:{controllers}:{p}"))
                    .collect();
                let suffix = if deleted { " (deleted)" } else { "" };
                lines.insert(at.index(lines.len() + 1), format!("0::{path}{suffix}"));
                let text = lines.join("\n") + "\n";
                prop_assert_eq!(parse_cgroup_v2(&text), Some(path));
                // A cgroup v1 only host has no such line.
                let v1_only: String =
                    v1.iter().map(|(id, c, p)| format!("{id}:{c}:{p}\n")).collect();
                prop_assert_eq!(parse_cgroup_v2(&v1_only), None);
            }

            #[test]
            fn a_directory_is_seen_from_inside_the_root_below_it(
                // No `.` or `..`: the agent compares links the kernel resolved.
                root in prop::collection::vec("[a-z0-9][a-z0-9.]{0,7}", 0..5),
                inside in prop::collection::vec("[a-zé0-9 -][a-zé0-9 .-]{0,7}", 0..5),
                elsewhere in "[a-z]{1,8}",
            ) {
                let root = PathBuf::from(format!("/{}", root.join("/")));
                let dir = root.join(inside.join("/"));
                prop_assert_eq!(path_within(&root, &dir), Some(format!("/{}", inside.join("/"))));
                // A sibling whose name starts with the root's is not below it.
                let sibling = PathBuf::from(format!("{}{elsewhere}", root.display()));
                if root != Path::new("/") {
                    prop_assert_eq!(path_within(&root, &sibling), None);
                }
            }
        }
    }
}
