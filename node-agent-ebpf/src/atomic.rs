//! Atomic read-modify-write on map values.
//!
//! Rust's bpfel target does not declare compare-and-swap, so `core::sync::atomic` offers
//! loads and stores only; the intrinsics below lower to the BPF atomic instructions
//! (`lock add`, and with `target-cpu=v3`, fetch-or / fetch-and), which the kernel has had
//! since 5.12. Built with Debian's toolchain under RUSTC_BOOTSTRAP, like the rest of the
//! crate, whose compiler version build.rs pins through TOOLCHAIN.md.

use core::intrinsics::{self, AtomicOrdering};

/// `*dst += value`.
#[inline(always)]
pub unsafe fn add(dst: *mut u64, value: u64) {
    intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value);
}

/// `*dst |= value`, returning the old value.
#[inline(always)]
pub unsafe fn fetch_or(dst: *mut u64, value: u64) -> u64 {
    intrinsics::atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value)
}

/// `*dst &= value`.
#[inline(always)]
pub unsafe fn and(dst: *mut u64, value: u64) {
    intrinsics::atomic_and::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value);
}
