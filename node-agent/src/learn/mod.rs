//! Learning: what each workload container did on this node, accumulated per
//! (workload, container, image digest) and published as one BehaviorObservation each.
//!
//! The [`Learner`] is the in-memory side and does no IO. The event loop feeds it every
//! attributed event ([`Learner::observe`]); the model's `Observation::observe` says whether
//! the event changed anything material, and only then is the observation marked dirty.
//! [`publish`] runs beside the loop: once per interval it takes the dirty observations
//! ([`Learner::due`], at most a given number, oldest change first) and applies them, so a
//! flood of events is still one write per observation per interval, and steady state is no
//! writes at all. A failed write leaves the observation dirty for the next interval.
//!
//! Besides events, three facts feed the observations:
//! - replicas: every pod of this node running a learned container is a replica of its
//!   observation ([`Learner::sync_pods`]), whether or not it did anything yet;
//! - late attachment: a container whose processes were already running when the agent
//!   attached (found by the /proc seed) had a start-up the agent did not see, and marks its
//!   replica late — unless an earlier agent instance had already published that replica,
//!   which means it saw its start;
//! - losses: when the kernel's lost-event counters grow, every observation of a workload
//!   running on this node at that time counts the loss ([`Learner::note_lost`]).
//!
//! At start the agent reads back the observations it published before
//! ([`Learner::seed`]), so a restart loses nothing.
//!
//! An observation belongs to one incarnation of its workload, told by the owner's UID: a
//! workload deleted and created again under the same name (or in a namespace deleted and
//! created again) starts from nothing, so that what the old one did is never published as
//! the new one's behaviour.

pub mod publish;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use herdwatch_api::BehaviorObservation;
use herdwatch_model::sketch::{ReplicaId, WorkloadReplicas};
use herdwatch_model::{Event, Limits, Observation, Timestamp, WorkloadKey};

use crate::attribution::pods::{ContainerMeta, PodMeta};
use crate::attribution::translate::learning_key;

/// The learning key: workload container and image digest (the node is this agent's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObsKey {
    pub workload: WorkloadKey,
    pub image_digest: String,
}

impl ObsKey {
    /// The key of a pod's container, when it is learned (see [`learning_key`]).
    pub fn of(pod: &PodMeta, container: &ContainerMeta) -> Option<Self> {
        learning_key(pod, container).map(|(workload, image_digest)| ObsKey {
            workload,
            image_digest,
        })
    }

    fn of_observation(o: &Observation) -> Self {
        ObsKey {
            workload: o.workload.clone(),
            image_digest: o.image_digest.clone(),
        }
    }
}

/// Container ids remembered per learned container; cleared when full (a node runs at most
/// a few hundred containers, this only bounds churn between pod syncs).
const MAX_CONTAINERS: usize = 16_384;
/// UIDs of replaced workload incarnations remembered; cleared when full (stragglers of an
/// old incarnation only live as long as its pods take to terminate).
const MAX_RETIRED_OWNERS: usize = 4_096;
/// An observation whose workload no longer runs here, that is published and unchanged for
/// this long, is dropped from memory (the operator merged it long ago).
const IDLE_EVICTION: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
struct Tracked {
    obs: Observation,
    /// When it first changed since its last successful write; None when the API has it.
    dirty_since: Option<Timestamp>,
    /// Bumped on every change, so that a write that raced a change leaves it dirty.
    version: u64,
    /// Replicas an earlier agent instance published (it saw their start).
    published_replicas: WorkloadReplicas,
    /// The UID of the workload this observation is of, once a pod of it was seen (an
    /// observation read back at start has none until then).
    owner_uid: Option<String>,
}

impl Tracked {
    fn new(obs: Observation) -> Self {
        Tracked {
            obs,
            dirty_since: None,
            version: 0,
            published_replicas: WorkloadReplicas::new(),
            owner_uid: None,
        }
    }

    fn touch(&mut self, now: Timestamp) {
        self.version += 1;
        self.dirty_since.get_or_insert(now);
    }
}

/// What the learner knows about one container id.
#[derive(Clone, Debug)]
struct Slot {
    key: ObsKey,
    replica: ReplicaId,
}

/// Counters of the learner, read by the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnStats {
    /// Events recorded into an observation.
    pub events: u64,
    /// Events of containers that are not learned (see [`learning_key`]).
    pub not_learned: u64,
    /// Events or replicas of a new observation refused because the learner was full.
    pub over_capacity: u64,
    /// Observations held.
    pub observations: u64,
    /// Observations waiting to be written.
    pub pending: u64,
    /// Observations started again because their workload was deleted and created again.
    pub restarted: u64,
}

/// One observation to write, and the version it was taken at.
#[derive(Clone, Debug)]
pub struct Due {
    pub key: ObsKey,
    pub version: u64,
    pub object: BehaviorObservation,
}

/// Whether two observations of one key say the same (times of writing aside).
fn same_content(a: &Observation, b: &Observation) -> bool {
    a.behavior == b.behavior
        && a.replicas == b.replicas
        && a.late_attach == b.late_attach
        && a.events_lost == b.events_lost
        && a.dropped == b.dropped
}

/// The agent's observations.
#[derive(Debug)]
pub struct Learner {
    node: String,
    started: Timestamp,
    limits: Limits,
    max_observations: usize,
    observations: HashMap<ObsKey, Tracked>,
    /// Container id → its observation; None for containers that are not learned.
    containers: HashMap<Arc<str>, Option<Slot>>,
    /// Containers that were running when the agent attached.
    late: HashSet<Arc<str>>,
    /// Whether the kernel's programs stayed attached since the earlier instance of this
    /// agent ([`Learner::watched_throughout`]): only then did it see everything the
    /// replicas it published did in between.
    watched_throughout: bool,
    seeded: bool,
    stats: LearnStats,
    /// UIDs of workload incarnations whose observation was started again.
    retired_owners: HashSet<String>,
}

impl Learner {
    /// A learner for the agent on `node` started at `started`, holding at most
    /// `max_observations`.
    pub fn new(node: &str, started: Timestamp, limits: Limits, max_observations: usize) -> Self {
        Learner {
            node: node.to_owned(),
            started,
            limits,
            max_observations: max_observations.max(1),
            observations: HashMap::new(),
            containers: HashMap::new(),
            late: HashSet::new(),
            watched_throughout: false,
            seeded: false,
            stats: LearnStats::default(),
            retired_owners: HashSet::new(),
        }
    }

    pub fn stats(&self) -> LearnStats {
        LearnStats {
            observations: self.observations.len() as u64,
            pending: self
                .observations
                .values()
                .filter(|t| t.dirty_since.is_some())
                .count() as u64,
            ..self.stats
        }
    }

    /// Whether the published observations have been read back ([`Learner::seed`]).
    pub fn seeded(&self) -> bool {
        self.seeded
    }

    /// Notes containers that were running when the agent attached.
    pub fn running_before_attach(&mut self, containers: impl IntoIterator<Item = Arc<str>>) {
        self.late.extend(containers);
    }

    /// The programs this agent runs on were attached all along since the earlier instance
    /// (adopted from pins): what the replicas did while no agent ran is in the ring buffer
    /// or counted as lost. Without this, a replica running now stays marked as one whose
    /// start was not seen, even if the earlier instance saw it: the node was blind between
    /// the two agents.
    pub fn watched_throughout(&mut self) {
        self.watched_throughout = true;
    }

    /// The observation of `key` for the workload incarnation `owner_uid`, created when there
    /// is room, and started again when the workload was recreated.
    fn entry(
        &mut self,
        key: &ObsKey,
        owner_uid: Option<&str>,
        now: Timestamp,
    ) -> Option<&mut Tracked> {
        if owner_uid.is_some_and(|uid| self.retired_owners.contains(uid)) {
            // A straggler of the old incarnation (a pod still terminating): its events
            // belong to nothing that is learned any more.
            return None;
        }
        let replaced = self
            .observations
            .get(key)
            .and_then(|t| match (&t.owner_uid, owner_uid) {
                (Some(old), Some(new)) if old != new => Some(old.clone()),
                _ => None,
            });
        let recreated = replaced.is_some();
        if let Some(old) = replaced {
            self.observations.remove(key);
            if self.retired_owners.len() >= MAX_RETIRED_OWNERS {
                self.retired_owners.clear();
            }
            self.retired_owners.insert(old);
            self.stats.restarted += 1;
        }
        if !self.observations.contains_key(key) {
            if self.observations.len() >= self.max_observations {
                self.stats.over_capacity += 1;
                return None;
            }
            let obs = Observation::new(
                key.workload.clone(),
                &key.image_digest,
                &self.node,
                self.started,
            );
            let mut fresh = Tracked::new(obs);
            if recreated {
                // The API still holds the old incarnation's content (unless its namespace
                // went with it): write the fresh one over it at the next round.
                fresh.touch(now);
            }
            self.observations.insert(key.clone(), fresh);
        }
        let t = self.observations.get_mut(key)?;
        if t.owner_uid.is_none() {
            t.owner_uid = owner_uid.map(str::to_owned);
        }
        Some(t)
    }

    /// Records `replica` on `key`'s observation; late when its container was running
    /// before the agent attached and no earlier instance published it.
    fn attach(
        &mut self,
        key: &ObsKey,
        pod: &PodMeta,
        replica: ReplicaId,
        container_ids: &[Arc<str>],
        now: Timestamp,
    ) {
        let late_container = container_ids.iter().any(|c| self.late.contains(c));
        let watched_throughout = self.watched_throughout;
        let Some(t) = self.entry(key, pod.workload.uid.as_deref(), now) else {
            return;
        };
        // The earlier instance saw it start, and the kernel saw everything it did since.
        let seen_start =
            watched_throughout && t.published_replicas.ids().binary_search(&replica).is_ok();
        if t.obs
            .attach_replica(replica, late_container && !seen_start, now)
        {
            t.touch(now);
        }
    }

    fn slot(
        &mut self,
        container_id: &Arc<str>,
        pod: &PodMeta,
        container: &ContainerMeta,
        now: Timestamp,
    ) -> Option<Slot> {
        if let Some(slot) = self.containers.get(container_id) {
            return slot.clone();
        }
        if self.containers.len() >= MAX_CONTAINERS {
            self.containers.clear();
        }
        let slot = ObsKey::of(pod, container).map(|key| Slot {
            key,
            replica: ReplicaId::from_pod_uid(&pod.uid),
        });
        if let Some(s) = &slot {
            self.attach(
                &s.key,
                pod,
                s.replica,
                std::slice::from_ref(container_id),
                now,
            );
        }
        self.containers.insert(container_id.clone(), slot.clone());
        slot
    }

    /// Records one event of `container_id` (a container of `pod`). Returns whether its
    /// observation changed materially.
    pub fn observe(
        &mut self,
        container_id: &Arc<str>,
        pod: &PodMeta,
        container: &ContainerMeta,
        event: &Event<'_>,
        now: Timestamp,
    ) -> bool {
        let Some(slot) = self.slot(container_id, pod, container, now) else {
            self.stats.not_learned += 1;
            return false;
        };
        let limits = self.limits;
        self.stats.events += 1;
        let Some(t) = self.entry(&slot.key, pod.workload.uid.as_deref(), now) else {
            return false;
        };
        let changed = t.obs.observe(event, slot.replica, now, &limits);
        if changed {
            t.touch(now);
        }
        changed
    }

    /// Notes that `runtime`, a program not known as a container runtime, started a process
    /// in `container_id` (a container of `pod`). Returns whether its observation changed.
    pub fn note_unrecognised_runtime(
        &mut self,
        container_id: &Arc<str>,
        pod: &PodMeta,
        container: &ContainerMeta,
        runtime: &str,
        now: Timestamp,
    ) -> bool {
        let Some(slot) = self.slot(container_id, pod, container, now) else {
            return false;
        };
        let Some(t) = self.entry(&slot.key, pod.workload.uid.as_deref(), now) else {
            return false;
        };
        let changed = t.obs.note_unrecognised_runtime(runtime, now);
        if changed {
            t.touch(now);
        }
        changed
    }

    /// Brings replicas and late attachment up to date with the pods of this node, and
    /// forgets containers and idle observations that are gone.
    pub fn sync_pods<'p>(
        &mut self,
        pods: impl IntoIterator<Item = &'p Arc<PodMeta>>,
        now: Timestamp,
    ) {
        let mut active = HashSet::new();
        let mut live_containers: HashSet<Arc<str>> = HashSet::new();
        for pod in pods {
            let replica = ReplicaId::from_pod_uid(&pod.uid);
            for c in &pod.containers {
                let ids: Vec<Arc<str>> = c
                    .container_ids
                    .iter()
                    .map(|s| Arc::from(s.as_str()))
                    .collect();
                live_containers.extend(ids.iter().cloned());
                let Some(key) = ObsKey::of(pod, c) else {
                    continue;
                };
                if c.container_ids.is_empty() {
                    // Not started yet: not a replica of anything so far.
                    continue;
                }
                self.attach(&key, pod, replica, &ids, now);
                active.insert(key);
            }
        }
        // A container not learned for lack of a digest may have one now; gone ones go.
        self.containers
            .retain(|id, slot| slot.is_some() && live_containers.contains(id));
        self.late.retain(|id| live_containers.contains(id));
        self.observations.retain(|key, t| {
            active.contains(key)
                || t.dirty_since.is_some()
                || now.since(t.obs.updated) < IDLE_EVICTION
        });
    }

    /// Counts `lost` more lost events on the observations of every learned container
    /// running on this node now.
    pub fn note_lost<'p>(
        &mut self,
        lost: u64,
        pods: impl IntoIterator<Item = &'p Arc<PodMeta>>,
        now: Timestamp,
    ) {
        if lost == 0 {
            return;
        }
        let active: HashMap<ObsKey, Option<String>> = pods
            .into_iter()
            .flat_map(|p| {
                p.containers
                    .iter()
                    .filter(|c| !c.container_ids.is_empty())
                    .filter_map(|c| ObsKey::of(p, c))
                    .map(|key| (key, p.workload.uid.clone()))
            })
            .collect();
        for (key, owner_uid) in active {
            let Some(t) = self.entry(&key, owner_uid.as_deref(), now) else {
                continue;
            };
            let total = t.obs.events_lost.saturating_add(lost);
            if t.obs.set_events_lost(total, now) {
                t.touch(now);
            }
        }
    }

    /// Takes in the observations an earlier instance of this agent published (those of
    /// other nodes are ignored). Returns how many were taken.
    pub fn seed(&mut self, published: impl IntoIterator<Item = Observation>) -> usize {
        let mut n = 0;
        for earlier in published {
            if earlier.node != self.node {
                continue;
            }
            let key = ObsKey::of_observation(&earlier);
            let limits = self.limits;
            let started = self.started;
            if !self.observations.contains_key(&key) {
                if self.observations.len() >= self.max_observations {
                    self.stats.over_capacity += 1;
                    continue;
                }
                let fresh =
                    Observation::new(key.workload.clone(), &key.image_digest, &self.node, started);
                self.observations.insert(key.clone(), Tracked::new(fresh));
            }
            let Some(t) = self.observations.get_mut(&key) else {
                continue;
            };
            t.obs.absorb(&earlier, &limits);
            t.published_replicas.merge(&earlier.replicas);
            // A replica this instance took for late because its container was running at
            // attach, but that the earlier instance published on time, was watched from
            // its start, if the kernel kept watching between the two instances.
            if self.watched_throughout {
                t.obs.late_attach = WorkloadReplicas::from_ids(
                    t.obs.late_attach.ids().iter().copied().filter(|id| {
                        earlier.late_attach.ids().contains(id)
                            || !earlier.replicas.ids().contains(id)
                    }),
                );
            }
            if same_content(&t.obs, &earlier) {
                t.dirty_since = None;
            } else {
                t.version += 1;
                t.dirty_since.get_or_insert(t.obs.updated);
            }
            n += 1;
        }
        self.seeded = true;
        n
    }

    /// Marks the learner as seeded without anything to read back (tests, or an API that
    /// has no observations for this node).
    pub fn mark_seeded(&mut self) {
        self.seeded = true;
    }

    /// Up to `max` observations to write, oldest change first.
    pub fn due(&self, max: usize) -> Vec<Due> {
        let mut dirty: Vec<(&ObsKey, &Tracked)> = self
            .observations
            .iter()
            .filter(|(_, t)| t.dirty_since.is_some())
            .collect();
        dirty
            .sort_by(|(ka, a), (kb, b)| a.dirty_since.cmp(&b.dirty_since).then_with(|| ka.cmp(kb)));
        dirty
            .into_iter()
            .take(max)
            .map(|(key, t)| Due {
                key: key.clone(),
                version: t.version,
                object: BehaviorObservation::from(&t.obs),
            })
            .collect()
    }

    /// Records that `key` was written as it was at `version`.
    pub fn published(&mut self, key: &ObsKey, version: u64) {
        if let Some(t) = self.observations.get_mut(key) {
            if t.version == version {
                t.dirty_since = None;
            }
        }
    }

    /// The observation of `key` (tests and diagnostics).
    pub fn observation(&self, key: &ObsKey) -> Option<&Observation> {
        self.observations.get(key).map(|t| &t.obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::pods::{ContainerKind, Workload};
    use herdwatch_model::Process;

    pub(crate) const DIGEST: &str =
        "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    pub(crate) fn pod(uid: &str, container_id: &str) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            uid: uid.into(),
            namespace: "shop".into(),
            name: format!("web-{uid}"),
            labels: Default::default(),
            workload: Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                uid: Some("uid-web".into()),
            },
            containers: vec![ContainerMeta {
                name: "nginx".into(),
                kind: ContainerKind::App,
                image: "nginx:1".into(),
                image_id: format!("nginx@{DIGEST}"),
                image_digest: Some(DIGEST.into()),
                runtime: None,
                container_ids: vec![container_id.into()],
            }],
        })
    }

    pub(crate) fn key() -> ObsKey {
        ObsKey {
            workload: WorkloadKey {
                namespace: "shop".into(),
                owner_kind: "Deployment".into(),
                owner_name: "web".into(),
                container: "nginx".into(),
            },
            image_digest: DIGEST.into(),
        }
    }

    fn exec(exe: &str) -> Event<'_> {
        Event::exec(Process::root_in_image(exe, &[]))
    }

    fn learner() -> Learner {
        Learner::new("node-1", Timestamp(1000), Limits::DEFAULT, 16)
    }

    #[test]
    fn many_events_make_one_pending_write() {
        let mut l = learner();
        let p = pod("u1", "c1");
        let id: Arc<str> = "c1".into();
        assert!(l.observe(
            &id,
            &p,
            &p.containers[0],
            &exec("/usr/sbin/nginx"),
            Timestamp(1001)
        ));
        for i in 0..1000 {
            l.observe(
                &id,
                &p,
                &p.containers[0],
                &exec("/usr/sbin/nginx"),
                Timestamp(1001 + i % 60),
            );
        }
        let due = l.due(10);
        assert_eq!(due.len(), 1);
        let obj = &due[0].object;
        assert_eq!(obj.spec.node, "node-1");
        assert_eq!(obj.spec.observed.processes.len(), 1);
        assert_eq!(obj.spec.replicas.count, 1, "the pod is a replica");
        assert_eq!(l.stats().events, 1001);
        l.published(&due[0].key, due[0].version);
        assert!(l.due(10).is_empty(), "steady state writes nothing");
    }

    #[test]
    fn a_change_during_a_write_keeps_it_pending() {
        let mut l = learner();
        let p = pod("u1", "c1");
        let id: Arc<str> = "c1".into();
        l.observe(&id, &p, &p.containers[0], &exec("/a"), Timestamp(1001));
        let due = l.due(10);
        l.observe(&id, &p, &p.containers[0], &exec("/b"), Timestamp(1002));
        l.published(&due[0].key, due[0].version);
        assert_eq!(l.due(10).len(), 1, "/b is not written yet");
    }

    #[test]
    fn writes_per_interval_are_capped_oldest_first() {
        let mut l = learner();
        for i in 0..5 {
            let mut p = (*pod(&format!("u{i}"), &format!("c{i}"))).clone();
            p.workload.name = format!("w{i}");
            let id: Arc<str> = format!("c{i}").into();
            l.observe(
                &id,
                &p,
                &p.containers[0],
                &exec("/a"),
                Timestamp(2000 - i as i64),
            );
        }
        let due = l.due(2);
        let names: Vec<_> = due
            .iter()
            .map(|d| d.key.workload.owner_name.as_str())
            .collect();
        assert_eq!(names, ["w4", "w3"]);
        assert_eq!(l.stats().pending, 5);
    }

    #[test]
    fn the_learner_is_bounded() {
        let mut l = Learner::new("node-1", Timestamp(0), Limits::DEFAULT, 2);
        for i in 0..4 {
            let mut p = (*pod(&format!("u{i}"), &format!("c{i}"))).clone();
            p.workload.name = format!("w{i}");
            let id: Arc<str> = format!("c{i}").into();
            l.observe(&id, &p, &p.containers[0], &exec("/a"), Timestamp(1));
        }
        assert_eq!(l.stats().observations, 2);
        assert!(l.stats().over_capacity >= 2);
    }

    #[test]
    fn containers_running_before_attach_mark_their_replicas_late() {
        let mut l = learner();
        l.running_before_attach(["c-old".into()]);
        let old = pod("u-old", "c-old");
        let new = pod("u-new", "c-new");
        l.sync_pods([&old, &new], Timestamp(1001));
        let o = l.observation(&key()).unwrap();
        assert_eq!(o.replicas.count(), 2);
        assert_eq!(o.late_attach.count(), 1);
        assert_eq!(
            o.late_attach.ids(),
            [ReplicaId::from_pod_uid("u-old")],
            "quiet containers count too"
        );
        assert_eq!(l.due(10).len(), 1);
    }

    #[test]
    fn a_restart_reads_back_what_was_published() {
        // The first instance saw pod u1 start, published, then stopped.
        let mut first = learner();
        let p = pod("u1", "c1");
        first.sync_pods([&p], Timestamp(1001));
        let id: Arc<str> = "c1".into();
        first.observe(
            &id,
            &p,
            &p.containers[0],
            &exec("/usr/sbin/nginx"),
            Timestamp(1002),
        );
        let published: Observation = (&first.due(1)[0].object).try_into().unwrap();

        // Without the programs attached in between, the node was blind for a while: c1,
        // running at attach, is marked as a replica whose start was not seen.
        let mut blind = Learner::new("node-1", Timestamp(5000), Limits::DEFAULT, 16);
        blind.running_before_attach(["c1".into()]);
        assert_eq!(blind.seed([published.clone()]), 1);
        blind.sync_pods([&p], Timestamp(5001));
        assert_eq!(blind.observation(&key()).unwrap().late_attach.count(), 1);

        // The second finds c1 running at attach, but its start was seen by the first, and
        // the kernel watched all along (the programs were adopted from pins).
        let mut second = Learner::new("node-1", Timestamp(5000), Limits::DEFAULT, 16);
        second.watched_throughout();
        second.running_before_attach(["c1".into()]);
        assert_eq!(second.seed([published.clone()]), 1);
        second.sync_pods([&p], Timestamp(5001));
        let o = second.observation(&key()).unwrap();
        assert_eq!(o.behavior, published.behavior);
        assert_eq!(o.late_attach.count(), 0);
        assert_eq!(o.agent_started, Timestamp(5000));
        assert!(second.due(10).is_empty(), "nothing new: nothing to write");

        // Another node's observations are not this agent's.
        let mut other = published;
        other.node = "node-2".into();
        assert_eq!(second.seed([other]), 0);
    }

    #[test]
    fn seeding_after_events_keeps_both() {
        let mut first = learner();
        let p = pod("u1", "c1");
        let id: Arc<str> = "c1".into();
        first.observe(&id, &p, &p.containers[0], &exec("/a"), Timestamp(1002));
        let published: Observation = (&first.due(1)[0].object).try_into().unwrap();
        let mut second = Learner::new("node-1", Timestamp(5000), Limits::DEFAULT, 16);
        second.observe(&id, &p, &p.containers[0], &exec("/b"), Timestamp(5001));
        second.seed([published]);
        let due = second.due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].object.spec.observed.processes.len(), 2);
    }

    #[test]
    fn losses_mark_the_workloads_running_here() {
        let mut l = learner();
        let p = pod("u1", "c1");
        let mut other = (*pod("u2", "c2")).clone();
        other.workload.name = "gone".into();
        let id2: Arc<str> = "c2".into();
        l.observe(
            &id2,
            &other,
            &other.containers[0],
            &exec("/x"),
            Timestamp(1001),
        );
        l.note_lost(7, [&p], Timestamp(1002));
        l.note_lost(3, [&p], Timestamp(1003));
        assert_eq!(l.observation(&key()).unwrap().events_lost, 10);
        let mut gone = key();
        gone.workload.owner_name = "gone".into();
        assert_eq!(
            l.observation(&gone).unwrap().events_lost,
            0,
            "not running when it happened"
        );
    }

    #[test]
    fn a_workload_created_again_starts_from_nothing() {
        let mut l = learner();
        let old = pod("u1", "c1");
        l.observe(
            &"c1".into(),
            &old,
            &old.containers[0],
            &exec("/bin/old"),
            Timestamp(1001),
        );
        let d = l.due(1);
        l.published(&d[0].key, d[0].version);

        // The namespace (or the Deployment) is deleted and created again: same names, a
        // new owner UID, new pods.
        let mut new = (*pod("u2", "c2")).clone();
        new.workload.uid = Some("uid-web-2".into());
        let new = Arc::new(new);
        l.sync_pods([&new], Timestamp(1100));
        let o = l.observation(&key()).unwrap();
        assert!(
            o.behavior.processes.is_empty(),
            "nothing of the old incarnation is kept: {:?}",
            o.behavior.processes
        );
        assert_eq!(o.replicas.count(), 1, "only the new pod");
        assert_eq!(l.stats().restarted, 1);
        assert_eq!(
            l.due(1).len(),
            1,
            "the fresh content is written over the old"
        );

        l.observe(
            &"c2".into(),
            &new,
            &new.containers[0],
            &exec("/bin/new"),
            Timestamp(1101),
        );
        // A straggler of the old incarnation changes nothing and restarts nothing.
        assert!(!l.observe(
            &"c1".into(),
            &old,
            &old.containers[0],
            &exec("/bin/late"),
            Timestamp(1102)
        ));
        let o = l.observation(&key()).unwrap();
        assert_eq!(o.behavior.processes.len(), 1);
        assert_eq!(l.stats().restarted, 1);
    }

    #[test]
    fn idle_observations_of_gone_workloads_are_forgotten() {
        let mut l = learner();
        let p = pod("u1", "c1");
        l.sync_pods([&p], Timestamp(1001));
        let d = l.due(1);
        l.published(&d[0].key, d[0].version);
        l.sync_pods([], Timestamp(1002));
        assert_eq!(l.stats().observations, 1, "recent");
        l.sync_pods([], Timestamp(1001 + 3601));
        assert_eq!(l.stats().observations, 0);
    }
}
