//! Identity changes: the setuid family and capset.
//!
//! The ids before the call are only readable before it, and its outcome only after it.
//! Tracing syscall exits would cost every syscall on the machine 10-25 ns, so the call is
//! stashed at entry (per thread) and completed at the thread's next syscall entry, or at
//! its exit, whichever comes first: by then the call has returned and its new ids are in
//! place. A global count of pending stashes keeps that check to one load while there are
//! none, which is nearly always. The price of this design: while a stash is pending, every
//! syscall on the machine also looks up its thread (tens of ns); a thread that changes its
//! ids and then computes for a long time without a syscall stretches that window. An entry
//! the LRU evicts unresolved (4096 threads mid-call at once) would leave the count above
//! zero for good: slower, never wrong.

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::LruHashMap};
use core::ptr::addr_of_mut;
use herdwatch_abi::{EventKind, IdentityEvent};

use crate::atomic;
use crate::common::{
    current_cgroup_id, current_task, effective_ids, kread, off, reserve, submit, uread,
    write_header, Actor, Error,
};
use crate::syscalls::{
    reg, NR_CAPSET, NR_SETFSGID, NR_SETFSUID, NR_SETGID, NR_SETREGID, NR_SETRESGID, NR_SETRESUID,
    NR_SETREUID, NR_SETUID, REG_DI, REG_DX, REG_SI,
};

/// What the entry of an identity syscall saw.
#[repr(C)]
struct IdentityStash {
    nr: u32,
    old_euid: u32,
    old_egid: u32,
    args: [u32; 3],
}

/// Thread id → its identity call in flight. LRU, so that stashes of threads that vanish
/// unseen cannot fill it.
#[map]
static ID_STASH: LruHashMap<u32, IdentityStash> = LruHashMap::with_max_entries(4096, 0);

/// Number of entries in [`ID_STASH`]; zero nearly always. A global (.bss) rather than a
/// map: its address is a constant in the program, so checking it is a single load.
static mut ID_PENDING: u64 = 0;

/// Ids of the current task, read when a call completes.
struct Ids {
    uid: u32,
    gid: u32,
    euid: u32,
    egid: u32,
    fsuid: u32,
    fsgid: u32,
    cap_effective: u64,
}

#[inline(always)]
pub fn is_identity(nr: i64) -> bool {
    matches!(
        nr,
        NR_SETUID
            | NR_SETGID
            | NR_SETREUID
            | NR_SETREGID
            | NR_SETRESUID
            | NR_SETRESGID
            | NR_SETFSUID
            | NR_SETFSGID
            | NR_CAPSET
    )
}

/// sys_enter of an identity syscall: remember the old ids and the request.
#[inline(always)]
pub fn stash(regs: *const u64, nr: i64) -> Result<(), Error> {
    let (a0, a1, a2) = (
        reg(regs, REG_DI) as u32,
        reg(regs, REG_SI) as u32,
        reg(regs, REG_DX) as u32,
    );
    let args = match nr {
        NR_SETREUID | NR_SETREGID => [a0, a1, u32::MAX],
        NR_SETRESUID | NR_SETRESGID => [a0, a1, a2],
        // capset(hdrp, datap): the first `struct __user_cap_data_struct` is
        // { effective, permitted, inheritable }, the low 32 capabilities.
        NR_CAPSET => uread::<[u32; 3]>(reg(regs, REG_SI) as usize).unwrap_or([u32::MAX; 3]),
        _ => [a0, u32::MAX, u32::MAX],
    };
    let (old_euid, old_egid) = effective_ids(current_task())?;
    let stash = IdentityStash {
        nr: nr as u32,
        old_euid,
        old_egid,
        args,
    };
    // SAFETY: a helper without arguments.
    let tid = unsafe { aya_ebpf::helpers::gen::bpf_get_current_pid_tgid() } as u32;
    // Only a new entry counts as pending (an old one would have been resolved first).
    if ID_STASH
        .insert(&tid, &stash, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        // SAFETY: a global, only ever accessed atomically or by volatile loads.
        unsafe { atomic::add(addr_of_mut!(ID_PENDING), 1) };
        Ok(())
    } else {
        ID_STASH.insert(&tid, &stash, 0)
    }
}

/// Completes the current thread's identity call, if one is stashed. One load when none is.
#[inline(always)]
pub fn resolve_if_pending() {
    // SAFETY: see `stash`.
    if unsafe { addr_of_mut!(ID_PENDING).read_volatile() } != 0 {
        let _ = resolve();
    }
}

#[inline(never)]
fn resolve() -> Result<(), Error> {
    let actor = Actor::current();
    // SAFETY: the fields are copied out before the entry is deleted.
    let Some(stash) = (unsafe { ID_STASH.get(&actor.tid) }) else {
        return Ok(());
    };
    let (nr, old_euid, old_egid, args) = (stash.nr, stash.old_euid, stash.old_egid, stash.args);
    if ID_STASH.remove(&actor.tid).is_err() {
        // Someone else (the same thread cannot race itself) already resolved it.
        return Ok(());
    }
    // SAFETY: see `stash`. Adding 2^64 - 1 subtracts one.
    unsafe { atomic::add(addr_of_mut!(ID_PENDING), u64::MAX) };

    let cred: usize = kread(current_task(), off!(task_cred))?;
    let ids = Ids {
        uid: actor.uid,
        gid: actor.gid,
        euid: kread(cred, off!(cred_euid))?,
        egid: kread(cred, off!(cred_egid))?,
        fsuid: kread(cred, off!(cred_fsuid))?,
        fsgid: kread(cred, off!(cred_fsgid))?,
        cap_effective: kread(cred, off!(cred_cap_effective))?,
    };
    let ret = if took_effect(i64::from(nr), &args, &ids) {
        0
    } else {
        -1
    };
    let Some(mut entry) = reserve::<IdentityEvent>(EventKind::Identity) else {
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved record.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::Identity,
            current_cgroup_id(),
            actor,
        );
        addr_of_mut!((*event).syscall_nr).write(nr);
        addr_of_mut!((*event).ret).write(ret);
        addr_of_mut!((*event).old_uid).write(old_euid);
        addr_of_mut!((*event).old_gid).write(old_egid);
        addr_of_mut!((*event).new_uid).write(ids.euid);
        addr_of_mut!((*event).new_gid).write(ids.egid);
        addr_of_mut!((*event).args).write(args);
        addr_of_mut!((*event)._pad).write(0);
    }
    submit(entry, EventKind::Identity);
    Ok(())
}

/// Whether every id the call asked for is in place now. (Saved ids are not read: a
/// setresuid that set only the saved uid counts as taking effect.)
#[inline(always)]
fn took_effect(nr: i64, args: &[u32; 3], ids: &Ids) -> bool {
    // u32::MAX is "-1": leave unchanged.
    let asked = |arg: u32, now: u32| arg == u32::MAX || arg == now;
    match nr {
        NR_SETUID => args[0] == ids.euid,
        NR_SETGID => args[0] == ids.egid,
        NR_SETREUID | NR_SETRESUID => asked(args[0], ids.uid) && asked(args[1], ids.euid),
        NR_SETREGID | NR_SETRESGID => asked(args[0], ids.gid) && asked(args[1], ids.egid),
        NR_SETFSUID => args[0] == ids.fsuid,
        NR_SETFSGID => args[0] == ids.fsgid,
        _ => args[0] == ids.cap_effective as u32,
    }
}
