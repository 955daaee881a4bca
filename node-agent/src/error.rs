//! The agent library's error type. Each message says what is missing or what to change.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no cgroup2 (unified) hierarchy in {mountinfo}: herdwatch needs cgroup v2, alone or in a \
         hybrid layout (mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`), or pass \
         --cgroup-root"
    )]
    NoCgroup2 { mountinfo: PathBuf },

    #[error("invalid duration {input:?}: use a number with a unit, e.g. 500ms, 30s, 5m or 1h")]
    InvalidDuration { input: String },

    #[error("the metrics registry refused a metric: {0}")]
    Metrics(#[from] prometheus::Error),

    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error(
        "no node name: pass --node-name or set HERDWATCH_NODE_NAME (the chart sets it from \
         spec.nodeName)"
    )]
    NoNodeName,

    #[error(
        "--stall-timeout ({stall:?}) must be longer than --metrics-interval ({interval:?}): the \
         event loop goes round once per interval when nothing happens"
    )]
    StallTimeout {
        stall: std::time::Duration,
        interval: std::time::Duration,
    },

    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),

    #[error("process {pid} has already exited")]
    ProcessGone { pid: u32 },

    #[error(
        "pid {pid} belongs to another process by now (started {found_ns} ns after boot, not \
         {expected_ns})"
    )]
    PidReused {
        pid: u32,
        expected_ns: u64,
        found_ns: u64,
    },

    #[error("cannot kill process {pid}: {source}")]
    Kill {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
