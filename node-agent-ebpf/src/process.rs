//! Process lifecycle: exec (`sched_process_exec`) and whole-process exit
//! (`sched_process_exit` when the last thread goes).

use aya_ebpf::{helpers::gen, macros::btf_tracepoint, programs::BtfTracePointContext};
use core::ffi::c_void;
use core::ptr::addr_of_mut;
use herdwatch_abi::{
    EventKind, ExecEvent, ExitEvent, EXEC_ARGV_TRUNCATED, EXEC_FILENAME_TRUNCATED, MAX_ARGV,
    MAX_PATH,
};

use crate::common::{
    current_cgroup_id, effective_ids, kread, off, reserve, submit, write_header, Actor, Error,
};
use crate::identity;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

#[inline(always)]
fn try_exec(ctx: &BtfTracePointContext) -> Result<(), Error> {
    // SAFETY: sched_process_exec is
    // `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`; `p` is current.
    let (task, bprm): (*const c_void, *const c_void) = unsafe { (ctx.arg(0), ctx.arg(2)) };
    let (task, bprm) = (task as usize, bprm as usize);
    let Some(mut entry) = reserve::<ExecEvent>(EventKind::Exec) else {
        return Ok(());
    };
    let event = entry.as_mut_ptr();

    // Each field is read on its own: one that cannot be read is left empty rather than the
    // whole exec lost.
    let ppid = kread::<usize>(task, off!(task_real_parent))
        .and_then(|parent| kread::<u32>(parent, off!(task_tgid)))
        .unwrap_or(0);
    let (euid, egid) = effective_ids(task).unwrap_or((u32::MAX, u32::MAX));
    let start_time_ns = kread::<u64>(task, off!(task_start_boottime)).unwrap_or(0);
    let mut flags = 0;

    // SAFETY: `event` is the reserved record; the helpers cope with bad source addresses.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::Exec,
            current_cgroup_id(),
            Actor::current(),
        );
        addr_of_mut!((*event).ppid).write(ppid);
        addr_of_mut!((*event).euid).write(euid);
        addr_of_mut!((*event).egid).write(egid);
        addr_of_mut!((*event).start_time_ns).write(start_time_ns);

        // The path the kernel opened (`bprm->filename`): for a script, the script.
        let mut filename_len = 0;
        if let Ok(filename) = kread::<usize>(bprm, off!(bprm_filename)) {
            let n = gen::bpf_probe_read_kernel_str(
                addr_of_mut!((*event).filename).cast(),
                MAX_PATH as u32,
                filename as *const c_void,
            );
            if n > 0 {
                filename_len = n as u32 - 1;
                if n as usize >= MAX_PATH && kread::<u8>(filename, MAX_PATH - 1).unwrap_or(0) != 0 {
                    flags |= EXEC_FILENAME_TRUNCATED;
                }
            }
        }
        addr_of_mut!((*event).filename_len).write(filename_len);

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
                    addr_of_mut!((*event).argv).cast(),
                    len,
                    start as *const c_void,
                ) == 0
            {
                argv_len = len;
            }
        }
        addr_of_mut!((*event).argv_len).write(argv_len);
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
            Actor::current(),
        );
        addr_of_mut!((*event).exit_code).write(exit_code);
        addr_of_mut!((*event)._pad).write(0);
    }
    submit(entry, EventKind::Exit);
    Ok(())
}
