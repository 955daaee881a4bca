//! Events as the decision logic sees them: what a process did, described with model types.
//! The agent builds these from its kernel records and process table; they borrow from the
//! agent's buffers so that checking an event allocates nothing unless it is a violation.

use std::net::IpAddr;

use crate::behavior::Access;
use crate::net::Protocol;

/// The process an event is about, as the agent's process table knows it.
#[derive(Clone, Copy, Debug)]
pub struct Process<'a> {
    /// Absolute path of the executable. For a program the agent saw start, the path it was
    /// started by (`bprm->filename`: links are not resolved, so `/bin/sh` stays `/bin/sh`
    /// when it links to busybox, and busybox's own re-exec is `/proc/self/exe`); for one
    /// found in /proc, the target of its `/proc/<pid>/exe` link (`/bin/busybox`).
    pub exe: &'a str,
    /// The name of the file the kernel really ran, when the agent saw the program start and
    /// the name could be read whole: `exe` with links resolved, last component only
    /// (`busybox` for an `exe` of `/bin/sh` that links to it, or of `/proc/self/exe`; for
    /// a script, its interpreter). `None` for a program found in /proc, whose `exe`
    /// already has its links resolved.
    pub file_name: Option<&'a str>,
    /// Arguments, `argv[0]` included.
    pub argv: &'a [String],
    /// Real user id, as seen from inside the container's user namespace.
    pub uid: u32,
    /// Whether the process descends from an exec session (`kubectl exec`, `runc exec`)
    /// rather than from the container's init.
    pub exec_session: bool,
    /// Whether the executable comes from the image's read-only layers: `Some(false)` means
    /// it was written after the container started (drift); `None` means the agent could not
    /// tell.
    pub in_image: Option<bool>,
}

impl<'a> Process<'a> {
    /// `exe` run with `argv` as root by the container's own processes, from the image, with
    /// no real file name known: the plainest process, which tests and benchmarks adjust with
    /// struct update syntax.
    pub fn root_in_image(exe: &'a str, argv: &'a [String]) -> Self {
        Process {
            exe,
            file_name: None,
            argv,
            uid: 0,
            exec_session: false,
            in_image: Some(true),
        }
    }
}

impl Process<'_> {
    /// The last path component of the executable.
    pub fn exe_name(&self) -> &str {
        basename(self.exe)
    }

    /// The last path component of `argv[0]`, which is how a multi-call binary such as
    /// busybox knows what to be.
    pub fn argv0_name(&self) -> Option<&str> {
        self.argv.first().map(|a| basename(a))
    }
}

/// The last component of a path (`/usr/bin/curl` → `curl`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What the process did.
#[derive(Clone, Copy, Debug)]
pub enum EventKind<'a> {
    /// It was started (execve): the process fields describe the new program.
    Exec,
    /// It opened a file.
    File {
        /// Absolute path.
        path: &'a str,
        /// What the open asked for.
        access: Access,
    },
    /// It connected to a peer.
    Connect {
        /// Peer address.
        ip: IpAddr,
        /// Peer port.
        port: u16,
        /// Transport protocol.
        protocol: Protocol,
    },
    /// It started listening on a port.
    Listen {
        /// Local port.
        port: u16,
        /// Transport protocol.
        protocol: Protocol,
    },
    /// It made a system call (the agent reports only first sightings).
    Syscall {
        /// Syscall name.
        name: &'a str,
    },
    /// It changed its user id (setuid and friends).
    SetUid {
        /// The new real user id.
        uid: u32,
    },
}

/// One event: a process and what it did.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// Who.
    pub process: Process<'a>,
    /// What.
    pub kind: EventKind<'a>,
}

impl<'a> Event<'a> {
    /// An exec event.
    pub fn exec(process: Process<'a>) -> Self {
        Self {
            process,
            kind: EventKind::Exec,
        }
    }

    /// The name of the event kind, as used in metrics and violation records.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            EventKind::Exec => "exec",
            EventKind::File { .. } => "file",
            EventKind::Connect { .. } => "connect",
            EventKind::Listen { .. } => "listen",
            EventKind::Syscall { .. } => "syscall",
            EventKind::SetUid { .. } => "setuid",
        }
    }
}
