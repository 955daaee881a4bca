//! herdwatch's kernel side: eBPF programs that watch processes, syscalls, network
//! endpoints, file opens and identity changes, and report them to the node agent.
//!
//! Data leaves through one ring buffer (`EVENTS`) as the `#[repr(C)]` records of
//! `herdwatch-abi`; the programs filter and deduplicate first (a per-cgroup syscall bitmap,
//! LRU maps of files and peers seen), so steady state sends almost nothing. Every record
//! that did not fit is counted per kind in `LOST`, every one submitted in `EMITTED`.
//! Kernel struct offsets come in through the read-only global `OFFSETS`, which the loader
//! (node-agent's `capture` module) fills from the running kernel's BTF, because aya-ebpf
//! has no CO-RE field relocations.
//!
//! Only BTF tracepoints (tp_btf) are used, so nothing needs tracefs: kprobes, fentry and
//! BPF LSM are not available on the kernels herdwatch targets.
#![no_std]
#![no_main]
// For the atomic intrinsics of `atomic.rs`.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod atomic;
mod common;
mod files;
mod identity;
mod net;
mod process;
mod setup;
mod syscalls;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

/// Does nothing, and the agent never loads it: the kernel benchmark
/// (node-agent/examples/kernel_bench.rs) attaches it alone to measure what a `tp_btf`
/// program on syscall entry costs before it runs a single instruction, the floor under
/// [`syscalls::sys_enter`].
#[btf_tracepoint(function = "sys_enter")]
pub fn bench_empty_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing here can panic at run time (the verifier would refuse a program that could
    // reach this); the handler only has to exist.
    // SAFETY: unreachable, see above.
    unsafe { core::hint::unreachable_unchecked() }
}
