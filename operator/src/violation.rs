//! The violation reconciler: answers each BehaviorViolation once, and keeps the records
//! within their retention.
//!
//! # Deciding
//!
//! The response settings come from the violation's BehaviorProfile (its `response`, and its
//! phase as the mode: a profile still learning never evicts) or, for a policy violation, from
//! the ClusterBehaviorPolicy. The action is the milder of what the record asked for and what
//! the profile asks for now, so a user who just turned Kill down to Tag is obeyed. The pod
//! facts are read fresh: the pod itself (still the same pod, by UID; a controller owner?),
//! the owner's ready replicas, the protected namespaces, and the evictions of the profile (or
//! policy) in the last hour. Then [`herdwatch_model::response::decide`] decides.
//!
//! # Safety and idempotence
//!
//! - The outcome is written to the record's status, and a record with a final outcome is
//!   never acted on again (only `Pending`, `Failed`, and a refusal by a PodDisruptionBudget
//!   are retried). Tagging is idempotent; an eviction carries the pod's UID as a
//!   precondition, so a repeat after a crash finds the pod gone instead of evicting its
//!   replacement.
//! - Evictions go through the Eviction API, so PodDisruptionBudgets hold. A 429 from a budget
//!   is recorded as refused (`DisruptionBudget`) and retried with exponential backoff.
//! - The kill limit counts the `Evicted` outcomes of the last hour from the records (so a new
//!   leader starts with the count its predecessor left) together with this leader's
//!   evictions still on their way to the records, under one lock, so two violations decided
//!   at once cannot both take the last eviction allowed.
//! - `minReadyReplicas` is checked against the owner's pods as the API has them at the time
//!   of the decision (Ready, and not being deleted), not against the owner's status, which
//!   lags an eviction. A pod this leader is evicting is left out even if the answer still
//!   shows it ready; its replacement counts as soon as it is Ready. Pods belong to an owner
//!   by UID, so a workload re-created under an old name starts with a clean count.
//! - `--dry-run` turns every response into a recorded dry run.
//!
//! # Retention
//!
//! Records are grouped per profile (or per policy and namespace for policy violations). Each
//! reconcile asks [`herdwatch_model::response::expired`] which records of its group are past
//! the count or age limit and deletes them, and each record is requeued for when it expires
//! by age, so old records go even when nothing new happens.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdwatch_api::common::{Mode, Phase, ResponseAction};
use herdwatch_api::convert::{from_time, to_time};
use herdwatch_api::profile::{LastViolation, ViolationSummary};
use herdwatch_api::violation::{
    BehaviorViolationStatus, EventKind, Outcome, RuleSource, WorkloadRef,
};
use herdwatch_api::{BehaviorProfile, BehaviorViolation, ClusterBehaviorPolicy};
use herdwatch_model as model;
use herdwatch_model::response::{
    check_record, Actual, Claimed, Decision, Planned, PodFacts, RecordMeta, ResponsePolicy,
    WorkloadName,
};
use herdwatch_model::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, LabelSelector, Preconditions};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::names::rule_label_value;
use crate::{
    api_code, Error, Result, FIELD_MANAGER, VIOLATION_LABEL, VIOLATION_SUMMARY_ANNOTATION,
};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "violation";
/// Reason of a refusal by a PodDisruptionBudget (retried with backoff).
pub const REASON_DISRUPTION_BUDGET: &str = "DisruptionBudget";
/// Reason when the pod is gone (or replaced) before the response.
pub const REASON_POD_GONE: &str = "PodGone";
/// Reason when the violation's profile does not exist.
pub const REASON_PROFILE_NOT_FOUND: &str = "ProfileNotFound";
/// Reason when the violation's policy does not exist.
pub const REASON_POLICY_NOT_FOUND: &str = "PolicyNotFound";
/// Reason when the rule asks for no response.
pub const REASON_ACTION_NONE: &str = "ActionNone";
/// Reason of a dry run that would have tagged.
pub const REASON_WOULD_TAG: &str = "WouldTag";
/// Reason of a dry run that would have evicted.
pub const REASON_WOULD_EVICT: &str = "WouldEvict";
/// Reason of a response that failed (retried).
pub const REASON_FAILED: &str = "ResponseFailed";
/// Longest wait between two looks at a record.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Longest summary written to the pod annotation.
const MAX_SUMMARY: usize = 1024;
/// Attempts at a conflicting status write of a profile.
const WRITE_ATTEMPTS: u32 = 5;
/// Window of `recentEvictions` in a profile's status.
const EVICTION_WINDOW: Duration = Duration::from_secs(3600);
/// Most `recentEvictions` kept (the schema allows 1000).
const MAX_RECENT_EVICTIONS: usize = 1000;

/// The group a record's retention is counted in.
pub fn retention_group(v: &BehaviorViolation) -> String {
    let ns = v.namespace().unwrap_or_default();
    match v.spec.source {
        RuleSource::Profile => format!(
            "profile/{ns}/{}",
            v.spec.profile.as_deref().unwrap_or_default()
        ),
        RuleSource::Policy => format!(
            "policy/{ns}/{}",
            v.spec.policy.as_deref().unwrap_or_default()
        ),
    }
}

/// The scope of `maxKillsPerHour`: the profile, or the policy (cluster-wide).
pub fn kill_scope(v: &BehaviorViolation) -> String {
    match v.spec.source {
        RuleSource::Profile => retention_group(v),
        RuleSource::Policy => format!("policy/{}", v.spec.policy.as_deref().unwrap_or_default()),
    }
}

/// Whether a record still needs a response.
pub fn needs_response(status: Option<&BehaviorViolationStatus>) -> bool {
    match status {
        None => true,
        Some(s) => match s.outcome {
            Outcome::Pending | Outcome::Failed => true,
            Outcome::Refused => s.reason.as_deref() == Some(REASON_DISRUPTION_BUDGET),
            Outcome::Recorded
            | Outcome::Tagged
            | Outcome::Evicted
            | Outcome::DryRun
            | Outcome::Rejected => false,
        },
    }
}

/// The milder of two actions (None < Tag < Kill).
pub fn milder(a: ResponseAction, b: ResponseAction) -> ResponseAction {
    fn rank(a: ResponseAction) -> u8 {
        match a {
            ResponseAction::None => 0,
            ResponseAction::Tag => 1,
            ResponseAction::Kill => 2,
        }
    }
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

/// The mode a profile in `phase` responds in: what it enforces now, not what it will.
pub fn mode_of_phase(phase: Phase) -> Mode {
    match phase {
        Phase::Learning => Mode::Learn,
        Phase::Monitoring => Mode::Monitor,
        Phase::Enforcing => Mode::Enforce,
    }
}

/// The name of an outcome in logs.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Pending => "pending",
        Outcome::Recorded => "recorded",
        Outcome::Tagged => "tagged",
        Outcome::Evicted => "evicted",
        Outcome::Refused => "refused",
        Outcome::DryRun => "dry-run",
        Outcome::Failed => "failed",
        Outcome::Rejected => "rejected",
    }
}

fn event_kind(k: EventKind) -> &'static str {
    match k {
        EventKind::Exec => "exec",
        EventKind::File => "file",
        EventKind::Connect => "connect",
        EventKind::Listen => "listen",
        EventKind::Syscall => "syscall",
        EventKind::Setuid => "setuid",
    }
}

/// The one-line summary written to the pod and its Event.
pub fn summary(v: &BehaviorViolation) -> String {
    let s = &v.spec;
    let e = &s.event;
    let mut text = format!(
        "{}: {} ({} by {} uid {}{}) seen {} time{}, last at {}; details: kubectl get bv {} -n {}",
        s.rule,
        s.subject,
        event_kind(e.kind),
        e.exe,
        e.uid,
        if e.exec_session { ", exec session" } else { "" },
        s.count,
        if s.count == 1 { "" } else { "s" },
        s.last_seen.0,
        v.name_any(),
        v.namespace().unwrap_or_default(),
    );
    herdwatch_model::text::truncate_marked(&mut text, MAX_SUMMARY, "...");
    text
}

/// Adds one answered violation to a profile's violation counts.
pub fn count_violation(
    s: &mut ViolationSummary,
    v: &BehaviorViolation,
    outcome: Outcome,
    now: Timestamp,
) {
    s.total += 1;
    match outcome {
        Outcome::Tagged => s.tagged += 1,
        Outcome::Evicted => s.evicted += 1,
        Outcome::Refused => s.refused += 1,
        _ => {}
    }
    s.last = Some(LastViolation {
        time: Some(v.spec.last_seen.clone()),
        pod: v.spec.pod.clone(),
        rule: v.spec.rule.clone(),
        subject: v.spec.subject.clone(),
        record: v.name_any(),
    });
    if outcome == Outcome::Evicted {
        s.recent_evictions.push(to_time(now));
    }
    let since = now - EVICTION_WINDOW;
    s.recent_evictions.retain(|t| from_time(t) > since);
    if s.recent_evictions.len() > MAX_RECENT_EVICTIONS {
        let excess = s.recent_evictions.len() - MAX_RECENT_EVICTIONS;
        s.recent_evictions.drain(..excess);
    }
}

fn object_key(v: &BehaviorViolation) -> String {
    format!(
        "{CONTROLLER}/{}/{}",
        v.namespace().unwrap_or_default(),
        v.name_any()
    )
}

/// Reconciles one violation record (see the module documentation).
#[instrument(skip(obj, ctx), fields(namespace = %obj.namespace().unwrap_or_default(), violation = %obj.name_any(), rule = %obj.spec.rule))]
pub async fn reconcile(obj: Arc<BehaviorViolation>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = handle(&obj, &ctx).await;
    ctx.metrics
        .reconciled(CONTROLLER, result.is_ok(), started.elapsed());
    result
}

/// Counts the failure and retries the record with exponential backoff.
pub fn error_policy(obj: Arc<BehaviorViolation>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&object_key(&obj));
    warn!(violation = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "violation response failed");
    Action::requeue(delay)
}

/// What was decided and done.
struct Done {
    outcome: Outcome,
    reason: Option<String>,
    message: String,
    /// Retry later (a refusal by a disruption budget).
    retry: bool,
}

impl Done {
    fn new(outcome: Outcome, reason: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.map(str::to_owned),
            message: message.into(),
            retry: false,
        }
    }
}

/// How to respond, from the profile or the policy.
enum Settings {
    Respond {
        action: ResponseAction,
        mode: Option<Mode>,
        policy: ResponsePolicy,
    },
    Missing(Done),
}

async fn handle(v: &BehaviorViolation, ctx: &Context) -> Result<Action> {
    let ns = v
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = v.name_any();
    let now = ctx.now();
    // Counts and retention are computed from the stores; they must hold everything first.
    let _ = ctx.violations.wait_until_ready().await;
    let _ = ctx.profiles.wait_until_ready().await;

    if apply_retention(v, ctx, &ns, now).await? {
        return Ok(Action::await_change());
    }
    let expires_in = (from_time(&v.spec.last_seen) + ctx.settings.retention.max_age)
        .since(now)
        .clamp(Duration::from_secs(1), MAX_WAIT);
    if !needs_response(v.status.as_ref()) {
        ctx.backoff.succeeded(&object_key(v));
        return Ok(Action::requeue(expires_in));
    }

    let done = match respond(v, ctx, &ns, now).await {
        Ok(done) => done,
        Err(error) => {
            let message = format!("the response failed and is retried: {error}");
            let unchanged = v.status.as_ref().is_some_and(|s| {
                s.outcome == Outcome::Failed && s.message.as_deref() == Some(message.as_str())
            });
            // Written once per distinct failure: rewriting it on every retry would trigger
            // the next retry at once instead of after the backoff.
            if !unchanged {
                write_outcome(
                    ctx,
                    &ns,
                    &name,
                    &Done::new(Outcome::Failed, Some(REASON_FAILED), message),
                    now,
                )
                .await?;
            }
            return Err(error);
        }
    };

    let unchanged = v.status.as_ref().is_some_and(|s| {
        s.outcome == done.outcome
            && s.reason == done.reason
            && s.message.as_deref() == Some(done.message.as_str())
    });
    if !unchanged {
        write_outcome(ctx, &ns, &name, &done, now).await?;
    }
    if done.retry {
        let delay = ctx.backoff.failed(&object_key(v));
        info!(retry_in = ?delay, "eviction refused by a PodDisruptionBudget; will try again");
        return Ok(Action::requeue(delay));
    }
    ctx.backoff.succeeded(&object_key(v));
    info!(
        outcome = outcome_label(done.outcome),
        reason = done.reason.as_deref().unwrap_or(""),
        "violation answered"
    );
    ctx.metrics.response(
        &ns,
        &format!("{}/{}", v.spec.workload.kind, v.spec.workload.name),
        done.outcome,
        done.reason.as_deref(),
    );
    if let (RuleSource::Profile, Some(profile)) = (v.spec.source, v.spec.profile.as_deref()) {
        count_on_profile(ctx, &ns, profile, v, done.outcome, now).await?;
    }
    Ok(Action::requeue(expires_in))
}

/// Deletes the records of `v`'s group past retention. Returns whether `v` itself went.
async fn apply_retention(
    v: &BehaviorViolation,
    ctx: &Context,
    ns: &str,
    now: Timestamp,
) -> Result<bool> {
    let group = retention_group(v);
    let mut records: Vec<RecordMeta> = ctx
        .violations
        .state_filter(|o| retention_group(o) == group)
        .iter()
        .map(|o| RecordMeta {
            name: o.name_any(),
            last_seen: from_time(&o.spec.last_seen),
        })
        .collect();
    if !records.iter().any(|r| r.name == v.name_any()) {
        records.push(RecordMeta {
            name: v.name_any(),
            last_seen: from_time(&v.spec.last_seen),
        });
    }
    let expired = model::response::expired(&records, &ctx.settings.retention, now);
    if expired.is_empty() {
        return Ok(false);
    }
    let api: Api<BehaviorViolation> = Api::namespaced(ctx.client.clone(), ns);
    for name in &expired {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(record = %name, %group, "deleted a violation record past retention"),
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(expired.iter().any(|n| *n == v.name_any()))
}

async fn settings_of(v: &BehaviorViolation, ctx: &Context, ns: &str) -> Result<Settings> {
    Ok(match v.spec.source {
        RuleSource::Profile => {
            let profile = v
                .spec
                .profile
                .as_deref()
                .and_then(|p| ctx.profiles.get(&ObjectRef::new(p).within(ns)));
            match profile {
                Some(p) => Settings::Respond {
                    action: milder(v.spec.action, p.spec.response.action),
                    mode: Some(mode_of_phase(
                        p.status.as_ref().and_then(|s| s.phase).unwrap_or_default(),
                    )),
                    policy: (&p.spec.response).into(),
                },
                None => Settings::Missing(Done::new(
                    Outcome::Recorded,
                    Some(REASON_PROFILE_NOT_FOUND),
                    format!(
                        "BehaviorProfile {} does not exist; recorded without a response",
                        v.spec.profile.as_deref().unwrap_or("(none)")
                    ),
                )),
            }
        }
        RuleSource::Policy => {
            let name = v.spec.policy.as_deref().unwrap_or_default();
            let policy = if name.is_empty() {
                None
            } else {
                Api::<ClusterBehaviorPolicy>::all(ctx.client.clone())
                    .get_opt(name)
                    .await?
            };
            match policy {
                Some(p) => Settings::Respond {
                    action: v.spec.action,
                    mode: None,
                    policy: p.response_policy(v.spec.action),
                },
                None => Settings::Missing(Done::new(
                    Outcome::Recorded,
                    Some(REASON_POLICY_NOT_FOUND),
                    format!("ClusterBehaviorPolicy {name:?} does not exist; recorded without a response"),
                )),
            }
        }
    })
}

/// Whether a pod counts among its owner's ready replicas: Ready, still running, and not on
/// its way out. A pod with a deletion timestamp (evicted, or deleted) still reports Ready
/// while it shuts down, but its controller has stopped counting it.
pub fn counts_as_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pods that make up an owner's ready count: `(pod uid, counts as ready)` for every pod
/// the owner controls.
pub type OwnerPods = Vec<(String, bool)>;

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// The UID and label selector of the owner `name` of kind `K`, if it exists.
async fn owner_selector<K>(
    client: &Client,
    ns: &str,
    name: &str,
    selector: impl FnOnce(K) -> Option<LabelSelector>,
) -> Result<Option<(String, LabelSelector)>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let Some(owner) = Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    let Some(uid) = owner.meta().uid.clone() else {
        return Ok(None);
    };
    Ok(selector(owner).map(|s| (uid, s)))
}

/// The pod's top-level workload as the API says: its controller, or for a ReplicaSet or
/// Job that controller's own (a Deployment, a CronJob) when it has one; the pod itself
/// when it has no controller. The same resolution the agent makes when it names workloads.
async fn owner_of(client: &Client, ns: &str, pod: &Pod) -> Result<WorkloadRef> {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    else {
        return Ok(WorkloadRef {
            kind: "Pod".into(),
            name: pod.name_any(),
        });
    };
    let parent = match owner.kind.as_str() {
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await?
            .map(|rs| rs.metadata),
        "Job" => Api::<Job>::namespaced(client.clone(), ns)
            .get_opt(&owner.name)
            .await?
            .map(|job| job.metadata),
        _ => None,
    }
    .and_then(|meta| {
        meta.owner_references?
            .into_iter()
            .find(|r| r.controller == Some(true))
    });
    Ok(match parent {
        Some(p) => WorkloadRef {
            kind: p.kind,
            name: p.name,
        },
        None => WorkloadRef {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        },
    })
}

/// The pods of the pod's top-level owner and whether each is ready, read from the API now;
/// `None` when the owner is gone or of a kind without ready replicas.
///
/// The count is taken from the pods rather than from the owner's status, which lags an
/// eviction by a few seconds: an evicted pod is out of the count from the moment its
/// deletion timestamp is set (and this leader's ledger covers the moment before), and its
/// replacement is in the count as soon as it is Ready. Pods are matched to the owner by
/// controller reference UID (through its ReplicaSets for a Deployment), never by name, so a
/// workload deleted and created again under the same name is a new owner with new pods.
async fn owner_pods(client: &Client, ns: &str, w: &WorkloadRef) -> Result<Option<OwnerPods>> {
    let c = client;
    let owner = match w.kind.as_str() {
        "Deployment" => {
            owner_selector(c, ns, &w.name, |d: Deployment| d.spec.map(|s| s.selector)).await?
        }
        "StatefulSet" => {
            owner_selector(c, ns, &w.name, |d: StatefulSet| d.spec.map(|s| s.selector)).await?
        }
        "DaemonSet" => {
            owner_selector(c, ns, &w.name, |d: DaemonSet| d.spec.map(|s| s.selector)).await?
        }
        "ReplicaSet" => {
            owner_selector(c, ns, &w.name, |d: ReplicaSet| d.spec.map(|s| s.selector)).await?
        }
        "Job" => owner_selector(c, ns, &w.name, |d: Job| d.spec.and_then(|s| s.selector)).await?,
        _ => None,
    };
    let Some((owner_uid, selector)) = owner else {
        return Ok(None);
    };
    let selector = match Selector::try_from(selector) {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, owner = %w.name, "the owner's label selector cannot be read; its ready replicas are unknown");
            return Ok(None);
        }
    };
    let params = ListParams::default().labels_from(&selector);
    // A Deployment controls its pods through its ReplicaSets (every revision counts: its
    // ready replicas are theirs summed).
    let controllers: HashSet<String> = if w.kind == "Deployment" {
        Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .list(&params)
            .await?
            .items
            .into_iter()
            .filter(|rs| controller_uid(&rs.metadata) == Some(owner_uid.as_str()))
            .filter_map(|rs| rs.metadata.uid)
            .collect()
    } else {
        HashSet::from([owner_uid])
    };
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|p| controller_uid(&p.metadata).is_some_and(|u| controllers.contains(u)))
        .filter_map(|p| {
            let ready = counts_as_ready(&p);
            Some((p.metadata.uid?, ready))
        })
        .collect();
    Ok(Some(pods))
}

/// Ready replicas among `pods`, leaving out those `evicting` says are being evicted.
pub fn ready_replicas(pods: &[(String, bool)], evicting: impl Fn(&str) -> bool) -> u32 {
    let n = pods
        .iter()
        .filter(|(uid, ready)| *ready && !evicting(uid))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decides and carries out the response.
async fn respond(v: &BehaviorViolation, ctx: &Context, ns: &str, now: Timestamp) -> Result<Done> {
    let (action, mode, policy) = match settings_of(v, ctx, ns).await? {
        Settings::Respond {
            action,
            mode,
            policy,
        } => (action, mode, policy),
        Settings::Missing(done) => return Ok(done),
    };
    if action == ResponseAction::None {
        return Ok(Done::new(
            Outcome::Recorded,
            Some(REASON_ACTION_NONE),
            "the rule asks for no response; recorded",
        ));
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod = pods
        .get_opt(&v.spec.pod)
        .await?
        .filter(|p| p.metadata.uid.as_deref() == Some(v.spec.pod_uid.as_str()));
    let Some(pod) = pod else {
        return Ok(Done::new(
            Outcome::Recorded,
            Some(REASON_POD_GONE),
            format!(
                "pod {} (uid {}) is gone; nothing to tag or evict",
                v.spec.pod, v.spec.pod_uid
            ),
        ));
    };
    // The record comes from one node's agent: its node, workload and profile are checked
    // against the API, and only what the API says is used from here on.
    let owner = owner_of(&ctx.client, ns, &pod).await?;
    let profile_target = match (v.spec.source, v.spec.profile.as_deref()) {
        (RuleSource::Profile, Some(profile)) => ctx
            .profiles
            .get(&ObjectRef::new(profile).within(ns))
            .map(|p| {
                (
                    format!("{:?}", p.spec.target_ref.kind),
                    p.spec.target_ref.name.clone(),
                )
            }),
        _ => None,
    };
    let claimed = Claimed {
        node: &v.spec.node,
        workload: WorkloadName {
            kind: &v.spec.workload.kind,
            name: &v.spec.workload.name,
        },
    };
    let actual = Actual {
        node: pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        workload: WorkloadName {
            kind: &owner.kind,
            name: &owner.name,
        },
        profile_target: profile_target
            .as_ref()
            .map(|(kind, name)| WorkloadName { kind, name }),
    };
    if let Err(rejection) = check_record(&claimed, &actual) {
        warn!(reason = rejection.reason(), %rejection, "violation record rejected");
        return Ok(Done::new(
            Outcome::Rejected,
            Some(rejection.reason()),
            rejection.to_string(),
        ));
    }
    let has_controller_owner = pod
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true));
    let owner_pods = if action == ResponseAction::Kill {
        owner_pods(&ctx.client, ns, &owner).await?
    } else {
        None
    };

    let scope = kill_scope(v);
    let recorded: Vec<(String, Timestamp)> = ctx
        .violations
        .state_filter(|o| kill_scope(o) == scope)
        .iter()
        .filter_map(|o| {
            let s = o.status.as_ref()?;
            (s.outcome == Outcome::Evicted).then_some(())?;
            Some((o.uid()?, from_time(s.decided_at.as_ref()?)))
        })
        .collect();
    let uid = v.uid().unwrap_or_else(|| v.name_any());
    let protected = &ctx.settings.protected_namespaces;
    let decision =
        ctx.evictions
            .decide(&scope, &uid, &v.spec.pod_uid, &recorded, now, |evictions| {
                let facts = PodFacts {
                    has_controller_owner,
                    namespace: ns,
                    protected_namespaces: protected,
                    kills_last_hour: evictions.last_hour,
                    owner_ready_replicas: owner_pods
                        .as_deref()
                        .map(|pods| ready_replicas(pods, |pod| evictions.evicting(pod))),
                    operator_dry_run: ctx.settings.dry_run,
                };
                let d =
                    model::response::decide(action.into(), mode.map(Into::into), &policy, &facts);
                let reserve = d == Decision::Evict;
                (d, reserve)
            });

    let summary = summary(v);
    Ok(match decision {
        Decision::Nothing => Done::new(
            Outcome::Recorded,
            Some(REASON_ACTION_NONE),
            "the rule asks for no response; recorded",
        ),
        Decision::DryRun(planned) => {
            let (reason, what) = match planned {
                Planned::Tag => (REASON_WOULD_TAG, "tagged"),
                Planned::Evict => (REASON_WOULD_EVICT, "evicted"),
            };
            Done::new(
                Outcome::DryRun,
                Some(reason),
                format!("dry run: the pod would have been {what}; nothing was changed"),
            )
        }
        Decision::Tag => {
            tag(ctx, &pods, &pod, v, &summary, "Tag", &summary).await?;
            Done::new(
                Outcome::Tagged,
                None,
                format!("pod {} labelled, annotated and given an Event", v.spec.pod),
            )
        }
        Decision::Refused(refusal) => {
            let note = format!("{summary}; eviction refused: {refusal}");
            tag(ctx, &pods, &pod, v, &summary, "Tag", &note).await?;
            Done::new(
                Outcome::Refused,
                Some(refusal.reason()),
                format!("eviction refused: {refusal}; the pod was tagged instead"),
            )
        }
        Decision::Evict => match evict(ctx, &pods, &pod, v, &summary).await {
            Ok(done) => {
                if done.outcome != Outcome::Evicted {
                    ctx.evictions.release(&uid);
                }
                done
            }
            Err(e) => {
                ctx.evictions.release(&uid);
                return Err(e);
            }
        },
    })
}

/// Labels and annotates the pod and posts an Event on it.
async fn tag(
    ctx: &Context,
    pods: &Api<Pod>,
    pod: &Pod,
    v: &BehaviorViolation,
    summary: &str,
    action: &str,
    note: &str,
) -> Result<()> {
    let patch = json!({
        "metadata": {
            "labels": { VIOLATION_LABEL: rule_label_value(&v.spec.rule) },
            "annotations": { VIOLATION_SUMMARY_ANNOTATION: summary },
        }
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    pods.patch(&v.spec.pod, &pp, &Patch::Merge(&patch)).await?;
    let event = Event {
        type_: EventType::Warning,
        reason: "BehaviorViolation".into(),
        note: Some(note.chars().take(MAX_SUMMARY).collect()),
        action: action.into(),
        secondary: None,
    };
    // Events are for people reading `kubectl describe`; the record is the BehaviorViolation.
    // A failed Event does not fail the response.
    if let Err(error) = ctx.recorder.publish(&event, &pod.object_ref(&())).await {
        warn!(%error, "could not post the Event on the pod");
    }
    Ok(())
}

/// Tags the pod, then evicts it through the Eviction API.
async fn evict(
    ctx: &Context,
    pods: &Api<Pod>,
    pod: &Pod,
    v: &BehaviorViolation,
    summary: &str,
) -> Result<Done> {
    let note = format!("{summary}; evicting the pod so that its controller replaces it");
    tag(ctx, pods, pod, v, summary, "Evict", &note).await?;
    // The Eviction is built here rather than by `Api::evict`, whose body names the field
    // `delete_options` where the API expects `deleteOptions`, so the precondition would be
    // dropped without a word.
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(v.spec.pod.clone()),
            namespace: pod.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            // Never the replacement that took its name (StatefulSets reuse names).
            preconditions: Some(Preconditions {
                uid: Some(v.spec.pod_uid.clone()),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match pods
        .create_subresource::<_, kube::core::Status>("eviction", &v.spec.pod, &pp, &eviction)
        .await
    {
        Ok(_) => Ok(Done::new(
            Outcome::Evicted,
            None,
            format!(
                "pod {} evicted through the Eviction API; its controller replaces it",
                v.spec.pod
            ),
        )),
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(Done {
            retry: true,
            ..Done::new(
                Outcome::Refused,
                Some(REASON_DISRUPTION_BUDGET),
                format!(
                    "eviction refused by a PodDisruptionBudget ({}); the pod was tagged, and eviction is retried with backoff",
                    s.message
                ),
            )
        }),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Done::new(
            Outcome::Recorded,
            Some(REASON_POD_GONE),
            format!("pod {} was gone before it could be evicted", v.spec.pod),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes the outcome to the record's status by server-side apply.
async fn write_outcome(
    ctx: &Context,
    ns: &str,
    name: &str,
    done: &Done,
    now: Timestamp,
) -> Result<()> {
    let status = BehaviorViolationStatus {
        outcome: done.outcome,
        reason: done.reason.clone(),
        message: Some(done.message.clone()),
        decided_at: Some(to_time(now)),
    };
    let patch = json!({
        "apiVersion": "herdwatch.dev/v1alpha1",
        "kind": "BehaviorViolation",
        "metadata": { "name": name },
        "status": status,
    });
    let api: Api<BehaviorViolation> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Adds the answered violation to its profile's counts: read, count, apply the whole status
/// with the resourceVersion read, again on conflict.
async fn count_on_profile(
    ctx: &Context,
    ns: &str,
    profile: &str,
    v: &BehaviorViolation,
    outcome: Outcome,
    now: Timestamp,
) -> Result<()> {
    let api: Api<BehaviorProfile> = Api::namespaced(ctx.client.clone(), ns);
    for _ in 0..WRITE_ATTEMPTS {
        let Some(p) = api.get_opt(profile).await? else {
            return Ok(());
        };
        let mut status = p.status.clone().unwrap_or_default();
        count_violation(&mut status.violations, v, outcome, now);
        let patch = json!({
            "apiVersion": "herdwatch.dev/v1alpha1",
            "kind": "BehaviorProfile",
            "metadata": { "name": profile, "resourceVersion": p.metadata.resource_version },
            "status": status,
        });
        match api
            .patch_status(
                profile,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if api_code(&e) == Some(409) => continue,
            Err(e) if api_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        object: format!("BehaviorProfile {ns}/{profile} status"),
        attempts: WRITE_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unanswered_records_and_budget_refusals_are_acted_on() {
        let s = |outcome, reason: Option<&str>| BehaviorViolationStatus {
            outcome,
            reason: reason.map(Into::into),
            ..BehaviorViolationStatus::default()
        };
        assert!(needs_response(None));
        assert!(needs_response(Some(&s(Outcome::Pending, None))));
        assert!(needs_response(Some(&s(
            Outcome::Failed,
            Some(REASON_FAILED)
        ))));
        assert!(needs_response(Some(&s(
            Outcome::Refused,
            Some(REASON_DISRUPTION_BUDGET)
        ))));
        assert!(!needs_response(Some(&s(
            Outcome::Refused,
            Some("KillLimitReached")
        ))));
        for done in [
            Outcome::Recorded,
            Outcome::Tagged,
            Outcome::Evicted,
            Outcome::DryRun,
        ] {
            assert!(!needs_response(Some(&s(done, None))), "{done:?}");
        }
    }

    #[test]
    fn the_milder_action_wins_and_learning_profiles_respond_as_learn() {
        use ResponseAction::*;
        assert_eq!(milder(Kill, Tag), Tag);
        assert_eq!(milder(Tag, Kill), Tag);
        assert_eq!(milder(Kill, Kill), Kill);
        assert_eq!(milder(None, Kill), None);
        assert_eq!(mode_of_phase(Phase::Learning), Mode::Learn);
        assert_eq!(mode_of_phase(Phase::Enforcing), Mode::Enforce);
    }

    #[test]
    fn counts_keep_an_hour_of_evictions() {
        let v = herdwatch_api::examples::violation();
        let mut s = ViolationSummary {
            recent_evictions: vec![to_time(Timestamp(0)), to_time(Timestamp(9_000))],
            ..ViolationSummary::default()
        };
        count_violation(&mut s, &v, Outcome::Evicted, Timestamp(10_000));
        count_violation(&mut s, &v, Outcome::Refused, Timestamp(10_001));
        assert_eq!((s.total, s.evicted, s.refused, s.tagged), (2, 1, 1, 0));
        assert_eq!(
            s.recent_evictions,
            vec![to_time(Timestamp(9_000)), to_time(Timestamp(10_000))]
        );
        assert_eq!(s.last.as_ref().unwrap().record, v.name_any());
    }

    #[test]
    fn summaries_say_what_happened_and_where_to_look() {
        let v = herdwatch_api::examples::violation();
        let s = summary(&v);
        assert!(
            s.starts_with(&format!("{}: {}", v.spec.rule, v.spec.subject)),
            "{s}"
        );
        assert!(
            s.contains(&format!("kubectl get bv {}", v.name_any())),
            "{s}"
        );
        let mut long = v.clone();
        long.spec.subject = "é".repeat(2000);
        assert!(summary(&long).len() <= MAX_SUMMARY);
    }

    #[test]
    fn groups_and_scopes() {
        let v = herdwatch_api::examples::violation();
        let mut p = v.clone();
        p.spec.source = RuleSource::Policy;
        p.spec.policy = Some("baseline".into());
        assert!(retention_group(&v).starts_with("profile/"));
        assert_eq!(kill_scope(&p), "policy/baseline");
        assert_eq!(
            retention_group(&p),
            format!("policy/{}/baseline", p.namespace().unwrap())
        );
        assert_ne!(kill_scope(&v), kill_scope(&p));
    }
}
