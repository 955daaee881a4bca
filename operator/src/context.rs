//! State shared by the reconcilers of one leadership term: the client, the watched stores,
//! settings, metrics, and three small pieces of in-memory bookkeeping (per-object backoff,
//! the eviction ledger, and the newest observation version seen). Nothing here is the source
//! of truth: a new leader rebuilds all of it from the API server.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The newest BehaviorObservation version the observation watch delivered: a profile
    /// reconcile reads observations at least this new.
    pub observations_seen: Arc<SeenVersion>,
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
            observations_seen: Arc::default(),
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

/// The newest resourceVersion a watch delivered.
///
/// A profile reconcile lists the observations of one workload with a field selector. A plain
/// list is a consistent read: when the API server's watch cache lags (under load, exactly when
/// many observations arrive), it reads the whole namespace's observations from etcd, every
/// one with every reconcile, which feeds the overload. A list that asks for data "not older
/// than" the newest version the operator's own observation watch delivered is served from
/// the watch cache, and still holds every observation that triggered the reconcile, since the
/// watch delivered it first.
///
/// resourceVersions are opaque to clients, but those of one API server's watch are etcd
/// revisions, which only grow; the newest is kept by number, and a version that is not a
/// number turns this off (lists are consistent reads again).
#[derive(Debug, Default)]
pub struct SeenVersion {
    newest: AtomicU64,
    opaque: AtomicBool,
}

impl SeenVersion {
    /// Notes a version a watch delivered.
    pub fn saw(&self, resource_version: Option<&str>) {
        match resource_version.map(str::parse::<u64>) {
            Some(Ok(v)) => {
                self.newest.fetch_max(v, Ordering::Relaxed);
            }
            Some(Err(_)) => self.opaque.store(true, Ordering::Relaxed),
            None => {}
        }
    }

    /// The newest version seen, if any (and if versions are numbers).
    pub fn newest(&self) -> Option<String> {
        if self.opaque.load(Ordering::Relaxed) {
            return None;
        }
        match self.newest.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v.to_string()),
        }
    }
}

/// Window of `maxKillsPerHour`.
const KILL_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    scope: String,
    violation_uid: String,
    pod_uid: String,
    at: Timestamp,
}

/// What the ledger knows when a decision is made.
#[derive(Debug)]
pub struct Evictions<'a> {
    /// Evictions in the scope (profile, or policy) in the last hour.
    pub last_hour: u32,
    reservations: &'a [Reservation],
}

impl Evictions<'_> {
    /// Whether this leader evicted, or is evicting, the pod with `pod_uid`. Such a pod may
    /// still look ready in an answer the API server gave before the eviction reached it, but
    /// it is on its way out and must not count among its owner's ready replicas.
    pub fn evicting(&self, pod_uid: &str) -> bool {
        self.reservations.iter().any(|r| r.pod_uid == pod_uid)
    }
}

/// Evictions made by this leader, so that the kill limit and the ready-replica minimum hold
/// while the outcome of an eviction is on its way to the API (and the store). The durable
/// record is each BehaviorViolation's status (`Evicted` at `decidedAt`); the ledger only
/// covers the gap, and is merged with that record by violation UID.
///
/// For the ready-replica minimum the ledger names pods, by UID, never owners by name: a
/// pod is left out of its owner's ready count from the moment its eviction is decided, and
/// after that the API itself says it is going (a deletion timestamp, then no pod at all)
/// while its replacement counts as soon as it is Ready. Nothing waits on a fixed time, and a
/// workload deleted and created again under the same name has other pods, so it inherits
/// nothing.
#[derive(Debug, Default)]
pub struct EvictionLedger {
    reservations: Mutex<Vec<Reservation>>,
}

impl EvictionLedger {
    /// Under one lock: counts the evictions of `scope` in the last hour (the `recorded` ones,
    /// as `(violation uid, decided at)`, and this leader's reservations), asks `decide`, and
    /// when it returns `(decision, true)` reserves the eviction of the pod `pod_uid` for
    /// `violation_uid` at `now`. Two violations decided at once therefore never both take the
    /// last eviction the limit allows, nor both count a pod the other is evicting as ready.
    pub fn decide<D>(
        &self,
        scope: &str,
        violation_uid: &str,
        pod_uid: &str,
        recorded: &[(String, Timestamp)],
        now: Timestamp,
        decide: impl FnOnce(&Evictions<'_>) -> (D, bool),
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
        let evictions = Evictions {
            last_hour: u32::try_from(uids.len()).unwrap_or(u32::MAX),
            reservations: &r,
        };
        let (decision, reserve) = decide(&evictions);
        if reserve {
            r.push(Reservation {
                scope: scope.to_owned(),
                violation_uid: violation_uid.to_owned(),
                pod_uid: pod_uid.to_owned(),
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
        let seen = l.decide("p", "uid-2", "pod-a", &recorded, now, |e| {
            ((e.last_hour, e.evicting("pod-a")), true)
        });
        assert_eq!(seen, (1, false));
        // uid-2's eviction is reserved: counted for its scope, and its pod is on its way out.
        let seen = l.decide("p", "uid-3", "pod-b", &recorded, now, |e| {
            (
                (e.last_hour, e.evicting("pod-a"), e.evicting("pod-b")),
                false,
            )
        });
        assert_eq!(seen, (2, true, false));
        // Once uid-2's outcome is recorded it is not counted twice.
        let mut with_2 = recorded.clone();
        with_2.push(("uid-2".to_owned(), now));
        let seen = l.decide("p", "uid-3", "pod-b", &with_2, now, |e| {
            (e.last_hour, false)
        });
        assert_eq!(seen, 2);
        // Other scopes do not count it (the pod is still known to be going: pod UIDs are
        // unique across the cluster); a released reservation is gone.
        assert_eq!(
            l.decide("q", "u", "pod-c", &[], now, |e| (
                (e.last_hour, e.evicting("pod-a")),
                false
            )),
            (0, true)
        );
        l.release("uid-2");
        assert_eq!(
            l.decide("p", "u", "pod-c", &[], now, |e| (
                (e.last_hour, e.evicting("pod-a")),
                false
            )),
            (0, false)
        );
    }

    #[test]
    fn the_newest_numeric_version_is_kept() {
        let v = SeenVersion::default();
        assert_eq!(v.newest(), None);
        v.saw(Some("120"));
        v.saw(Some("7"));
        v.saw(None);
        assert_eq!(
            v.newest().as_deref(),
            Some("120"),
            "an older one (a relist) is ignored"
        );
        v.saw(Some("not-a-revision"));
        assert_eq!(v.newest(), None, "opaque versions turn it off");
    }

    #[test]
    fn ledger_forgets_after_the_window() {
        let l = EvictionLedger::default();
        l.decide("p", "a", "pod-a", &[], Timestamp(0), |_| ((), true));
        assert_eq!(
            l.decide("p", "b", "pod-b", &[], Timestamp(3599), |e| (
                e.last_hour,
                false
            )),
            1
        );
        assert_eq!(
            l.decide("p", "b", "pod-b", &[], Timestamp(3601), |e| (
                (e.last_hour, e.evicting("pod-a")),
                false
            )),
            (0, false)
        );
    }
}
