//! Reading processes from /proc: the processes that existed before the agent started, and
//! those the event stream names before their exec was seen (a forked worker that never
//! called exec).
//!
//! Processes exit while we read them; every read here expects that and reports
//! [`ProcReadError::Gone`] instead of failing.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::argv::{escape_bytes, Argv};

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
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Procfs { root: root.into() }
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

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, ProcReadError> {
    std::fs::read(dir.join(name)).map_err(gone_or)
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
        let root = std::fs::read_link(dir.join("root")).ok()?;
        let cwd = std::fs::read_link(dir.join("cwd")).ok()?;
        path_within(&root, &cwd)
    }

    fn cgroup_path(&mut self, pid: u32) -> Result<Option<String>, ProcReadError> {
        let text = read_file(&self.root.join(pid.to_string()), "cgroup")?;
        Ok(parse_cgroup_v2(&String::from_utf8_lossy(&text)))
    }

    fn read(&mut self, pid: u32) -> Result<ProcSnapshot, ProcReadError> {
        let dir = self.root.join(pid.to_string());
        let stat = read_file(&dir, "stat")?;
        let stat = parse_stat(&String::from_utf8_lossy(&stat))
            .ok_or(ProcReadError::Malformed { file: "stat" })?;
        if stat.flags & PF_KTHREAD != 0 {
            return Err(ProcReadError::KernelThread);
        }
        let status = read_file(&dir, "status")?;
        let uid = parse_status_uid(&String::from_utf8_lossy(&status))
            .ok_or(ProcReadError::Malformed { file: "status" })?;
        let cmdline = read_file(&dir, "cmdline")?;
        let cgroup = read_file(&dir, "cgroup")?;
        let exe = match std::fs::read_link(dir.join("exe")) {
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
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| {
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
}
