//! Raw syscall entry: the per-cgroup first-sighting bitmap, and the dispatch of the few
//! syscalls whose arguments other modules read.
//!
//! This program runs on every syscall of the machine, so its common path is about 40
//! instructions: the current cgroup id, one per-CPU cache slot (an array lookup the
//! verifier inlines), a bit test in it and one in a constant bitmap of the syscalls other
//! modules want, return. Only a miss goes to the shared LRU map, and only the few
//! dispatched syscalls (opens, identity changes) to the other modules.
//! `bench/kernel.sh` measures it against an empty program on the same tracepoint.
//! Syscall exits are not traced at all: measured on kernel 6.18, any sys_exit hook (raw,
//! or the per-syscall ones) adds 10-25 ns to every syscall, more than this whole program.
//! Arguments come from the saved user registers (`struct pt_regs`, whose x86_64 layout is
//! user ABI), read by direct loads: tp_btf arguments are BTF-typed pointers, so the
//! verifier checks those loads against the kernel's own `pt_regs` type.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use core::ptr::addr_of_mut;
use herdwatch_abi::{
    CachedBitmap, EventKind, SyscallBitmap, SyscallCache, SyscallEvent, AF_INET, AF_INET6,
    CACHE_INDEX_BITS, MAX_SYSCALL_NR, SYSCALL_BITMAP_WORDS, SYSCALL_PACKET_SOCKET,
    SYSCALL_RAW_SOCKET,
};

use crate::common::{current_cgroup_id, reserve, submit, write_header, Actor};
use crate::{atomic, files, identity, setup};

/// Indexes of `struct pt_regs` (x86_64, in u64 words) of the syscall number and the
/// arguments read (the syscall convention passes rdi, rsi, rdx, r10, r8, r9).
pub const REG_R8: usize = 9;
pub const REG_DX: usize = 12;
pub const REG_SI: usize = 13;
pub const REG_DI: usize = 14;
pub const REG_ORIG_AX: usize = 15;

/// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
pub const NR_OPEN: i64 = 2;
pub const NR_SOCKET: i64 = 41;
pub const NR_SENDTO: i64 = 44;
pub const NR_SENDMSG: i64 = 46;
pub const NR_CREAT: i64 = 85;
pub const NR_SETUID: i64 = 105;
pub const NR_SETGID: i64 = 106;
pub const NR_SETREUID: i64 = 113;
pub const NR_SETREGID: i64 = 114;
pub const NR_SETRESUID: i64 = 117;
pub const NR_SETRESGID: i64 = 119;
pub const NR_SETFSUID: i64 = 122;
pub const NR_SETFSGID: i64 = 123;
pub const NR_CAPSET: i64 = 126;
pub const NR_OPENAT: i64 = 257;
pub const NR_SENDMMSG: i64 = 307;
pub const NR_OPENAT2: i64 = 437;

/// `socket()`'s family and type values that make a raw or packet socket (the type's low
/// bits; the rest are `SOCK_NONBLOCK`/`SOCK_CLOEXEC`).
const AF_PACKET: u32 = 17;
const SOCK_RAW: u32 = 3;
const SOCK_TYPE_MASK: u32 = 0xf;

/// cgroup id → syscalls seen in it: the truth, shared by all CPUs. LRU: a forgotten
/// (evicted) cgroup only means its syscalls are reported once more.
#[map]
static SYSCALL_SEEN: LruHashMap<u64, SyscallBitmap> = LruHashMap::with_max_entries(4096, 0);

/// Per CPU, one [`SyscallCache`]. A hash map lookup costs a jhash and a bucket walk on every
/// syscall; this costs a multiply and a load. One value holding every slot rather than one
/// value per slot: its lookup (constant key, inlined by the verifier) does not depend on
/// the cgroup id, so the CPU runs it while the cgroup id helper runs. Programs do not nest
/// on one CPU for this tracepoint, so a slot is never written concurrently.
#[map]
static SYSCALL_CACHE: PerCpuArray<SyscallCache> = PerCpuArray::with_max_entries(1, 0);

/// Reads word `index` of the saved user registers.
#[inline(always)]
pub fn reg(regs: *const u64, index: usize) -> u64 {
    // SAFETY: `regs` is the tracepoint's BTF-typed `struct pt_regs *`; the verifier checks
    // the load against that type and makes it fault tolerant.
    unsafe { regs.add(index).read() }
}

/// Syscalls whose arguments another module reads at entry, as a bitmap laid out like
/// [`SyscallBitmap`]: testing it costs the common path one load and one AND, where a chain
/// of comparisons would cost it a branch per number.
static DISPATCHED: [u64; SYSCALL_BITMAP_WORDS] = dispatched_bitmap(&[
    NR_SOCKET,
    NR_OPEN,
    NR_CREAT,
    NR_OPENAT,
    NR_OPENAT2,
    NR_SETUID,
    NR_SETGID,
    NR_SETREUID,
    NR_SETREGID,
    NR_SETRESUID,
    NR_SETRESGID,
    NR_SETFSUID,
    NR_SETFSGID,
    NR_CAPSET,
]);

const fn dispatched_bitmap(numbers: &[i64]) -> [u64; SYSCALL_BITMAP_WORDS] {
    let mut bits = [0; SYSCALL_BITMAP_WORDS];
    let mut i = 0;
    while i < numbers.len() {
        let nr = numbers[i] as usize;
        bits[nr / 64] |= 1 << (nr % 64);
        i += 1;
    }
    bits
}

/// The common path, kept small because it runs on every syscall of the machine: a
/// syscall this CPU's cache has already seen in this cgroup, and that no other module
/// wants, returns after one helper call (the cgroup id), the cache lookup the verifier
/// inlines and two bit tests. Everything else is in [`sys_enter_uncommon`].
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    // First: nothing below depends on it, so its loads overlap the helper call.
    let Some(cache) = SYSCALL_CACHE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: sys_enter is `(struct pt_regs *regs, long id)`.
    let nr: i64 = unsafe { ctx.arg(1) };
    // An identity change this thread made in its previous syscall is complete now.
    identity::resolve_if_pending();
    // Negative numbers (-1: a tracer cancelled the call) and x32 numbers (bit 30) are out of
    // the bitmap's range, and none of them is dispatched.
    if (nr as u64) >= u64::from(MAX_SYSCALL_NR) {
        return 0;
    }
    let nr = nr as u32;
    let cgroup_id = current_cgroup_id();
    let word = (nr >> 6) as usize;
    let mask = 1u64 << (nr & 63);
    // Fibonacci hashing: cgroup ids are inode numbers, often consecutive.
    let index = (cgroup_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_INDEX_BITS)) as usize;
    // SAFETY: `cache` is this CPU's map value and `index` below its slot count;
    // `word < SYSCALL_BITMAP_WORDS` as `nr` is below MAX_SYSCALL_NR.
    let (slot, seen) = unsafe {
        let slot = addr_of_mut!((*cache).slots)
            .cast::<CachedBitmap>()
            .add(index);
        let seen = (*slot).cgroup_id == cgroup_id
            && *addr_of_mut!((*slot).bits).cast::<u64>().add(word) & mask != 0;
        (slot, seen)
    };
    if seen && DISPATCHED[word] & mask == 0 {
        return 0;
    }
    sys_enter_uncommon(&ctx, nr, cgroup_id, slot, seen);
    0
}

/// A first sighting (or a cache miss), or a syscall another module reads.
#[inline(never)]
fn sys_enter_uncommon(
    ctx: &BtfTracePointContext,
    nr: u32,
    cgroup_id: u64,
    slot: *mut CachedBitmap,
    seen: bool,
) {
    if !seen {
        // The runtime's set-up marks nothing and reports nothing (see `setup`): its
        // syscalls go on through this path until its exec, which is only a moment.
        if setup::in_runtime_setup(cgroup_id) {
            return;
        }
        note_syscall_slow(cgroup_id, nr, slot);
    }
    let nr = i64::from(nr);
    // Errors are dropped: nothing on syscall entry can report them.
    let _ = match nr {
        NR_OPEN | NR_CREAT | NR_OPENAT | NR_OPENAT2 => {
            // SAFETY: sys_enter's first argument.
            let regs: *const u64 = unsafe { ctx.arg(0) };
            files::on_open(regs, nr, cgroup_id)
        }
        NR_SOCKET => {
            // SAFETY: sys_enter's first argument.
            let regs: *const u64 = unsafe { ctx.arg(0) };
            let family = reg(regs, REG_DI) as u32;
            let kind = reg(regs, REG_SI) as u32 & SOCK_TYPE_MASK;
            let pseudo = if family == AF_PACKET {
                SYSCALL_PACKET_SOCKET
            } else if kind == SOCK_RAW
                && (family == u32::from(AF_INET) || family == u32::from(AF_INET6))
            {
                SYSCALL_RAW_SOCKET
            } else {
                return;
            };
            if !setup::in_runtime_setup(cgroup_id) {
                note_syscall_slow(cgroup_id, pseudo, slot);
            }
            Ok(())
        }
        NR_SETUID..=NR_CAPSET
            if identity::is_identity(nr) && !setup::in_runtime_setup(cgroup_id) =>
        {
            // SAFETY: sys_enter's first argument.
            let regs: *const u64 = unsafe { ctx.arg(0) };
            identity::stash(regs, nr)
        }
        _ => Ok(()),
    };
}

/// The cache missed: consult (and maybe update) the shared bitmap, then refresh the slot.
#[inline(always)]
fn note_syscall_slow(cgroup_id: u64, nr: u32, slot: *mut CachedBitmap) {
    let shared = match SYSCALL_SEEN.get_ptr_mut(&cgroup_id) {
        Some(shared) => shared,
        None => {
            // NOEXIST: if another CPU created it meanwhile, its bits are kept.
            let empty = SyscallBitmap {
                bits: [0; SYSCALL_BITMAP_WORDS],
            };
            let _ = SYSCALL_SEEN.insert(&cgroup_id, &empty, u64::from(BPF_NOEXIST));
            match SYSCALL_SEEN.get_ptr_mut(&cgroup_id) {
                Some(shared) => shared,
                None => return,
            }
        }
    };
    let mask = 1u64 << (nr & 63);
    // SAFETY: `nr < MAX_SYSCALL_NR`, so the word is inside the map value, which lives while
    // the program runs and is 8-byte aligned.
    let bits = unsafe { addr_of_mut!((*shared).bits).cast::<u64>() };
    let word = unsafe { bits.add((nr >> 6) as usize) };
    // SAFETY: see above. Only the CPU that flips the bit reports the syscall.
    if unsafe { word.read_volatile() } & mask == 0
        && unsafe { atomic::fetch_or(word, mask) } & mask == 0
    {
        let Some(mut entry) = reserve::<SyscallEvent>(EventKind::Syscall) else {
            // Counted as lost; clear the bit so that the next call reports it again, and
            // leave the cache alone.
            // SAFETY: see above.
            unsafe { atomic::and(word, !mask) };
            return;
        };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` is the reserved record.
        unsafe {
            write_header(
                addr_of_mut!((*event).header),
                EventKind::Syscall,
                cgroup_id,
                Actor::current(),
            );
            addr_of_mut!((*event).nr).write(nr);
            addr_of_mut!((*event)._pad).write(0);
        }
        submit(entry, EventKind::Syscall);
    }
    // SAFETY: `slot` is this CPU's map value, `bits` the shared one (see above).
    unsafe {
        addr_of_mut!((*slot).cgroup_id).write(cgroup_id);
        let copy = addr_of_mut!((*slot).bits).cast::<u64>();
        for i in 0..SYSCALL_BITMAP_WORDS {
            copy.add(i).write_volatile(bits.add(i).read_volatile());
        }
    }
}
