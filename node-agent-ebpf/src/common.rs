//! What every program shares: the output ring buffer and its counters, the kernel offsets
//! the loader fills in, kernel and user memory reads, and the event header.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user, gen},
    macros::map,
    maps::{ring_buf::RingBufEntry, Array, PerCpuArray, RingBuf},
};
use herdwatch_abi::{EventHeader, EventKind, KernelOffsets, AGENT_STATE_SLOTS, EVENT_KIND_SLOTS};

/// Where every event goes. 4 MiB unless the loader sets another size
/// (`CaptureConfig::ring_buffer_bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Ring buffer reserve failures, per CPU, indexed by `EventKind`: a full ring buffer is
/// always counted, never hidden.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_KIND_SLOTS, 0);

/// Submitted events, per CPU, indexed by `EventKind`.
#[map]
pub static EMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_KIND_SLOTS, 0);

/// The agent's own state, kept in the kernel while the maps are pinned
/// (`herdwatch_abi::AgentState`). No program touches it.
#[map]
pub static AGENT_STATE: Array<u64> = Array::with_max_entries(AGENT_STATE_SLOTS, 0);

/// Field offsets of the running kernel, written by the loader (`EbpfLoader::set_global`)
/// before the programs are loaded. Zero here; read only through [`off!`] so the compiler
/// cannot fold the zeros in.
#[no_mangle]
// SAFETY: KernelOffsets is integers only; all zeros is a valid value.
pub static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// The offset of one field of [`OFFSETS`], as a `usize`. A volatile read: the static's
/// initialiser is zeros that the loader replaces, so its value must not be assumed.
macro_rules! off {
    ($field:ident) => {{
        // SAFETY: a read of a field of a static that lives for the whole program.
        #[allow(unused_unsafe)]
        let offset = unsafe { core::ptr::read_volatile(&$crate::common::OFFSETS.$field) };
        offset as usize
    }};
}
pub(crate) use off;

/// An error of a BPF helper (its negative return value) or of our own checks.
pub type Error = i64;

/// Reads a `T` from kernel memory at `base + offset`. Fault tolerant: a bad address is an
/// error, never a crash.
#[inline(always)]
pub fn kread<T>(base: usize, offset: usize) -> Result<T, Error> {
    if base == 0 {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_kernel copes with any address.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }
}

/// Reads a `T` from the current process's memory at `addr`.
#[inline(always)]
pub fn uread<T>(addr: usize) -> Result<T, Error> {
    if addr == 0 {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_user copes with any address.
    unsafe { bpf_probe_read_user(addr as *const T) }
}

/// The current task's `task_struct`.
#[inline(always)]
pub fn current_task() -> usize {
    // SAFETY: a helper without arguments.
    unsafe { gen::bpf_get_current_task() as usize }
}

/// The current task's cgroup v2 id (the inode of its cgroup directory).
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { gen::bpf_get_current_cgroup_id() }
}

/// The name of the file an exec really runs: `bprm->file->f_path.dentry->d_name.name`, a
/// kernel pointer to its NUL-terminated bytes.
#[inline(always)]
pub fn exec_file_name(bprm: usize) -> Result<usize, Error> {
    let file: usize = kread(bprm, off!(bprm_file))?;
    let dentry: usize = kread(file, off!(file_dentry))?;
    kread(dentry, off!(dentry_name))
}

/// Effective uid and gid of a task (`task->cred->euid/egid`).
#[inline(always)]
pub fn effective_ids(task: usize) -> Result<(u32, u32), Error> {
    let cred: usize = kread(task, off!(task_cred))?;
    Ok((kread(cred, off!(cred_euid))?, kread(cred, off!(cred_egid))?))
}

/// Who did it, for the event header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Actor {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Thread group id of the real parent; 0 when it could not be read.
    pub ppid: u32,
}

impl Actor {
    /// Nobody: an accepted connection whose listener was not seen.
    pub const UNKNOWN: Actor = Actor {
        pid: 0,
        tid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
        ppid: 0,
    };

    /// The current task. Only for a record about to be sent: the parent costs two kernel
    /// reads.
    #[inline(always)]
    pub fn current() -> Actor {
        // SAFETY: helpers without arguments.
        let (pid_tgid, uid_gid) = unsafe {
            (
                gen::bpf_get_current_pid_tgid(),
                gen::bpf_get_current_uid_gid(),
            )
        };
        Actor {
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            ppid: kread::<usize>(current_task(), off!(task_real_parent))
                .and_then(|parent| kread::<u32>(parent, off!(task_tgid)))
                .unwrap_or(0),
        }
    }
}

/// Writes the common header of a record about to be submitted.
#[inline(always)]
pub fn write_header(header: *mut EventHeader, kind: EventKind, cgroup_id: u64, actor: Actor) {
    // SAFETY: `header` points into a reserved ring buffer record; a helper without arguments.
    unsafe {
        header.write(EventHeader {
            kind: kind as u32,
            pid: actor.pid,
            tid: actor.tid,
            uid: actor.uid,
            gid: actor.gid,
            ppid: actor.ppid,
            cgroup_id,
            ktime_ns: gen::bpf_ktime_get_boot_ns(),
        })
    }
}

#[inline(always)]
fn bump(counters: &PerCpuArray<u64>, kind: EventKind) {
    if let Some(slot) = counters.get_ptr_mut(kind as u32) {
        // Atomic although per CPU: a program run from softirq (inet_sock_set_state) can
        // interrupt one running in process context on the same CPU between load and store.
        // SAFETY: a map value of the size of a u64, alive while the program runs.
        unsafe { crate::atomic::add(slot, 1) };
    }
}

/// Reserves a record in [`EVENTS`]; a full ring buffer counts one event lost in [`LOST`].
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        bump(&LOST, kind);
    }
    entry
}

/// Submits a record reserved with [`reserve`] and counts it in [`EMITTED`].
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>, kind: EventKind) {
    entry.submit(0);
    bump(&EMITTED, kind);
}

/// Copies `len` bytes of kernel memory (ours: a map value) into a record.
#[inline(always)]
pub fn copy_bytes(dst: *mut u8, src: *const u8, len: u32) {
    // SAFETY: both are valid for `len` bytes; the helper copes with anything else.
    unsafe {
        gen::bpf_probe_read_kernel(dst.cast(), len, src.cast());
    }
}
