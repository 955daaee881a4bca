//! Profile creation: every Deployment, StatefulSet and DaemonSet in a namespace labelled
//! [`LEARN_LABEL`]`=`[`LEARN_ENABLED`] gets a BehaviorProfile per container.
//!
//! One controller per workload kind watches the workloads of every namespace, and also the
//! opted-in namespaces, so that labelling a namespace creates the profiles of the workloads
//! already in it. A reconcile checks the namespace label, looks for an existing profile of
//! each container (by `targetRef` and `container`, whatever its name, so a hand-written one
//! counts) and creates the missing ones. It only ever creates: a profile, once it exists,
//! belongs to its user and to the profile reconciler.
//!
//! # Ownership
//!
//! Created profiles carry no ownerReference to their workload, on purpose. A profile is days
//! of learning and the owner of the workload's violation records (the forensic record). With
//! an ownerReference, deleting and re-creating a Deployment (`helm uninstall` and install, a
//! migration, or someone covering their tracks) would delete all of that at once, and the
//! new workload would run unprotected while it learns again. Instead, a profile whose target
//! is gone says so in `TargetFound=False`, is reused if the workload comes back, and is
//! deleted by the profile reconciler once the workload has been gone for the orphan
//! retention (`--orphan-profile-retention`). Only profiles labelled
//! [`CREATED_BY_LABEL`]`=`[`CREATED_BY_OPERATOR`] are ever deleted that way.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use herdwatch_api::common::ResponseAction;
use herdwatch_api::profile::{EntryLimits, LearningConfig, ResponseConfig, TargetKind, TargetRef};
use herdwatch_api::{BehaviorProfile, BehaviorProfileSpec};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, instrument, warn};

use crate::args::ProfileDefaults;
use crate::context::Context;
use crate::names::{hashed_profile_name, readable_profile_name};
use crate::{
    api_code, Error, Result, CREATED_BY_LABEL, CREATED_BY_OPERATOR, FIELD_MANAGER, LEARN_ENABLED,
    LEARN_LABEL,
};

/// The label selector of opted-in namespaces.
pub fn learn_selector() -> String {
    format!("{LEARN_LABEL}={LEARN_ENABLED}")
}

/// A workload kind the operator creates profiles for.
pub trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind, as a profile's `targetRef` names it.
    const KIND: TargetKind;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// How many replicas the workload wants (DaemonSets: how many nodes it runs on).
    fn desired_replicas(&self) -> Option<i32>;
}

impl Workload for Deployment {
    const KIND: TargetKind = TargetKind::Deployment;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
    fn desired_replicas(&self) -> Option<i32> {
        self.spec.as_ref().map(|s| s.replicas.unwrap_or(1))
    }
}

impl Workload for StatefulSet {
    const KIND: TargetKind = TargetKind::StatefulSet;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
    fn desired_replicas(&self) -> Option<i32> {
        self.spec.as_ref().map(|s| s.replicas.unwrap_or(1))
    }
}

impl Workload for DaemonSet {
    const KIND: TargetKind = TargetKind::DaemonSet;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
    fn desired_replicas(&self) -> Option<i32> {
        self.status.as_ref().map(|s| s.desired_number_scheduled)
    }
}

/// The names of the workload's (regular) containers. Init and ephemeral containers are not
/// profiled: they are short-lived or debugging sessions, not the workload's behaviour.
pub fn containers<W: Workload>(w: &W) -> Vec<String> {
    w.template()
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// The spec of the profile the operator creates for a workload container. `minReplicas`
/// asks for two replicas where the workload runs two or more, and one where it runs one (a
/// single-replica workload could otherwise never complete learning).
pub fn new_profile_spec(
    kind: TargetKind,
    workload: &str,
    container: &str,
    desired_replicas: Option<i32>,
    defaults: &ProfileDefaults,
) -> BehaviorProfileSpec {
    let min_replicas = desired_replicas
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(2)
        .clamp(1, 2);
    BehaviorProfileSpec {
        target_ref: TargetRef {
            kind,
            name: workload.to_owned(),
        },
        container: container.to_owned(),
        mode: defaults.mode,
        learning: LearningConfig {
            min_duration: defaults.min_duration.clone(),
            stable_for: defaults.stable_for.clone(),
            min_replicas,
            auto_promote: true,
        },
        response: ResponseConfig {
            action: ResponseAction::Tag,
            ..ResponseConfig::default()
        },
        limits: EntryLimits::default(),
        allowed: Default::default(),
    }
}

fn targets(p: &BehaviorProfile, ns: &str, kind: TargetKind, name: &str, container: &str) -> bool {
    p.namespace().as_deref() == Some(ns)
        && p.spec.target_ref.kind == kind
        && p.spec.target_ref.name == name
        && p.spec.container == container
}

fn object_key<W: Workload>(w: &W) -> String {
    format!(
        "workload/{}/{}/{}",
        W::KIND.as_str(),
        w.namespace().unwrap_or_default(),
        w.name_any()
    )
}

/// Name of the controller of `W` in metrics.
pub fn controller_name<W: Workload>() -> &'static str {
    match W::KIND {
        TargetKind::Deployment => "deployment",
        TargetKind::StatefulSet => "statefulset",
        TargetKind::DaemonSet => "daemonset",
        TargetKind::Job => "job",
        TargetKind::CronJob => "cronjob",
    }
}

/// Maps an opted-in namespace to the workloads in it.
pub fn workloads_in<W: Workload>(store: &Store<W>, ns: &Namespace) -> Vec<ObjectRef<W>> {
    let name = ns.name_any();
    store
        .state_filter(|w| w.namespace().as_deref() == Some(name.as_str()))
        .iter()
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Creates the missing profiles of one workload, if its namespace is opted in.
#[instrument(skip(obj, ctx), fields(kind = W::KIND.as_str(), namespace = %obj.namespace().unwrap_or_default(), workload = %obj.name_any()))]
pub async fn reconcile<W: Workload>(obj: Arc<W>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = ensure_profiles(obj.as_ref(), &ctx).await;
    ctx.metrics
        .reconciled(controller_name::<W>(), result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.backoff.succeeded(&object_key(obj.as_ref()));
    }
    result
}

/// Counts the failure and retries with exponential backoff.
pub fn error_policy<W: Workload>(obj: Arc<W>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failed(controller_name::<W>(), error.metric_label());
    let delay = ctx.backoff.failed(&object_key(obj.as_ref()));
    warn!(kind = W::KIND.as_str(), workload = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(), %error, retry_in = ?delay, "creating profiles failed");
    Action::requeue(delay)
}

async fn ensure_profiles<W: Workload>(w: &W, ctx: &Context) -> Result<Action> {
    let ns = w
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = w.name_any();
    let opted_in = Api::<Namespace>::all(ctx.client.clone())
        .get_metadata_opt(&ns)
        .await?
        .is_some_and(|n| n.labels().get(LEARN_LABEL).map(String::as_str) == Some(LEARN_ENABLED));
    if !opted_in {
        return Ok(Action::await_change());
    }
    // The profile store must be complete, or an existing profile would look missing.
    let _ = ctx.profiles.wait_until_ready().await;
    for container in containers(w) {
        ensure_profile(ctx, &ns, W::KIND, &name, &container, w.desired_replicas()).await?;
    }
    Ok(Action::await_change())
}

async fn ensure_profile(
    ctx: &Context,
    ns: &str,
    kind: TargetKind,
    workload: &str,
    container: &str,
    desired_replicas: Option<i32>,
) -> Result<()> {
    if ctx
        .profiles
        .find(|p| targets(p, ns, kind, workload, container))
        .is_some()
    {
        return Ok(());
    }
    let api: Api<BehaviorProfile> = Api::namespaced(ctx.client.clone(), ns);
    let hashed = hashed_profile_name(kind, workload, container);
    let candidates = readable_profile_name(kind, workload, container)
        .into_iter()
        .chain([hashed.clone()]);
    for candidate in candidates {
        if let Some(existing) = ctx.profiles.get(&ObjectRef::new(&candidate).within(ns)) {
            if targets(&existing, ns, kind, workload, container) {
                return Ok(());
            }
            continue;
        }
        let spec = new_profile_spec(
            kind,
            workload,
            container,
            desired_replicas,
            &ctx.settings.defaults,
        );
        let mut profile = BehaviorProfile::new(&candidate, spec);
        profile.metadata = ObjectMeta {
            name: Some(candidate.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([(
                CREATED_BY_LABEL.to_owned(),
                CREATED_BY_OPERATOR.to_owned(),
            )])),
            ..ObjectMeta::default()
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &profile).await {
            Ok(_) => {
                info!(profile = %candidate, %container, "created a profile; learning starts");
                return Ok(());
            }
            Err(e) if api_code(&e) == Some(409) => {
                // Created meanwhile (by an earlier reconcile not yet in the store, or by
                // hand): ours if it targets this container, else try the next name.
                if let Some(existing) = api.get_opt(&candidate).await? {
                    if targets(&existing, ns, kind, workload, container) {
                        return Ok(());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        object: format!("BehaviorProfile {ns}/{hashed}"),
        attempts: 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdwatch_api::common::Mode;

    fn defaults() -> ProfileDefaults {
        ProfileDefaults {
            mode: Mode::Monitor,
            min_duration: "1m".into(),
            stable_for: "30s".into(),
        }
    }

    #[test]
    fn created_profiles_ask_for_replicas_the_workload_can_show() {
        let spec = |r| new_profile_spec(TargetKind::Deployment, "web", "nginx", r, &defaults());
        assert_eq!(spec(Some(1)).learning.min_replicas, 1);
        assert_eq!(spec(Some(0)).learning.min_replicas, 1);
        assert_eq!(spec(Some(5)).learning.min_replicas, 2);
        assert_eq!(spec(None).learning.min_replicas, 2);
        let s = spec(Some(3));
        assert_eq!(s.mode, Mode::Monitor);
        assert_eq!(s.learning.min_duration, "1m");
        assert_eq!(s.learning.stable_for, "30s");
        assert_eq!(s.response.action, ResponseAction::Tag);
        assert_eq!(
            s.target_ref,
            TargetRef {
                kind: TargetKind::Deployment,
                name: "web".into()
            }
        );
    }
}
