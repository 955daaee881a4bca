//! Synthetic events and in-memory hosts, for tests and the pipeline benchmark: the
//! pipeline can be driven without a kernel, a /proc or a cgroup hierarchy.

use std::collections::HashMap;
use std::io;

use herdwatch_abi::{
    Event, EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, IdentityEvent, NetEvent,
    SyscallEvent, AF_INET, CWD_COMPONENT, CWD_DEPTH, EXEC_ARGV_TRUNCATED, EXEC_FILENAME_TRUNCATED,
    EXEC_FILE_NAME_TRUNCATED, MAX_ARGV, MAX_FILE_NAME, MAX_PATH,
};

use crate::attribution::cgroup::{CgroupSource, WalkStats};
use crate::attribution::procfs::{ProcReadError, ProcSnapshot, ProcSource};
use crate::error::Result;

/// A header for `kind` from `pid` in `cgroup_id`.
pub fn header(kind: EventKind, pid: u32, uid: u32, cgroup_id: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        pid,
        tid: pid,
        uid,
        gid: uid,
        ppid: 0,
        cgroup_id,
        ktime_ns: 0,
    }
}

fn copy_into<const N: usize>(dst: &mut [u8; N], src: &[u8]) -> (u32, bool) {
    let n = src.len().min(N);
    dst[..n].copy_from_slice(&src[..n]);
    (n as u32, src.len() > N)
}

/// An exec of `filename` with a NUL-separated `argv` block (cut at `MAX_ARGV`, flagged).
pub fn exec(
    pid: u32,
    ppid: u32,
    uid: u32,
    cgroup_id: u64,
    start_time_ns: u64,
    filename: &[u8],
    argv: &[u8],
) -> Event {
    let mut e = ExecEvent {
        header: header(EventKind::Exec, pid, uid, cgroup_id),
        ppid,
        euid: uid,
        egid: uid,
        flags: 0,
        filename_len: 0,
        argv_len: 0,
        start_time_ns,
        parent_start_time_ns: 0,
        filename: [0; MAX_PATH],
        argv: [0; MAX_ARGV],
        file_name_len: 0,
        cwd_depth: 0,
        file_name: [0; MAX_FILE_NAME],
        cwd: [[0; CWD_COMPONENT]; CWD_DEPTH],
        exe_ino: 0,
        exe_dev: 0,
        _pad_exe: 0,
    };
    let (filename_len, filename_cut) = copy_into(&mut e.filename, filename);
    e.filename_len = filename_len;
    if filename_cut {
        e.flags |= EXEC_FILENAME_TRUNCATED;
    }
    let (len, cut) = copy_into(&mut e.argv, argv);
    e.argv_len = len;
    if cut {
        e.flags |= EXEC_ARGV_TRUNCATED;
    }
    Event::Exec(e)
}

/// `event`, an exec, as the kernel reports it when the file really run is named `name`:
/// cut to `MAX_FILE_NAME - 1` bytes and flagged when longer, as the kernel cuts it.
pub fn with_file_name(event: Event, name: &[u8]) -> Event {
    let Event::Exec(mut e) = event else {
        return event;
    };
    let n = name.len().min(MAX_FILE_NAME - 1);
    e.file_name = [0; MAX_FILE_NAME];
    e.file_name[..n].copy_from_slice(&name[..n]);
    e.file_name_len = n as u32;
    if name.len() > n {
        e.flags |= EXEC_FILE_NAME_TRUNCATED;
    }
    Event::Exec(e)
}

pub fn exit(pid: u32, cgroup_id: u64, wait_status: i32) -> Event {
    Event::Exit(ExitEvent {
        header: header(EventKind::Exit, pid, 0, cgroup_id),
        exit_code: wait_status,
        _pad: 0,
    })
}

pub fn syscall(pid: u32, cgroup_id: u64, nr: u32) -> Event {
    Event::Syscall(SyscallEvent {
        header: header(EventKind::Syscall, pid, 0, cgroup_id),
        nr,
        _pad: 0,
    })
}

pub fn file(pid: u32, cgroup_id: u64, path: &[u8], access: u32) -> Event {
    let mut e = FileEvent {
        header: header(EventKind::File, pid, 0, cgroup_id),
        access,
        flags: 0,
        open_flags: 0,
        path_len: 0,
        path: [0; MAX_PATH],
    };
    e.path_len = copy_into(&mut e.path, path).0;
    Event::File(e)
}

/// An IPv4 network event.
pub fn net(pid: u32, cgroup_id: u64, op: u8, protocol: u8, daddr: [u8; 4], dport: u16) -> Event {
    let mut e = NetEvent {
        header: header(EventKind::Net, pid, 0, cgroup_id),
        op,
        family: AF_INET,
        protocol,
        _pad0: 0,
        sport: 0,
        dport,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    e.daddr[..4].copy_from_slice(&daddr);
    Event::Net(e)
}

/// A successful setuid-family call leaving real and effective uid `new_uid`.
pub fn identity(pid: u32, cgroup_id: u64, syscall_nr: u32, old_uid: u32, new_uid: u32) -> Event {
    Event::Identity(IdentityEvent {
        header: header(EventKind::Identity, pid, new_uid, cgroup_id),
        syscall_nr,
        ret: 0,
        old_uid,
        old_gid: 0,
        new_uid,
        new_gid: 0,
        args: [new_uid, u32::MAX, u32::MAX],
        _pad: 0,
    })
}

/// A cgroup hierarchy in memory.
#[derive(Clone, Debug, Default)]
pub struct MemCgroups {
    pub cgroups: Vec<(u64, String)>,
    /// Walks done so far.
    pub walks: u64,
}

impl CgroupSource for MemCgroups {
    fn walk(&mut self, visit: &mut dyn FnMut(u64, &str)) -> Result<WalkStats> {
        self.walks += 1;
        for (id, path) in &self.cgroups {
            visit(*id, path);
        }
        Ok(WalkStats {
            cgroups: self.cgroups.len() as u64,
            ..WalkStats::default()
        })
    }

    fn id_of(&mut self, path: &str) -> Option<u64> {
        self.cgroups
            .iter()
            .find(|(_, p)| p == path)
            .map(|(id, _)| *id)
    }
}

/// A /proc in memory. Pids in `vanishing` are listed but gone when read.
#[derive(Clone, Debug, Default)]
pub struct MemProc {
    pub procs: HashMap<u32, ProcSnapshot>,
    pub vanishing: Vec<u32>,
    /// Reads done so far.
    pub reads: u64,
}

impl ProcSource for MemProc {
    fn pids(&mut self) -> io::Result<Vec<u32>> {
        Ok(self
            .procs
            .keys()
            .copied()
            .chain(self.vanishing.iter().copied())
            .collect())
    }

    fn read(&mut self, pid: u32) -> Result<ProcSnapshot, ProcReadError> {
        self.reads += 1;
        self.procs.get(&pid).cloned().ok_or(ProcReadError::Gone)
    }
}
