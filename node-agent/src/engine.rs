//! The per-event path of the DaemonSet: attribution, then learning, evaluation and
//! response, for every event the kernel sends.
//!
//! [`Engine::handle`] runs the pipeline on one event, translates the attributed event into
//! the model's terms ([`crate::attribution::translate`]; for an exec, with the drift probe's answer),
//! records it in the [`Learner`], and judges it with the [`Evaluator`]. Findings (rare) are
//! turned into an owned [`ViolationContext`] (the process ancestry is read from the process
//! table once the attribution's borrow ends) and handed to the [`Responder`]. Nothing here
//! waits on the API.
//!
//! A container starts before the kubelet reports its id in the pod's status, so the first
//! events of every new container (its exec, the files it opens, the port it listens on:
//! what learning needs most) come from a container cgroup that no known pod claims yet.
//! They are kept, owned and bounded, and [`Engine::replay`] takes them up once the pod
//! store knows the container; those still unclaimed after [`DEFER_FOR`] are dropped
//! (counted).
//!
//! [`Engine::kernel_rules`] computes, for every container cgroup with a live process that
//! a pod on this node claims, what the kernel kills at exec there (see
//! [`crate::evaluate::kernel`]); an exec the kernel killed arrives flagged and is recorded
//! as killed in the kernel rather than killed again.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herdwatch_abi::Event as KernelEvent;
use herdwatch_api::violation::ViolationEvent;
use herdwatch_model::{Event, Process as ModelProcess, Timestamp};

use tracing::warn;

use crate::attribution::cgroup::{parse_cgroup_path, CgroupKind, CgroupSource, ContainerRef};
use crate::attribution::pipeline::Pipeline;
use crate::attribution::pods::{PodMeta, PodStore};
use crate::attribution::procfs::ProcSource;
use crate::attribution::proctable::ProcessTable;
use crate::attribution::translate::{
    kind_parts, model_event, model_process, target, KindParts, ProcessParts,
};
use crate::evaluate::drift::DriftProbe;
use crate::evaluate::kernel::ExecRules;
use crate::evaluate::{Evaluator, Finding};
use crate::learn::Learner;
use crate::respond::{ancestry, violation_event, Responder, ViolationContext};

/// How long an event of a container no pod claims yet is kept for its pod to appear.
pub const DEFER_FOR: Duration = Duration::from_secs(30);
/// Events kept for pods to appear, at most; more are dropped (counted).
pub const MAX_DEFERRED: usize = 8192;

/// Counters of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events of a pod container that reached learning and evaluation.
    pub judged: u64,
    /// Violations found.
    pub findings: u64,
    /// Events kept until the pod store knew their container.
    pub deferred: u64,
    /// Kept events whose pod never claimed their container in time, or that did not fit.
    pub deferred_dropped: u64,
    /// Container cgroups whose first sightings were forgotten (see
    /// [`Engine::cgroups_to_forget`]).
    pub forgotten: u64,
}

/// An event of a container no known pod claims yet, with what judging it needs.
#[derive(Debug)]
struct Deferred {
    container: ContainerRef,
    at: Instant,
    now: Timestamp,
    kind: KindParts<'static>,
    exe: String,
    file_name: Option<String>,
    argv: Vec<String>,
    uid: u32,
    exec_session: bool,
    in_image: Option<bool>,
    pid: u32,
    start_time_ns: u64,
    killed_in_kernel: bool,
    /// The program that started it, when no known container runtime (see the pipeline).
    unrecognised_runtime: Option<String>,
    record: ViolationEvent,
}

/// Learning, evaluation and response around the pipeline.
#[derive(Debug)]
pub struct Engine {
    evaluator: Evaluator,
    responder: Responder,
    drift: Option<DriftProbe>,
    pods: Arc<PodStore>,
    deferred: VecDeque<Deferred>,
    /// Pod store generation at the last replay.
    replayed_at: u64,
    /// (cgroup, profile uid) pairs whose first-sighting state was forgotten once the
    /// profile judged them (see [`Engine::cgroups_to_forget`]).
    forgotten: HashSet<(u64, String)>,
    stats: EngineStats,
}

impl Engine {
    pub fn new(
        evaluator: Evaluator,
        responder: Responder,
        drift: Option<DriftProbe>,
        pods: Arc<PodStore>,
    ) -> Self {
        Engine {
            evaluator,
            responder,
            drift,
            pods,
            deferred: VecDeque::new(),
            replayed_at: 0,
            forgotten: HashSet::new(),
            stats: EngineStats::default(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    pub fn responder_mut(&mut self) -> &mut Responder {
        &mut self.responder
    }

    /// Learns from and judges one event of a known pod container; returns what it broke.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one attributed event, borrowed from two different owners"
    )]
    fn learn_and_judge(
        &mut self,
        learner: &mut Learner,
        container_id: &Arc<str>,
        pods_generation: u64,
        pod: &PodMeta,
        container: usize,
        ev: &Event<'_>,
        now: Timestamp,
    ) -> Vec<Finding> {
        let Some(c) = pod.containers.get(container) else {
            return Vec::new();
        };
        self.stats.judged += 1;
        learner.observe(container_id, pod, c, ev, now);
        let findings = self
            .evaluator
            .check(container_id, pods_generation, pod, c, ev);
        self.stats.findings += findings.len() as u64;
        findings
    }

    /// Attributes, learns from and judges one event.
    pub fn handle<C: CgroupSource, P: ProcSource>(
        &mut self,
        learner: &mut Learner,
        pipeline: &mut Pipeline<C, P>,
        event: &KernelEvent,
        instant: Instant,
        now: Timestamp,
    ) {
        let a = pipeline.process(event, instant);
        let Some(process) = a.process else {
            return;
        };
        let Some(kind) = kind_parts(event) else {
            return;
        };
        let killed_in_kernel = matches!(event, KernelEvent::Exec(e) if e.killed_in_kernel());
        let Some(t) = target(&a) else {
            // A container no pod claims yet: keep the event until one does.
            if let Some(c) = a.cgroup.and_then(|c| c.kind.container()) {
                let c = c.clone();
                if let Some(probe) = &mut self.drift {
                    probe.prime(&c.id, process.pid);
                }
                let in_image = match &kind {
                    KindParts::Exec => exec_in_image(
                        event,
                        self.drift.as_mut(),
                        &c.id,
                        &[process.pid, process.ppid],
                        &process.exe,
                    ),
                    _ => None,
                };
                let mut parts = ProcessParts::default();
                let m = model_process(event, process, &mut parts, in_image);
                let uid = m.uid;
                let record = violation_event(event, &kind, process, uid, in_image);
                self.defer(Deferred {
                    container: c,
                    at: instant,
                    now,
                    kind: kind.into_owned(),
                    exe: process.exe.to_string(),
                    file_name: process.file_name.as_deref().map(str::to_owned),
                    argv: parts.argv,
                    uid,
                    exec_session: process.exec_session,
                    in_image,
                    pid: process.pid,
                    start_time_ns: process.start_time_ns,
                    killed_in_kernel,
                    unrecognised_runtime: a.unrecognised_runtime.map(str::to_owned),
                    record,
                });
            }
            return;
        };
        let pods_generation = self.pods.generation();
        if !self
            .evaluator
            .in_scope(t.container_id, pods_generation, t.pod, t.container)
        {
            return;
        }
        if let Some(probe) = &mut self.drift {
            probe.prime(t.container_id, process.pid);
        }
        let in_image = match &kind {
            KindParts::Exec => exec_in_image(
                event,
                self.drift.as_mut(),
                t.container_id,
                &[process.pid, process.ppid],
                &process.exe,
            ),
            _ => None,
        };
        let mut parts = ProcessParts::default();
        let m = model_process(event, process, &mut parts, in_image);
        let uid = m.uid;
        let ev = model_event(&kind, m);
        let pod = t.pod.clone();
        let container_id = t.container_id.clone();
        let container = a.pod.and_then(|p| p.container).unwrap_or_default();
        if let (Some(runtime), Some(c)) = (a.unrecognised_runtime, pod.containers.get(container)) {
            Self::note_unrecognised_runtime(learner, &container_id, &pod, c, runtime, now);
        }
        let findings = self.learn_and_judge(
            learner,
            &container_id,
            pods_generation,
            &pod,
            container,
            &ev,
            now,
        );
        if findings.is_empty() {
            if killed_in_kernel {
                self.responder
                    .killed_in_kernel_without_finding(&pod, process.pid, &process.exe);
            }
            return;
        }
        let record_event = violation_event(event, &kind, process, uid, in_image);
        let (pid, start) = (process.pid, process.start_time_ns);
        let ctx = ViolationContext {
            pod,
            container,
            event: record_event,
            process: (pid, start),
            ancestry: ancestors(pipeline.processes(), pid),
            killed_in_kernel,
            container_init: pipeline.processes().container_init(&container_id) == Some(pid),
        };
        self.responder.respond(&findings, &ctx, now);
    }

    fn note_unrecognised_runtime(
        learner: &mut Learner,
        container_id: &Arc<str>,
        pod: &PodMeta,
        container: &crate::attribution::pods::ContainerMeta,
        runtime: &str,
        now: Timestamp,
    ) {
        if learner.note_unrecognised_runtime(container_id, pod, container, runtime, now) {
            warn!(
                namespace = %pod.namespace,
                pod = %pod.name,
                container = %container.name,
                %runtime,
                "a program herdwatch does not know as a container runtime started a process in the container; its set-up may be learned as the workload's, so the profile will not be promoted by itself"
            );
        }
    }

    fn defer(&mut self, d: Deferred) {
        if self.deferred.len() >= MAX_DEFERRED {
            self.deferred.pop_front();
            self.stats.deferred_dropped += 1;
        }
        self.stats.deferred += 1;
        self.deferred.push_back(d);
    }

    /// Reads the mount tables of the containers running now (from the /proc seed), for
    /// the drift probe.
    pub fn prime_drift(&mut self, table: &ProcessTable) {
        if let Some(probe) = &mut self.drift {
            for p in table.iter().filter(|p| !p.exited) {
                if let Some(c) = &p.container {
                    probe.prime(c, p.pid);
                }
            }
        }
    }

    /// Events waiting for their pod.
    pub fn waiting(&self) -> usize {
        self.deferred.len()
    }

    /// Takes up the kept events whose container a pod now claims, and drops those kept
    /// for longer than [`DEFER_FOR`]. Cheap when the pod store did not change.
    pub fn replay(&mut self, learner: &mut Learner, table: &ProcessTable, instant: Instant) {
        if self.deferred.is_empty() {
            return;
        }
        let generation = self.pods.generation();
        let changed = generation != self.replayed_at;
        self.replayed_at = generation;
        let mut keep = VecDeque::new();
        while let Some(d) = self.deferred.pop_front() {
            let found = if changed {
                self.pods
                    .read(|index| index.lookup(&d.container))
                    .filter(|a| a.container.is_some())
            } else {
                None
            };
            match found {
                Some(a) => self.judge_deferred(
                    learner,
                    table,
                    &d,
                    &a.pod,
                    a.container.unwrap_or_default(),
                    generation,
                ),
                None if instant.saturating_duration_since(d.at) < DEFER_FOR => keep.push_back(d),
                None => self.stats.deferred_dropped += 1,
            }
        }
        self.deferred = keep;
    }

    fn judge_deferred(
        &mut self,
        learner: &mut Learner,
        table: &ProcessTable,
        d: &Deferred,
        pod: &Arc<PodMeta>,
        container: usize,
        pods_generation: u64,
    ) {
        let Some(c) = pod.containers.get(container) else {
            return;
        };
        if !self
            .evaluator
            .in_scope(&d.container.id, pods_generation, pod, c)
        {
            return;
        }
        if let Some(runtime) = &d.unrecognised_runtime {
            Self::note_unrecognised_runtime(learner, &d.container.id, pod, c, runtime, d.now);
        }
        let ev = model_event(
            &d.kind,
            ModelProcess {
                exe: &d.exe,
                file_name: d.file_name.as_deref(),
                argv: &d.argv,
                uid: d.uid,
                exec_session: d.exec_session,
                in_image: d.in_image,
            },
        );
        let findings = self.learn_and_judge(
            learner,
            &d.container.id,
            pods_generation,
            pod,
            container,
            &ev,
            d.now,
        );
        if findings.is_empty() {
            if d.killed_in_kernel {
                self.responder
                    .killed_in_kernel_without_finding(pod, d.pid, &d.exe);
            }
            return;
        }
        let ctx = ViolationContext {
            pod: pod.clone(),
            container,
            event: d.record.clone(),
            process: (d.pid, d.start_time_ns),
            ancestry: ancestors(table, d.pid),
            killed_in_kernel: d.killed_in_kernel,
            container_init: table.container_init(&d.container.id) == Some(d.pid),
        };
        self.responder.respond(&findings, &ctx, d.now);
    }
}

impl Engine {
    /// What the kernel kills at exec, per cgroup id: for each cgroup that holds a live
    /// process of a container that a pod on this node claims, and that still exists, the
    /// rules [`Evaluator::exec_rules`] gives that container. Cgroups of the host, of pods'
    /// sandboxes, of containers no pod claims yet, and of containers whose processes are
    /// all gone get nothing: the kernel never kills there.
    /// The container cgroups whose kernel first-sighting state should be forgotten now:
    /// those judged by a profile promoted at least `report_delay` ago (the operator still
    /// learns what arrives in that time), once per cgroup and profile. What a container did
    /// while its profile learned, and that never reached the profile (an entry dropped at a
    /// limit, an event lost), is then reported again the next time it happens, and judged,
    /// as it is in every container started after the promotion.
    pub fn cgroups_to_forget<C: CgroupSource, P: ProcSource>(
        &mut self,
        pipeline: &mut Pipeline<C, P>,
        now: Timestamp,
        report_delay: Duration,
    ) -> Vec<u64> {
        const MAX_FORGOTTEN: usize = 65_536;
        let pods_generation = self.pods.generation();
        let mut out = Vec::new();
        for (cgroup_id, c, _) in live_containers(pipeline) {
            let Some(a) = self.pods.read(|index| index.lookup(&c)) else {
                continue;
            };
            let Some(meta) = a.container() else {
                continue;
            };
            let Some((uid, promoted)) =
                self.evaluator
                    .judged_since(&c.id, pods_generation, &a.pod, meta)
            else {
                continue;
            };
            if now < promoted + report_delay {
                continue;
            }
            if self.forgotten.len() >= MAX_FORGOTTEN {
                self.forgotten.clear();
            }
            if self.forgotten.insert((cgroup_id, uid)) {
                out.push(cgroup_id);
                self.stats.forgotten += 1;
            }
        }
        out
    }

    pub fn kernel_rules<C: CgroupSource, P: ProcSource>(
        &mut self,
        pipeline: &mut Pipeline<C, P>,
        protected: &[String],
    ) -> BTreeMap<u64, Arc<ExecRules>> {
        let pods_generation = self.pods.generation();
        let mut out = BTreeMap::new();
        let live = live_containers(pipeline);
        for (cgroup_id, c, _) in &live {
            let Some(a) = self.pods.read(|index| index.lookup(c)) else {
                continue;
            };
            let Some(meta) = a.container() else {
                continue;
            };
            let rules = self
                .evaluator
                .exec_rules(&c.id, pods_generation, &a.pod, meta, protected);
            if !rules.is_empty() {
                out.insert(*cgroup_id, Arc::new(rules));
            }
        }

        // Each pod's cgroup: what all of its containers have in common, for a container
        // the kernel meets before this agent has written its own entry (a restart).
        let mut pods: BTreeMap<u64, Arc<PodMeta>> = BTreeMap::new();
        for (_, c, path) in &live {
            let Some(pod) = c
                .pod_uid
                .as_ref()
                .and_then(|uid| self.pods.read(|index| index.pod(uid).cloned()))
            else {
                continue;
            };
            let Some((pod_dir, _)) = path.rsplit_once('/') else {
                continue;
            };
            if !matches!(parse_cgroup_path(pod_dir), CgroupKind::Pod { .. }) {
                continue;
            }
            if let Some(pod_cgroup) = pipeline.cgroups_mut().source_mut().id_of(pod_dir) {
                pods.insert(pod_cgroup, pod);
            }
        }
        for (pod_cgroup, pod) in pods {
            let each: Vec<ExecRules> = pod
                .containers
                .iter()
                .map(|meta| {
                    // Keyed by name, not by a container id: the container may not run now.
                    let key: Arc<str> = format!("{}/{}", pod.uid, meta.name).into();
                    self.evaluator
                        .exec_rules(&key, pods_generation, &pod, meta, protected)
                })
                .collect();
            let common = ExecRules::common_to(&each);
            if !each.is_empty() && !common.is_empty() {
                out.insert(pod_cgroup, Arc::new(common));
            }
        }
        out
    }
}

/// Whether an exec's file comes from the container's image: as the kernel saw the file's
/// overlay layer when it is on one (no path the exec named can hide a file written after
/// start); otherwise as the drift probe tells it from the container's mounts (another
/// mount, a memfd: never the image).
fn exec_in_image(
    event: &KernelEvent,
    probe: Option<&mut DriftProbe>,
    container: &Arc<str>,
    pids: &[u32],
    exe: &str,
) -> Option<bool> {
    let kernel = match event {
        KernelEvent::Exec(e) => e.exe_in_image(),
        _ => None,
    };
    kernel.or_else(|| probe.and_then(|p| p.in_image(container, pids, exe)))
}

/// The container cgroups that hold a live process and still exist, with their container.
fn live_containers<C: CgroupSource, P: ProcSource>(
    pipeline: &mut Pipeline<C, P>,
) -> Vec<(u64, ContainerRef, Arc<str>)> {
    let live: BTreeSet<u64> = pipeline
        .processes()
        .iter()
        .filter(|p| !p.exited && p.container.is_some())
        .map(|p| p.cgroup_id)
        .collect();
    let mut out = Vec::new();
    for cgroup_id in live {
        let Some(info) = pipeline.cgroups().get(cgroup_id).cloned() else {
            continue;
        };
        let Some(c) = info.kind.container() else {
            continue;
        };
        // An exit the kernel could not report leaves a process behind in the table; its
        // cgroup may be gone.
        if pipeline.cgroups_mut().source_mut().id_of(&info.path) != Some(cgroup_id) {
            continue;
        }
        out.push((cgroup_id, c.clone(), info.path.clone()));
    }
    out
}

fn ancestors(table: &ProcessTable, pid: u32) -> Vec<herdwatch_api::violation::Ancestor> {
    table
        .peek(pid)
        .map(|p| ancestry(table, p))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::argv::Argv;
    use crate::attribution::cgroup::{CgroupResolver, ResolverConfig};
    use crate::attribution::procfs::ProcSnapshot;
    use crate::attribution::proctable::{ProcessTable, TableConfig};
    use crate::evaluate::tests::{pod, policy};
    use crate::evaluate::{compile_policies, EvalStore};
    use crate::learn::ObsKey;
    use crate::respond::{ResponderConfig, ResponseMetrics};
    use crate::synth::{self, MemCgroups, MemProc};
    use herdwatch_api::BehaviorViolation;
    use herdwatch_model::response::{Dedup, TokenBucket};
    use herdwatch_model::{Limits, WorkloadKey};
    use prometheus::{IntCounter, IntCounterVec, Opts};
    use std::time::Duration;
    use tokio::sync::mpsc;

    const UID: &str = "4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8";
    const WEB: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const WEB_CG: u64 = 21;
    const POD_CG: u64 = 20;
    const SHIM: u32 = 500;

    fn host() -> (MemCgroups, MemProc) {
        let cg = MemCgroups {
            cgroups: vec![
                (1, "/".into()),
                (POD_CG, format!("/kubepods/besteffort/pod{UID}")),
                (WEB_CG, format!("/kubepods/besteffort/pod{UID}/{WEB}")),
            ],
            walks: 0,
        };
        let mut proc = MemProc::default();
        for (pid, ppid, exe) in [
            (1, 0, "/sbin/init"),
            (SHIM, 1, "/usr/bin/containerd-shim-runc-v2"),
        ] {
            proc.procs.insert(
                pid,
                ProcSnapshot {
                    pid,
                    ppid,
                    start_time_ns: u64::from(pid) * 1_000_000_000,
                    uid: 0,
                    exe: exe.into(),
                    argv: Argv::from_nul_block(exe.as_bytes(), false),
                    cgroup_path: Some("/".into()),
                },
            );
        }
        (cg, proc)
    }

    fn web_pod() -> PodMeta {
        let mut meta = pod();
        meta.uid = UID.into();
        meta.containers[0].container_ids = vec![WEB.into()];
        meta.containers[0].image_digest = Some(DIGEST.into());
        meta
    }

    const DIGEST: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// Runs a container that starts nginx, then a shell that runs wget, through the engine.
    /// With `pod_known_late`, the pod store learns of the container only afterwards (as the
    /// kubelet reports container ids after they started).
    fn run_wget(pod_known_late: bool) -> (EngineStats, Learner, Vec<BehaviorViolation>, u64) {
        run_wget_with(pod_known_late, false)
    }

    /// [`run_wget`] with the exec of wget flagged as killed in the kernel.
    fn run_wget_flagged(
        killed_in_kernel: bool,
    ) -> (EngineStats, Learner, Vec<BehaviorViolation>, u64) {
        run_wget_with(false, killed_in_kernel)
    }

    fn run_wget_with(
        pod_known_late: bool,
        killed_in_kernel: bool,
    ) -> (EngineStats, Learner, Vec<BehaviorViolation>, u64) {
        let (mut cg, mut proc) = host();
        let store = Arc::new(PodStore::default());
        store.replace_all(if pod_known_late {
            vec![]
        } else {
            vec![web_pod()]
        });
        let mut pipeline = Pipeline::new(
            CgroupResolver::new(
                &mut cg,
                ResolverConfig {
                    min_rescan_interval: Duration::ZERO,
                    ..ResolverConfig::default()
                },
            ),
            ProcessTable::new(TableConfig::default()),
            &mut proc,
            Some(store.clone()),
        );
        let eval = Arc::new(EvalStore::default());
        eval.update(|s| {
            s.policies = compile_policies(&[Arc::new(policy("1", false))], &[]).0;
            s.namespaces.insert(
                "shop".into(),
                [("env".to_string(), "prod".to_string())].into(),
            );
        });
        let (tx, mut rx) = mpsc::channel::<BehaviorViolation>(8);
        let metrics = ResponseMetrics {
            violations: IntCounterVec::new(Opts::new("v", "v"), &crate::metrics::VIOLATION_LABELS)
                .unwrap(),
            dropped: IntCounter::new("d", "d").unwrap(),
            kills: IntCounterVec::new(Opts::new("k", "k"), &["result"]).unwrap(),
        };
        let responder = Responder::new(
            "node-1",
            Dedup::new(
                64,
                Duration::from_secs(30),
                TokenBucket::new(10, Duration::from_secs(1), Timestamp(0)),
            ),
            ResponderConfig {
                capacity: 64,
                protected_namespaces: vec!["kube-system".into()],
                process_kills_per_minute: 0,
            },
            tx,
            None,
            metrics.clone(),
        );
        let mut engine = Engine::new(
            Evaluator::new(eval, Default::default()),
            responder,
            None,
            store.clone(),
        );
        let mut learner = Learner::new("node-1", Timestamp(0), Limits::DEFAULT, 16);
        let now = Instant::now();

        for e in [
            synth::exec(
                1000,
                SHIM,
                0,
                WEB_CG,
                1_000_000_000_000,
                b"/usr/sbin/nginx",
                b"nginx\0",
            ),
            synth::file(
                1000,
                WEB_CG,
                b"/etc/nginx/nginx.conf",
                herdwatch_abi::ACCESS_READ,
            ),
            synth::exec(
                1001,
                1000,
                0,
                WEB_CG,
                1_001_000_000_000,
                b"/bin/sh",
                b"sh\0-c\0wget -q http://x\0",
            ),
            match synth::exec(
                1002,
                1001,
                0,
                WEB_CG,
                1_002_000_000_000,
                b"/usr/bin/wget",
                b"wget\0-q\0http://x\0",
            ) {
                KernelEvent::Exec(mut e) if killed_in_kernel => {
                    e.flags |= herdwatch_abi::EXEC_KILLED_IN_KERNEL;
                    KernelEvent::Exec(e)
                }
                other => other,
            },
            synth::exit(1002, WEB_CG, 0),
        ] {
            engine.handle(&mut learner, &mut pipeline, &e, now, Timestamp(100));
        }
        if pod_known_late {
            assert_eq!(
                engine.waiting(),
                4,
                "kept until the pod claims the container"
            );
            engine.replay(&mut learner, pipeline.processes(), now);
            assert_eq!(engine.waiting(), 4, "the pod store did not change");
            store.upsert(web_pod());
            engine.replay(
                &mut learner,
                pipeline.processes(),
                now + Duration::from_secs(2),
            );
            assert_eq!(engine.waiting(), 0);
        }
        let mut records = Vec::new();
        while let Ok(v) = rx.try_recv() {
            records.push(v);
        }
        let counted = metrics
            .violations
            .with_label_values(&[
                "shop",
                "Deployment/web",
                "policy/no-fetchers/wget",
                "Enforce",
            ])
            .get();
        (engine.stats(), learner, records, counted)
    }

    #[test]
    fn an_exec_of_wget_is_learned_judged_and_recorded() {
        for late in [false, true] {
            let (stats, learner, records, counted) = run_wget(late);
            assert_eq!(
                (stats.judged, stats.findings, stats.deferred_dropped),
                (4, 1, 0),
                "late {late}"
            );
            assert_eq!(stats.deferred, if late { 4 } else { 0 });
            let key = ObsKey {
                workload: WorkloadKey {
                    namespace: "shop".into(),
                    owner_kind: "Deployment".into(),
                    owner_name: "web".into(),
                    container: "nginx".into(),
                },
                image_digest: DIGEST.into(),
            };
            let obs = learner.observation(&key).expect("learned");
            assert_eq!(obs.behavior.processes.len(), 3, "late {late}");
            assert_eq!(obs.behavior.files.len(), 1);

            assert_eq!(records.len(), 1, "late {late}");
            let v = &records[0];
            assert_eq!(v.spec.rule, "policy/no-fetchers/wget");
            assert_eq!(v.spec.event.argv, ["wget", "-q", "http://x"]);
            let chain: Vec<u32> = v.spec.ancestry.iter().map(|a| a.pid).collect();
            assert_eq!(chain, [1001, 1000, SHIM]);
            assert_eq!(
                v.spec.process_kill_error.as_deref(),
                Some("process kills are turned off on this agent (--kill-processes=false)")
            );
            assert_eq!(counted, 1);
        }
    }

    #[test]
    fn events_no_pod_ever_claims_are_dropped_after_a_while() {
        let (mut cg, mut proc) = host();
        let store = Arc::new(PodStore::default());
        store.replace_all(vec![]);
        let mut pipeline = Pipeline::new(
            CgroupResolver::new(&mut cg, ResolverConfig::default()),
            ProcessTable::new(TableConfig::default()),
            &mut proc,
            Some(store.clone()),
        );
        let (tx, _rx) = mpsc::channel(1);
        let responder = Responder::new(
            "node-1",
            Dedup::new(
                1,
                Duration::from_secs(1),
                TokenBucket::new(1, Duration::from_secs(1), Timestamp(0)),
            ),
            ResponderConfig {
                capacity: 1,
                protected_namespaces: Vec::new(),
                process_kills_per_minute: 0,
            },
            tx,
            None,
            ResponseMetrics {
                violations: IntCounterVec::new(
                    Opts::new("v", "v"),
                    &crate::metrics::VIOLATION_LABELS,
                )
                .unwrap(),
                dropped: IntCounter::new("d", "d").unwrap(),
                kills: IntCounterVec::new(Opts::new("k", "k"), &["result"]).unwrap(),
            },
        );
        let mut engine = Engine::new(
            Evaluator::new(Arc::new(EvalStore::default()), Default::default()),
            responder,
            None,
            store.clone(),
        );
        let mut learner = Learner::new("node-1", Timestamp(0), Limits::DEFAULT, 16);
        let now = Instant::now();
        let e = synth::exec(1000, SHIM, 0, WEB_CG, 1, b"/app", b"app\0");
        engine.handle(&mut learner, &mut pipeline, &e, now, Timestamp(1));
        assert_eq!(engine.waiting(), 1);
        store.replace_all(vec![]);
        engine.replay(
            &mut learner,
            pipeline.processes(),
            now + DEFER_FOR + Duration::from_secs(1),
        );
        assert_eq!(engine.waiting(), 0);
        assert_eq!(engine.stats().deferred_dropped, 1);
        assert_eq!(learner.stats().observations, 0);
    }

    #[test]
    fn the_kernel_gets_rules_for_live_attributed_containers_only() {
        use crate::evaluate::compile_profiles;
        use crate::evaluate::tests::profile;
        use herdwatch_api::common::Phase;

        const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        const OTHER_CG: u64 = 31;
        let (mut cg, mut proc) = host();
        // A container no pod on this node claims.
        cg.cgroups
            .push((OTHER_CG, format!("/kubepods/besteffort/pod{UID}/{OTHER}")));
        let store = Arc::new(PodStore::default());
        store.replace_all(vec![web_pod()]);
        let mut pipeline = Pipeline::new(
            CgroupResolver::new(
                &mut cg,
                ResolverConfig {
                    min_rescan_interval: Duration::ZERO,
                    ..ResolverConfig::default()
                },
            ),
            ProcessTable::new(TableConfig::default()),
            &mut proc,
            Some(store.clone()),
        );
        let eval = Arc::new(EvalStore::default());
        let enforcing = Arc::new(profile(Phase::Enforcing, "1", "/usr/sbin/nginx"));
        eval.update(|s| {
            s.profiles = compile_profiles(&[enforcing], &Default::default()).0;
            s.policies = compile_policies(&[Arc::new(policy("1", false))], &[]).0;
            s.namespaces.insert(
                "shop".into(),
                [("env".to_string(), "prod".to_string())].into(),
            );
        });
        let (tx, _rx) = mpsc::channel(1);
        let responder = Responder::new(
            "node-1",
            Dedup::new(
                1,
                Duration::from_secs(1),
                TokenBucket::new(1, Duration::from_secs(1), Timestamp(0)),
            ),
            ResponderConfig {
                capacity: 1,
                protected_namespaces: Vec::new(),
                process_kills_per_minute: 0,
            },
            tx,
            None,
            ResponseMetrics {
                violations: IntCounterVec::new(
                    Opts::new("v", "v"),
                    &crate::metrics::VIOLATION_LABELS,
                )
                .unwrap(),
                dropped: IntCounter::new("d", "d").unwrap(),
                kills: IntCounterVec::new(Opts::new("k", "k"), &["result"]).unwrap(),
            },
        );
        let mut engine = Engine::new(
            Evaluator::new(eval.clone(), Default::default()),
            responder,
            None,
            store.clone(),
        );
        let mut learner = Learner::new("node-1", Timestamp(0), Limits::DEFAULT, 16);
        let now = Instant::now();
        for e in [
            synth::exec(1000, SHIM, 0, WEB_CG, 1, b"/usr/sbin/nginx", b"nginx\0"),
            synth::exec(2000, SHIM, 0, OTHER_CG, 2, b"/app", b"app\0"),
            synth::exec(3000, 1, 0, 1, 3, b"/usr/bin/top", b"top\0"),
        ] {
            engine.handle(&mut learner, &mut pipeline, &e, now, Timestamp(1));
        }

        let rules = engine.kernel_rules(&mut pipeline, &[]);
        assert_eq!(rules.keys().copied().collect::<Vec<_>>(), [POD_CG, WEB_CG]);
        let web = &rules[&WEB_CG];
        assert_eq!(
            web.allow.as_deref(),
            Some(&[b"/usr/sbin/nginx".to_vec()].into())
        );
        assert_eq!(web.deny_names, [b"wget".to_vec()].into());
        // The pod's cgroup: what its one container has, for a container the kernel meets
        // before the agent has written its entry (a restart), init spared.
        let pod = &rules[&POD_CG];
        assert!(pod.inherited && pod.spare_init && !web.inherited);
        assert_eq!(pod.allow, web.allow);
        assert_eq!(pod.deny_names, web.deny_names);
        assert!(
            engine
                .kernel_rules(&mut pipeline, &["shop".into()])
                .is_empty(),
            "a protected namespace"
        );

        // The profile goes back to Monitoring: the policy's deny list stays.
        let monitoring = Arc::new(profile(Phase::Monitoring, "2", "/usr/sbin/nginx"));
        eval.update(|s| s.profiles = compile_profiles(&[monitoring], &s.profiles).0);
        let rules = engine.kernel_rules(&mut pipeline, &[]);
        assert_eq!(rules[&WEB_CG].allow, None);
        assert!(!rules[&WEB_CG].deny_names.is_empty());
        assert_eq!(rules[&POD_CG].allow, None);

        // Promoted at 100: the kernel forgets the container's first sightings once, when the
        // operator no longer learns what was seen before the promotion.
        let mut promoted = profile(Phase::Enforcing, "3", "/usr/sbin/nginx");
        if let Some(status) = promoted.status.as_mut() {
            status.learning.promoted_at = Some(herdwatch_api::convert::to_time(Timestamp(100)));
        }
        eval.update(|s| s.profiles = compile_profiles(&[Arc::new(promoted)], &s.profiles).0);
        let delay = Duration::from_secs(30);
        assert!(engine
            .cgroups_to_forget(&mut pipeline, Timestamp(120), delay)
            .is_empty());
        assert_eq!(
            engine.cgroups_to_forget(&mut pipeline, Timestamp(130), delay),
            [WEB_CG]
        );
        assert!(
            engine
                .cgroups_to_forget(&mut pipeline, Timestamp(500), delay)
                .is_empty(),
            "once per cgroup and profile"
        );

        // The cgroup disappears although the table still has a process in it (its exit
        // was lost), then the container's last process exits.
        let cgroups = &mut pipeline.cgroups_mut().source_mut().cgroups;
        let web_path = cgroups
            .iter()
            .find(|(id, _)| *id == WEB_CG)
            .cloned()
            .unwrap();
        // The pod lives on in its other cgroup (standing for its sandbox): its entry stays,
        // for the container that replaces the one gone.
        cgroups.retain(|(id, _)| *id != WEB_CG);
        let pod_only = |rules: BTreeMap<u64, Arc<ExecRules>>| rules.keys().eq([POD_CG].iter());
        assert!(pod_only(engine.kernel_rules(&mut pipeline, &[])));
        pipeline.cgroups_mut().source_mut().cgroups.push(web_path);
        assert_eq!(engine.kernel_rules(&mut pipeline, &[]).len(), 2);
        engine.handle(
            &mut learner,
            &mut pipeline,
            &synth::exit(1000, WEB_CG, 0),
            now,
            Timestamp(2),
        );
        assert!(pod_only(engine.kernel_rules(&mut pipeline, &[])));
        // The pod's last process exits: nothing of it is judged.
        engine.handle(
            &mut learner,
            &mut pipeline,
            &synth::exit(2000, OTHER_CG, 0),
            now,
            Timestamp(3),
        );
        assert!(engine.kernel_rules(&mut pipeline, &[]).is_empty());
    }

    #[test]
    fn the_kernels_overlay_layer_decides_drift_before_any_path() {
        use herdwatch_abi::{EXEC_EXE_OVERLAY, EXEC_EXE_UPPER};
        let with_flags = |flags| {
            let mut e = synth::exec(1000, SHIM, 0, WEB_CG, 1, b"/usr/bin/x", b"x\0");
            if let KernelEvent::Exec(exec) = &mut e {
                exec.flags |= flags;
            }
            e
        };
        let container: Arc<str> = WEB.into();
        let judge =
            |flags| exec_in_image(&with_flags(flags), None, &container, &[1000], "/usr/bin/x");
        assert_eq!(
            judge(EXEC_EXE_OVERLAY),
            Some(true),
            "only in the image's layers"
        );
        assert_eq!(
            judge(EXEC_EXE_OVERLAY | EXEC_EXE_UPPER),
            Some(false),
            "written after start"
        );
        assert_eq!(judge(0), None, "not on an overlay, and no probe");
    }

    #[test]
    fn an_exec_the_kernel_killed_is_recorded_as_such() {
        let (stats, _, records, _) = run_wget_flagged(true);
        assert_eq!(stats.findings, 1);
        assert!(records[0].spec.process_killed);
        assert_eq!(records[0].spec.process_kill_error, None);
    }
}
