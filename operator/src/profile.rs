//! The profile reconciler: merges a workload's BehaviorObservations into its BehaviorProfile
//! and moves the profile through its phases.
//!
//! # How observations reach a profile
//!
//! Agents apply one BehaviorObservation per (workload, container, image digest, node), each
//! holding everything that agent accumulated. The controller watches them and maps each one
//! to the profiles in its namespace whose `targetRef` and `container` match its
//! `spec.workload` ([`profiles_for_observation`]). A reconcile then lists that workload
//! container's observations with a field selector (the CRD makes `spec.workload.*`
//! selectable), converts the profile and the observations to the model, and merges them all.
//! Merging is idempotent, so merging every observation on every reconcile is correct, and a
//! missed watch event or an operator restart only delays a merge.
//!
//! # Writes
//!
//! `spec.allowed` is an atomic list that users may edit by hand, so it is never applied
//! blindly: the reconcile reads the profile, merges into what it read, and replaces the
//! object with the resourceVersion it read. A 409 means someone (a user, usually) wrote in
//! between: the profile is read again and the merge redone, up to [`WRITE_ATTEMPTS`] times,
//! after which the reconcile fails and is retried with backoff. Nothing is dropped.
//!
//! The status (phase, conditions, learning state, revisions, image sections) is written by
//! server-side apply with the field manager [`crate::FIELD_MANAGER`], also carrying the
//! resourceVersion it was computed from, because the violation reconciler updates the
//! violation counts in the same status.
//!
//! The controller reacts to spec changes only (a generation predicate), to observations, and
//! to its own requeues: at the model's next check time while learning waits on time, and
//! every [`RESYNC`] otherwise, which is when a vanished target workload is noticed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herdwatch_api::common::{Behavior, Phase};
use herdwatch_api::conditions;
use herdwatch_api::convert::{from_time, to_time};
use herdwatch_api::observation::workload_field_selector;
use herdwatch_api::profile::{TargetKind, TargetRef};
use herdwatch_api::{BehaviorObservation, BehaviorProfile, BehaviorProfileStatus};
use herdwatch_model as model;
use herdwatch_model::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::context::Context;
use crate::{api_code, Error, Result, CREATED_BY_LABEL, CREATED_BY_OPERATOR, FIELD_MANAGER};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "profile";
/// Longest wait between reconciles of a profile.
pub const RESYNC: Duration = Duration::from_secs(600);
/// Attempts at a conflicting write within one reconcile.
pub const WRITE_ATTEMPTS: u32 = 5;

/// The profiles (in the observation's namespace) that an observation feeds.
pub fn profiles_for_observation(
    profiles: &Store<BehaviorProfile>,
    obs: &BehaviorObservation,
) -> Vec<ObjectRef<BehaviorProfile>> {
    let ns = obs.namespace();
    let w = &obs.spec.workload;
    profiles
        .state_filter(|p| {
            p.namespace() == ns
                && p.spec.target_ref.kind.as_str() == w.kind
                && p.spec.target_ref.name == w.name
                && p.spec.container == w.container
        })
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Profiles per phase (a profile without status is Learning).
pub fn phase_counts(profiles: &Store<BehaviorProfile>) -> [(Phase, i64); 3] {
    let mut counts = [
        (Phase::Learning, 0),
        (Phase::Monitoring, 0),
        (Phase::Enforcing, 0),
    ];
    for p in profiles.state() {
        let phase = p.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        if let Some(c) = counts.iter_mut().find(|(ph, _)| *ph == phase) {
            c.1 += 1;
        }
    }
    counts
}

/// Whether the target workload exists.
async fn target_exists(client: &Client, ns: &str, target: &TargetRef) -> Result<bool> {
    let name = &target.name;
    let found = match target.kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .is_some(),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .is_some(),
        TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .is_some(),
        TargetKind::Job => Api::<Job>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .is_some(),
        TargetKind::CronJob => Api::<CronJob>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .is_some(),
    };
    Ok(found)
}

fn object_key(p: &BehaviorProfile) -> String {
    format!(
        "{CONTROLLER}/{}/{}",
        p.namespace().unwrap_or_default(),
        p.name_any()
    )
}

/// Reconciles one profile (see the module documentation).
#[instrument(skip(obj, ctx), fields(namespace = %obj.namespace().unwrap_or_default(), profile = %obj.name_any()))]
pub async fn reconcile(obj: Arc<BehaviorProfile>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_profile(&obj, &ctx).await;
    ctx.metrics
        .reconciled(CONTROLLER, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&object_key(&obj));
    }
    result
}

/// Counts the failure and retries the profile with exponential backoff.
pub fn error_policy(obj: Arc<BehaviorProfile>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&object_key(&obj));
    warn!(profile = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "profile reconcile failed");
    Action::requeue(delay)
}

enum Pass {
    /// Done; come back per the action.
    Done(Action),
    /// A write conflicted: read again and redo.
    Conflict,
}

async fn reconcile_profile(obj: &BehaviorProfile, ctx: &Context) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = obj.name_any();
    let api: Api<BehaviorProfile> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = obj.clone();
    for attempt in 1..=WRITE_ATTEMPTS {
        match sync(&api, ctx, &current, &ns).await? {
            Pass::Done(action) => return Ok(action),
            Pass::Conflict if attempt < WRITE_ATTEMPTS => {
                debug!(attempt, "profile changed while merging; reading it again");
                match api.get_opt(&name).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(Action::await_change()),
                }
            }
            Pass::Conflict => {}
        }
    }
    Err(Error::Conflict {
        object: format!("BehaviorProfile {ns}/{name}"),
        attempts: WRITE_ATTEMPTS,
    })
}

/// When the TargetFound condition last turned False, if it is False.
fn target_missing_since(status: Option<&BehaviorProfileStatus>) -> Option<Timestamp> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::TARGET_FOUND && c.status == "False")
        .map(|c| from_time(&c.last_transition_time))
}

fn created_by_operator(p: &BehaviorProfile) -> bool {
    p.labels().get(CREATED_BY_LABEL).map(String::as_str) == Some(CREATED_BY_OPERATOR)
}

/// One pass: merge, evaluate, write. Returns `Conflict` when a write lost a race.
async fn sync(
    api: &Api<BehaviorProfile>,
    ctx: &Context,
    profile: &BehaviorProfile,
    ns: &str,
) -> Result<Pass> {
    let now = ctx.now();
    let name = profile.name_any();
    let spec = &profile.spec;
    let target = &spec.target_ref;

    let found = target_exists(&ctx.client, ns, target).await?;
    let mut orphan_wait = None;
    if !found {
        let since = target_missing_since(profile.status.as_ref()).unwrap_or(now);
        if created_by_operator(profile) {
            let retention = ctx.settings.orphan_profile_retention;
            if now.since(since) >= retention {
                info!(target = %target.name, "the workload has been gone for the orphan retention; deleting the profile it left");
                return match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(Pass::Done(Action::await_change())),
                    Err(e) if api_code(&e) == Some(404) => Ok(Pass::Done(Action::await_change())),
                    Err(e) => Err(e.into()),
                };
            }
            orphan_wait = Some((since + retention).since(now));
        }
    }

    let obs_api = Api::<BehaviorObservation>::namespaced(ctx.client.clone(), ns);
    let selector = workload_field_selector(target.kind.as_str(), &target.name, &spec.container);
    // From the API server's watch cache, at least as new as every observation the watch
    // delivered (see `SeenVersion`); a consistent read until the watch delivered one.
    let fresh = match ctx.observations_seen.newest() {
        Some(v) => ListParams::default()
            .at(&v)
            .matching(VersionMatch::NotOlderThan),
        None => ListParams::default(),
    };
    let observations = match obs_api.list(&fresh.clone().fields(&selector)).await {
        Ok(list) => list,
        // An older CRD without selectableFields: read the namespace's observations and
        // filter them here (below), which is slower but still right.
        Err(e) if api_code(&e) == Some(400) => {
            warn!(error = %e, "the BehaviorObservation CRD does not make spec.workload selectable; install the current CRDs");
            obs_api.list(&fresh).await?
        }
        Err(e) => return Err(e.into()),
    };
    let mut observed: Vec<(String, model::Observation)> = Vec::new();
    for o in &observations.items {
        match model::Observation::try_from(o) {
            // The field selector already chose them; checking again keeps a server that
            // ignored it from merging another workload's behaviour.
            Ok(m)
                if m.workload.owner_kind == target.kind.as_str()
                    && m.workload.owner_name == target.name
                    && m.workload.container == spec.container =>
            {
                observed.push((o.name_any(), m));
            }
            Ok(_) => {}
            Err(error) => {
                warn!(observation = %o.name_any(), %error, "skipping an observation the model cannot read");
            }
        }
    }
    observed.sort_by(|a, b| a.0.cmp(&b.0));

    let mut merged = profile.to_model(now)?;
    let mut added = 0usize;
    for (_, o) in &observed {
        added += merged
            .merge_observation_within(o, now, ctx.settings.report_delay)
            .report
            .added
            .len();
    }
    let learning = model::LearningSpec::try_from(&spec.learning)?;
    let eval = model::evaluate(spec.mode.into(), &learning, &merged.learning, now);

    // Spec first, with the resourceVersion read: the status describes the spec it follows.
    let allowed = Behavior::from(&merged.behavior);
    let written = if allowed == spec.allowed {
        profile.clone()
    } else {
        let mut update = profile.clone();
        update.spec.allowed = allowed;
        update.status = None;
        update.metadata.managed_fields = None;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.replace(&name, &pp, &update).await {
            Ok(w) => {
                info!(
                    added,
                    revision = merged.revision,
                    "merged observations into the profile"
                );
                w
            }
            Err(e) if api_code(&e) == Some(409) => return Ok(Pass::Conflict),
            Err(e) if api_code(&e) == Some(404) => return Ok(Pass::Done(Action::await_change())),
            Err(e) => return Err(e.into()),
        }
    };

    let generation = written.metadata.generation;
    let t = to_time(now);
    let old = written.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.apply_model(&merged, Some(&eval));
    status.observed_generation = generation;
    let target_condition = if found {
        conditions::target_found(target.kind.as_str(), &target.name, generation, &t)
    } else {
        conditions::target_not_found(target.kind.as_str(), &target.name, generation, &t)
    };
    let updates = eval
        .conditions
        .iter()
        .chain(std::iter::once(&merged.bounds_condition()))
        .map(|c| conditions::from_model(c, generation, &t))
        .chain(std::iter::once(target_condition))
        .collect::<Vec<_>>();
    status.conditions = conditions::merge(&old.conditions, updates);

    if written.status.as_ref() != Some(&status) {
        let patch = json!({
            "apiVersion": "herdwatch.dev/v1alpha1",
            "kind": "BehaviorProfile",
            "metadata": {
                "name": name,
                "resourceVersion": written.metadata.resource_version,
            },
            "status": status,
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                let before = old.phase.unwrap_or_default();
                if before != eval.phase.into() {
                    info!(from = ?before, to = eval.phase.as_str(), "profile phase changed");
                }
            }
            Err(e) if api_code(&e) == Some(409) => return Ok(Pass::Conflict),
            Err(e) if api_code(&e) == Some(404) => return Ok(Pass::Done(Action::await_change())),
            Err(e) => return Err(e.into()),
        }
    }

    let mut wait = RESYNC;
    if let Some(next) = eval.next_check {
        wait = wait.min(next.since(now).max(Duration::from_secs(1)));
    }
    if let Some(o) = orphan_wait {
        wait = wait.min(o.max(Duration::from_secs(1)));
    }
    Ok(Pass::Done(Action::requeue(wait)))
}
