//! The node-local pod watch that fills a [`PodStore`].
//!
//! One watch of the pods scheduled to this node (`fieldSelector=spec.nodeName=<node>`),
//! restarted with backoff by kube's watcher. Each pod is stripped (managed fields,
//! annotations) and reduced to a [`PodMeta`] at once; the full object is never stored.
//! A pod owned by a ReplicaSet or Job needs that owner's controller to name its workload:
//! one metadata GET per owner, cached, so a Deployment's hundred pods cost one request.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tracing::{debug, info, instrument, warn};

use super::{
    controller_of, needs_parent, pod_meta, pod_owner, strip_pod, workload_of, OwnerRef, PodMeta,
    PodStore,
};

/// Owners resolved so far; cleared when full (owners of a node's pods number in the tens).
const MAX_CACHED_OWNERS: usize = 4_096;

/// Finds the controller of a pod's ReplicaSet or Job.
struct OwnerResolver {
    client: Client,
    cache: HashMap<(String, OwnerRef), Option<OwnerRef>>,
}

impl OwnerResolver {
    async fn parent(
        &mut self,
        namespace: &str,
        owner: &OwnerRef,
        store: &PodStore,
    ) -> Option<OwnerRef> {
        if !needs_parent(owner) {
            return None;
        }
        let key = (namespace.to_owned(), owner.clone());
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let fetched = match owner.kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                .get_metadata_opt(&owner.name)
                .await
                .map(|m| m.map(|m| m.metadata)),
            "Job" => Api::<Job>::namespaced(self.client.clone(), namespace)
                .get_metadata_opt(&owner.name)
                .await
                .map(|m| m.map(|m| m.metadata)),
            _ => return None,
        };
        match fetched {
            Ok(meta) => {
                let parent =
                    meta.and_then(|m| m.owner_references.as_deref().and_then(controller_of));
                if self.cache.len() >= MAX_CACHED_OWNERS {
                    self.cache.clear();
                }
                self.cache.insert(key, parent.clone());
                parent
            }
            Err(error) => {
                // Not cached: the next pod of this owner tries again.
                warn!(%error, namespace, kind = %owner.kind, name = %owner.name, "cannot read the pod's owner; attributing to it directly");
                store.owner_lookup_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn pod_meta(&mut self, pod: &Pod, store: &PodStore) -> Option<PodMeta> {
        let owner = pod_owner(pod);
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let parent = match &owner {
            Some(o) => self.parent(namespace, o, store).await,
            None => None,
        };
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        pod_meta(pod, workload_of(name, owner.as_ref(), parent.as_ref()))
    }
}

/// Watches the pods of `node_name` into `store` until the task is dropped. Errors are
/// logged and counted; the watcher retries with backoff.
#[instrument(skip_all, fields(node = %node_name))]
pub async fn watch_pods(client: Client, node_name: String, store: Arc<PodStore>) {
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut owners = OwnerResolver {
        client,
        cache: HashMap::new(),
    };
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut initial: Vec<PodMeta> = Vec::new();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event.modify(strip_pod),
            Err(error) => {
                warn!(%error, "pod watch failed; retrying");
                store.watch_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match event {
            Event::Init => initial.clear(),
            Event::InitApply(pod) => initial.extend(owners.pod_meta(&pod, &store).await),
            Event::InitDone => {
                let first = !store.synced();
                let pods = std::mem::take(&mut initial);
                let n = pods.len();
                store.replace_all(pods);
                if first {
                    info!(pods = n, "pod watch synced");
                } else {
                    debug!(pods = n, "pod watch re-listed");
                }
            }
            Event::Apply(pod) => {
                if let Some(meta) = owners.pod_meta(&pod, &store).await {
                    store.upsert(meta);
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    store.remove(uid);
                }
            }
        }
    }
}
