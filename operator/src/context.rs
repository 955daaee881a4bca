//! State shared by the reconcilers of one leadership term: the client, the watched stores,
//! settings, metrics, and two small pieces of in-memory bookkeeping (per-object backoff and
//! the eviction ledger). Nothing here is the source of truth: a new leader rebuilds all of it
//! from the API server.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herdwatch_api::{BehaviorProfile, BehaviorViolation};
use herdwatch_model::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::Client;

use crate::args::Settings;
use crate::metrics::Metrics;
use crate::REPORTING_CONTROLLER;

/// The current time. The operator reads the system clock; tests pass a fixed one so that
/// the objects they expect are exact.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
    })
}

/// Everything a reconcile needs.
pub struct Context {
    /// Client for every API request.
    pub client: Client,
    /// Every BehaviorProfile, as the profile controller watches them: finds a workload's
    /// profiles and a violation's response settings without an API request.
    pub profiles: Store<BehaviorProfile>,
    /// Every BehaviorViolation, as the violation controller watches them: evictions in the
    /// last hour and retention are computed from them, so a new leader starts with the
    /// history its predecessor left in the API.
    pub violations: Store<BehaviorViolation>,
    /// Settings from the flags.
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Posts Kubernetes Events on pods (reporting controller `herdwatch.dev/operator`).
    pub recorder: Recorder,
    /// The current time.
    pub clock: Clock,
    /// Consecutive failures per object, for exponential backoff.
    pub backoff: Backoff,
    /// Evictions this leader started whose outcome may not be in the store yet.
    pub evictions: EvictionLedger,
}

impl Context {
    /// A context for one leadership term; `instance` names this replica in Events.
    pub fn new(
        client: Client,
        profiles: Store<BehaviorProfile>,
        violations: Store<BehaviorViolation>,
        settings: Settings,
        metrics: Metrics,
        instance: String,
        clock: Clock,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTING_CONTROLLER.into(),
                instance: Some(instance),
            },
        );
        Self {
            client,
            profiles,
            violations,
            settings,
            metrics,
            recorder,
            clock,
            backoff: Backoff::default(),
            evictions: EvictionLedger::default(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exponential backoff per object: the n-th consecutive failure waits `base · 2^(n-1)`, at
/// most `cap`; a success resets it.
#[derive(Debug)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
    base: Duration,
    cap: Duration,
}

/// Objects tracked at most; beyond it the table is cleared (failures restart at `base`).
const BACKOFF_ENTRIES: usize = 10_000;

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(300))
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            base,
            cap,
        }
    }

    /// Counts a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut f = lock(&self.failures);
        if f.len() >= BACKOFF_ENTRIES && !f.contains_key(key) {
            f.clear();
        }
        let n = f.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

/// Window of `maxKillsPerHour`.
const KILL_WINDOW: Duration = Duration::from_secs(3600);
/// How long an eviction is assumed not to show in its owner's ready count yet. Workload
/// status lags a deletion by a few seconds; counting our own recent evictions keeps two quick
/// violations from taking an owner below `minReadyReplicas` on a stale count.
pub const OWNER_SETTLE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    scope: String,
    owner: String,
    violation_uid: String,
    at: Timestamp,
}

/// What the ledger counted for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillCounts {
    /// Evictions in the scope (profile, or policy) in the last hour.
    pub last_hour: u32,
    /// This leader's evictions of the same owner within [`OWNER_SETTLE`].
    pub owner_recent: u32,
}

/// Evictions made by this leader, so that the kill limit and the ready-replica minimum hold
/// while the outcome of an eviction is on its way to the API (and the store). The durable
/// record is each BehaviorViolation's status (`Evicted` at `decidedAt`); the ledger only
/// covers the gap, and is merged with that record by violation UID.
#[derive(Debug, Default)]
pub struct EvictionLedger {
    reservations: Mutex<Vec<Reservation>>,
}

impl EvictionLedger {
    /// Under one lock: counts the evictions of `scope` in the last hour (the `recorded` ones,
    /// as `(violation uid, decided at)`, and this leader's reservations) and the recent ones
    /// of `owner`, asks `decide`, and when it returns `(decision, true)` reserves an eviction
    /// for `violation_uid` at `now`. Two violations decided at once therefore never both
    /// take the last eviction the limit allows.
    pub fn decide<D>(
        &self,
        scope: &str,
        owner: &str,
        violation_uid: &str,
        recorded: &[(String, Timestamp)],
        now: Timestamp,
        decide: impl FnOnce(KillCounts) -> (D, bool),
    ) -> D {
        let mut r = lock(&self.reservations);
        let since = now - KILL_WINDOW;
        r.retain(|x| x.at > since);
        let mut uids: HashSet<&str> = recorded
            .iter()
            .filter(|(_, at)| *at > since && *at <= now)
            .map(|(uid, _)| uid.as_str())
            .collect();
        uids.extend(
            r.iter()
                .filter(|x| x.scope == scope)
                .map(|x| x.violation_uid.as_str()),
        );
        let settle = now - OWNER_SETTLE;
        let counts = KillCounts {
            last_hour: u32::try_from(uids.len()).unwrap_or(u32::MAX),
            owner_recent: u32::try_from(
                r.iter()
                    .filter(|x| x.owner == owner && x.at > settle)
                    .count(),
            )
            .unwrap_or(u32::MAX),
        };
        let (decision, reserve) = decide(counts);
        if reserve {
            r.push(Reservation {
                scope: scope.to_owned(),
                owner: owner.to_owned(),
                violation_uid: violation_uid.to_owned(),
                at: now,
            });
        }
        decision
    }

    /// Drops the reservation of `violation_uid` (its eviction did not happen).
    pub fn release(&self, violation_uid: &str) {
        lock(&self.reservations).retain(|x| x.violation_uid != violation_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let delays: Vec<u64> = (0..8).map(|_| b.failed("p/a").as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failed("p/b").as_secs(), 2, "per object");
        b.succeeded("p/a");
        assert_eq!(b.failed("p/a").as_secs(), 2);
        for _ in 0..100 {
            b.failed("p/c");
        }
        assert_eq!(b.failed("p/c").as_secs(), 60, "no overflow");
    }

    #[test]
    fn ledger_counts_recorded_and_reserved_evictions_once() {
        let l = EvictionLedger::default();
        let now = Timestamp(10_000);
        let recorded = vec![
            ("uid-1".to_owned(), Timestamp(10_000 - 100)),
            ("uid-old".to_owned(), Timestamp(10_000 - 4000)),
        ];
        let seen = l.decide("p", "Deployment/web", "uid-2", &recorded, now, |c| {
            (c, true)
        });
        assert_eq!(
            seen,
            KillCounts {
                last_hour: 1,
                owner_recent: 0
            }
        );
        // uid-2's eviction is reserved: counted for its scope and owner.
        let seen = l.decide("p", "Deployment/web", "uid-3", &recorded, now, |c| {
            (c, false)
        });
        assert_eq!(
            seen,
            KillCounts {
                last_hour: 2,
                owner_recent: 1
            }
        );
        // Once uid-2's outcome is recorded it is not counted twice.
        let mut with_2 = recorded.clone();
        with_2.push(("uid-2".to_owned(), now));
        let seen = l.decide("p", "Deployment/other", "uid-3", &with_2, now, |c| {
            (c, false)
        });
        assert_eq!(seen.last_hour, 2);
        assert_eq!(seen.owner_recent, 0, "another owner");
        // Other scopes do not see it; a released reservation is gone.
        assert_eq!(
            l.decide("q", "x", "u", &[], now, |c| (c.last_hour, false)),
            0
        );
        l.release("uid-2");
        assert_eq!(
            l.decide("p", "Deployment/web", "u", &[], now, |c| (c, false)),
            KillCounts {
                last_hour: 0,
                owner_recent: 0
            }
        );
    }

    #[test]
    fn ledger_forgets_after_the_window() {
        let l = EvictionLedger::default();
        l.decide("p", "o", "a", &[], Timestamp(0), |_| ((), true));
        let later = Timestamp(200);
        assert_eq!(
            l.decide("p", "o", "b", &[], later, |c| (c, false)),
            KillCounts {
                last_hour: 1,
                owner_recent: 0
            },
            "past the settle time, still within the hour"
        );
        assert_eq!(
            l.decide("p", "o", "b", &[], Timestamp(3601), |c| (
                c.last_hour,
                false
            )),
            0
        );
    }
}
