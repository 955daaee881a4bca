//! Reads that cannot stall the agent's event loop.
//!
//! Reading `/proc/<pid>/cmdline` copies the process's own memory, and a process can make
//! that copy wait: memory backed by a file on a slow or hostile filesystem, a fault handler
//! of its own. One read that never returns would stop the event loop, and with it every
//! judgement and kill on the node. So each read runs on a worker thread and the caller
//! waits at most a timeout. A worker stuck in a read is left behind and replaced, up to
//! [`MAX_STUCK`] of them; beyond that, reads fail at once until a stuck one comes back.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Workers that may be stuck in a read at once.
pub const MAX_STUCK: usize = 8;
/// Reads waiting for a worker; beyond it a read fails at once rather than wait.
const QUEUE: usize = 64;

/// A read to run; false when the worker must leave after it.
type Job = Box<dyn FnOnce() -> bool + Send>;

struct Shared {
    jobs: Mutex<Receiver<Job>>,
    /// Workers running a read their caller gave up on.
    stuck: AtomicUsize,
    timeouts: AtomicU64,
}

/// Runs reads on worker threads, each waited for at most `timeout`. Cloning shares the
/// workers.
#[derive(Clone)]
pub struct BoundedReader {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for BoundedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedReader")
            .field("timeout", &self.timeout)
            .field("stuck", &self.stuck())
            .field("timeouts", &self.timeouts())
            .finish()
    }
}

impl BoundedReader {
    pub fn new(timeout: Duration) -> Self {
        let (jobs, receiver) = mpsc::sync_channel(QUEUE);
        let reader = BoundedReader {
            shared: Arc::new(Shared {
                jobs: Mutex::new(receiver),
                stuck: AtomicUsize::new(0),
                timeouts: AtomicU64::new(0),
            }),
            jobs,
            timeout,
        };
        reader.spawn_worker();
        reader
    }

    /// Reads that did not finish within the timeout, since the start.
    pub fn timeouts(&self) -> u64 {
        self.shared.timeouts.load(Ordering::Relaxed)
    }

    /// Workers still stuck in a read now.
    pub fn stuck(&self) -> usize {
        self.shared.stuck.load(Ordering::Relaxed)
    }

    fn spawn_worker(&self) {
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("herdwatch-read".into())
            .spawn(move || loop {
                let job = {
                    let jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
                    jobs.recv()
                };
                let Ok(job) = job else { return };
                if !job() {
                    return;
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a reader thread");
        }
    }

    /// Runs `read` on a worker and returns its result, or `TimedOut` when it takes longer
    /// than the timeout (or too many earlier reads are stuck).
    pub fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let refuse = |why: &str| {
            self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::new(io::ErrorKind::TimedOut, why.to_owned()))
        };
        if self.stuck() >= MAX_STUCK {
            return refuse("too many reads are stuck; not reading");
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let state = Arc::new(Mutex::new(JobState::Pending));
        let job_state = state.clone();
        let shared = self.shared.clone();
        let job: Job = Box::new(move || {
            let result = read();
            let mut state = job_state.lock().unwrap_or_else(|e| e.into_inner());
            if *state == JobState::Abandoned {
                // Back from a read its caller gave up on: a replacement took this worker's
                // place, so this one leaves.
                shared.stuck.fetch_sub(1, Ordering::AcqRel);
                return false;
            }
            *state = JobState::Answered;
            let _ = reply.send(result);
            true
        });
        if self.jobs.try_send(job).is_err() {
            return refuse("every reader is busy; not reading");
        }
        match answer.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                let mut job = state.lock().unwrap_or_else(|e| e.into_inner());
                if *job == JobState::Answered {
                    // Answered just now: the worker is not stuck.
                    drop(job);
                    return answer
                        .recv()
                        .unwrap_or_else(|_| Err(io::Error::other("the reader thread ended")));
                }
                *job = JobState::Abandoned;
                self.shared.stuck.fetch_add(1, Ordering::AcqRel);
                drop(job);
                self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                self.spawn_worker();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the read took longer than {:?}", self.timeout),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other("the reader thread ended")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    Pending,
    Answered,
    Abandoned,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_read_that_hangs_costs_its_caller_the_timeout_and_no_more() {
        let reader = BoundedReader::new(Duration::from_millis(50));
        assert_eq!(reader.run(|| Ok(7)).unwrap(), 7);
        let (release, hang) = mpsc::channel::<()>();
        let started = Instant::now();
        let error = reader
            .run(move || {
                let _ = hang.recv();
                Ok(0)
            })
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!((reader.stuck(), reader.timeouts()), (1, 1));
        // Another worker took its place.
        assert_eq!(reader.run(|| Ok(8)).unwrap(), 8);
        // The stuck read comes back: its worker leaves, and nothing is counted stuck.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reader.stuck() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reader.stuck(), 0);
        assert_eq!(reader.run(|| Ok(9)).unwrap(), 9);
    }

    #[test]
    fn too_many_stuck_reads_make_reads_fail_at_once() {
        let reader = BoundedReader::new(Duration::from_millis(10));
        let (release, hang) = mpsc::channel::<()>();
        let hang = Arc::new(Mutex::new(hang));
        for _ in 0..MAX_STUCK {
            let hang = hang.clone();
            let _ = reader.run(move || {
                let _ = hang.lock().unwrap().recv();
                Ok(())
            });
        }
        assert_eq!(reader.stuck(), MAX_STUCK);
        let started = Instant::now();
        assert!(reader.run(|| Ok(())).is_err());
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "refused without waiting"
        );
        drop(release);
    }
}
