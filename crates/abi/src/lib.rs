//! The one definition of what crosses the kernel/user boundary in herdwatch.
//!
//! The eBPF programs in `node-agent-ebpf` fill these `#[repr(C)]` records and submit them
//! to the `EVENTS` ring buffer; the node agent reads the bytes back with [`decode`] (behind
//! the `user` feature). Every record starts with an [`EventHeader`] whose `kind` says which
//! record follows. Layouts have explicit padding and compile-time size and offset asserts,
//! so a change on one side that the other does not follow fails the build, not the decode.
#![no_std]

use core::mem::{offset_of, size_of};

/// Bytes of a path (executable or opened file) copied from the kernel, NUL included.
pub const MAX_PATH: usize = 256;
/// Bytes of the NUL-separated argv block copied from the new process image.
pub const MAX_ARGV: usize = 512;
/// Bytes of the name of the file an exec really ran ([`ExecEvent::file_name`]), NUL
/// included. A dentry name can be 255 bytes; the names this is compared with (busybox,
/// toybox) are short, so longer names are cut (and flagged [`EXEC_FILE_NAME_TRUNCATED`]).
pub const MAX_FILE_NAME: usize = 32;
/// Components of the working directory an exec of a relative path reads
/// ([`ExecEvent::cwd`]); a deeper directory is not resolved.
pub const CWD_DEPTH: usize = 16;
/// Bytes of one such component, NUL included; a longer name leaves the directory
/// unresolved.
pub const CWD_COMPONENT: usize = 32;
/// Syscall numbers covered by the per-cgroup first-sighting bitmap (x86_64 tops out near 470).
pub const SYSCALL_BITMAP_WORDS: usize = 8;
pub const MAX_SYSCALL_NR: u32 = (SYSCALL_BITMAP_WORDS * 64) as u32;
/// Not a syscall: a `socket()` that asked for a raw IP socket (`AF_INET`/`AF_INET6`,
/// `SOCK_RAW`), reported and learned like a syscall of its own under the name `socket_raw`.
/// Raw sockets forge packets and sniff a protocol; the `socket` syscall alone says nothing
/// of that. Numbered above every real syscall, inside the first-sighting bitmap.
pub const SYSCALL_RAW_SOCKET: u32 = MAX_SYSCALL_NR - 2;
/// Not a syscall: a `socket(AF_PACKET, …)`, which sees (or sends) every frame on the pod's
/// interfaces; name `socket_packet`. See [`SYSCALL_RAW_SOCKET`].
pub const SYSCALL_PACKET_SOCKET: u32 = MAX_SYSCALL_NR - 1;

/// Name of the ring buffer map the programs submit to.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of lost-event counters, indexed by [`EventKind`].
pub const LOST_MAP: &str = "LOST";
/// Name of the per-CPU array of emitted-event counters, indexed by [`EventKind`].
pub const EMITTED_MAP: &str = "EMITTED";
/// Name of the LRU hash of per-cgroup syscall bitmaps (cgroup id → [`SyscallBitmap`]).
pub const SYSCALL_SEEN_MAP: &str = "SYSCALL_SEEN";
/// Name of the LRU hash of network first sightings ([`NetKey`] → u8).
pub const NET_SEEN_MAP: &str = "NET_SEEN";
/// Name of the LRU hash of file first sightings ([`FileKey`] → u8).
pub const FILE_SEEN_MAP: &str = "FILE_SEEN";
/// Name of the per-CPU cache of [`SYSCALL_SEEN_MAP`] entries ([`SyscallCache`]).
pub const SYSCALL_CACHE_MAP: &str = "SYSCALL_CACHE";
/// Name of the read-only global the loader fills with this kernel's [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the hash of cgroups under in-kernel enforcement (cgroup id → [`Enforcement`]).
pub const ENFORCE_MAP: &str = "ENFORCE";
/// Name of the hash of executable verdicts ([`ExeKey`] → [`ExeVerdict`]).
pub const EXE_RULES_MAP: &str = "EXE_RULES";
/// Name of the array the agent keeps its own state in, across its restarts: the programs
/// never touch it; it lives in the kernel with the other maps while they are pinned, so an
/// agent that adopts them can tell how long the node went without one
/// ([`AGENT_STATE_SLOTS`], indexed by [`AgentState`]).
pub const AGENT_STATE_MAP: &str = "AGENT_STATE";
/// Slots of [`AGENT_STATE_MAP`].
pub const AGENT_STATE_SLOTS: u32 = 4;

/// What each slot of [`AGENT_STATE_MAP`] holds (u64 each).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// When the agent last showed it was alive, Unix time in nanoseconds.
    Heartbeat = 0,
    /// When the agent last stopped on a signal, Unix time in nanoseconds (0: it never
    /// stopped cleanly since the maps were created).
    Stopped = 1,
    /// Lost events (the sum of [`LOST_MAP`]) the agent has already accounted for: an agent
    /// that adopts the maps counts only the losses after it.
    LostAccounted = 2,
    /// How many agents have adopted these maps.
    Adoptions = 3,
}

/// Which record follows the header. The value indexes the LOST and EMITTED counter arrays.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Exec = 1,
    Exit = 2,
    Syscall = 3,
    Net = 4,
    File = 5,
    Identity = 6,
}

/// Length of the per-kind counter arrays (index 0 is unused).
pub const EVENT_KIND_SLOTS: u32 = 7;

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Exec,
        EventKind::Exit,
        EventKind::Syscall,
        EventKind::Net,
        EventKind::File,
        EventKind::Identity,
    ];

    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => EventKind::Exec,
            2 => EventKind::Exit,
            3 => EventKind::Syscall,
            4 => EventKind::Net,
            5 => EventKind::File,
            6 => EventKind::Identity,
            _ => return None,
        })
    }

    /// Stable lower-case name, used as the `kind` label and in `observe` output.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
            EventKind::Syscall => "syscall",
            EventKind::Net => "net",
            EventKind::File => "file",
            EventKind::Identity => "identity",
        }
    }
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Thread group id: the pid as user space knows it.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid and gid of the task when the event fired.
    pub uid: u32,
    pub gid: u32,
    /// Thread group id of the task's real parent when the event fired (0 when unknown, or
    /// for an accepted connection, whose header is its listener's). A child that forked
    /// and never exec'd can be gone before user space looks it up; it runs its parent's
    /// program, so this is how its events keep a process.
    pub ppid: u32,
    /// `bpf_get_current_cgroup_id()`: the inode of the task's cgroup v2 directory.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included.
    pub ktime_ns: u64,
}

/// Flags of [`ExecEvent::flags`].
pub const EXEC_ARGV_TRUNCATED: u32 = 1;
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// The exec program sent SIGKILL to the new program before it ran (see [`Enforcement`]).
pub const EXEC_KILLED_IN_KERNEL: u32 = 4;
/// The name in [`ExecEvent::file_name`] did not fit in [`MAX_FILE_NAME`].
pub const EXEC_FILE_NAME_TRUNCATED: u32 = 8;
/// A relative path was exec'd from the process's root directory itself (`cwd_depth` 0).
pub const EXEC_CWD_ROOT: u32 = 16;
/// [`ExecEvent::flags`]: the file really run is on an overlay filesystem (a container's
/// root: the image's layers below, a writable layer on top).
pub const EXEC_EXE_OVERLAY: u32 = 32;
/// [`ExecEvent::flags`], with [`EXEC_EXE_OVERLAY`]: the file has a copy in the overlay's
/// writable layer: it was written, or changed, after the container started (drift). Read
/// from the overlay's own inode, not from any path the exec named.
pub const EXEC_EXE_UPPER: u32 = 64;
/// The filesystem magic of overlayfs (`OVERLAYFS_SUPER_MAGIC`).
pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// A successful execve/execveat (`sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread group id of the real parent.
    pub ppid: u32,
    pub euid: u32,
    pub egid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Valid bytes in `filename` (without the NUL).
    pub filename_len: u32,
    /// Valid bytes in `argv`: arguments separated (and usually ended) by NUL.
    pub argv_len: u32,
    /// The process's start time (`task_struct.start_boottime`: ns since boot, suspend
    /// included, the clock of the header's `ktime_ns` and of `/proc/<pid>/stat` field 22,
    /// which counts it in clock ticks): with the pid it identifies a process even after pid
    /// reuse.
    pub start_time_ns: u64,
    /// The start time of the real parent's process (its thread group leader's), the same
    /// clock: with `ppid` it says which process the parent is, even after its pid was reused
    /// or its exit missed. 0 when it could not be read.
    pub parent_start_time_ns: u64,
    /// The path that was executed, as the kernel resolved it for the binprm.
    pub filename: [u8; MAX_PATH],
    pub argv: [u8; MAX_ARGV],
    /// Valid bytes in `file_name` (without the NUL); 0 when it could not be read.
    pub file_name_len: u32,
    /// Components in `cwd`, or 0 when the working directory was not resolved (the path was
    /// absolute, or the directory is deeper than [`CWD_DEPTH`], has a longer component,
    /// or is not on the mount of the process's root).
    pub cwd_depth: u32,
    /// The last component of the file the kernel really runs
    /// (`bprm->file->f_path.dentry->d_name`): links resolved, so an exec of `/bin/sh` that
    /// links to busybox says `busybox`, as does busybox's re-exec through `/proc/self/exe`;
    /// for a script, its interpreter. `filename` keeps the path the exec was asked for.
    pub file_name: [u8; MAX_FILE_NAME],
    /// For an exec of a relative path: the working directory it was resolved against, as
    /// the kernel holds it (`fs->pwd`), walked up to the process's root, innermost
    /// component first, each NUL-terminated. A CGI server runs `status` from its
    /// directory and the script is done within a millisecond: too soon for /proc.
    pub cwd: [[u8; CWD_COMPONENT]; CWD_DEPTH],
    /// The file really run, as the kernel holds it: its inode number and its filesystem's
    /// device (`s_dev`, the kernel's encoding); 0 when they could not be read.
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub _pad_exe: u32,
}

impl ExecEvent {
    /// The name of the file really run (see [`ExecEvent::file_name`]), or `None` when it
    /// is not known whole: not read, or cut.
    pub fn real_file_name(&self) -> Option<&[u8]> {
        let len = self.file_name_len as usize;
        if len == 0 || len >= MAX_FILE_NAME || self.flags & EXEC_FILE_NAME_TRUNCATED != 0 {
            return None;
        }
        Some(&self.file_name[..len])
    }
}

/// A process (thread group leader) exited (`sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// Exit status as `wait(2)` encodes it.
    pub exit_code: i32,
    pub _pad: u32,
}

/// The first time a syscall number was seen in a cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallEvent {
    pub header: EventHeader,
    pub nr: u32,
    pub _pad: u32,
}

/// [`NetEvent::op`] values.
pub const NET_CONNECT: u8 = 1;
pub const NET_ACCEPT: u8 = 2;
pub const NET_LISTEN: u8 = 3;
pub const NET_UDP_SEND: u8 = 4;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A network flow endpoint, first sighting per (cgroup, op, peer) in the kernel.
/// Ports are in host byte order; addresses are in network order (IPv4 in the first 4 bytes).
///
/// - `NET_CONNECT`: a TCP connect (`daddr`/`dport` the peer; `sport` is usually 0, the
///   ephemeral port is chosen later).
/// - `NET_LISTEN`: `saddr`/`sport` the listening address and port.
/// - `NET_ACCEPT`: an inbound TCP connection was established: `saddr`/`sport` the local
///   (listening) side, `daddr`/`dport` the peer. The kernel completes the handshake in
///   softirq context, so the cgroup is the socket's (the listener's) and the header's
///   pid/tid/uid/gid are those of the process that called `listen()` on that port in that
///   cgroup; when that is unknown, pid and tid are 0 and uid and gid are `u32::MAX`.
/// - `NET_UDP_SEND`: a datagram sent on a UDP socket: to the address `sendto`/`sendmsg`/
///   `sendmmsg` named, or else to the peer the socket was `connect()`ed to (`daddr`/`dport`;
///   the source is not read: zeros). A UDP `connect()` alone sends nothing and is not seen.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    pub header: EventHeader,
    /// `NET_*`.
    pub op: u8,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    pub _pad0: u8,
    /// Local port (the listening port for `NET_LISTEN`).
    pub sport: u16,
    /// Remote port (0 for `NET_LISTEN`).
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// [`FileEvent::access`] bits (all clear for an `O_PATH` open, which neither reads nor
/// writes).
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_WRITE: u32 = 2;
pub const ACCESS_CREATE: u32 = 4;
/// The open empties the file (`O_TRUNC`): clearing a log is not appending to it.
pub const ACCESS_TRUNCATE: u32 = 8;
/// [`FileEvent::flags`] bit: the path did not fit in `MAX_PATH`.
pub const FILE_PATH_TRUNCATED: u32 = 1;

/// A file open (open, creat, openat, openat2) as the process asked for it, first sighting
/// per (cgroup, path, access) in the kernel. Seen at syscall entry, so it includes opens
/// that then fail (a refused open of /etc/shadow is worth seeing): tracing syscall exits
/// would cost every syscall of the machine.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: EventHeader,
    /// `ACCESS_*` bits derived from the open flags.
    pub access: u32,
    /// `FILE_*` flags.
    pub flags: u32,
    /// The raw `O_*` flags passed to open.
    pub open_flags: u32,
    /// Valid bytes in `path` (without the NUL).
    pub path_len: u32,
    /// The path as the process passed it (relative paths are relative to its cwd).
    pub path: [u8; MAX_PATH],
}

/// An identity change: setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid,
/// setfsgid or capset (x86_64 numbers), refused ones included.
///
/// The syscall number is in [`IdentityEvent::syscall_nr`]; `args` holds the requested ids in
/// argument order (`u32::MAX` is "-1, unchanged", and fills the slots a call does not
/// have), or for capset the effective, permitted and inheritable low words.
/// `old_*`/`new_*` are the *effective* uid and gid before and after the call: those are the
/// ids the kernel checks permissions against. The header carries the real ids after the call.
///
/// The call is seen at syscall entry and completed at the thread's next syscall (or its
/// exit), when the ids it left are read: tracing syscall exits would cost every syscall of
/// the machine. So `ret` is not the kernel's return value but the outcome read from the
/// ids: 0 when every id the call asked for is now in place, -1 (EPERM) when not.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IdentityEvent {
    pub header: EventHeader,
    pub syscall_nr: u32,
    /// 0 if the call took effect, -1 if it did not (see above).
    pub ret: i32,
    pub old_uid: u32,
    pub old_gid: u32,
    pub new_uid: u32,
    pub new_gid: u32,
    pub args: [u32; 3],
    pub _pad: u32,
}

// Layouts are checked here, once, for both sides.
const _: () = assert!(size_of::<EventHeader>() == 40);
const _: () = assert!(offset_of!(EventHeader, cgroup_id) == 24);
const _: () = assert!(offset_of!(EventHeader, ktime_ns) == 32);
const _: () = assert!(
    size_of::<ExecEvent>()
        == 40 + 24 + 16 + MAX_PATH + MAX_ARGV + 8 + MAX_FILE_NAME + CWD_DEPTH * CWD_COMPONENT + 16
);
const _: () = assert!(
    offset_of!(ExecEvent, exe_ino)
        == 88 + MAX_PATH + MAX_ARGV + MAX_FILE_NAME + CWD_DEPTH * CWD_COMPONENT
);
const _: () = assert!(offset_of!(ExecEvent, start_time_ns) == 64);
const _: () = assert!(offset_of!(ExecEvent, parent_start_time_ns) == 72);
const _: () = assert!(offset_of!(ExecEvent, filename) == 80);
const _: () = assert!(offset_of!(ExecEvent, argv) == 80 + MAX_PATH);
const _: () = assert!(offset_of!(ExecEvent, file_name_len) == 80 + MAX_PATH + MAX_ARGV);
const _: () = assert!(offset_of!(ExecEvent, file_name) == 88 + MAX_PATH + MAX_ARGV);
const _: () = assert!(offset_of!(ExecEvent, cwd) == 88 + MAX_PATH + MAX_ARGV + MAX_FILE_NAME);
// No tail padding: the name fills the record to a multiple of its 8-byte alignment.
const _: () = assert!(MAX_FILE_NAME.is_multiple_of(8));
const _: () = assert!(size_of::<ExitEvent>() == 48);
const _: () = assert!(size_of::<SyscallEvent>() == 48);
const _: () = assert!(size_of::<NetEvent>() == 80);
const _: () = assert!(offset_of!(NetEvent, saddr) == 48);
const _: () = assert!(size_of::<FileEvent>() == 56 + MAX_PATH);
const _: () = assert!(offset_of!(FileEvent, path) == 56);
const _: () = assert!(size_of::<IdentityEvent>() == 80);
const _: () = assert!(offset_of!(IdentityEvent, args) == 64);

/// Byte offsets of the few kernel struct fields the programs read. aya-ebpf has no CO-RE
/// field relocations, so the loader resolves these at load time from the running kernel's
/// BTF (`/sys/kernel/btf/vmlinux`; no tracefs needed: every program is a BTF tracepoint
/// whose arguments are kernel pointers), and writes them to the programs' read-only global [`OFFSETS_GLOBAL`] before loading.
/// The verifier sees them as constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct` fields.
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_start_boottime: u32,
    pub task_cred: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    /// `signal_struct.live`: threads still alive; 0 once the whole process is exiting.
    pub signal_live: u32,
    /// `mm_struct.arg_start` / `arg_end` (inside an anonymous struct of mm_struct).
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `cred` fields.
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_fsuid: u32,
    pub cred_fsgid: u32,
    pub cred_cap_effective: u32,
    pub bprm_filename: u32,
    /// The file an exec really runs, to its name: `linux_binprm.file`,
    /// `file.f_path.dentry`, `dentry.d_name.name`.
    pub bprm_file: u32,
    pub file_dentry: u32,
    pub dentry_name: u32,
    /// The ends of a socket: `sock.__sk_common.skc_family`, `skc_daddr`, `skc_dport`
    /// (network order), `skc_v6_daddr`, and the local `skc_rcv_saddr`, `skc_num` (host
    /// order), `skc_v6_rcv_saddr`; `sock.sk_protocol`.
    pub sock_family: u32,
    pub sock_daddr: u32,
    pub sock_dport: u32,
    pub sock_v6_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_num: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_protocol: u32,
    /// socket → cgroup id: `sock.sk_cgrp_data.cgroup`, `cgroup.kn`, `kernfs_node.id`.
    pub sock_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// task → cgroup v2 directory, and a directory's parent, to tell the container
    /// runtime's set-up from the workload: `task_struct.cgroups`, `css_set.dfl_cgrp`,
    /// `kernfs_node.__parent` (`parent` before Linux 6.15).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub kernfs_node_parent: u32,
    /// A process's working directory and root (`task_struct.fs`, `fs_struct.pwd` and
    /// `.root` as mount and dentry), and a dentry's parent: the walk of a relative
    /// exec's directory.
    pub task_fs: u32,
    pub fs_pwd_mnt: u32,
    pub fs_pwd_dentry: u32,
    pub fs_root_mnt: u32,
    pub fs_root_dentry: u32,
    pub dentry_parent: u32,
    /// Whether a task is its pid namespace's init: `task_struct.thread_pid`, `pid.level`,
    /// `pid.numbers`, `upid.nr`, and the size of a `struct upid`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_nr: u32,
    pub upid_size: u32,
    /// `task_struct.group_leader`: a thread's process.
    pub task_group_leader: u32,
    /// The file an exec runs, to its identity and its layer: `file.f_inode`, `inode.i_ino`,
    /// `inode.i_sb`, `super_block.s_dev`, `super_block.s_magic`; and, for an overlay
    /// inode, how far past the VFS inode its upper dentry is kept
    /// (`ovl_inode.__upperdentry` minus `ovl_inode.vfs_inode`; 0 when the kernel's BTF has
    /// no overlayfs, and then no layer is told).
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub sb_magic: u32,
    pub ovl_upper_from_inode: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 51 * 4);

/// Value of the per-cgroup syscall bitmap map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallBitmap {
    pub bits: [u64; SYSCALL_BITMAP_WORDS],
}
const _: () = assert!(size_of::<SyscallBitmap>() == 64);

/// A CPU's copy of one cgroup's syscall bitmap. Bits are only ever set by the kernel, so a
/// stale copy can only send a syscall to the slow path, never hide one. 128 bytes (the
/// padding past the 72 used), so that a slot's address is a shift away from its index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CachedBitmap {
    pub cgroup_id: u64,
    pub bits: [u64; SYSCALL_BITMAP_WORDS],
    pub _pad: [u64; 7],
}
/// log2 of [`CachedBitmap`]'s size.
pub const CACHE_SLOT_SHIFT: u32 = 7;
const _: () = assert!(size_of::<CachedBitmap>() == 1 << CACHE_SLOT_SHIFT);
/// log2 of the number of slots of a [`SyscallCache`].
pub const CACHE_INDEX_BITS: u32 = 4;

/// Value of the per-CPU [`SYSCALL_CACHE_MAP`]: a direct-mapped cache of bitmaps by cgroup id
/// (slot: the Fibonacci hash of the id's top [`CACHE_INDEX_BITS`] bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallCache {
    pub slots: [CachedBitmap; 1 << CACHE_INDEX_BITS],
}
const _: () = assert!(size_of::<SyscallCache>() == (1 << CACHE_INDEX_BITS) << CACHE_SLOT_SHIFT);

/// Key of the network first-sighting LRU map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetKey {
    pub cgroup_id: u64,
    pub op: u8,
    pub family: u8,
    pub protocol: u8,
    pub _pad0: u8,
    pub port: u16,
    pub _pad1: u16,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<NetKey>() == 32);

/// Key of the file first-sighting LRU map. `path` must be zero past the NUL so that equal
/// paths give equal keys.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileKey {
    pub cgroup_id: u64,
    pub access: u32,
    pub _pad: u32,
    pub path: [u8; MAX_PATH],
}
const _: () = assert!(size_of::<FileKey>() == 16 + MAX_PATH);

/// [`Enforcement::flags`]: the cgroup's [`ExeKey`]s of kind [`EXE_KEY_PATH`] with
/// [`EXE_ALLOWED`] are an allow list; an executable not on it is killed.
pub const ENFORCE_ALLOW_LIST: u32 = 1;
/// [`Enforcement::flags`]: executables whose path or name has [`EXE_DENIED`] are killed.
pub const ENFORCE_DENY_LIST: u32 = 2;
/// [`Enforcement::flags`]: never kill the init of the task's pid namespace (a container's
/// PID 1): killing it restarts the container, and a rule that kills shells would crash-loop
/// every image whose entrypoint is one. Left out only when every rule behind the lists asks
/// for it (`killContainerInit`).
pub const ENFORCE_SPARE_INIT: u32 = 4;
/// [`Enforcement::flags`]: an entry for the cgroups directly below this one, not for it: a
/// pod's cgroup carries the rules all of its containers have in common, so that a container
/// created since the agent last wrote (a restart, a new container of the pod) is judged
/// from its first exec. Always with [`ENFORCE_SPARE_INIT`].
pub const ENFORCE_INHERITED: u32 = 8;

/// Value of the [`ENFORCE_MAP`]: a cgroup whose execs the kernel judges. A cgroup without an
/// entry of its own is judged by its parent's entry, if it has one; otherwise it is never
/// touched.
///
/// The node agent replaces a cgroup's rules by writing a new set of [`ExeKey`]s under the
/// next `generation`, then this entry, then (later) deleting the old keys: the kernel reads
/// this entry once per exec and looks up only keys of its generation, so it sees either the
/// whole old set or the whole new one, never half an allow list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// `ENFORCE_*` bits.
    pub flags: u32,
    pub generation: u32,
}
const _: () = assert!(size_of::<Enforcement>() == 8);

/// [`ExeKey::kind`]: `hash`/`len` are of the whole executable path.
pub const EXE_KEY_PATH: u8 = 1;
/// [`ExeKey::kind`]: `hash`/`len` are of its last component (what follows the last `/`).
pub const EXE_KEY_NAME: u8 = 2;

/// Key of the [`EXE_RULES_MAP`]: one executable path or name of one cgroup, by its
/// [`exe_hashes`] hash and length (the length makes a collision need equal lengths too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeKey {
    pub cgroup_id: u64,
    pub hash: u64,
    /// The [`Enforcement::generation`] this key belongs to.
    pub generation: u32,
    /// Bytes hashed.
    pub len: u16,
    /// `EXE_KEY_*`.
    pub kind: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<ExeKey>() == 24);
const _: () = assert!(offset_of!(ExeKey, generation) == 16);

/// [`ExeVerdict::bits`]: on the allow list.
pub const EXE_ALLOWED: u32 = 1;
/// [`ExeVerdict::bits`]: denied (a path key: that path; a name key: an executable of that
/// name in any directory).
pub const EXE_DENIED: u32 = 2;
/// [`ExeVerdict::bits`] of an [`EXE_KEY_NAME`] key: also denied when it is the last
/// component of `argv[0]`, which is how a program run under another path shows its name
/// (busybox runs its `wget` applet as `execve("/proc/self/exe", ["wget", ...])`).
pub const EXE_DENIED_ARGV0: u32 = 4;
/// [`ExeVerdict::bits`] of an [`EXE_KEY_NAME`] key: also denied when it is the applet a
/// multi-call binary is asked to be (see [`EXE_MULTI_CALL`]).
pub const EXE_DENIED_APPLET: u32 = 8;
/// [`ExeVerdict::bits`] of an [`EXE_KEY_NAME`] key: the name of a multi-call binary
/// (busybox, toybox). When the executable has such a name, its applet is the last component
/// of `argv[0]`, or of `argv[1]` when `argv[0]` names a multi-call binary too
/// (`busybox sh`).
pub const EXE_MULTI_CALL: u32 = 16;

/// Value of the [`EXE_RULES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeVerdict {
    /// `EXE_ALLOWED` and/or `EXE_DENIED`.
    pub bits: u32,
}
const _: () = assert!(size_of::<ExeVerdict>() == 4);

/// FNV-1a, 64 bits.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hashes [`ExeKey`]s are made of, of one executable path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeHashes {
    /// Of the whole path.
    pub path: u64,
    pub path_len: u16,
    /// Of the last component.
    pub name: u64,
    pub name_len: u16,
}

/// FNV-1a of the first `len` bytes of `path`, stopping early at a NUL, and of the part
/// after its last `/`: the one definition both sides hash executables with. The kernel
/// hashes the exec record's `filename` (`len` = `filename_len`); the agent hashes the
/// paths and names of its rules the same way.
///
/// Not collision resistant, and it need not be: a path crafted to collide with an allowed
/// one escapes only the in-kernel kill (the agent's exact comparison still catches it), and
/// one crafted to collide with a denied one only kills itself.
#[inline(always)]
pub fn exe_hashes(path: &[u8; MAX_PATH], len: usize) -> ExeHashes {
    let mut full = FNV_OFFSET;
    let mut name = FNV_OFFSET;
    let mut name_len: u16 = 0;
    let mut i = 0;
    // Bounded by MAX_PATH so that the verifier sees a loop that ends and the index needs
    // no bounds check.
    while i < MAX_PATH && i < len {
        let byte = path[i];
        if byte == 0 {
            break;
        }
        full = (full ^ byte as u64).wrapping_mul(FNV_PRIME);
        if byte == b'/' {
            name = FNV_OFFSET;
            name_len = 0;
        } else {
            name = (name ^ byte as u64).wrapping_mul(FNV_PRIME);
            name_len += 1;
        }
        i += 1;
    }
    ExeHashes {
        path: full,
        path_len: i as u16,
        name,
        name_len,
    }
}

/// The last components of `argv[0]` and `argv[1]` of an exec record's argv block, hashed as
/// [`exe_hashes`] hashes the executable's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgvNames {
    /// How many of the two arguments end (with their NUL) inside the block: 0, 1 or 2. An
    /// argument cut by the end of the block is not reported: its name is not known.
    pub complete: u8,
    pub argv0: u64,
    pub argv0_len: u16,
    pub argv1: u64,
    pub argv1_len: u16,
}

/// 1 when `x` is 0, else 0 (for `x` below 2^63), without a comparison.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    x.wrapping_sub(1) >> 63
}

/// `if bit { new } else { old }` for a `bit` of 0 or 1, without a branch. The mask is made
/// opaque to the optimiser, which would otherwise turn the merge back into a select, which
/// the BPF backend compiles to a branch.
#[inline(always)]
fn choose(bit: u64, new: u64, old: u64) -> u64 {
    let mask = core::hint::black_box(0u64.wrapping_sub(bit));
    (new & mask) | (old & !mask)
}

/// [`ArgvNames`] one byte at a time, with no branch on the byte's value: the eBPF verifier
/// walks a loop once per path through it, and a branch per byte (slash, NUL, first or
/// second argument) multiplied the paths of the exec program beyond the verifier's budget
/// of a million instructions. Without them the program verifies in about a third of it
/// (kernel 6.18), growing linearly with `MAX_ARGV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgvScan {
    name: u64,
    name_len: u64,
    /// NULs seen: arguments ended.
    ended: u64,
    argv0: u64,
    argv0_len: u64,
    argv1: u64,
    argv1_len: u64,
}

impl Default for ArgvScan {
    fn default() -> Self {
        ArgvScan::new()
    }
}

impl ArgvScan {
    pub const fn new() -> Self {
        ArgvScan {
            name: FNV_OFFSET,
            name_len: 0,
            ended: 0,
            argv0: 0,
            argv0_len: 0,
            argv1: 0,
            argv1_len: 0,
        }
    }

    /// Takes the next byte of the block.
    #[inline(always)]
    pub fn push(&mut self, byte: u8) {
        // Opaque, so that the optimiser does not turn the arithmetic below into compares.
        let byte = core::hint::black_box(byte as u64);
        let ended = core::hint::black_box(self.ended);
        let nul = is_zero(byte);
        let slash = is_zero(byte ^ b'/' as u64);
        let ends_argv0 = nul & is_zero(ended);
        let ends_argv1 = nul & is_zero(ended ^ 1);
        self.argv0 = choose(ends_argv0, self.name, self.argv0);
        self.argv0_len = choose(ends_argv0, self.name_len, self.argv0_len);
        self.argv1 = choose(ends_argv1, self.name, self.argv1);
        self.argv1_len = choose(ends_argv1, self.name_len, self.argv1_len);
        self.ended = ended + nul;
        // A NUL starts the next argument, a slash the next component: the name restarts.
        let restart = nul | slash;
        self.name = choose(
            restart,
            FNV_OFFSET,
            (self.name ^ byte).wrapping_mul(FNV_PRIME),
        );
        self.name_len = choose(restart, 0, self.name_len + 1);
    }

    /// Both names are known: the rest of the block does not matter.
    #[inline(always)]
    pub fn done(&self) -> bool {
        self.ended >= 2
    }

    #[inline(always)]
    pub fn names(&self) -> ArgvNames {
        ArgvNames {
            complete: self.ended.min(2) as u8,
            argv0: self.argv0,
            argv0_len: self.argv0_len as u16,
            argv1: self.argv1,
            argv1_len: self.argv1_len as u16,
        }
    }
}

/// [`ArgvNames`] of the first `len` bytes of `argv`, a NUL-separated argument block as the
/// exec record carries it (`len` = `argv_len`). Agrees with how the agent splits that
/// block: `argv[0]` is what precedes the first NUL, `argv[1]` what lies between the first
/// and the second.
#[inline(always)]
pub fn argv_names(argv: &[u8; MAX_ARGV], len: usize) -> ArgvNames {
    let mut scan = ArgvScan::new();
    let mut i = 0;
    // Bounded by MAX_ARGV for the verifier, as in `exe_hashes`.
    while i < MAX_ARGV && i < len && !scan.done() {
        scan.push(argv[i]);
        i += 1;
    }
    scan.names()
}

impl ExeHashes {
    /// The hashes the kernel computes for an exec of the path `bytes`, or `None` when the
    /// kernel cannot report that path whole (more than `MAX_PATH - 1` bytes, or a NUL in
    /// it), so that no exec ever matches it in the kernel.
    pub fn of(bytes: &[u8]) -> Option<ExeHashes> {
        if bytes.len() >= MAX_PATH || bytes.contains(&0) {
            return None;
        }
        let mut path = [0u8; MAX_PATH];
        path[..bytes.len()].copy_from_slice(bytes);
        Some(exe_hashes(&path, bytes.len()))
    }
}

#[cfg(feature = "user")]
mod user;
#[cfg(feature = "user")]
pub use user::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        ExeHashes::of(bytes).unwrap().path
    }

    #[test]
    fn exe_hashes_are_fnv1a_64() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_name_is_what_follows_the_last_slash() {
        let h = ExeHashes::of(b"/usr/bin/wget").unwrap();
        let name = ExeHashes::of(b"wget").unwrap();
        assert_eq!((h.name, h.name_len), (name.path, 4));
        assert_eq!(h.path_len, 13);
        assert_eq!(
            (name.name, name.name_len),
            (name.path, 4),
            "no slash: all name"
        );
        assert_ne!(h.path, name.path);
    }

    #[test]
    fn hashing_stops_at_the_length_or_a_nul_as_the_kernel_record_does() {
        let mut record = [0u8; MAX_PATH];
        record[..9].copy_from_slice(b"/bin/true");
        assert_eq!(exe_hashes(&record, 9), ExeHashes::of(b"/bin/true").unwrap());
        // A length past the NUL (a stale length) still hashes the string only.
        assert_eq!(
            exe_hashes(&record, MAX_PATH),
            ExeHashes::of(b"/bin/true").unwrap()
        );
        record[4] = 0;
        assert_eq!(exe_hashes(&record, 9), ExeHashes::of(b"/bin").unwrap());
    }

    fn block(bytes: &[u8]) -> [u8; MAX_ARGV] {
        let mut argv = [0u8; MAX_ARGV];
        argv[..bytes.len()].copy_from_slice(bytes);
        argv
    }

    fn name(bytes: &[u8]) -> (u64, u16) {
        let h = ExeHashes::of(bytes).unwrap();
        (h.name, h.name_len)
    }

    #[test]
    fn argv_names_are_the_last_components_of_the_first_two_arguments() {
        let raw = b"/usr/bin/busybox\0sh\0-c\0id\0";
        let n = argv_names(&block(raw), raw.len());
        assert_eq!(n.complete, 2);
        assert_eq!((n.argv0, n.argv0_len), name(b"busybox"));
        assert_eq!((n.argv1, n.argv1_len), name(b"sh"));

        let raw = b"wget\0";
        let n = argv_names(&block(raw), raw.len());
        assert_eq!(n.complete, 1);
        assert_eq!((n.argv0, n.argv0_len), name(b"wget"));
    }

    #[test]
    fn an_argument_cut_by_the_end_of_the_block_has_no_name() {
        // The length ends the block before the NUL that follows in the array.
        let n = argv_names(&block(b"wget\0-q\0"), 6);
        assert_eq!(n.complete, 1, "-q is cut");
        let n = argv_names(&block(b"wget"), 4);
        assert_eq!(n.complete, 0);
        let full = [b'a'; MAX_ARGV];
        assert_eq!(argv_names(&full, MAX_ARGV).complete, 0);
        assert_eq!(argv_names(&block(b""), 0).complete, 0);
    }

    #[test]
    fn empty_arguments_and_trailing_slashes_have_empty_names() {
        let raw = b"\0sh\0";
        let n = argv_names(&block(raw), raw.len());
        assert_eq!((n.complete, n.argv0_len), (2, 0));
        assert_eq!((n.argv1, n.argv1_len), name(b"sh"));
        let raw = b"/bin/\0";
        assert_eq!(argv_names(&block(raw), raw.len()).argv0_len, 0);
    }

    #[test]
    fn paths_the_kernel_cannot_report_whole_have_no_hashes() {
        assert!(ExeHashes::of(&[b'a'; MAX_PATH - 1]).is_some());
        assert!(ExeHashes::of(&[b'a'; MAX_PATH]).is_none());
        assert!(
            ExeHashes::of(b"/bin/\\0").is_some(),
            "a backslash is a byte"
        );
        assert!(
            ExeHashes::of(b"/bin/\0true").is_none(),
            "a NUL ends the kernel's copy"
        );
    }
}
