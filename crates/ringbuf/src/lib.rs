//! Reads a BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`) from user space.
//!
//! The kernel shares the ring through three mappings of the map's file descriptor:
//! - a consumer page, writable, whose first word is the consumer position;
//! - a producer page, read-only, whose first word is the producer position;
//! - the data pages, read-only, mapped twice in a row, so that a record that wraps around
//!   the end reads as one contiguous slice.
//!
//! Positions only grow; a record sits at `position & (size - 1)`, behind an 8-byte header
//! whose length word carries a busy bit (reserved, not yet committed) and a discard bit.
//! After reading, the consumer moves its position past the record (rounded up to 8 bytes);
//! the kernel counts free space from it, and wakes a poller when a record is committed
//! at the consumer's position.
//!
//! herdwatch needs its own reader because the agent adopts a ring the programs of an
//! earlier agent kept writing into (pinned): reading must start at the consumer position
//! the kernel holds, wherever it is, and compare it only with the producer position as the
//! kernel holds it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

/// The record header's length word: the record is still being written.
const BUSY_BIT: u32 = 1 << 31;
/// The record header's length word: the record was reserved, then given up.
const DISCARD_BIT: u32 = 1 << 30;
/// Bytes of a record's header (length word and page offset).
const HEADER_BYTES: u64 = 8;

/// Why a ring buffer could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the ring buffer size {0} is not a power of two of at least a page")]
    Size(u32),
    #[error("mapping the ring buffer's {what} failed")]
    Map {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One shared mapping, unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: ProtFlags, offset: u64) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd at an address the kernel picks; it
        // aliases no Rust object, and lives until `Drop` unmaps exactly it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The word at the start of the mapping, shared with the kernel.
    fn position(&self) -> &AtomicU64 {
        // SAFETY: the mapping is at least a page, page-aligned, and the kernel keeps a u64
        // position at its start, which it reads and writes atomically too.
        unsafe { &*self.ptr.as_ptr().cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A ring buffer map, mapped for reading.
pub struct RingReader {
    fd: OwnedFd,
    consumer: Mapping,
    /// The producer page, then the data pages twice.
    producer: Mapping,
    page: usize,
    /// Data bytes (a power of two).
    size: u64,
}

// SAFETY: the mappings are plain shared memory, accessed through atomics and copies; the
// reader is used from one thread at a time (`&mut self` to consume).
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring buffer map `fd` of `size` data bytes (its `max_entries`).
    pub fn new(fd: OwnedFd, size: u32) -> Result<Self, RingError> {
        let page = rustix::param::page_size();
        if !size.is_power_of_two() || (size as usize) < page {
            return Err(RingError::Size(size));
        }
        let map = |what| move |source| RingError::Map { what, source };
        let consumer = Mapping::new(fd.as_fd(), page, ProtFlags::READ | ProtFlags::WRITE, 0)
            .map_err(map("consumer page"))?;
        let producer = Mapping::new(
            fd.as_fd(),
            page + 2 * size as usize,
            ProtFlags::READ,
            page as u64,
        )
        .map_err(map("producer and data pages"))?;
        Ok(RingReader {
            fd,
            consumer,
            producer,
            page,
            size: u64::from(size),
        })
    }

    /// Calls `record` with each committed record, oldest first, at most `max` of them (a
    /// discarded one counts); returns how many were consumed and whether more may remain.
    /// A record the kernel is still writing stops the read: it is read next time.
    pub fn drain(&mut self, max: usize, mut record: impl FnMut(&[u8])) -> (usize, bool) {
        let mut consumed = 0;
        let mut position = self.consumer.position().load(Ordering::Acquire);
        while consumed < max {
            let produced = self.producer.position().load(Ordering::Acquire);
            if position == produced {
                return (consumed, false);
            }
            let offset = self.page + (position & (self.size - 1)) as usize;
            // SAFETY: `offset` is within the producer mapping (a page, then the data twice),
            // 8-aligned as every record is; the kernel writes the header atomically.
            let header = unsafe { &*self.producer.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
                .load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                return (consumed, true);
            }
            let len = header & !(BUSY_BIT | DISCARD_BIT);
            if header & DISCARD_BIT == 0 {
                let start = offset + HEADER_BYTES as usize;
                let end = start + len as usize;
                if end > self.producer.len {
                    // A length no record of this ring can have: stop rather than read
                    // outside the mapping.
                    return (consumed, false);
                }
                // SAFETY: within the mapping (checked above); the kernel does not write a
                // committed record until the consumer position has passed it.
                let data = unsafe {
                    std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(start), len as usize)
                };
                record(data);
            }
            position += (u64::from(len) + HEADER_BYTES).next_multiple_of(8);
            // Sequentially consistent, as the kernel's own accesses: either the producer
            // sees this position when it commits the next record (and wakes the poller), or
            // this reader sees that record on its next read.
            self.consumer.position().store(position, Ordering::SeqCst);
            consumed += 1;
        }
        (consumed, true)
    }

    /// Bytes committed or reserved and not yet consumed.
    pub fn pending_bytes(&self) -> u64 {
        let produced = self.producer.position().load(Ordering::Acquire);
        produced.wrapping_sub(self.consumer.position().load(Ordering::Acquire))
    }
}

impl AsFd for RingReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
