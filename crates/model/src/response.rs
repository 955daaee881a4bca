//! Responses to violations, and the bookkeeping around them: the safety decision for tagging
//! or evicting a pod, violation deduplication and rate limiting, and retention of the
//! violation records.
//!
//! Everything here is a pure function of its inputs (time included), so the safety rules are
//! tested without a cluster: never evict a pod without a controller owner unless allowed,
//! never in a protected namespace, never more than `maxKillsPerHour`, never below
//! `minReadyReplicas`, and dry-run on request.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::learning::Mode;
use crate::sketch::fnv1a64;
use crate::time::Timestamp;

/// What to do about a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseAction {
    /// Record it (metric and BehaviorViolation) and nothing else.
    None,
    /// Also label and annotate the pod, and post an Event on it.
    #[default]
    Tag,
    /// Also evict the pod so that its controller replaces it.
    Kill,
}

/// Bounds on evictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseLimits {
    /// Evictions allowed per profile (or policy) in any hour.
    pub max_kills_per_hour: u32,
    /// Ready replicas the owner must keep after an eviction.
    pub min_ready_replicas: u32,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_kills_per_hour: 3,
            min_ready_replicas: 1,
        }
    }
}

/// How a profile or policy wants violations answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponsePolicy {
    /// The response.
    pub action: ResponseAction,
    /// Decide, record what would have been done, do nothing.
    pub dry_run: bool,
    /// Allow evicting pods that no controller would replace.
    pub allow_unowned: bool,
    /// Eviction bounds.
    pub limits: ResponseLimits,
}

/// What the operator knows about the pod and its surroundings when it decides.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    /// Whether the pod has an owner reference with `controller: true`.
    pub has_controller_owner: bool,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// Namespaces where pods are never evicted (kube-system and herdwatch's own by default).
    pub protected_namespaces: &'a [String],
    /// Evictions this profile (or policy) caused in the last hour.
    pub kills_last_hour: u32,
    /// Ready replicas of the pod's owner now, if known.
    pub owner_ready_replicas: Option<u32>,
    /// Whether the operator as a whole runs dry.
    pub operator_dry_run: bool,
}

/// A response that would be carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Label, annotate, post an Event.
    Tag,
    /// Evict (after tagging).
    Evict,
}

/// Why an eviction is refused. The operator still tags the pod, so the violation stays
/// visible on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No controller would replace the pod, and `allowUnowned` is off.
    NoControllerOwner,
    /// The namespace is protected.
    ProtectedNamespace(String),
    /// The hourly limit is used up.
    KillLimitReached {
        /// Evictions in the last hour.
        kills: u32,
        /// The limit.
        limit: u32,
    },
    /// Evicting would leave the owner with too few ready replicas.
    BelowMinReadyReplicas {
        /// Ready replicas now.
        ready: u32,
        /// The minimum to keep.
        min: u32,
    },
    /// The owner's ready replica count is not known, so the minimum cannot be guaranteed.
    ReadyReplicasUnknown,
}

impl Refusal {
    /// A CamelCase reason for conditions, Events and the violation record.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoControllerOwner => "NoControllerOwner",
            Refusal::ProtectedNamespace(_) => "ProtectedNamespace",
            Refusal::KillLimitReached { .. } => "KillLimitReached",
            Refusal::BelowMinReadyReplicas { .. } => "BelowMinReadyReplicas",
            Refusal::ReadyReplicasUnknown => "ReadyReplicasUnknown",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoControllerOwner => {
                f.write_str("the pod has no controller owner to replace it; set response.allowUnowned to evict such pods")
            }
            Refusal::ProtectedNamespace(ns) => write!(f, "namespace {ns} is protected; herdwatch never evicts pods there"),
            Refusal::KillLimitReached { kills, limit } => {
                write!(f, "{kills} evictions in the last hour reached response.limits.maxKillsPerHour ({limit})")
            }
            Refusal::BelowMinReadyReplicas { ready, min } => write!(
                f,
                "the owner has {ready} ready replicas; evicting one would go below response.limits.minReadyReplicas ({min})"
            ),
            Refusal::ReadyReplicasUnknown => f.write_str("the owner's ready replicas are unknown, so minReadyReplicas cannot be kept"),
        }
    }
}

/// The decision for one violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Record only.
    Nothing,
    /// Tag the pod.
    Tag,
    /// Tag and evict the pod.
    Evict,
    /// Record what would have been done, and do nothing.
    DryRun(Planned),
    /// Eviction refused for safety; tag instead.
    Refused(Refusal),
}

/// Decides how to answer a violation. `mode` is the profile's mode, or `None` for a
/// ClusterBehaviorPolicy violation (policies apply without a profile). A profile in Monitor
/// mode never evicts: its Kill becomes a dry run, so users see what Enforce would do.
pub fn decide(
    action: ResponseAction,
    mode: Option<Mode>,
    policy: &ResponsePolicy,
    pod: &PodFacts<'_>,
) -> Decision {
    let decision = match action {
        ResponseAction::None => return Decision::Nothing,
        ResponseAction::Tag => Decision::Tag,
        ResponseAction::Kill => match eviction_refusal(policy, pod) {
            Some(refusal) => return Decision::Refused(refusal),
            None => Decision::Evict,
        },
    };
    let monitor_only =
        matches!(mode, Some(Mode::Learn | Mode::Monitor)) && decision == Decision::Evict;
    let planned = if decision == Decision::Evict {
        Planned::Evict
    } else {
        Planned::Tag
    };
    if policy.dry_run || pod.operator_dry_run || monitor_only {
        Decision::DryRun(planned)
    } else {
        decision
    }
}

fn eviction_refusal(policy: &ResponsePolicy, pod: &PodFacts<'_>) -> Option<Refusal> {
    if pod.protected_namespaces.iter().any(|n| n == pod.namespace) {
        return Some(Refusal::ProtectedNamespace(pod.namespace.to_owned()));
    }
    if !pod.has_controller_owner && !policy.allow_unowned {
        return Some(Refusal::NoControllerOwner);
    }
    let limit = policy.limits.max_kills_per_hour;
    if pod.kills_last_hour >= limit {
        return Some(Refusal::KillLimitReached {
            kills: pod.kills_last_hour,
            limit,
        });
    }
    let min = policy.limits.min_ready_replicas;
    if pod.has_controller_owner && min > 0 {
        match pod.owner_ready_replicas {
            None => return Some(Refusal::ReadyReplicasUnknown),
            Some(ready) if ready.saturating_sub(1) < min => {
                return Some(Refusal::BelowMinReadyReplicas { ready, min })
            }
            Some(_) => {}
        }
    }
    None
}

/// Evictions within the hour before `now`, from a list of eviction times.
pub fn kills_in_last_hour(evictions: &[Timestamp], now: Timestamp) -> u32 {
    let since = now - Duration::from_secs(3600);
    evictions
        .iter()
        .filter(|t| **t > since && **t <= now)
        .count() as u32
}

/// The identity of a violation record: one BehaviorViolation per (pod, rule, subject).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViolationKey {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Rule reference (`profile/processes`, `policy/<policy>/<rule>`).
    pub rule: String,
    /// Subject.
    pub subject: String,
}

impl ViolationKey {
    /// The BehaviorViolation object name: the pod name (shortened) and a stable hash of the
    /// key, at most 63 characters, so writers on any node pick the same name.
    pub fn object_name(&self) -> String {
        let mut h = Vec::with_capacity(self.pod.len() + self.rule.len() + self.subject.len() + 2);
        h.extend_from_slice(self.pod.as_bytes());
        h.push(0);
        h.extend_from_slice(self.rule.as_bytes());
        h.push(0);
        h.extend_from_slice(self.subject.as_bytes());
        let hash = fnv1a64(&h);
        let mut prefix: String = self
            .pod
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(46)
            .collect();
        while prefix.ends_with('-') || prefix.ends_with('.') {
            prefix.pop();
        }
        if prefix.is_empty() {
            format!("v-{hash:016x}")
        } else {
            format!("{prefix}-{hash:016x}")
        }
    }
}

/// A token bucket: `capacity` tokens, one more every `refill_every`. Time is passed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u32,
    refill_every: Duration,
    tokens: u32,
    last_refill: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, refill_every: Duration, now: Timestamp) -> Self {
        Self {
            capacity,
            refill_every: refill_every.max(Duration::from_secs(1)),
            tokens: capacity,
            last_refill: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed = now.since(self.last_refill).as_secs();
        let step = self.refill_every.as_secs();
        let new = elapsed / step;
        if new > 0 {
            self.tokens = u32::try_from(u64::from(self.tokens) + new)
                .unwrap_or(u32::MAX)
                .min(self.capacity);
            // Keep the remainder so that refills do not drift.
            self.last_refill = self.last_refill + Duration::from_secs(new * step);
        }
        if self.tokens == self.capacity {
            self.last_refill = self.last_refill.max(now);
        }
    }

    /// Takes a token if one is left.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    /// Tokens left at `now`.
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        self.tokens
    }
}

/// What to write for a violation just seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// First time: create the record.
    Create,
    /// Seen again and the record is due for an update: write this total count.
    Update(u64),
    /// Counted; write later.
    Later,
}

#[derive(Clone, Debug)]
struct DedupEntry {
    count: u64,
    written_count: u64,
    last_written: Timestamp,
    last_seen: Timestamp,
}

/// Per-agent deduplication of violations: the first sighting of a key creates its record,
/// repeats are counted and written at most once per `min_interval`, and a shared token bucket
/// caps all writes. Bounded: beyond `capacity` keys the least recently seen is forgotten (its
/// record stays in the API; a later repeat is an update of it, not a duplicate).
#[derive(Clone, Debug)]
pub struct Dedup {
    entries: HashMap<ViolationKey, DedupEntry>,
    capacity: usize,
    min_interval: Duration,
    bucket: TokenBucket,
}

impl Dedup {
    /// A deduplicator writing each key at most once per `min_interval`, and at most
    /// `bucket` writes overall.
    pub fn new(capacity: usize, min_interval: Duration, bucket: TokenBucket) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            min_interval,
            bucket,
        }
    }

    /// Counts one sighting of `key` at `now` and says what to write.
    pub fn record(&mut self, key: &ViolationKey, now: Timestamp) -> Emit {
        if let Some(e) = self.entries.get_mut(key) {
            e.count += 1;
            e.last_seen = now;
            if now.since(e.last_written) >= self.min_interval && self.bucket.try_take(now) {
                e.last_written = now;
                e.written_count = e.count;
                return Emit::Update(e.count);
            }
            return Emit::Later;
        }
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let written = self.bucket.try_take(now);
        self.entries.insert(
            key.clone(),
            DedupEntry {
                count: 1,
                written_count: u64::from(written),
                last_written: if written {
                    now
                } else {
                    Timestamp(i64::MIN / 2)
                },
                last_seen: now,
            },
        );
        if written {
            Emit::Create
        } else {
            Emit::Later
        }
    }

    /// Whether `key` is tracked (it is forgotten when more than `capacity` keys are).
    pub fn contains(&self, key: &ViolationKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys with counts not yet written, and their totals, for a periodic flush. Each one
    /// returned is marked written at `now`.
    pub fn due(&mut self, now: Timestamp) -> Vec<(ViolationKey, u64)> {
        let mut out = Vec::new();
        for (k, e) in &mut self.entries {
            if e.count > e.written_count
                && now.since(e.last_written) >= self.min_interval
                && self.bucket.try_take(now)
            {
                e.written_count = e.count;
                e.last_written = now;
                out.push((k.clone(), e.count));
            }
        }
        out
    }
}

/// How long violation records are kept, per profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Records kept at most.
    pub max_count: usize,
    /// Records whose last sighting is older than this are deleted.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_count: 500,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A violation record as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// Object name.
    pub name: String,
    /// Last sighting.
    pub last_seen: Timestamp,
}

/// Names of the records to delete: every record older than `max_age`, then the least
/// recently seen beyond `max_count`.
pub fn expired(records: &[RecordMeta], retention: &Retention, now: Timestamp) -> Vec<String> {
    let cutoff = now - retention.max_age;
    let mut keep: Vec<&RecordMeta> = Vec::new();
    let mut delete = Vec::new();
    for r in records {
        if r.last_seen < cutoff {
            delete.push(r.name.clone());
        } else {
            keep.push(r);
        }
    }
    if keep.len() > retention.max_count {
        keep.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.name.cmp(&b.name))
        });
        delete.extend(keep[retention.max_count..].iter().map(|r| r.name.clone()));
    }
    delete
}

/// A workload as `kind/name` (`Deployment/web`, `Pod/debug` for a bare pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

impl fmt::Display for WorkloadName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Where a violation record says its pod ran: written by one node's agent, which is not
/// trusted beyond its own node.
#[derive(Clone, Copy, Debug)]
pub struct Claimed<'a> {
    pub node: &'a str,
    pub workload: WorkloadName<'a>,
}

/// What the API server says of that pod, and of the profile the record names.
#[derive(Clone, Copy, Debug)]
pub struct Actual<'a> {
    /// The pod's `spec.nodeName`.
    pub node: Option<&'a str>,
    /// The pod's top-level controller (through its ReplicaSet or Job), or the pod itself.
    pub workload: WorkloadName<'a>,
    /// The workload the named profile targets, for a Profile violation.
    pub profile_target: Option<WorkloadName<'a>>,
}

/// Why a record is not acted on: it disagrees with the API about its own pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    NodeMismatch {
        claimed: String,
        actual: String,
    },
    WorkloadMismatch {
        claimed: String,
        actual: String,
    },
    ProfileMismatch {
        profile_target: String,
        actual: String,
    },
}

impl Rejection {
    /// The CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NodeMismatch { .. } => "NodeMismatch",
            Rejection::WorkloadMismatch { .. } => "WorkloadMismatch",
            Rejection::ProfileMismatch { .. } => "ProfileMismatch",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NodeMismatch { claimed, actual } => write!(
                f,
                "the record names node {claimed}, but the pod runs on {actual}: an agent reports only its own node's pods; nothing was done to the pod"
            ),
            Rejection::WorkloadMismatch { claimed, actual } => write!(
                f,
                "the record names workload {claimed}, but the pod belongs to {actual}; nothing was done to the pod"
            ),
            Rejection::ProfileMismatch {
                profile_target,
                actual,
            } => write!(
                f,
                "the record's profile targets {profile_target}, but the pod belongs to {actual}; nothing was done to the pod"
            ),
        }
    }
}

/// Checks a record against the API's facts before anything is done to its pod: the node,
/// the workload and the profile all come from the API, never from the record.
pub fn check_record(claimed: &Claimed<'_>, actual: &Actual<'_>) -> Result<(), Rejection> {
    if actual.node != Some(claimed.node) {
        return Err(Rejection::NodeMismatch {
            claimed: claimed.node.to_owned(),
            actual: actual.node.unwrap_or("no node").to_owned(),
        });
    }
    if claimed.workload != actual.workload {
        return Err(Rejection::WorkloadMismatch {
            claimed: claimed.workload.to_string(),
            actual: actual.workload.to_string(),
        });
    }
    if let Some(target) = actual.profile_target {
        if target != actual.workload {
            return Err(Rejection::ProfileMismatch {
                profile_target: target.to_string(),
                actual: actual.workload.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(protected: &'a [String]) -> PodFacts<'a> {
        PodFacts {
            has_controller_owner: true,
            namespace: "shop",
            protected_namespaces: protected,
            kills_last_hour: 0,
            owner_ready_replicas: Some(3),
            operator_dry_run: false,
        }
    }

    fn kill() -> ResponsePolicy {
        ResponsePolicy {
            action: ResponseAction::Kill,
            ..ResponsePolicy::default()
        }
    }

    #[test]
    fn evicts_when_every_safety_rule_holds() {
        let p = vec!["kube-system".to_owned()];
        assert_eq!(
            decide(
                ResponseAction::Kill,
                Some(Mode::Enforce),
                &kill(),
                &facts(&p)
            ),
            Decision::Evict
        );
        assert_eq!(
            decide(ResponseAction::Kill, None, &kill(), &facts(&p)),
            Decision::Evict,
            "policies evict too"
        );
        assert_eq!(
            decide(
                ResponseAction::Tag,
                Some(Mode::Enforce),
                &kill(),
                &facts(&p)
            ),
            Decision::Tag
        );
        assert_eq!(
            decide(
                ResponseAction::None,
                Some(Mode::Enforce),
                &kill(),
                &facts(&p)
            ),
            Decision::Nothing
        );
    }

    #[test]
    fn refuses_unsafe_evictions() {
        let p = vec!["kube-system".to_owned(), "herdwatch".to_owned()];
        let d = |f: PodFacts<'_>, pol: ResponsePolicy| {
            decide(ResponseAction::Kill, Some(Mode::Enforce), &pol, &f)
        };

        assert_eq!(
            d(
                PodFacts {
                    namespace: "kube-system",
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Refused(Refusal::ProtectedNamespace("kube-system".into()))
        );
        assert_eq!(
            d(
                PodFacts {
                    has_controller_owner: false,
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Refused(Refusal::NoControllerOwner)
        );
        let unowned_ok = ResponsePolicy {
            allow_unowned: true,
            ..kill()
        };
        assert_eq!(
            d(
                PodFacts {
                    has_controller_owner: false,
                    owner_ready_replicas: None,
                    ..facts(&p)
                },
                unowned_ok
            ),
            Decision::Evict
        );
        assert_eq!(
            d(
                PodFacts {
                    kills_last_hour: 3,
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Refused(Refusal::KillLimitReached { kills: 3, limit: 3 })
        );
        assert_eq!(
            d(
                PodFacts {
                    owner_ready_replicas: Some(1),
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Refused(Refusal::BelowMinReadyReplicas { ready: 1, min: 1 })
        );
        assert_eq!(
            d(
                PodFacts {
                    owner_ready_replicas: Some(2),
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Evict
        );
        assert_eq!(
            d(
                PodFacts {
                    owner_ready_replicas: None,
                    ..facts(&p)
                },
                kill()
            ),
            Decision::Refused(Refusal::ReadyReplicasUnknown)
        );
        let no_min = ResponsePolicy {
            limits: ResponseLimits {
                min_ready_replicas: 0,
                max_kills_per_hour: 3,
            },
            ..kill()
        };
        assert_eq!(
            d(
                PodFacts {
                    owner_ready_replicas: None,
                    ..facts(&p)
                },
                no_min
            ),
            Decision::Evict
        );
        assert!(Refusal::ProtectedNamespace("kube-system".into())
            .to_string()
            .contains("kube-system"));
    }

    #[test]
    fn dry_run_and_monitor_never_evict() {
        let p = vec![];
        let dry = ResponsePolicy {
            dry_run: true,
            ..kill()
        };
        assert_eq!(
            decide(ResponseAction::Kill, Some(Mode::Enforce), &dry, &facts(&p)),
            Decision::DryRun(Planned::Evict)
        );
        assert_eq!(
            decide(ResponseAction::Tag, Some(Mode::Enforce), &dry, &facts(&p)),
            Decision::DryRun(Planned::Tag)
        );
        let op_dry = PodFacts {
            operator_dry_run: true,
            ..facts(&p)
        };
        assert_eq!(
            decide(ResponseAction::Kill, None, &kill(), &op_dry),
            Decision::DryRun(Planned::Evict)
        );
        assert_eq!(
            decide(
                ResponseAction::Kill,
                Some(Mode::Monitor),
                &kill(),
                &facts(&p)
            ),
            Decision::DryRun(Planned::Evict)
        );
        assert_eq!(
            decide(
                ResponseAction::Tag,
                Some(Mode::Monitor),
                &kill(),
                &facts(&p)
            ),
            Decision::Tag
        );
        // A refusal is reported even in a dry run: it says what would have happened.
        let refused = PodFacts {
            kills_last_hour: 9,
            ..facts(&p)
        };
        assert!(matches!(
            decide(ResponseAction::Kill, Some(Mode::Enforce), &dry, &refused),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn counts_kills_in_the_last_hour() {
        let now = Timestamp(10_000);
        let times = [
            Timestamp(10_000 - 4000),
            Timestamp(10_000 - 3599),
            Timestamp(9_990),
            Timestamp(10_001),
        ];
        assert_eq!(kills_in_last_hour(&times, now), 2);
    }

    #[test]
    fn object_names_are_stable_valid_and_distinct() {
        let k = ViolationKey {
            namespace: "shop".into(),
            pod: "Web-7d9f_x".into(),
            rule: "profile/processes".into(),
            subject: "/bin/sh".into(),
        };
        let name = k.object_name();
        assert_eq!(name, k.clone().object_name());
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("web-7d9f-x-"), "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let other = ViolationKey {
            subject: "/bin/bash".into(),
            ..k.clone()
        };
        assert_ne!(other.object_name(), name);
        let long = ViolationKey {
            pod: "a".repeat(200),
            ..k
        };
        assert!(long.object_name().len() <= 63);
    }

    #[test]
    fn token_bucket_refills_over_time() {
        let mut b = TokenBucket::new(2, Duration::from_secs(10), Timestamp(0));
        assert!(b.try_take(Timestamp(0)));
        assert!(b.try_take(Timestamp(0)));
        assert!(!b.try_take(Timestamp(5)));
        assert!(b.try_take(Timestamp(10)));
        assert!(!b.try_take(Timestamp(19)));
        assert!(b.try_take(Timestamp(20)));
        assert_eq!(b.available(Timestamp(1_000)), 2, "never above capacity");
    }

    #[test]
    fn dedup_counts_repeats_and_bounds_writes() {
        let key = |s: &str| ViolationKey {
            namespace: "ns".into(),
            pod: "p".into(),
            rule: "r".into(),
            subject: s.into(),
        };
        let mut d = Dedup::new(
            2,
            Duration::from_secs(10),
            TokenBucket::new(100, Duration::from_secs(1), Timestamp(0)),
        );
        assert_eq!(d.record(&key("a"), Timestamp(0)), Emit::Create);
        assert_eq!(d.record(&key("a"), Timestamp(1)), Emit::Later);
        assert_eq!(d.record(&key("a"), Timestamp(2)), Emit::Later);
        assert_eq!(d.due(Timestamp(5)), vec![]);
        assert_eq!(d.due(Timestamp(10)), vec![(key("a"), 3)]);
        assert_eq!(d.due(Timestamp(30)), vec![], "nothing new to write");
        assert_eq!(d.record(&key("a"), Timestamp(31)), Emit::Update(4));
        // Capacity 2: a third key forgets the least recently seen.
        assert_eq!(d.record(&key("b"), Timestamp(32)), Emit::Create);
        assert_eq!(d.record(&key("c"), Timestamp(33)), Emit::Create);
        assert_eq!(d.entries.len(), 2);
        assert!(!d.contains(&key("a")) && d.contains(&key("b")) && d.contains(&key("c")));

        let mut starved = Dedup::new(
            10,
            Duration::from_secs(1),
            TokenBucket::new(1, Duration::from_secs(60), Timestamp(0)),
        );
        assert_eq!(starved.record(&key("x"), Timestamp(0)), Emit::Create);
        assert_eq!(
            starved.record(&key("y"), Timestamp(0)),
            Emit::Later,
            "bucket empty"
        );
        assert_eq!(starved.due(Timestamp(60)), vec![(key("y"), 1)]);
    }

    #[test]
    fn retention_by_age_then_count() {
        let now = Timestamp(100 * 86_400);
        let day = |d: i64| Timestamp(now.0 - d * 86_400);
        let recs: Vec<RecordMeta> = [("old", 40), ("a", 1), ("b", 2), ("c", 3), ("d", 0)]
            .into_iter()
            .map(|(n, d)| RecordMeta {
                name: n.into(),
                last_seen: day(d),
            })
            .collect();
        let r = Retention {
            max_count: 3,
            max_age: Duration::from_secs(30 * 86_400),
        };
        let mut gone = expired(&recs, &r, now);
        gone.sort();
        assert_eq!(gone, vec!["c".to_owned(), "old".to_owned()]);
        assert!(expired(
            &recs,
            &Retention {
                max_count: 10,
                max_age: Duration::from_secs(50 * 86_400)
            },
            now
        )
        .is_empty());
    }

    #[test]
    fn records_are_checked_against_the_api() {
        let web = WorkloadName {
            kind: "Deployment",
            name: "web",
        };
        let claimed = Claimed {
            node: "node-a",
            workload: web,
        };
        let actual = Actual {
            node: Some("node-a"),
            workload: web,
            profile_target: Some(web),
        };
        assert_eq!(check_record(&claimed, &actual), Ok(()));

        let elsewhere = Actual {
            node: Some("node-b"),
            ..actual
        };
        let r = check_record(&claimed, &elsewhere).unwrap_err();
        assert_eq!(r.reason(), "NodeMismatch");
        assert!(r.to_string().contains("node node-a") && r.to_string().contains("node-b"));

        let other_owner = Actual {
            workload: WorkloadName {
                kind: "Deployment",
                name: "payments",
            },
            profile_target: None,
            ..actual
        };
        let r = check_record(&claimed, &other_owner).unwrap_err();
        assert_eq!(r.reason(), "WorkloadMismatch");
        assert!(r.to_string().contains("Deployment/payments"), "{r}");

        let other_profile = Actual {
            profile_target: Some(WorkloadName {
                kind: "Deployment",
                name: "payments",
            }),
            ..actual
        };
        assert_eq!(
            check_record(&claimed, &other_profile).unwrap_err().reason(),
            "ProfileMismatch"
        );
        let unscheduled = Actual {
            node: None,
            ..actual
        };
        assert_eq!(
            check_record(&claimed, &unscheduled).unwrap_err().reason(),
            "NodeMismatch"
        );
    }
}
