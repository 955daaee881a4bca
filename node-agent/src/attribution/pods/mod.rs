//! Pod metadata of this node: which pod, container, workload and image digest a container
//! id belongs to.
//!
//! [`watch`] keeps a node-local pod watch (`spec.nodeName=<node>`) and resolves each pod's
//! workload through its owners; everything else here is pure: a [`Pod`] becomes a compact
//! [`PodMeta`] ([`pod_meta`]), and a [`PodIndex`] answers container id → pod and container.
//! The pipeline reads the index through a [`PodStore`], whose generation number lets it
//! cache answers per cgroup and look again only when the pods changed.

pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::attribution::cgroup::{ContainerRef, Runtime};

/// An owner reference, reduced to what attribution needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Tells an owner apart from a later one of the same name (deleted and recreated).
    pub uid: String,
}

impl From<&OwnerReference> for OwnerRef {
    fn from(r: &OwnerReference) -> Self {
        OwnerRef {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }
}

/// The controller among owner references (at most one has `controller: true`).
pub fn controller_of(refs: &[OwnerReference]) -> Option<OwnerRef> {
    refs.iter()
        .find(|r| r.controller == Some(true))
        .map(OwnerRef::from)
}

/// Owners that are themselves managed by the workload a user thinks of: a ReplicaSet by
/// its Deployment, a Job by its CronJob. Their own controller has to be fetched.
pub fn needs_parent(owner: &OwnerRef) -> bool {
    matches!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("apps/v1", "ReplicaSet") | ("batch/v1", "Job")
    )
}

/// The workload a pod belongs to: the top of its controller chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet`, `Node` (a
    /// static pod's mirror), the kind of another controller, or `Pod` for a bare pod.
    pub kind: String,
    pub name: String,
    /// The UID of that owner (None for a bare pod). A workload deleted and created again
    /// under the same name, or in a namespace created again, has a new one: what was
    /// learned of the old one must not be published for the new one.
    pub uid: Option<String>,
}

/// Resolves the workload from the pod's controller and, for a ReplicaSet or Job, that
/// owner's own controller (`parent`, None when it has none or could not be fetched).
pub fn workload_of(
    pod_name: &str,
    owner: Option<&OwnerRef>,
    parent: Option<&OwnerRef>,
) -> Workload {
    match (owner, parent) {
        (None, _) => Workload {
            kind: "Pod".into(),
            name: pod_name.into(),
            uid: None,
        },
        (Some(owner), Some(parent)) if needs_parent(owner) => Workload {
            kind: parent.kind.clone(),
            name: parent.name.clone(),
            uid: Some(parent.uid.clone()),
        },
        (Some(owner), _) => Workload {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: Some(owner.uid.clone()),
        },
    }
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
pub fn parse_container_id(s: &str) -> Option<(Runtime, &str)> {
    let (scheme, id) = s.split_once("://")?;
    let runtime = match scheme {
        "containerd" => Runtime::Containerd,
        "cri-o" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => Runtime::Unspecified,
    };
    (!id.is_empty()).then_some((runtime, id))
}

/// The content digest in an `imageID`: `repo@sha256:<hex>`, `docker-pullable://repo@sha256:…`
/// or a bare `sha256:<hex>` (an image that was imported, not pulled).
pub fn image_digest(image_id: &str) -> Option<&str> {
    let digest = match image_id.rsplit_once('@') {
        Some((_, d)) => d,
        None => image_id
            .rsplit_once("://")
            .map_or(image_id, |(_, rest)| rest),
    };
    let (algo, hex) = digest.split_once(':')?;
    let ok = !algo.is_empty()
        && algo.bytes().all(|b| b.is_ascii_alphanumeric())
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(digest)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    App,
    Init,
    /// Added to a running pod by `kubectl debug`.
    Ephemeral,
}

impl ContainerKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ContainerKind::App => "app",
            ContainerKind::Init => "init",
            ContainerKind::Ephemeral => "ephemeral",
        }
    }
}

/// A container of a pod, from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub kind: ContainerKind,
    pub image: String,
    pub image_id: String,
    pub image_digest: Option<String>,
    pub runtime: Option<Runtime>,
    /// The current container id and, after a restart, the previous one (its last events
    /// may arrive after the status moved on).
    pub container_ids: Vec<String>,
}

/// What the agent keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod's labels, for ClusterBehaviorPolicy pod selectors.
    pub labels: BTreeMap<String, String>,
    pub workload: Workload,
    pub containers: Vec<ContainerMeta>,
}

/// Drops what the agent never reads before a pod is handled: managed fields and
/// annotations are often the largest part of a pod object.
pub fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
}

/// The pod's controller owner (the one to resolve).
pub fn pod_owner(pod: &Pod) -> Option<OwnerRef> {
    pod.metadata
        .owner_references
        .as_deref()
        .and_then(controller_of)
}

fn container_meta(status: &ContainerStatus, kind: ContainerKind) -> ContainerMeta {
    let mut ids = Vec::new();
    let mut runtime = None;
    let previous = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref());
    for raw in status.container_id.as_deref().into_iter().chain(previous) {
        if let Some((rt, id)) = parse_container_id(raw) {
            runtime.get_or_insert(rt);
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
    }
    ContainerMeta {
        name: status.name.clone(),
        kind,
        image: status.image.clone(),
        image_id: status.image_id.clone(),
        image_digest: image_digest(&status.image_id).map(str::to_owned),
        runtime,
        container_ids: ids,
    }
}

/// The agent's record of a pod, or None for a pod without a UID (not yet stored).
pub fn pod_meta(pod: &Pod, workload: Workload) -> Option<PodMeta> {
    let uid = pod.metadata.uid.clone()?;
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        for (list, kind) in [
            (&status.init_container_statuses, ContainerKind::Init),
            (&status.container_statuses, ContainerKind::App),
            (
                &status.ephemeral_container_statuses,
                ContainerKind::Ephemeral,
            ),
        ] {
            containers.extend(list.iter().flatten().map(|s| container_meta(s, kind)));
        }
    }
    Some(PodMeta {
        uid,
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        workload,
        containers,
    })
}

/// A container attributed to its pod.
#[derive(Clone, Debug)]
pub struct PodAttribution {
    pub pod: Arc<PodMeta>,
    /// Index into `pod.containers`; None when the pod is known but this container is not
    /// in its status (the sandbox, or a status not yet updated).
    pub container: Option<usize>,
}

impl PodAttribution {
    pub fn container(&self) -> Option<&ContainerMeta> {
        self.container.and_then(|i| self.pod.containers.get(i))
    }
}

/// Pods of this node, indexed by UID and by container id.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, Arc<PodMeta>>,
    by_container: HashMap<String, (Arc<PodMeta>, usize)>,
}

impl PodIndex {
    pub fn from_pods(pods: impl IntoIterator<Item = PodMeta>) -> Self {
        let mut index = PodIndex::default();
        for pod in pods {
            index.upsert(pod);
        }
        index
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Containers with a known id.
    pub fn containers(&self) -> usize {
        self.by_container.len()
    }

    pub fn upsert(&mut self, pod: PodMeta) {
        self.remove(&pod.uid);
        let pod = Arc::new(pod);
        for (i, c) in pod.containers.iter().enumerate() {
            for id in &c.container_ids {
                self.by_container.insert(id.clone(), (pod.clone(), i));
            }
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for id in old.containers.iter().flat_map(|c| &c.container_ids) {
                if self.by_container.get(id).is_some_and(|(p, _)| p.uid == uid) {
                    self.by_container.remove(id);
                }
            }
        }
    }

    pub fn pod(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        self.pods.get(uid)
    }

    /// Every pod, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = &Arc<PodMeta>> {
        self.pods.values()
    }

    /// The pod and container of a container cgroup; None when no pod on this node has
    /// this container id or pod UID.
    pub fn lookup(&self, container: &ContainerRef) -> Option<PodAttribution> {
        if let Some((pod, i)) = self.by_container.get(&*container.id) {
            return Some(PodAttribution {
                pod: pod.clone(),
                container: Some(*i),
            });
        }
        let pod = self.pods.get(container.pod_uid.as_deref()?)?;
        Some(PodAttribution {
            pod: pod.clone(),
            container: None,
        })
    }
}

/// The pod index shared between the watch (writer) and the pipeline (reader).
#[derive(Debug, Default)]
pub struct PodStore {
    index: RwLock<PodIndex>,
    generation: AtomicU64,
    synced: AtomicBool,
    /// Watch stream errors (the watch retries with backoff).
    pub watch_errors: AtomicU64,
    /// ReplicaSet/Job lookups that failed (the pod is attributed to the intermediate owner).
    pub owner_lookup_failures: AtomicU64,
}

impl PodStore {
    /// Changes whenever the index does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The first full list has been stored.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn read<T>(&self, f: impl FnOnce(&PodIndex) -> T) -> T {
        // A writer that panicked left a consistent index (each update is one call), so a
        // poisoned lock is still readable.
        let guard = self.index.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write(&self, f: impl FnOnce(&mut PodIndex)) {
        let mut guard = self.index.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn upsert(&self, pod: PodMeta) {
        self.write(|i| i.upsert(pod));
    }

    pub fn remove(&self, uid: &str) {
        self.write(|i| i.remove(uid));
    }

    /// Replaces everything with a complete list and marks the store synced.
    pub fn replace_all(&self, pods: Vec<PodMeta>) {
        let index = PodIndex::from_pods(pods);
        self.write(|i| *i = index);
        self.synced.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    const CID: &str = "5a1f0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";
    const OLD_CID: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const DIGEST: &str = "sha256:4c1b2a3f5e6d7c8b9a0f1e2d3c4b5a69788776655443322110ffeeddccbbaa99";

    fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn status(name: &str, cid: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: cid.map(|c| format!("containerd://{c}")),
            image: "registry.local/web:1.2".into(),
            image_id: format!("registry.local/web@{DIGEST}"),
            ..ContainerStatus::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-7d4b9c-x2x9k".into()),
                namespace: Some("shop".into()),
                uid: Some("4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8".into()),
                owner_references: Some(vec![owner("apps/v1", "ReplicaSet", "web-7d4b9c")]),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some([("big".to_string(), "x".repeat(1000))].into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            container_id: Some(format!("containerd://{OLD_CID}")),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..status("web", Some(CID))
                }]),
                init_container_statuses: Some(vec![status("migrate", None)]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn cref(id: &str, pod_uid: Option<&str>) -> ContainerRef {
        ContainerRef {
            runtime: Runtime::Unspecified,
            id: Arc::from(id),
            pod_uid: pod_uid.map(Arc::from),
        }
    }

    #[test]
    fn controller_is_the_reference_marked_controller() {
        let mut other = owner("v1", "ConfigMap", "cm");
        other.controller = None;
        let refs = vec![other, owner("apps/v1", "StatefulSet", "db")];
        assert_eq!(
            controller_of(&refs).map(|o| o.kind),
            Some("StatefulSet".into())
        );
        let mut not_controller = owner("apps/v1", "ReplicaSet", "rs");
        not_controller.controller = Some(false);
        assert_eq!(controller_of(&[not_controller]), None);
        assert_eq!(controller_of(&[]), None);
    }

    #[test]
    fn workload_chain() {
        let rs = OwnerRef::from(&owner("apps/v1", "ReplicaSet", "web-7d4b9c"));
        let deploy = OwnerRef::from(&owner("apps/v1", "Deployment", "web"));
        let job = OwnerRef::from(&owner("batch/v1", "Job", "backup-28911"));
        let cron = OwnerRef::from(&owner("batch/v1", "CronJob", "backup"));
        let sts = OwnerRef::from(&owner("apps/v1", "StatefulSet", "db"));
        let ds = OwnerRef::from(&owner("apps/v1", "DaemonSet", "agent"));
        let node = OwnerRef::from(&owner("v1", "Node", "node-1"));
        let w = |kind: &str, name: &str| Workload {
            kind: kind.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
        };

        assert!(needs_parent(&rs) && needs_parent(&job));
        assert!(!needs_parent(&sts) && !needs_parent(&ds) && !needs_parent(&deploy));
        assert_eq!(
            workload_of("p", Some(&rs), Some(&deploy)),
            w("Deployment", "web")
        );
        assert_eq!(
            workload_of("p", Some(&job), Some(&cron)),
            w("CronJob", "backup")
        );
        // A ReplicaSet or Job without a controller (or that could not be fetched) is the
        // workload itself.
        assert_eq!(
            workload_of("p", Some(&rs), None),
            w("ReplicaSet", "web-7d4b9c")
        );
        assert_eq!(workload_of("p", Some(&job), None), w("Job", "backup-28911"));
        assert_eq!(workload_of("p", Some(&sts), None), w("StatefulSet", "db"));
        assert_eq!(workload_of("p", Some(&ds), None), w("DaemonSet", "agent"));
        // A parent is only followed for owners that need one.
        assert_eq!(
            workload_of("p", Some(&sts), Some(&deploy)),
            w("StatefulSet", "db")
        );
        assert_eq!(
            workload_of("kube-apiserver-node-1", Some(&node), None),
            w("Node", "node-1")
        );
        assert_eq!(
            workload_of("debug", None, None),
            Workload {
                uid: None,
                ..w("Pod", "debug")
            }
        );
    }

    #[test]
    fn container_ids_and_digests() {
        assert_eq!(
            parse_container_id(&format!("containerd://{CID}")),
            Some((Runtime::Containerd, CID))
        );
        assert_eq!(
            parse_container_id(&format!("cri-o://{CID}")),
            Some((Runtime::CriO, CID))
        );
        assert_eq!(
            parse_container_id(&format!("docker://{CID}")),
            Some((Runtime::Docker, CID))
        );
        assert_eq!(parse_container_id("containerd://"), None);
        assert_eq!(parse_container_id(CID), None);

        assert_eq!(
            image_digest(&format!("docker.io/library/nginx@{DIGEST}")),
            Some(DIGEST)
        );
        assert_eq!(
            image_digest(&format!("docker-pullable://nginx@{DIGEST}")),
            Some(DIGEST)
        );
        assert_eq!(image_digest(DIGEST), Some(DIGEST));
        assert_eq!(image_digest(&format!("docker://{DIGEST}")), Some(DIGEST));
        assert_eq!(image_digest("nginx:1.25"), None);
        assert_eq!(image_digest(""), None);
        assert_eq!(image_digest("sha256:xyz"), None);
    }

    #[test]
    fn pod_meta_keeps_what_attribution_needs() {
        let mut p = pod();
        strip_pod(&mut p);
        assert_eq!(p.metadata.managed_fields, None);
        assert_eq!(p.metadata.annotations, None);
        let owner = pod_owner(&p).unwrap();
        let meta = pod_meta(&p, workload_of("web-7d4b9c-x2x9k", Some(&owner), None)).unwrap();
        assert_eq!(meta.namespace, "shop");
        assert_eq!(meta.name, "web-7d4b9c-x2x9k");
        assert_eq!(
            meta.labels.get("app").map(String::as_str),
            Some("web"),
            "policies select on labels"
        );
        assert_eq!(meta.containers.len(), 2);
        let migrate = &meta.containers[0];
        assert_eq!(
            (migrate.name.as_str(), migrate.kind),
            ("migrate", ContainerKind::Init)
        );
        assert!(migrate.container_ids.is_empty(), "not started yet");
        let web = &meta.containers[1];
        assert_eq!(web.kind, ContainerKind::App);
        assert_eq!(web.container_ids, [CID, OLD_CID]);
        assert_eq!(web.runtime, Some(Runtime::Containerd));
        assert_eq!(web.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(web.image, "registry.local/web:1.2");

        let mut no_uid = pod();
        no_uid.metadata.uid = None;
        assert_eq!(pod_meta(&no_uid, workload_of("x", None, None)), None);
        let mut no_status = pod();
        no_status.status = None;
        assert!(pod_meta(&no_status, workload_of("x", None, None))
            .unwrap()
            .containers
            .is_empty());
    }

    fn meta() -> PodMeta {
        let p = pod();
        pod_meta(
            &p,
            Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                uid: Some("uid-web".into()),
            },
        )
        .unwrap()
    }

    #[test]
    fn index_attributes_containers_and_says_why_not() {
        let index = PodIndex::from_pods([meta()]);
        let uid = "4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8";
        let a = index.lookup(&cref(CID, Some(uid))).unwrap();
        assert_eq!(a.container().map(|c| c.name.as_str()), Some("web"));
        assert_eq!(a.pod.workload.name, "web");
        // A restarted container's previous id still attributes.
        assert_eq!(
            index
                .lookup(&cref(OLD_CID, None))
                .unwrap()
                .container()
                .unwrap()
                .name,
            "web"
        );
        // The sandbox: the pod is known, the container is not in its status.
        let sandbox = index.lookup(&cref(&"f".repeat(64), Some(uid))).unwrap();
        assert!(sandbox.container().is_none());
        assert_eq!(sandbox.pod.name, "web-7d4b9c-x2x9k");
        assert!(index
            .lookup(&cref(
                &"e".repeat(64),
                Some("00000000-0000-0000-0000-000000000000")
            ))
            .is_none());
        assert!(index.lookup(&cref(&"e".repeat(64), None)).is_none());
    }

    #[test]
    fn index_updates_and_removals_leave_no_stale_containers() {
        let mut index = PodIndex::from_pods([meta()]);
        assert_eq!(index.containers(), 2);
        let mut updated = meta();
        updated.containers[1].container_ids = vec!["a".repeat(64)];
        index.upsert(updated);
        assert_eq!(index.len(), 1);
        assert_eq!(index.containers(), 1);
        assert!(index.lookup(&cref(CID, None)).is_none());
        index.remove("4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8");
        assert!(index.is_empty());
        assert_eq!(index.containers(), 0);
    }

    #[test]
    fn store_generation_moves_with_every_change() {
        let store = PodStore::default();
        assert!(!store.synced());
        let g0 = store.generation();
        store.replace_all(vec![meta()]);
        assert!(store.synced());
        let g1 = store.generation();
        assert_ne!(g0, g1);
        store.remove("nope");
        assert_ne!(store.generation(), g1);
        assert_eq!(store.read(|i| i.len()), 1);
    }
}
