//! The watches that keep the [`EvalStore`] current: BehaviorProfiles in every namespace,
//! ClusterBehaviorPolicies, and the labels of namespaces (for policies' namespace
//! selectors; a metadata-only watch).
//!
//! Each runs a kube reflector with backoff, and after every change (not during the initial
//! list: once at its end) compiles the reflector's state into its part of the snapshot.
//! Compiling reuses every profile and policy whose resourceVersion did not change, so a
//! status write of one profile rebuilds that profile's index only.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use herdwatch_api::{BehaviorProfile, ClusterBehaviorPolicy};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use prometheus::IntCounterVec;
use tracing::{info, instrument, warn};

use super::{compile_policies, compile_profiles, EvalStore, Skipped};

/// Runs one reflector, calling `rebuild` with the store after each change.
async fn reflect<K>(
    api: Api<K>,
    what: &'static str,
    errors: IntCounterVec,
    mut rebuild: impl FnMut(&Store<K>),
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut synced = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                rebuild(&reader);
                if !synced {
                    synced = true;
                    info!(what, objects = reader.len(), "synced");
                }
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => rebuild(&reader),
            Err(error) => {
                warn!(%error, what, "watch failed; retrying");
                errors.with_label_values(&[what]).inc();
            }
        }
    }
}

fn report(skipped: &[Skipped], what: &'static str, invalid: &IntCounterVec) {
    for s in skipped {
        warn!(namespace = ?s.namespace, name = %s.name, reason = %s.reason, "{what} left out of evaluation");
        invalid.with_label_values(&[what]).inc();
    }
}

/// Keeps the judging profiles of the snapshot current.
#[instrument(skip_all)]
pub async fn watch_profiles(
    client: Client,
    store: Arc<EvalStore>,
    errors: IntCounterVec,
    invalid: IntCounterVec,
) {
    let mut last_skipped: Vec<Skipped> = Vec::new();
    reflect(
        Api::<BehaviorProfile>::all(client),
        "behaviorprofiles",
        errors,
        |reader| {
            let previous = store.snapshot().profiles.clone();
            let (profiles, skipped) = compile_profiles(&reader.state(), &previous);
            // Reported once per problem, not on every unrelated change.
            let fresh: Vec<Skipped> = skipped
                .iter()
                .filter(|s| !last_skipped.contains(s))
                .cloned()
                .collect();
            report(&fresh, "behaviorprofiles", &invalid);
            last_skipped = skipped;
            // A Learning profile's status writes change nothing here: keep the snapshot (and
            // the event loop's per-container answers).
            let same = profiles.len() == previous.len()
                && profiles
                    .iter()
                    .all(|(k, v)| previous.get(k).is_some_and(|old| Arc::ptr_eq(old, v)));
            if !same {
                store.update(|s| s.profiles = profiles);
            }
        },
    )
    .await;
}

/// Keeps the policies of the snapshot current.
#[instrument(skip_all)]
pub async fn watch_policies(
    client: Client,
    store: Arc<EvalStore>,
    errors: IntCounterVec,
    invalid: IntCounterVec,
) {
    let mut last_skipped: Vec<Skipped> = Vec::new();
    reflect(
        Api::<ClusterBehaviorPolicy>::all(client),
        "clusterbehaviorpolicies",
        errors,
        |reader| {
            let previous = store.snapshot().policies.clone();
            let (policies, skipped) = compile_policies(&reader.state(), &previous);
            let fresh: Vec<Skipped> = skipped
                .iter()
                .filter(|s| !last_skipped.contains(s))
                .cloned()
                .collect();
            report(&fresh, "clusterbehaviorpolicies", &invalid);
            last_skipped = skipped;
            let same = policies.len() == previous.len()
                && policies
                    .iter()
                    .zip(&previous)
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                store.update(|s| s.policies = policies);
            }
        },
    )
    .await;
}

/// Keeps the namespaces' labels of the snapshot current.
#[instrument(skip_all)]
pub async fn watch_namespaces(client: Client, store: Arc<EvalStore>, errors: IntCounterVec) {
    let (reader, writer) = reflector::store();
    // Labels are all that is read: a metadata-only watch.
    let stream = watcher::watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer);
    futures::pin_mut!(stream);
    let rebuild = |reader: &Store<_>| {
        let labels: HashMap<String, _> = reader
            .state()
            .iter()
            .map(|ns: &Arc<PartialObjectMeta<Namespace>>| (ns.name_any(), ns.labels().clone()))
            .collect();
        if store.snapshot().namespaces != labels {
            store.update(|s| s.namespaces = labels);
        }
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => rebuild(&reader),
            Err(error) => {
                warn!(%error, "namespace watch failed; retrying");
                errors.with_label_values(&["namespaces"]).inc();
            }
        }
    }
}
