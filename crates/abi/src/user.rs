//! User-space side of the ABI: `aya::Pod` for the map types and a checked byte decoder.

use super::*;

extern crate std;
use std::vec::Vec;

// SAFETY: every type here is `#[repr(C)]`, made only of integers and integer arrays, with
// explicit padding fields (checked by the size asserts in lib.rs), so any bit pattern is a
// valid value and there are no uninitialised bytes.
unsafe impl aya::Pod for SyscallBitmap {}
unsafe impl aya::Pod for SyscallCache {}
unsafe impl aya::Pod for NetKey {}
unsafe impl aya::Pod for FileKey {}
unsafe impl aya::Pod for KernelOffsets {}
unsafe impl aya::Pod for Enforcement {}
unsafe impl aya::Pod for ExeKey {}
unsafe impl aya::Pod for ExeVerdict {}

/// One decoded record from the ring buffer, copied out of it.
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "events are copied into reused batch vectors; boxing execs would allocate per exec"
)]
pub enum Event {
    Exec(ExecEvent),
    Exit(ExitEvent),
    Syscall(SyscallEvent),
    Net(NetEvent),
    File(FileEvent),
    Identity(IdentityEvent),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Exec(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::Syscall(e) => &e.header,
            Event::Net(e) => &e.header,
            Event::File(e) => &e.header,
            Event::Identity(e) => &e.header,
        }
    }

    pub fn header_mut(&mut self) -> &mut EventHeader {
        match self {
            Event::Exec(e) => &mut e.header,
            Event::Exit(e) => &mut e.header,
            Event::Syscall(e) => &mut e.header,
            Event::Net(e) => &mut e.header,
            Event::File(e) => &mut e.header,
            Event::Identity(e) => &mut e.header,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Exec(_) => EventKind::Exec,
            Event::Exit(_) => EventKind::Exit,
            Event::Syscall(_) => EventKind::Syscall,
            Event::Net(_) => EventKind::Net,
            Event::File(_) => EventKind::File,
            Event::Identity(_) => EventKind::Identity,
        }
    }
}

/// Why a ring buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, or shorter than the record its kind names.
    Truncated { kind: u32, len: usize, need: usize },
    /// A kind this build does not know: the kernel object and the agent disagree.
    UnknownKind(u32),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated { kind, len, need } => {
                write!(f, "event of kind {kind} is {len} bytes, expected {need}")
            }
            DecodeError::UnknownKind(k) => write!(
                f,
                "unknown event kind {k}: the eBPF object and the agent were built from different sources"
            ),
        }
    }
}

/// Reads a `T` from the start of `bytes`, which must be at least `size_of::<T>()` long.
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: the length is checked above, `read_unaligned` copes with any alignment, and
    // every `T` used here is plain integers for which any bit pattern is valid.
    #[allow(unsafe_code)]
    unsafe {
        core::ptr::read_unaligned(bytes.as_ptr().cast::<T>())
    }
}

fn read_checked<T: Copy>(kind: u32, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    Ok(read(bytes))
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read_checked(0, bytes)?;
    let kind = header.kind;
    Ok(
        match EventKind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))? {
            EventKind::Exec => Event::Exec(read_checked(kind, bytes)?),
            EventKind::Exit => Event::Exit(read_checked(kind, bytes)?),
            EventKind::Syscall => Event::Syscall(read_checked(kind, bytes)?),
            EventKind::Net => Event::Net(read_checked(kind, bytes)?),
            EventKind::File => Event::File(read_checked(kind, bytes)?),
            EventKind::Identity => Event::Identity(read_checked(kind, bytes)?),
        },
    )
}

/// The records of this ABI: `#[repr(C)]`, integers only, no implicit padding.
///
/// # Safety
/// Implement only for types whose every byte is initialised (no implicit padding).
pub unsafe trait Record: Copy {}
// SAFETY: the size asserts in lib.rs show these have no implicit padding.
unsafe impl Record for EventHeader {}
unsafe impl Record for ExecEvent {}
unsafe impl Record for ExitEvent {}
unsafe impl Record for SyscallEvent {}
unsafe impl Record for NetEvent {}
unsafe impl Record for FileEvent {}
unsafe impl Record for IdentityEvent {}

/// Byte views of records, for tests and for replaying captured events through the pipeline.
pub fn as_bytes<T: Record>(value: &T) -> &[u8] {
    // SAFETY: `T` is one of the padding-free `#[repr(C)]` records above (size asserts), so
    // all of its bytes are initialised.
    #[allow(unsafe_code)]
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>())
    }
}

impl ExecEvent {
    /// The executed path, as bytes (may not be UTF-8).
    pub fn filename(&self) -> &[u8] {
        &self.filename[..(self.filename_len as usize).min(MAX_PATH)]
    }

    /// The arguments, split on NUL. A trailing NUL does not make an empty last argument.
    pub fn argv(&self) -> impl Iterator<Item = &[u8]> {
        let block = &self.argv[..(self.argv_len as usize).min(MAX_ARGV)];
        let block = block.strip_suffix(&[0]).unwrap_or(block);
        let empty = block.is_empty();
        block.split(|b| *b == 0).filter(move |_| !empty)
    }

    pub fn argv_truncated(&self) -> bool {
        self.flags & EXEC_ARGV_TRUNCATED != 0
    }

    /// Whether the file really run comes from the container's image, as the kernel saw
    /// its overlay layer: `Some(false)` when it has a copy in the writable layer (written
    /// or changed after start), `Some(true)` when it is only in the image's layers, `None`
    /// when it is not on an overlay (another mount, a memfd) or its layer was not read.
    pub fn exe_in_image(&self) -> Option<bool> {
        (self.flags & EXEC_EXE_OVERLAY != 0).then_some(self.flags & EXEC_EXE_UPPER == 0)
    }

    /// The path was longer than the kernel reads ([`MAX_PATH`]): `filename()` is its start.
    pub fn filename_truncated(&self) -> bool {
        self.flags & EXEC_FILENAME_TRUNCATED != 0
    }

    /// The kernel sent SIGKILL to this program before it ran.
    pub fn killed_in_kernel(&self) -> bool {
        self.flags & EXEC_KILLED_IN_KERNEL != 0
    }
}

impl FileEvent {
    pub fn path(&self) -> &[u8] {
        &self.path[..(self.path_len as usize).min(MAX_PATH)]
    }
}

impl crate::ExecEvent {
    /// The working directory of an exec of a relative path, as an absolute path inside the
    /// process's root (see [`ExecEvent::cwd`](crate::ExecEvent::cwd)); `None` when it was not resolved.
    pub fn working_directory(&self) -> Option<Vec<u8>> {
        let depth = self.cwd_depth as usize;
        if depth == 0 || depth > CWD_DEPTH {
            // 0 is also "resolved to the root itself"; see `EXEC_CWD_ROOT`.
            return (self.flags & EXEC_CWD_ROOT != 0).then(|| b"/".to_vec());
        }
        let mut path = Vec::new();
        for component in self.cwd[..depth].iter().rev() {
            let len = component.iter().position(|&b| b == 0)?;
            if len == 0 {
                return None;
            }
            path.push(b'/');
            path.extend_from_slice(&component[..len]);
        }
        Some(path)
    }
}
