//! BehaviorViolation: the forensic record of one (pod, rule, subject), kept after the pod is
//! gone. The agent writes the spec (what happened); the operator writes the status (what it
//! did about it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{FileAccess, Protocol, ResponseAction};

/// Where the rule came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RuleSource {
    /// The workload's BehaviorProfile.
    #[default]
    Profile,
    /// A ClusterBehaviorPolicy.
    Policy,
}

/// Kind of event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A program was started.
    #[default]
    Exec,
    /// A file was opened.
    File,
    /// A connection was made.
    Connect,
    /// A port was listened on.
    Listen,
    /// A system call was made.
    Syscall,
    /// The user id changed.
    Setuid,
}

/// Who killed the offending process, the last time one was killed: Kernel at its exec,
/// before it ran, or Agent from user space once the event was judged. Absent when no
/// process was killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum KilledBy {
    /// The agent's exec tracepoint in the kernel, before the program ran a single
    /// instruction of its own.
    Kernel,
    /// The agent from user space, once it had judged the event: the program may have run
    /// for a moment.
    Agent,
}

/// The event that broke the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationEvent {
    /// Kind.
    pub kind: EventKind,
    /// Executable of the process.
    pub exe: String,
    /// Arguments of the process (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub argv: Vec<String>,
    /// Real user id.
    pub uid: u32,
    /// Process id on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Whether the process runs in an exec session.
    #[serde(default)]
    pub exec_session: bool,
    /// Whether the executable is in the image (absent: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_image: Option<bool>,
    /// File path (file events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File access (file events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub access: Vec<FileAccess>,
    /// Peer address (connect events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Port (connect and listen events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Protocol (connect and listen events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Syscall name (syscall events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// New user id (setuid events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_uid: Option<u32>,
}

/// One ancestor of the offending process, nearest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ancestor {
    /// Process id on the node.
    pub pid: u32,
    /// Executable.
    pub exe: String,
    /// Arguments (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 256)))]
    pub argv: Vec<String>,
    /// Real user id.
    pub uid: u32,
}

/// The workload the pod belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Kind of the top-level owner (Pod when there is none).
    #[schemars(length(max = 63))]
    pub kind: String,
    /// Name.
    #[schemars(length(max = 253))]
    pub name: String,
}

/// What happened: written by the agent.
#[expect(
    clippy::duplicated_attributes,
    reason = "every printcolumn(...) of the kube derive repeats the same keys, which clippy reads as duplicates"
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "herdwatch.dev",
    version = "v1alpha1",
    kind = "BehaviorViolation",
    namespaced,
    shortname = "bv",
    category = "herdwatch",
    status = "BehaviorViolationStatus",
    derive = "PartialEq",
    doc = "The record of one pod breaking one rule with one subject: what, when, how often, and what herdwatch did.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.pod"),
    printcolumn(name = "Rule", type_ = "string", json_path = ".spec.rule"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
    printcolumn(name = "Count", type_ = "integer", json_path = ".spec.count"),
    printcolumn(name = "Outcome", type_ = "string", json_path = ".status.outcome"),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.node",
        priority = "1"
    ),
    printcolumn(name = "Last", type_ = "date", json_path = ".spec.lastSeen")
)]
#[x_kube(validation = Rule::new("self.lastSeen >= self.firstSeen").message("lastSeen must not be before firstSeen"))]
#[x_kube(validation = Rule::new("self.source == 'Policy' ? has(self.policy) : has(self.profile)").message("a Policy violation names its policy, a Profile violation its profile"))]
#[x_kube(validation = Rule::new("self.node == oldSelf.node && self.pod == oldSelf.pod && self.podUid == oldSelf.podUid && self.workload == oldSelf.workload && self.source == oldSelf.source && self.rule == oldSelf.rule && self.subject == oldSelf.subject && self.container == oldSelf.container && self.imageDigest == oldSelf.imageDigest && (has(self.profile) ? has(oldSelf.profile) && self.profile == oldSelf.profile : !has(oldSelf.profile)) && (has(self.policy) ? has(oldSelf.policy) && self.policy == oldSelf.policy : !has(oldSelf.policy))").message("a record's identity (node, pod, podUid, workload, source, profile, policy, rule, subject, container, imageDigest) is immutable: it names the pod and the event it was made for; write a new record instead"))]
#[serde(rename_all = "camelCase")]
pub struct BehaviorViolationSpec {
    /// Profile or Policy.
    pub source: RuleSource,
    /// The BehaviorProfile (source Profile), which also owns this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The ClusterBehaviorPolicy (source Policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Rule reference: `profile/<category>` or `policy/<policy>/<rule>`.
    #[schemars(length(min = 1, max = 256))]
    pub rule: String,
    /// What broke it: executable, path, peer, port or syscall.
    #[schemars(length(min = 1, max = 256))]
    pub subject: String,
    /// Node.
    #[schemars(length(max = 253))]
    pub node: String,
    /// Pod name.
    #[schemars(length(max = 253))]
    pub pod: String,
    /// Pod UID.
    #[schemars(length(max = 128))]
    pub pod_uid: String,
    /// Container name.
    #[schemars(length(max = 253))]
    pub container: String,
    /// Image digest the container ran.
    #[schemars(length(max = 512))]
    pub image_digest: String,
    /// Workload.
    pub workload: WorkloadRef,
    /// The first event seen.
    pub event: ViolationEvent,
    /// Ancestry of the offending process, nearest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ancestry: Vec<Ancestor>,
    /// How often it was seen.
    #[x_kube(validation = Rule::new("self >= 1").message("count must be at least 1"))]
    pub count: u64,
    /// First sighting.
    pub first_seen: Time,
    /// Latest sighting.
    pub last_seen: Time,
    /// The response the rule asked for.
    pub action: ResponseAction,
    /// Whether the agent killed the offending process (see processKilledBy).
    #[serde(default)]
    pub process_killed: bool,
    /// Who killed it, the last time one was killed: `Kernel` at its exec, before it ran, or
    /// `Agent` from user space once the event was judged. Absent when no process was
    /// killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_killed_by: Option<KilledBy>,
    /// Why the kill the rule asked for failed (the process had already exited, or its pid
    /// belonged to another process by then); absent when it succeeded or was not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub process_kill_error: Option<String>,
}

/// What the operator did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    /// Not handled yet.
    #[default]
    Pending,
    /// Recorded only (action None).
    Recorded,
    /// The pod was tagged.
    Tagged,
    /// The pod was evicted.
    Evicted,
    /// Eviction refused by a safety rule; the pod was tagged instead.
    Refused,
    /// Dry run: nothing changed.
    DryRun,
    /// The response failed (see message); it is retried.
    Failed,
    /// The record disagrees with the API about its own pod (its node, workload or
    /// profile): nothing was done to the pod. Records come from one node's agent, which is
    /// trusted with nothing beyond its node.
    Rejected,
}

/// The response: written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorViolationStatus {
    /// Outcome.
    #[serde(default)]
    pub outcome: Outcome,
    /// CamelCase reason (e.g. `KillLimitReached`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the outcome was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
}
