//! File opens, seen at syscall entry and deduplicated per (cgroup, path, access) in an LRU
//! map. The path is the one the process passed, read from its memory.
//!
//! Entry rather than exit: tracing syscall exits costs every syscall of the machine, and an
//! open that the kernel refuses (of /etc/shadow, say) is worth reporting anyway.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::gen,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use core::ptr::addr_of_mut;
use herdwatch_abi::{
    EventKind, FileEvent, FileKey, ACCESS_CREATE, ACCESS_READ, ACCESS_TRUNCATE, ACCESS_WRITE,
    FILE_PATH_TRUNCATED, MAX_PATH,
};

use crate::common::{copy_bytes, reserve, submit, uread, write_header, Actor, Error};
use crate::setup;
use crate::syscalls::{reg, NR_CREAT, NR_OPEN, NR_OPENAT, REG_DI, REG_DX, REG_SI};

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_ACCMODE: u64 = 0o3;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_PATH: u64 = 0o10000000;

/// (cgroup, path, access) → seen.
#[map]
static FILE_SEEN: LruHashMap<FileKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// The key under construction: 272 bytes is too much for the 512-byte BPF stack next to
/// everything else, and a map value can be zeroed past the path's NUL so that equal paths
/// make equal keys.
#[map]
static FILE_SCRATCH: PerCpuArray<FileKey> = PerCpuArray::with_max_entries(1, 0);

/// `ACCESS_*` bits of open flags.
#[inline(always)]
fn access_of(flags: u64) -> u32 {
    if flags & O_PATH != 0 {
        return 0;
    }
    let mut access = match flags & O_ACCMODE {
        O_WRONLY => ACCESS_WRITE,
        O_RDWR => ACCESS_READ | ACCESS_WRITE,
        _ => ACCESS_READ,
    };
    if flags & O_CREAT != 0 {
        access |= ACCESS_CREATE;
    }
    if flags & O_TRUNC != 0 {
        access |= ACCESS_WRITE | ACCESS_TRUNCATE;
    }
    access
}

#[inline(never)]
pub fn on_open(regs: *const u64, nr: i64, cgroup_id: u64) -> Result<(), Error> {
    let (path, flags) = match nr {
        NR_OPEN => (reg(regs, REG_DI), reg(regs, REG_SI)),
        NR_CREAT => (reg(regs, REG_DI), O_CREAT | O_WRONLY | O_TRUNC),
        NR_OPENAT => (reg(regs, REG_SI), reg(regs, REG_DX)),
        // openat2(dirfd, path, struct open_how *how, size): flags is how's first u64.
        _ => (reg(regs, REG_SI), uread::<u64>(reg(regs, REG_DX) as usize)?),
    };
    let access = access_of(flags);

    let key = FILE_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: `key` is this CPU's scratch value, alive while the program runs; sys_enter
    // does not nest on one CPU, and no other program uses this map.
    let len = unsafe {
        let words = addr_of_mut!((*key).path).cast::<u64>();
        for i in 0..MAX_PATH / 8 {
            // Volatile so that the compiler keeps 32 stores rather than calling memset.
            words.add(i).write_volatile(0);
        }
        addr_of_mut!((*key).cgroup_id).write(cgroup_id);
        addr_of_mut!((*key).access).write(access);
        addr_of_mut!((*key)._pad).write(0);
        // Writes up to and including the NUL, nothing past it.
        gen::bpf_probe_read_user_str(
            addr_of_mut!((*key).path).cast(),
            MAX_PATH as u32,
            path as *const _,
        )
    };
    if len <= 0 {
        return Err(len);
    }
    let mut file_flags = 0;
    // A full buffer is a truncated path unless the string ended exactly there.
    if len as usize >= MAX_PATH && uread::<u8>(path as usize + MAX_PATH - 1).unwrap_or(0) != 0 {
        file_flags |= FILE_PATH_TRUNCATED;
    }

    // SAFETY: `key` is a valid map value (see above).
    let key_ref = unsafe { &*key };
    if FILE_SEEN.get_ptr(key_ref).is_some() {
        return Ok(());
    }
    // Not the runtime's own files (its state on the host, the image's rootfs before the
    // pivot): not reported, and not remembered as seen.
    if setup::in_runtime_setup(cgroup_id) {
        return Ok(());
    }
    // NOEXIST: when two CPUs race on the same key, only the one that inserts reports.
    if FILE_SEEN
        .insert(key_ref, &1, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return Ok(());
    }
    let Some(mut entry) = reserve::<FileEvent>(EventKind::File) else {
        // Counted as lost; forget the key so that the next open reports it.
        let _ = FILE_SEEN.remove(key_ref);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is the reserved record.
    unsafe {
        write_header(
            addr_of_mut!((*event).header),
            EventKind::File,
            cgroup_id,
            Actor::current(),
        );
        addr_of_mut!((*event).access).write(access);
        addr_of_mut!((*event).flags).write(file_flags);
        addr_of_mut!((*event).open_flags).write(flags as u32);
        addr_of_mut!((*event).path_len).write(len as u32 - 1);
        copy_bytes(
            addr_of_mut!((*event).path).cast(),
            addr_of_mut!((*key).path).cast(),
            MAX_PATH as u32,
        );
    }
    submit(entry, EventKind::File);
    Ok(())
}
