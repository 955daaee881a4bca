//! Process lifecycle: exec (`sched_process_exec`) and whole-process exit
//! (`sched_process_exit` when the last thread goes), and the in-kernel kill of a program
//! its cgroup's rules do not allow.
//!
//! `sched_process_exec` fires once the new image is in place and before the task returns
//! to user mode, in the context of that task: a SIGKILL sent there
//! (`bpf_send_signal`, which signals `current`) ends the new program before it runs a
//! single instruction of its own. Only cgroups with an [`ENFORCE`] entry are judged, which
//! the node agent writes for pod containers whose profile or policies ask for process
//! kills; every other exec pays one hash lookup.
//!
//! A program is judged by its path (`bprm->filename`), the last component of that path, and
//! the last components of `argv[0]` and `argv[1]`: the names the agent's policy matcher
//! reads too. A multi-call binary shows what it runs only in its arguments: busybox runs
//! its `wget` applet as `/proc/self/exe` with `argv[0]` `wget`, `busybox sh` is a shell and
//! `busybox wget` is `wget`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::gen,
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use core::ffi::c_void;
use core::ptr::addr_of_mut;
use herdwatch_abi::{
    argv_names, exe_hashes, Enforcement, EventKind, ExeKey, ExeVerdict, ExecEvent, ExitEvent,
    CWD_COMPONENT, CWD_DEPTH, ENFORCE_ALLOW_LIST, ENFORCE_DENY_LIST, ENFORCE_INHERITED,
    ENFORCE_SPARE_INIT, EXEC_ARGV_TRUNCATED, EXEC_CWD_ROOT, EXEC_EXE_OVERLAY, EXEC_EXE_UPPER,
    EXEC_FILENAME_TRUNCATED, EXEC_FILE_NAME_TRUNCATED, EXEC_KILLED_IN_KERNEL, EXE_ALLOWED,
    EXE_DENIED, EXE_DENIED_APPLET, EXE_DENIED_ARGV0, EXE_KEY_NAME, EXE_KEY_PATH, EXE_MULTI_CALL,
    MAX_ARGV, MAX_FILE_NAME, MAX_PATH, OVERLAYFS_SUPER_MAGIC,
};

use crate::common::{
    current_cgroup_id, effective_ids, exec_file_name, kread, off, reserve, submit, write_header,
    Actor, Error,
};
use crate::{identity, setup};

const SIGKILL: u32 = 9;

/// cgroup id → how its execs are judged. Written by the agent only; not preallocated, so
/// an idle node pays no memory for it. Its size is set by the loader.
#[map]
static ENFORCE: HashMap<u64, Enforcement> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// (cgroup, generation, executable path or name) → allowed / denied. Written by the agent.
#[map]
static EXE_RULES: HashMap<ExeKey, ExeVerdict> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Where the executable path and arguments are read when the ring buffer is full: the kill
/// must not depend on room for the event.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

/// Whether `task` must live although its exec is to die: it is its pid namespace's init
/// (a container's PID 1) and the rules behind the lists did not ask for that. Read only
/// when a kill is decided. When the namespace cannot be read, it is taken for an init.
#[inline(always)]
fn spared_as_init(task: usize, enforcement: Enforcement) -> bool {
    if enforcement.flags & ENFORCE_SPARE_INIT == 0 {
        return false;
    }
    let nr = kread::<usize>(task, off!(task_thread_pid)).and_then(|pid| {
        let level = kread::<u32>(pid, off!(pid_level))?;
        // Bounded for the verifier; a pid namespace is at most 32 deep.
        let level = (level & 63) as usize;
        kread::<i32>(
            pid,
            off!(pid_numbers) + level * off!(upid_size) + off!(upid_nr),
        )
    });
    nr.map_or(true, |nr| nr == 1)
}

/// The verdict bits of one key, 0 when it has none.
#[inline(always)]
fn verdict(key: &ExeKey) -> u32 {
    // SAFETY: a lookup in a map of plain integers; the value is copied out at once.
    unsafe { EXE_RULES.get(key) }.map_or(0, |v| v.bits)
}

/// Whether the program `exec` describes (its path and arguments read, `flags` the
/// `EXEC_*` flags of that read), exec'd in `cgroup_id`, must die under `enforcement`.
#[inline(always)]
fn must_die(exec: &ExecEvent, flags: u32, cgroup_id: u64, enforcement: Enforcement) -> bool {
    let len = exec.filename_len;
    // An empty or cut path cannot be matched exactly; the agent judges those.
    if flags & EXEC_FILENAME_TRUNCATED != 0 || len == 0 || len as usize >= MAX_PATH {
        return false;
    }
    let hashes = exe_hashes(&exec.filename, len as usize);
    let mut key = ExeKey {
        cgroup_id,
        hash: hashes.path,
        generation: enforcement.generation,
        len: hashes.path_len,
        kind: EXE_KEY_PATH,
        _pad: 0,
    };
    let by_path = verdict(&key);
    if enforcement.flags & ENFORCE_DENY_LIST != 0 {
        key.hash = hashes.name;
        key.len = hashes.name_len;
        key.kind = EXE_KEY_NAME;
        let by_name = verdict(&key);
        if (by_path | by_name) & EXE_DENIED != 0 || denied_by_argv(exec, by_name, &mut key) {
            return true;
        }
    }
    // An allow list holds absolute paths: a relative exec (a CGI run from its directory) is
    // left to user space, which resolves it against the working directory before judging.
    enforcement.flags & ENFORCE_ALLOW_LIST != 0
        && by_path & EXE_ALLOWED == 0
        && exec.filename[0] == b'/'
}

/// Whether the arguments of `exec` name a denied program, as the agent's policy matcher
/// reads them: `argv[0]`'s last component against names denied by name (a `Binaries`
/// rule), and, when the executable's name (`exe_name`: its verdict bits) is that of a
/// multi-call binary, the applet it is asked to be against names denied as applets (the
/// names of `Binaries` and `Shells` rules). `key` is a name key of the right cgroup and
/// generation.
///
/// The matcher takes no name that starts with `-` for an applet (`busybox --help`): the
/// agent never marks such a name as an applet, so this needs no look at the argument's
/// first byte. It also follows `busybox busybox wget` to `argv[2]`, which is not read
/// here: such an exec is killed from user space.
#[inline(always)]
fn denied_by_argv(exec: &ExecEvent, exe_name: u32, key: &mut ExeKey) -> bool {
    let names = argv_names(&exec.argv, exec.argv_len as usize);
    if names.complete == 0 {
        return false;
    }
    key.hash = names.argv0;
    key.len = names.argv0_len;
    let argv0 = verdict(key);
    if argv0 & EXE_DENIED_ARGV0 != 0 {
        return true;
    }
    if exe_name & EXE_MULTI_CALL == 0 {
        return false;
    }
    if argv0 & EXE_MULTI_CALL == 0 {
        return argv0 & EXE_DENIED_APPLET != 0;
    }
    // `busybox sh`: the applet is the first argument.
    if names.complete < 2 {
        return false;
    }
    key.hash = names.argv1;
    key.len = names.argv1_len;
    verdict(key) & EXE_DENIED_APPLET != 0
}

/// Kills the current task. Counted by the agent from the event's flag (or, when the ring
/// buffer was full, not at all: the exec is counted lost).
#[inline(always)]
fn kill_current() -> bool {
    // SAFETY: a helper that signals the current task.
    unsafe { gen::bpf_send_signal(SIGKILL) == 0 }
}

/// The current working directory into `dst`, innermost component first (see
/// [`ExecEvent::cwd`]): its number of components, or `None` when it cannot be told whole
/// (deeper than [`CWD_DEPTH`], a component of [`CWD_COMPONENT`] bytes or more, another
/// mount than the root's, a failed read).
#[inline(always)]
unsafe fn read_working_directory(
    task: usize,
    dst: *mut [[u8; CWD_COMPONENT]; CWD_DEPTH],
) -> Option<u32> {
    let fs: usize = kread(task, off!(task_fs)).ok()?;
    let pwd_mnt: usize = kread(fs, off!(fs_pwd_mnt)).ok()?;
    let root_mnt: usize = kread(fs, off!(fs_root_mnt)).ok()?;
    let root: usize = kread(fs, off!(fs_root_dentry)).ok()?;
    // A directory on another mount (a volume) is not a path below the root's mount
    // alone; that is left to /proc.
    if pwd_mnt != root_mnt {
        return None;
    }
    let mut dentry: usize = kread(fs, off!(fs_pwd_dentry)).ok()?;
    let mut depth = 0u32;
    while depth < CWD_DEPTH as u32 {
        if dentry == root {
            return Some(depth);
        }
        let parent: usize = kread(dentry, off!(dentry_parent)).ok()?;
        if parent == dentry {
            // The top of a mount that is not the process's root (a chroot elsewhere).
            return None;
        }
        let name: usize = kread(dentry, off!(dentry_name)).ok()?;
        let slot = dst.cast::<[u8; CWD_COMPONENT]>().add(depth as usize);
        let n = gen::bpf_probe_read_kernel_str(
            slot.cast(),
            CWD_COMPONENT as u32,
            name as *const c_void,
        );
        if n <= 1 || n as usize >= CWD_COMPONENT {
            return None;
        }
        dentry = parent;
        depth += 1;
    }
    (dentry == root).then_some(depth)
}

/// The path of the exec (`bprm->filename`) into `dst`; its length without the NUL, and
/// whether it was cut.
#[inline(always)]
unsafe fn read_filename(bprm: usize, dst: *mut [u8; MAX_PATH]) -> (u32, bool) {
    let Ok(filename) = kread::<usize>(bprm, off!(bprm_filename)) else {
        return (0, false);
    };
    let n = gen::bpf_probe_read_kernel_str(dst.cast(), MAX_PATH as u32, filename as *const c_void);
    if n <= 0 {
        return (0, false);
    }
    let truncated = n as usize >= MAX_PATH && kread::<u8>(filename, MAX_PATH - 1).unwrap_or(0) != 0;
    (n as u32 - 1, truncated)
}

/// The name of the file really run (`bprm->file->f_path.dentry->d_name.name`) into `dst`;
/// its length without the NUL (0 when any read fails), and whether it was cut.
///
/// At `sched_process_exec`, `bprm->file` is what the new image was loaded from: the
/// target of the links the path went through (`/bin/sh` → busybox, `/proc/self/exe` →
/// the real binary), and for a script its interpreter, which `exec_binprm()` swaps in
/// before the tracepoint fires.
#[inline(always)]
unsafe fn read_file_name(bprm: usize, dst: *mut [u8; MAX_FILE_NAME]) -> (u32, bool) {
    let Ok(name) = exec_file_name(bprm) else {
        return (0, false);
    };
    let n = gen::bpf_probe_read_kernel_str(dst.cast(), MAX_FILE_NAME as u32, name as *const c_void);
    if n <= 0 {
        return (0, false);
    }
    let truncated =
        n as usize >= MAX_FILE_NAME && kread::<u8>(name, MAX_FILE_NAME - 1).unwrap_or(0) != 0;
    (n as u32 - 1, truncated)
}

/// Reads the new program's path and arguments into `exec` (`filename`, `filename_len`,
/// `argv`, `argv_len`) and returns the `EXEC_*` flags of what was cut.
///
/// # Safety
/// `exec` must point to a writable record (the reserved event or this CPU's scratch).
#[inline(always)]
unsafe fn read_program(task: usize, bprm: usize, exec: *mut ExecEvent) -> u32 {
    let mut flags = 0;
    // The path the kernel opened (`bprm->filename`): for a script, the script.
    let (filename_len, truncated) = read_filename(bprm, addr_of_mut!((*exec).filename));
    if truncated {
        flags |= EXEC_FILENAME_TRUNCATED;
    }
    addr_of_mut!((*exec).filename_len).write(filename_len);

    // argv as the new image sees it: the block between mm->arg_start and arg_end, which
    // the kernel has just written into the new stack, so it is resident.
    let mut argv_len = 0u32;
    if let Ok(mm) = kread::<usize>(task, off!(task_mm)) {
        let start = kread::<u64>(mm, off!(mm_arg_start)).unwrap_or(0);
        let end = kread::<u64>(mm, off!(mm_arg_end)).unwrap_or(0);
        let mut len = end.saturating_sub(start);
        if len > MAX_ARGV as u64 {
            len = MAX_ARGV as u64;
            flags |= EXEC_ARGV_TRUNCATED;
        }
        let len = len as u32;
        if len > 0
            && gen::bpf_probe_read_user(
                addr_of_mut!((*exec).argv).cast(),
                len,
                start as *const c_void,
            ) == 0
        {
            argv_len = len;
        }
    }
    addr_of_mut!((*exec).argv_len).write(argv_len);
    flags
}

/// Judges an exec that has no event record (the ring buffer is full).
#[inline(never)]
fn enforce_unrecorded(task: usize, bprm: usize, cgroup_id: u64, enforcement: Enforcement) {
    let Some(scratch) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch value; the program does not nest on one CPU.
    let flags = unsafe { read_program(task, bprm, scratch) };
    // SAFETY: as above; fully written by `read_program` where `must_die` reads it.
    if must_die(unsafe { &*scratch }, flags, cgroup_id, enforcement)
        && !spared_as_init(task, enforcement)
    {
        kill_current();
    }
}

/// How an exec in `cgroup_id` is judged: (judged, the cgroup whose keys hold the rules, its
/// entry). A cgroup without an entry of its own falls back to its parent's: a container's
/// nested cgroups to the container's, a container created since the agent last wrote to
/// its pod's ([`ENFORCE_INHERITED`]), so that it is judged from its first exec. An
/// inherited entry judges only the cgroups below it.
#[inline(always)]
fn enforcement_of(task: usize, cgroup_id: u64) -> (bool, u64, Enforcement) {
    // SAFETY: lookups in a map of plain integers; the value is copied out at once.
    if let Some(own) = unsafe { ENFORCE.get(&cgroup_id) } {
        let own = *own;
        return (own.flags & ENFORCE_INHERITED == 0, cgroup_id, own);
    }
    let Ok(parent) = setup::parent_cgroup_id(task) else {
        return (false, 0, Enforcement::default());
    };
    match unsafe { ENFORCE.get(&parent) } {
        Some(inherited) => (true, parent, *inherited),
        None => (false, 0, Enforcement::default()),
    }
}

/// The file an exec really runs: (inode number, device, `EXEC_EXE_*` layer flags). Its
/// overlay layer is read from the overlay's own inode (whether it has an upper dentry), so
/// no path the exec named can hide a file written after the container started.
#[inline(always)]
fn exe_identity(bprm: usize) -> (u64, u32, u32) {
    let Ok(inode) = kread::<usize>(bprm, off!(bprm_file)).and_then(|f| kread(f, off!(file_inode)))
    else {
        return (0, 0, 0);
    };
    let ino = kread::<u64>(inode, off!(inode_ino)).unwrap_or(0);
    let Ok(sb) = kread::<usize>(inode, off!(inode_sb)) else {
        return (ino, 0, 0);
    };
    let dev = kread::<u32>(sb, off!(sb_dev)).unwrap_or(0);
    let mut layer = 0;
    let upper_at = off!(ovl_upper_from_inode);
    if upper_at != 0 && kread::<u64>(sb, off!(sb_magic)) == Ok(OVERLAYFS_SUPER_MAGIC) {
        if let Ok(upper) = kread::<usize>(inode, upper_at) {
            layer = EXEC_EXE_OVERLAY | if upper != 0 { EXEC_EXE_UPPER } else { 0 };
        }
    }
    (ino, dev, layer)
}

#[inline(always)]
fn try_exec(ctx: &BtfTracePointContext) -> Result<(), Error> {
    // SAFETY: sched_process_exec is
    // `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`; `p` is current.
    let (task, bprm): (*const c_void, *const c_void) = unsafe { (ctx.arg(0), ctx.arg(2)) };
    let (task, bprm) = (task as usize, bprm as usize);
    let cgroup_id = current_cgroup_id();
    // The runtime starting its own init in the container: neither reported nor an entry.
    if setup::is_runtime_reexec(bprm, cgroup_id) {
        return Ok(());
    }
    let actor = Actor::current();
    setup::note_exec(task, actor.pid, cgroup_id);
    // Copied into a value written on both paths (zeros when the cgroup has no entry): the
    // verifier refuses to spill a register never written, which the compiler emitted for
    // the fields of a `None` once the program grew.
    let (judged, rules_cgroup, enforcement) = enforcement_of(task, cgroup_id);
    let Some(mut entry) = reserve::<ExecEvent>(EventKind::Exec) else {
        if judged {
            enforce_unrecorded(task, bprm, rules_cgroup, enforcement);
        }
        return Ok(());
    };
    let event = entry.as_mut_ptr();

    // Each field is read on its own: one that cannot be read is left empty rather than the
    // whole exec lost.
    let parent = kread::<usize>(task, off!(task_real_parent)).unwrap_or(0);
    let ppid = kread::<u32>(parent, off!(task_tgid)).unwrap_or(0);
    let parent_start_time_ns = kread::<usize>(parent, off!(task_group_leader))
        .and_then(|leader| kread::<u64>(leader, off!(task_start_boottime)))
        .unwrap_or(0);
    let (euid, egid) = effective_ids(task).unwrap_or((u32::MAX, u32::MAX));
    let start_time_ns = kread::<u64>(task, off!(task_start_boottime)).unwrap_or(0);

    // SAFETY: `event` is the reserved record; the helpers cope with bad source addresses.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::Exec,
            cgroup_id,
            actor,
        );
        addr_of_mut!((*event).ppid).write(ppid);
        addr_of_mut!((*event).euid).write(euid);
        addr_of_mut!((*event).egid).write(egid);
        addr_of_mut!((*event).start_time_ns).write(start_time_ns);
        addr_of_mut!((*event).parent_start_time_ns).write(parent_start_time_ns);
        let mut flags = read_program(task, bprm, event);
        // For the record only: the kill below judges by path and arguments alone.
        let (file_name_len, truncated) = read_file_name(bprm, addr_of_mut!((*event).file_name));
        if truncated {
            flags |= EXEC_FILE_NAME_TRUNCATED;
        }
        addr_of_mut!((*event).file_name_len).write(file_name_len);
        let (exe_ino, exe_dev, layer) = exe_identity(bprm);
        flags |= layer;
        addr_of_mut!((*event).exe_ino).write(exe_ino);
        addr_of_mut!((*event).exe_dev).write(exe_dev);
        addr_of_mut!((*event)._pad_exe).write(0);
        let relative = (*event).filename_len > 0 && (*event).filename[0] != b'/';
        let cwd_depth = if relative {
            match read_working_directory(task, addr_of_mut!((*event).cwd)) {
                Some(0) => {
                    flags |= EXEC_CWD_ROOT;
                    0
                }
                Some(depth) => depth,
                None => 0,
            }
        } else {
            0
        };
        addr_of_mut!((*event).cwd_depth).write(cwd_depth);
        if judged
            && must_die(&*event, flags, rules_cgroup, enforcement)
            && !spared_as_init(task, enforcement)
            && kill_current()
        {
            flags |= EXEC_KILLED_IN_KERNEL;
        }
        addr_of_mut!((*event).flags).write(flags);
    }
    submit(entry, EventKind::Exec);
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext) -> Result<(), Error> {
    // SAFETY: sched_process_exit's first argument is the exiting task, current.
    let task: *const c_void = unsafe { ctx.arg(0) };
    let task = task as usize;
    // An identity call of this thread that no later syscall completed.
    identity::resolve_if_pending();
    // The process is gone when its last thread exits: do_exit() has already decremented
    // signal->live when the tracepoint fires. (Not "the leader exits": a leader can end
    // with pthread_exit while the other threads run on.) Reading the counter rather than
    // the tracepoint's newer group_dead argument keeps older kernels working.
    let signal: usize = kread(task, off!(task_signal))?;
    if kread::<i32>(signal, off!(signal_live))? != 0 {
        return Ok(());
    }
    let actor = Actor::current();
    setup::forget(actor.pid);
    let exit_code: i32 = kread(task, off!(task_exit_code)).unwrap_or(0);
    let Some(mut entry) = reserve::<ExitEvent>(EventKind::Exit) else {
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved record.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::Exit,
            current_cgroup_id(),
            actor,
        );
        addr_of_mut!((*event).exit_code).write(exit_code);
        addr_of_mut!((*event)._pad).write(0);
    }
    submit(entry, EventKind::Exit);
    Ok(())
}
