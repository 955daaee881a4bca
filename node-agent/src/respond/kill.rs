//! Killing an offending process: the [`ProcessKiller`] trait, and its user-space
//! implementation through a pidfd.
//!
//! A pid alone names whatever process holds that number now, which after the offender
//! exited may be an innocent one. A pidfd names one process for good: the agent opens it,
//! then checks that the process it holds started when the offender did (the start time is
//! read after the open, so a pid reused before the open shows a different start), and only
//! then signals through the pidfd, which fails with ESRCH rather than hit a successor.

use std::path::PathBuf;

use rustix::io::Errno;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::attribution::procfs::{parse_stat, NS_PER_TICK};
use crate::attribution::proctable::same_start;
use crate::error::{Error, Result};

/// Kills one process, identified by pid and start time (ns since boot), so that a reused
/// pid is never killed.
pub trait ProcessKiller: Send {
    fn kill(&self, pid: u32, start_time_ns: u64) -> Result<()>;
}

/// SIGKILL from user space through `pidfd_open(2)` and `pidfd_send_signal(2)`.
#[derive(Clone, Debug)]
pub struct PidfdKiller {
    /// The proc filesystem of the pid namespace the agent signals in (the host's).
    proc_root: PathBuf,
}

impl PidfdKiller {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        PidfdKiller {
            proc_root: proc_root.into(),
        }
    }

    fn start_time_ns(&self, pid: u32) -> Result<u64> {
        let path = self.proc_root.join(pid.to_string()).join("stat");
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::ProcessGone { pid },
            _ => Error::Kill { pid, source },
        })?;
        let stat = parse_stat(&text).ok_or_else(|| Error::Kill {
            pid,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unreadable {}", path.display()),
            ),
        })?;
        Ok(stat.start_ticks.saturating_mul(NS_PER_TICK))
    }
}

fn errno_error(pid: u32, e: Errno) -> Error {
    if e == Errno::SRCH {
        Error::ProcessGone { pid }
    } else {
        Error::Kill {
            pid,
            source: e.into(),
        }
    }
}

impl ProcessKiller for PidfdKiller {
    fn kill(&self, pid: u32, start_time_ns: u64) -> Result<()> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(Error::ProcessGone { pid })?;
        let fd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| errno_error(pid, e))?;
        let found_ns = self.start_time_ns(pid)?;
        if !same_start(found_ns, start_time_ns) {
            return Err(Error::PidReused {
                pid,
                expected_ns: start_time_ns,
                found_ns,
            });
        }
        pidfd_send_signal(&fd, Signal::KILL).map_err(|e| errno_error(pid, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn start_of(pid: u32) -> u64 {
        PidfdKiller::new("/proc").start_time_ns(pid).unwrap()
    }

    #[test]
    fn kills_the_process_it_was_asked_to_and_no_other() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("sleep(1) runs");
        let pid = child.id();
        let killer = PidfdKiller::new("/proc");
        let start = start_of(pid);

        // Another start time: the pid is taken to belong to someone else.
        let wrong = start + 10_000_000_000;
        assert!(matches!(
            killer.kill(pid, wrong),
            Err(Error::PidReused { .. })
        ));
        assert!(child.try_wait().unwrap().is_none(), "left alone");

        killer.kill(pid, start).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "not killed");
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));

        // Reaped: nothing is signalled (the pid is free, or already someone else's).
        assert!(matches!(
            killer.kill(pid, start),
            Err(Error::ProcessGone { .. } | Error::PidReused { .. })
        ));
    }
}
