//! Conversions between the resources and the model, so that the operator and the agent make
//! every decision on model types. Reading a resource can fail only on values the schema and
//! CEL rules already refuse (a malformed CIDR, duration or selector), so an error here means
//! the object bypassed validation; it names the field.

use std::collections::BTreeMap;

use herdwatch_model as model;
use herdwatch_model::behavior::{EgressRule, FileRule, ListenRule, ProcessRule, SyscallRule};
use herdwatch_model::pattern::ArgvPattern;
use herdwatch_model::sketch::ReplicaSketch;
use herdwatch_model::{Access, Entry, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff;

use crate::common::*;
use crate::observation::{
    BehaviorObservation, BehaviorObservationSpec, ObservedWorkload, NODE_LABEL,
};
use crate::policy::{ClusterBehaviorPolicy, DenyKind};
use crate::profile::{
    BehaviorProfile, BehaviorProfileStatus, EntryLimits, ImageSectionStatus, LearningConfig,
    LearningStatus, ResponseConfig, RevisionStatus,
};
use crate::{Error, Result};

/// A model time as an API time (clamped to the range the API can express).
pub fn to_time(t: Timestamp) -> Time {
    let secs = t.as_secs().clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    Time(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// An API time as a model time.
pub fn from_time(t: &Time) -> Timestamp {
    Timestamp(t.0.as_second())
}

fn opt_time(t: Option<Timestamp>) -> Option<Time> {
    t.map(to_time)
}

fn model_err(field: impl Into<String>) -> impl FnOnce(model::Error) -> Error {
    let field = field.into();
    move |source| Error::Invalid { field, source }
}

impl From<Mode> for model::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Learn => model::Mode::Learn,
            Mode::Monitor => model::Mode::Monitor,
            Mode::Enforce => model::Mode::Enforce,
        }
    }
}

impl From<Phase> for model::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Learning => model::Phase::Learning,
            Phase::Monitoring => model::Phase::Monitoring,
            Phase::Enforcing => model::Phase::Enforcing,
        }
    }
}

impl From<model::Phase> for Phase {
    fn from(p: model::Phase) -> Self {
        match p {
            model::Phase::Learning => Phase::Learning,
            model::Phase::Monitoring => Phase::Monitoring,
            model::Phase::Enforcing => Phase::Enforcing,
        }
    }
}

impl From<ResponseAction> for model::response::ResponseAction {
    fn from(a: ResponseAction) -> Self {
        match a {
            ResponseAction::None => Self::None,
            ResponseAction::Tag => Self::Tag,
            ResponseAction::Kill => Self::Kill,
        }
    }
}

impl From<Protocol> for model::net::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}

impl From<model::net::Protocol> for Protocol {
    fn from(p: model::net::Protocol) -> Self {
        match p {
            model::net::Protocol::Tcp => Self::Tcp,
            model::net::Protocol::Udp => Self::Udp,
        }
    }
}

/// File access kinds as a model access set.
pub fn access_to_model(kinds: &[FileAccess]) -> Access {
    kinds.iter().fold(Access::NONE, |acc, k| {
        acc | match k {
            FileAccess::Read => Access::READ,
            FileAccess::Write => Access::WRITE,
            FileAccess::Create => Access::CREATE,
            FileAccess::Truncate => Access::TRUNCATE,
        }
    })
}

/// A model access set as file access kinds.
pub fn access_from_model(a: Access) -> Vec<FileAccess> {
    let mut out = Vec::new();
    if a.contains(Access::READ) {
        out.push(FileAccess::Read);
    }
    if a.contains(Access::WRITE) {
        out.push(FileAccess::Write);
    }
    if a.contains(Access::CREATE) {
        out.push(FileAccess::Create);
    }
    if a.contains(Access::TRUNCATE) {
        out.push(FileAccess::Truncate);
    }
    out
}

impl From<&Seen> for model::Seen {
    /// A sketch that does not parse (only possible by hand edit) reads as empty.
    fn from(s: &Seen) -> Self {
        model::Seen {
            first_seen: s.first_seen.as_ref().map(from_time),
            last_seen: s.last_seen.as_ref().map(from_time),
            replicas: s
                .replica_sketch
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or_default(),
        }
    }
}

impl From<&model::Seen> for Seen {
    fn from(s: &model::Seen) -> Self {
        let learned = s.first_seen.is_some() || !s.replicas.is_empty();
        Seen {
            first_seen: opt_time(s.first_seen),
            last_seen: opt_time(s.last_seen),
            seen_replicas: learned.then(|| s.seen_replicas()),
            replica_sketch: (!s.replicas.is_empty()).then(|| s.replicas.to_string()),
        }
    }
}

fn process_rule(e: &ProcessEntry) -> ProcessRule {
    ProcessRule {
        exe: e.exe.clone(),
        argv: e.argv.clone().map(ArgvPattern),
        uid: e.uid,
    }
}

fn egress_rule(
    peer: &str,
    port: Option<u16>,
    protocol: Protocol,
    field: String,
) -> Result<EgressRule> {
    Ok(EgressRule {
        peer: peer.parse().map_err(model_err(field))?,
        port,
        protocol: protocol.into(),
    })
}

impl TryFrom<&Behavior> for model::BehaviorSet {
    type Error = Error;

    fn try_from(b: &Behavior) -> Result<Self> {
        let mut egress = Vec::with_capacity(b.network.egress.len());
        for (i, e) in b.network.egress.iter().enumerate() {
            let rule = egress_rule(
                &e.peer,
                e.port,
                e.protocol,
                format!("network.egress[{i}].peer"),
            )?;
            egress.push(Entry {
                rule,
                seen: (&e.seen).into(),
            });
        }
        Ok(model::BehaviorSet {
            processes: model::Rules::from_entries(b.processes.iter().map(|e| Entry {
                rule: process_rule(e),
                seen: (&e.seen).into(),
            })),
            syscalls: model::Rules::from_entries(b.syscalls.iter().map(|e| Entry {
                rule: SyscallRule {
                    name: e.name.clone(),
                },
                seen: (&e.seen).into(),
            })),
            egress: model::Rules::from_entries(egress),
            listen: model::Rules::from_entries(b.network.listen.iter().map(|e| Entry {
                rule: ListenRule {
                    port: e.port,
                    protocol: e.protocol.into(),
                },
                seen: (&e.seen).into(),
            })),
            files: model::Rules::from_entries(b.files.iter().map(|e| Entry {
                rule: match (&e.path, &e.prefix) {
                    (None, Some(prefix)) => FileRule::below(prefix, access_to_model(&e.access)),
                    _ => FileRule::path(&e.pattern(), access_to_model(&e.access)),
                },
                seen: (&e.seen).into(),
            })),
        })
    }
}

impl From<&model::BehaviorSet> for Behavior {
    fn from(s: &model::BehaviorSet) -> Self {
        Behavior {
            processes: s
                .processes
                .entries()
                .iter()
                .map(|e| ProcessEntry {
                    exe: e.rule.exe.clone(),
                    argv: e.rule.argv.clone().map(|a| a.0),
                    uid: e.rule.uid,
                    seen: (&e.seen).into(),
                })
                .collect(),
            syscalls: s
                .syscalls
                .entries()
                .iter()
                .map(|e| SyscallEntry {
                    name: e.rule.name.clone(),
                    seen: (&e.seen).into(),
                })
                .collect(),
            network: NetworkBehavior {
                egress: s
                    .egress
                    .entries()
                    .iter()
                    .map(|e| EgressEntry {
                        peer: e.rule.peer.to_string(),
                        port: e.rule.port,
                        protocol: e.rule.protocol.into(),
                        seen: (&e.seen).into(),
                    })
                    .collect(),
                listen: s
                    .listen
                    .entries()
                    .iter()
                    .map(|e| ListenEntry {
                        port: e.rule.port,
                        protocol: e.rule.protocol.into(),
                        seen: (&e.seen).into(),
                    })
                    .collect(),
            },
            files: s
                .files
                .entries()
                .iter()
                .map(|e| FileEntry {
                    path: e.rule.subtree().is_none().then(|| e.rule.path.clone()),
                    prefix: e.rule.subtree().map(str::to_owned),
                    access: access_from_model(e.rule.access),
                    seen: (&e.seen).into(),
                })
                .collect(),
        }
    }
}

impl From<&model::Changes> for BehaviorChanges {
    fn from(c: &model::Changes) -> Self {
        BehaviorChanges {
            processes: c
                .processes
                .iter()
                .map(|r| ProcessRef {
                    exe: r.exe.clone(),
                    argv: r.argv.clone().map(|a| a.0),
                    uid: r.uid,
                })
                .collect(),
            syscalls: c.syscalls.iter().map(|r| r.name.clone()).collect(),
            egress: c
                .egress
                .iter()
                .map(|r| EgressRef {
                    peer: r.peer.to_string(),
                    port: r.port,
                    protocol: r.protocol.into(),
                })
                .collect(),
            listen: c
                .listen
                .iter()
                .map(|r| ListenRef {
                    port: r.port,
                    protocol: r.protocol.into(),
                })
                .collect(),
            files: c
                .files
                .iter()
                .map(|r| FileRef {
                    prefix: r.path.clone(),
                    access: access_from_model(r.access),
                })
                .collect(),
            truncated: c.truncated,
        }
    }
}

/// Reads changes back; entries that do not parse are counted as truncated rather than
/// failing the whole status (status is herdwatch's own record, not user input).
impl From<&BehaviorChanges> for model::Changes {
    fn from(c: &BehaviorChanges) -> Self {
        let mut truncated = c.truncated;
        let egress = c
            .egress
            .iter()
            .filter_map(|r| {
                let rule = egress_rule(&r.peer, r.port, r.protocol, String::new()).ok();
                truncated = truncated.saturating_add(u64::from(rule.is_none()));
                rule
            })
            .collect();
        model::Changes {
            processes: c
                .processes
                .iter()
                .map(|r| ProcessRule {
                    exe: r.exe.clone(),
                    argv: r.argv.clone().map(ArgvPattern),
                    uid: r.uid,
                })
                .collect(),
            syscalls: c
                .syscalls
                .iter()
                .map(|n| SyscallRule { name: n.clone() })
                .collect(),
            egress,
            listen: c
                .listen
                .iter()
                .map(|r| ListenRule {
                    port: r.port,
                    protocol: r.protocol.into(),
                })
                .collect(),
            files: c
                .files
                .iter()
                .map(|r| FileRule::path(&r.prefix, access_to_model(&r.access)))
                .collect(),
            truncated,
        }
    }
}

impl TryFrom<&LearningConfig> for model::LearningSpec {
    type Error = Error;

    fn try_from(l: &LearningConfig) -> Result<Self> {
        Ok(model::LearningSpec {
            min_duration: model::time::parse_duration(&l.min_duration)
                .map_err(model_err("learning.minDuration"))?,
            stable_for: model::time::parse_duration(&l.stable_for)
                .map_err(model_err("learning.stableFor"))?,
            min_replicas: l.min_replicas,
            auto_promote: l.auto_promote,
        })
    }
}

impl From<ResponseLimits> for model::response::ResponseLimits {
    fn from(l: ResponseLimits) -> Self {
        Self {
            max_kills_per_hour: l.max_kills_per_hour,
            min_ready_replicas: l.min_ready_replicas,
        }
    }
}

impl From<&ResponseConfig> for model::response::ResponsePolicy {
    fn from(r: &ResponseConfig) -> Self {
        Self {
            action: r.action.into(),
            dry_run: r.dry_run,
            allow_unowned: r.allow_unowned,
            limits: r.limits.into(),
        }
    }
}

impl From<&EntryLimits> for model::Limits {
    fn from(l: &EntryLimits) -> Self {
        model::Limits {
            processes: l.processes as usize,
            syscalls: l.syscalls as usize,
            egress: l.egress as usize,
            listen: l.listen as usize,
            files: l.files as usize,
        }
    }
}

fn sketch<const K: usize>(s: &ReplicaSummary) -> ReplicaSketch<K> {
    s.sketch.parse().unwrap_or_default()
}

fn summary<const K: usize>(s: &ReplicaSketch<K>) -> ReplicaSummary {
    ReplicaSummary {
        count: s.count(),
        sketch: s.to_string(),
    }
}

impl BehaviorProfile {
    /// The profile as the model sees it: allowed behaviour from the spec, history and learning
    /// state from the status. A profile without status starts learning at its creation time
    /// (or `now`).
    pub fn to_model(&self, now: Timestamp) -> Result<model::Profile> {
        let behavior = model::BehaviorSet::try_from(&self.spec.allowed)
            .map_err(|e| e.within("spec.allowed"))?;
        let status = self.status.clone().unwrap_or_default();
        let created = self
            .metadata
            .creation_timestamp
            .as_ref()
            .map(from_time)
            .unwrap_or(now);
        let l = &status.learning;
        let learning = model::LearningState {
            phase: status.phase.map(Into::into).unwrap_or_default(),
            started: l.started_at.as_ref().map(from_time).unwrap_or(created),
            last_change: l.last_change_at.as_ref().map(from_time),
            replicas: sketch(&l.replicas),
            late_attach: sketch(&l.late_attach),
            events_lost: l.events_lost,
            lossy_nodes: l.lossy_nodes.clone(),
            entries_dropped: l.entries_dropped,
            promoted_at: l.promoted_at.as_ref().map(from_time),
            unrecognised_runtimes: l.unrecognised_runtimes.clone(),
        };
        Ok(model::Profile {
            behavior,
            limits: (&self.spec.limits).into(),
            revision: status.revision,
            history: status
                .revisions
                .iter()
                .map(|r| model::profile::Revision {
                    revision: r.revision,
                    time: r.time.as_ref().map(from_time).unwrap_or(now),
                    image_digest: r.image_digest.clone(),
                    added: (&r.added).into(),
                    removed: (&r.removed).into(),
                })
                .collect(),
            images: status
                .images
                .iter()
                .map(|s| model::profile::ImageSection {
                    digest: s.digest.clone(),
                    first_seen: s.first_seen.as_ref().map(from_time).unwrap_or(now),
                    last_seen: s.last_seen.as_ref().map(from_time).unwrap_or(now),
                    seeded_from: s.seeded_from.clone(),
                    base_revision: s.base_revision,
                    added: (&s.added).into(),
                })
                .collect(),
            learning,
        })
    }
}

impl BehaviorProfileStatus {
    /// Writes the model's history, image sections and learning state into this status; the
    /// caller sets conditions, violations and observedGeneration. The allowed behaviour goes
    /// to the spec: `Behavior::from(&profile.behavior)`.
    pub fn apply_model(
        &mut self,
        profile: &model::Profile,
        evaluation: Option<&model::Evaluation>,
    ) {
        self.phase = Some(profile.learning.phase.into());
        self.revision = profile.revision;
        self.revisions = profile
            .history
            .iter()
            .map(|r| RevisionStatus {
                revision: r.revision,
                time: Some(to_time(r.time)),
                image_digest: r.image_digest.clone(),
                added: (&r.added).into(),
                removed: (&r.removed).into(),
            })
            .collect();
        self.images = profile
            .images
            .iter()
            .map(|s| ImageSectionStatus {
                digest: s.digest.clone(),
                first_seen: Some(to_time(s.first_seen)),
                last_seen: Some(to_time(s.last_seen)),
                seeded_from: s.seeded_from.clone(),
                base_revision: s.base_revision,
                added: (&s.added).into(),
            })
            .collect();
        let l = &profile.learning;
        self.learning = LearningStatus {
            started_at: Some(to_time(l.started)),
            last_change_at: opt_time(l.last_change),
            replicas: summary(&l.replicas),
            late_attach: summary(&l.late_attach),
            events_lost: l.events_lost,
            lossy_nodes: l.lossy_nodes.clone(),
            entries_dropped: l.entries_dropped,
            unrecognised_runtimes: l.unrecognised_runtimes.clone(),
            promoted_at: opt_time(l.promoted_at),
            next_check_at: evaluation.and_then(|e| opt_time(e.next_check)),
        };
        if let Some(e) = evaluation {
            self.phase = Some(e.phase.into());
            self.learning.promoted_at = opt_time(e.promoted_at);
        }
    }
}

impl From<&model::Observation> for BehaviorObservation {
    /// The object an agent applies for this observation: named by the model, in the
    /// workload's namespace, labelled with the node.
    fn from(o: &model::Observation) -> Self {
        let spec = BehaviorObservationSpec {
            workload: ObservedWorkload {
                kind: o.workload.owner_kind.clone(),
                name: o.workload.owner_name.clone(),
                container: o.workload.container.clone(),
            },
            image_digest: o.image_digest.clone(),
            node: o.node.clone(),
            agent_started_at: to_time(o.agent_started),
            updated_at: to_time(o.updated),
            observed: (&o.behavior).into(),
            replicas: summary(&o.replicas),
            late_attach: summary(&o.late_attach),
            events_lost: o.events_lost,
            dropped: o.dropped,
            unrecognised_runtimes: o.unrecognised_runtimes.clone(),
        };
        let mut obj = BehaviorObservation::new(&o.object_name(), spec);
        obj.metadata = ObjectMeta {
            name: Some(o.object_name()),
            namespace: Some(o.workload.namespace.clone()),
            labels: Some(BTreeMap::from([(NODE_LABEL.to_owned(), o.node.clone())])),
            ..ObjectMeta::default()
        };
        obj
    }
}

impl TryFrom<&BehaviorObservation> for model::Observation {
    type Error = Error;

    fn try_from(obj: &BehaviorObservation) -> Result<Self> {
        let s = &obj.spec;
        let namespace = obj
            .metadata
            .namespace
            .clone()
            .ok_or(Error::Missing("metadata.namespace"))?;
        Ok(model::Observation {
            workload: model::WorkloadKey {
                namespace,
                owner_kind: s.workload.kind.clone(),
                owner_name: s.workload.name.clone(),
                container: s.workload.container.clone(),
            },
            image_digest: s.image_digest.clone(),
            node: s.node.clone(),
            agent_started: from_time(&s.agent_started_at),
            updated: from_time(&s.updated_at),
            behavior: (&s.observed)
                .try_into()
                .map_err(|e: Error| e.within("spec.observed"))?,
            replicas: sketch(&s.replicas),
            late_attach: sketch(&s.late_attach),
            events_lost: s.events_lost,
            dropped: s.dropped,
            unrecognised_runtimes: s
                .unrecognised_runtimes
                .iter()
                .take(model::observation::MAX_UNRECOGNISED_RUNTIMES)
                .cloned()
                .collect(),
        })
    }
}

/// A Kubernetes label selector as the model's; absent means "everything".
pub fn selector_to_model(
    sel: Option<&LabelSelector>,
    field: &str,
) -> Result<model::selector::LabelSelector> {
    use model::selector::{Operator, Requirement};
    let Some(sel) = sel else {
        return Ok(model::selector::LabelSelector::default());
    };
    let mut match_expressions = Vec::new();
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let operator = match r.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(Error::Invalid {
                    field: format!("{field}.matchExpressions[{i}].operator"),
                    source: model::Error::InvalidSelector(format!(
                        "unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                    )),
                })
            }
        };
        match_expressions.push(Requirement {
            key: r.key.clone(),
            operator,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    let out = model::selector::LabelSelector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        match_expressions,
    };
    out.validate().map_err(model_err(field))?;
    Ok(out)
}

impl TryFrom<&ClusterBehaviorPolicy> for model::policy::ClusterPolicy {
    type Error = Error;

    fn try_from(p: &ClusterBehaviorPolicy) -> Result<Self> {
        use model::policy::{Deny, Exceptions, PolicyRule};
        let mut rules = Vec::with_capacity(p.spec.rules.len());
        for (i, r) in p.spec.rules.iter().enumerate() {
            let deny = match r.deny {
                DenyKind::Shells => Deny::Shells,
                DenyKind::Binaries => Deny::Binaries(r.binaries.clone().unwrap_or_default()),
                DenyKind::Drift => Deny::Drift,
                DenyKind::Root => Deny::Root,
                DenyKind::ExecSessions => Deny::ExecSessions,
                DenyKind::EgressOutside => {
                    let mut nets = Vec::new();
                    for (j, c) in r.cidrs.iter().flatten().enumerate() {
                        nets.push(
                            c.parse()
                                .map_err(model_err(format!("spec.rules[{i}].cidrs[{j}]")))?,
                        );
                    }
                    Deny::EgressOutside(nets)
                }
            };
            rules.push(PolicyRule {
                name: r.name.clone(),
                deny,
                action: r.action.into(),
                kill_process: r.kill_process,
                kill_container_init: r.kill_container_init,
                exceptions: Exceptions {
                    executables: r.exceptions.executables.clone(),
                    containers: r.exceptions.containers.clone(),
                },
            });
        }
        Ok(model::policy::ClusterPolicy {
            name: p.metadata.name.clone().unwrap_or_default(),
            namespace_selector: selector_to_model(
                p.spec.namespace_selector.as_ref(),
                "spec.namespaceSelector",
            )?,
            pod_selector: selector_to_model(p.spec.pod_selector.as_ref(), "spec.podSelector")?,
            rules,
        })
    }
}

impl ClusterBehaviorPolicy {
    /// The response settings of this policy for a rule asking for `action`.
    pub fn response_policy(&self, action: ResponseAction) -> model::response::ResponsePolicy {
        model::response::ResponsePolicy {
            action: action.into(),
            dry_run: self.spec.dry_run,
            allow_unowned: self.spec.allow_unowned,
            limits: self.spec.limits.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;
    use herdwatch_model::event::{Event, EventKind, Process};
    use herdwatch_model::{evaluate, ProfileIndex};

    #[test]
    fn times_round_trip() {
        let t = Timestamp(1_764_000_123);
        assert_eq!(from_time(&to_time(t)), t);
        assert_eq!(
            serde_json::to_string(&to_time(t)).unwrap(),
            "\"2025-11-24T16:02:03Z\""
        );
    }

    #[test]
    fn profile_to_model_and_back() {
        let bp = examples::profile();
        let now = Timestamp(1_764_100_000);
        let p = bp.to_model(now).unwrap();
        assert_eq!(p.behavior.len(), 13);
        assert_eq!(p.learning.phase, model::Phase::Enforcing);
        assert_eq!(p.learning.replicas.count(), 2);
        assert_eq!(p.revision, 2);
        let nginx = &p.behavior.processes.entries()[2];
        assert_eq!(
            (
                nginx.rule.exe.as_str(),
                nginx.rule.uid,
                nginx.seen.seen_replicas()
            ),
            ("/usr/sbin/nginx", Some(101), 2)
        );

        // The spec and status written back from the model say the same thing.
        let allowed = Behavior::from(&p.behavior);
        assert_eq!(model::BehaviorSet::try_from(&allowed).unwrap(), p.behavior);
        let mut status = bp.status.clone().unwrap();
        status.apply_model(&p, None);
        assert_eq!(status.revisions, bp.status.as_ref().unwrap().revisions);
        assert_eq!(status.images, bp.status.as_ref().unwrap().images);
        assert_eq!(
            status.learning.replicas,
            bp.status.as_ref().unwrap().learning.replicas
        );
        assert_eq!(status.phase, Some(Phase::Enforcing));

        // Decisions are made on the model: the example allows nginx and refuses a shell.
        let idx = ProfileIndex::build(&p.behavior);
        let argv = vec!["nginx".to_owned()];
        let ok = Process {
            exe: "/usr/sbin/nginx",
            file_name: None,
            argv: &argv,
            uid: 101,
            exec_session: false,
            in_image: Some(true),
        };
        assert!(idx.check(&Event::exec(ok)).is_allowed());
        let sh = Process {
            exe: "/bin/sh",
            ..ok
        };
        assert!(!idx.check(&Event::exec(sh)).is_allowed());
        assert!(idx
            .check(&Event {
                process: ok,
                kind: EventKind::Connect {
                    ip: "10.20.3.4".parse().unwrap(),
                    port: 5432,
                    protocol: model::net::Protocol::Tcp
                }
            })
            .is_allowed());
    }

    #[test]
    fn learning_config_and_state_machine_from_the_spec() {
        let mut bp = examples::profile();
        bp.status = None;
        let spec = model::LearningSpec::try_from(&bp.spec.learning).unwrap();
        assert_eq!(spec.min_duration.as_secs(), 24 * 3600);
        let p = bp.to_model(Timestamp(0)).unwrap();
        assert_eq!(
            p.learning.started,
            from_time(bp.metadata.creation_timestamp.as_ref().unwrap()),
            "learning starts at creation"
        );
        let e = evaluate(
            bp.spec.mode.into(),
            &spec,
            &p.learning,
            Timestamp(p.learning.started.as_secs() + 3600),
        );
        assert_eq!(e.phase, model::Phase::Learning);
        let mut status = BehaviorProfileStatus::default();
        status.apply_model(&p, Some(&e));
        assert_eq!(status.phase, Some(Phase::Learning));
        assert!(status.learning.next_check_at.is_some());

        bp.spec.learning.min_duration = "soon".into();
        let err = model::LearningSpec::try_from(&bp.spec.learning).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("learning.minDuration: invalid duration"),
            "{err}"
        );
    }

    #[test]
    fn invalid_entries_name_the_field() {
        let mut bp = examples::profile();
        bp.spec.allowed.network.egress[1].peer = "nowhere".into();
        let err = bp.to_model(Timestamp(0)).unwrap_err();
        assert_eq!(err.to_string(), "spec.allowed.network.egress[1].peer: invalid network \"nowhere\": use an IP address or a CIDR such as 10.0.0.0/8");
    }

    #[test]
    fn observations_round_trip_through_the_resource() {
        let api = examples::observation();
        let m = model::Observation::try_from(&api).unwrap();
        assert_eq!(m.workload.namespace, "shop");
        let back = BehaviorObservation::from(&m);
        assert_eq!(
            back.metadata.name.as_deref(),
            Some(m.object_name().as_str())
        );
        assert_eq!(back.metadata.labels.as_ref().unwrap()[NODE_LABEL], "node-1");
        assert_eq!(model::Observation::try_from(&back).unwrap(), m);
        let mut no_ns = api.clone();
        no_ns.metadata.namespace = None;
        assert!(matches!(
            model::Observation::try_from(&no_ns),
            Err(Error::Missing("metadata.namespace"))
        ));

        // And merge into a profile through the model.
        let mut p = model::Profile::new(Timestamp(0));
        let out = p.merge_observation(&m, Timestamp(10));
        assert_eq!(out.report.added.len(), 13);
    }

    #[test]
    fn policies_convert_and_select() {
        let api = examples::policy();
        let p = model::policy::ClusterPolicy::try_from(&api).unwrap();
        assert_eq!(p.name, "baseline");
        assert_eq!(p.rules.len(), 6);
        let ns = BTreeMap::from([("herdwatch.dev/baseline".to_owned(), "".to_owned())]);
        let pod = BTreeMap::from([("tier".to_owned(), "web".to_owned())]);
        assert!(p.selects(&ns, &pod));
        assert!(!p.selects(&BTreeMap::new(), &pod));
        let argv = vec!["curl".to_owned()];
        let curl = Process {
            exe: "/usr/bin/curl",
            file_name: None,
            argv: &argv,
            uid: 1000,
            exec_session: false,
            in_image: Some(true),
        };
        let mut out = Vec::new();
        p.check("web", &Event::exec(curl), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].violation.rule.to_string(),
            "policy/baseline/no-fetchers"
        );
        let rp = api.response_policy(ResponseAction::Kill);
        assert_eq!(rp.limits.max_kills_per_hour, 3);

        let mut bad = api.clone();
        bad.spec
            .namespace_selector
            .as_mut()
            .unwrap()
            .match_expressions
            .as_mut()
            .unwrap()[0]
            .operator = "Maybe".into();
        let err = model::policy::ClusterPolicy::try_from(&bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.namespaceSelector.matchExpressions[0].operator"),
            "{err}"
        );
    }
}
