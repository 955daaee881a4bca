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

use super::{
    compile_policies, compile_profiles, CompiledPolicy, CompiledProfile, EvalSnapshot, EvalStore,
    ProfileKey, Skipped, SnapshotPart,
};

/// Runs one reflector, calling `rebuild` with the store after each change.
async fn reflect<K>(
    api: Api<K>,
    what: &'static str,
    errors: IntCounterVec,
    mut rebuild: impl FnMut(&Store<K>),
    on_synced: impl FnOnce(),
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
    let mut on_synced = Some(on_synced);
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                rebuild(&reader);
                if !synced {
                    synced = true;
                    info!(what, objects = reader.len(), "synced");
                    if let Some(synced) = on_synced.take() {
                        synced();
                    }
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

/// Compiles objects into a part of the snapshot, reusing what it can of the part as it
/// stands; says which objects it left out and why.
type Compile<K, C> = fn(&[Arc<K>], &C) -> (C, Vec<Skipped>);

/// One part of the snapshot that is compiled from one kind of object.
struct CompiledPart<K, C> {
    /// The resource's plural name, in logs and metric labels.
    what: &'static str,
    /// The part as it stands in a snapshot.
    current: fn(&EvalSnapshot) -> &C,
    /// Builds the part anew from the reflector's objects.
    compile: Compile<K, C>,
    /// Whether a compiled part reuses every entry of the previous one and adds none.
    unchanged: fn(&C, &C) -> bool,
    /// Puts a compiled part in the snapshot.
    replace: fn(&mut EvalSnapshot, C),
}

const PROFILES: CompiledPart<BehaviorProfile, HashMap<ProfileKey, Arc<CompiledProfile>>> =
    CompiledPart {
        what: "behaviorprofiles",
        current: |snapshot| &snapshot.profiles,
        compile: compile_profiles,
        unchanged: |profiles, previous| {
            profiles.len() == previous.len()
                && profiles
                    .iter()
                    .all(|(k, v)| previous.get(k).is_some_and(|old| Arc::ptr_eq(old, v)))
        },
        replace: |snapshot, profiles| snapshot.profiles = profiles,
    };

const POLICIES: CompiledPart<ClusterBehaviorPolicy, Vec<Arc<CompiledPolicy>>> = CompiledPart {
    what: "clusterbehaviorpolicies",
    current: |snapshot| &snapshot.policies,
    compile: |objects, previous| compile_policies(objects, previous),
    unchanged: |policies, previous| {
        policies.len() == previous.len()
            && policies
                .iter()
                .zip(previous)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    },
    replace: |snapshot, policies| snapshot.policies = policies,
};

/// The rebuild for [`reflect`] that keeps `part` of the snapshot compiled from the
/// reflector's objects, reporting each object left out once.
fn recompile<K, C>(
    store: Arc<EvalStore>,
    invalid: IntCounterVec,
    part: CompiledPart<K, C>,
) -> impl FnMut(&Store<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
    C: Clone,
{
    let mut last_skipped: Vec<Skipped> = Vec::new();
    move |reader: &Store<K>| {
        let previous = (part.current)(&store.snapshot()).clone();
        let (compiled, skipped) = (part.compile)(&reader.state(), &previous);
        // Reported once per problem, not on every unrelated change.
        let fresh: Vec<Skipped> = skipped
            .iter()
            .filter(|s| !last_skipped.contains(s))
            .cloned()
            .collect();
        report(&fresh, part.what, &invalid);
        last_skipped = skipped;
        // Nothing to judge differently (a Learning profile's status write, say): keep the
        // snapshot, and with it the event loop's per-container answers.
        if !(part.unchanged)(&compiled, &previous) {
            store.update(|s| (part.replace)(s, compiled));
        }
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
    let rebuild = recompile(store.clone(), invalid, PROFILES);
    let synced = move || store.mark_synced(SnapshotPart::Profiles);
    reflect(Api::all(client), PROFILES.what, errors, rebuild, synced).await;
}

/// Keeps the policies of the snapshot current.
#[instrument(skip_all)]
pub async fn watch_policies(
    client: Client,
    store: Arc<EvalStore>,
    errors: IntCounterVec,
    invalid: IntCounterVec,
) {
    let rebuild = recompile(store.clone(), invalid, POLICIES);
    let synced = move || store.mark_synced(SnapshotPart::Policies);
    reflect(Api::all(client), POLICIES.what, errors, rebuild, synced).await;
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
            Ok(Event::InitDone) => {
                rebuild(&reader);
                store.mark_synced(SnapshotPart::Namespaces);
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => rebuild(&reader),
            Err(error) => {
                warn!(%error, "namespace watch failed; retrying");
                errors.with_label_values(&["namespaces"]).inc();
            }
        }
    }
}
