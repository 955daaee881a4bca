//! BehaviorProfile: one per workload container, learned and/or written by hand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Behavior, BehaviorChanges, Mode, Phase, ReplicaSummary, ResponseAction, ResponseLimits,
};

/// The workload a profile is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob.
    CronJob,
}

impl TargetKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
            TargetKind::DaemonSet => "DaemonSet",
            TargetKind::Job => "Job",
            TargetKind::CronJob => "CronJob",
        }
    }
}

/// Reference to a workload in the profile's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Kind.
    pub kind: TargetKind,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// When learning is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearningConfig {
    /// Learn at least this long, e.g. `24h` (whole h, m, s).
    #[serde(default = "default_min_duration")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("learning.minDuration must be a duration in whole hours, minutes and seconds, such as 24h or 1h30m"))]
    #[schemars(length(max = 32))]
    pub min_duration: String,
    /// Require nothing new for this long before completing, e.g. `4h`.
    #[serde(default = "default_stable_for")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("learning.stableFor must be a duration in whole hours, minutes and seconds, such as 4h or 30m"))]
    #[schemars(length(max = 32))]
    pub stable_for: String,
    /// Distinct replicas that must be observed (use 1 for single-replica workloads).
    #[serde(default = "default_min_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("learning.minReplicas must be at least 1"))]
    #[schemars(range(max = 1000))]
    pub min_replicas: u32,
    /// Leave Learning for `mode` by itself once learning is complete. When false, the phase
    /// follows `mode` at once (the user vouches for the profile).
    #[serde(default = "default_true")]
    pub auto_promote: bool,
}

fn default_min_duration() -> String {
    "24h".into()
}
fn default_stable_for() -> String {
    "4h".into()
}
fn default_min_replicas() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            min_duration: default_min_duration(),
            stable_for: default_stable_for(),
            min_replicas: default_min_replicas(),
            auto_promote: true,
        }
    }
}

/// How violations are answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseConfig {
    /// Tag the pod, evict it (Kill), or only record (None).
    #[serde(default)]
    pub action: ResponseAction,
    /// In Enforcing, also kill the offending process in the kernel (SIGKILL).
    #[serde(default)]
    pub kill_process: bool,
    /// With killProcess: also kill the process when it is its container's init (PID 1),
    /// which restarts the container. Off by default, so that a rule that kills shells does
    /// not crash-loop every image whose entrypoint is a shell: the init is then only
    /// recorded, and the pod answered by the action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_container_init: bool,
    /// Decide and record, but change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Allow evicting pods that have no controller owner (nothing would replace them).
    #[serde(default)]
    pub allow_unowned: bool,
    /// Eviction limits.
    #[serde(default)]
    pub limits: ResponseLimits,
}

/// Maximum entries per category. Over them, new behaviour is not learned and the profile
/// reports `Bounded=False` with reason `TooManyEntries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryLimits {
    /// Executables.
    #[serde(default = "lim_processes")]
    #[schemars(range(min = 1, max = 1024))]
    pub processes: u32,
    /// Syscalls.
    #[serde(default = "lim_syscalls")]
    #[schemars(range(min = 1, max = 512))]
    pub syscalls: u32,
    /// Egress peers.
    #[serde(default = "lim_egress")]
    #[schemars(range(min = 1, max = 1024))]
    pub egress: u32,
    /// Listening ports.
    #[serde(default = "lim_listen")]
    #[schemars(range(min = 1, max = 256))]
    pub listen: u32,
    /// File prefixes.
    #[serde(default = "lim_files")]
    #[schemars(range(min = 1, max = 1024))]
    pub files: u32,
}

fn lim_processes() -> u32 {
    herdwatch_model::Limits::DEFAULT.processes as u32
}
fn lim_syscalls() -> u32 {
    herdwatch_model::Limits::DEFAULT.syscalls as u32
}
fn lim_egress() -> u32 {
    herdwatch_model::Limits::DEFAULT.egress as u32
}
fn lim_listen() -> u32 {
    herdwatch_model::Limits::DEFAULT.listen as u32
}
fn lim_files() -> u32 {
    herdwatch_model::Limits::DEFAULT.files as u32
}

impl Default for EntryLimits {
    fn default() -> Self {
        Self {
            processes: lim_processes(),
            syscalls: lim_syscalls(),
            egress: lim_egress(),
            listen: lim_listen(),
            files: lim_files(),
        }
    }
}

/// Desired state of a BehaviorProfile.
#[expect(
    clippy::duplicated_attributes,
    reason = "every printcolumn(...) of the kube derive repeats the same keys, which clippy reads as duplicates"
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "herdwatch.dev",
    version = "v1alpha1",
    kind = "BehaviorProfile",
    namespaced,
    shortname = "bp",
    category = "herdwatch",
    status = "BehaviorProfileStatus",
    derive = "PartialEq",
    doc = "The learned and allowed behaviour of one workload container, and how herdwatch answers anything else.",
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.targetRef.kind",
        priority = "1"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(
        name = "Container",
        type_ = "string",
        json_path = ".spec.container",
        priority = "1"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Revision",
        type_ = "integer",
        json_path = ".status.revision",
        priority = "1"
    ),
    printcolumn(
        name = "Violations",
        type_ = "integer",
        json_path = ".status.violations.total"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(self.mode == 'Learn' && self.response.action == 'Kill')").message("response.action Kill is not allowed while mode is Learn: set mode to Enforce or action to Tag"))]
#[x_kube(validation = Rule::new("!(self.mode == 'Learn' && self.response.killProcess)").message("response.killProcess is not allowed while mode is Learn: set mode to Enforce or killProcess to false"))]
#[serde(rename_all = "camelCase")]
pub struct BehaviorProfileSpec {
    /// The workload (in this namespace) whose pods this profile describes.
    #[x_kube(validation = Rule::new("self == oldSelf").message("targetRef is immutable: create another BehaviorProfile for another workload"))]
    pub target_ref: TargetRef,
    /// The container within the workload's pods.
    #[x_kube(validation = Rule::new("self == oldSelf").message("container is immutable: create another BehaviorProfile for another container"))]
    #[schemars(length(min = 1, max = 63))]
    pub container: String,
    /// Learn, Monitor or Enforce.
    #[serde(default)]
    pub mode: Mode,
    /// When learning is complete.
    #[serde(default)]
    pub learning: LearningConfig,
    /// How violations are answered.
    #[serde(default)]
    pub response: ResponseConfig,
    /// Maximum entries per category.
    #[serde(default)]
    pub limits: EntryLimits,
    /// The allowed behaviour: entries learned by herdwatch and written by hand side by side.
    #[serde(default)]
    pub allowed: Behavior,
}

/// One revision of the allowed behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// Revision number.
    pub revision: u64,
    /// When it was made.
    pub time: Option<Time>,
    /// The image digest whose observations made it; absent for a hand edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Rules added or widened.
    #[serde(default)]
    pub added: BehaviorChanges,
    /// Rules removed or narrowed.
    #[serde(default)]
    pub removed: BehaviorChanges,
}

/// What one image digest added over the digest before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSectionStatus {
    /// Image digest.
    pub digest: String,
    /// First observation of this digest.
    pub first_seen: Option<Time>,
    /// Latest observation.
    pub last_seen: Option<Time>,
    /// The digest this one was seeded from; absent for the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeded_from: Option<String>,
    /// Profile revision when it first appeared.
    #[serde(default)]
    pub base_revision: u64,
    /// Rules this digest added over its seed.
    #[serde(default)]
    pub added: BehaviorChanges,
}

/// Learning progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearningStatus {
    /// When learning (re)started.
    pub started_at: Option<Time>,
    /// When something new was last learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_at: Option<Time>,
    /// Replicas observed.
    #[serde(default)]
    pub replicas: ReplicaSummary,
    /// Replicas whose containers started before the agent attached.
    #[serde(default)]
    pub late_attach: ReplicaSummary,
    /// Largest count of lost events an agent reported while learning.
    #[serde(default)]
    pub events_lost: u64,
    /// Some of the nodes whose agents lost events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub lossy_nodes: Vec<String>,
    /// Programs outside the containers that started processes in them and that herdwatch
    /// does not know as a container runtime: their own set-up may have been learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(max = 64)))]
    pub unrecognised_runtimes: Vec<String>,
    /// Entries dropped at the limits.
    #[serde(default)]
    pub entries_dropped: u64,
    /// When the profile left Learning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    /// When the operator looks again (time alone may complete learning then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Time>,
}

/// The latest violation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastViolation {
    /// When.
    pub time: Option<Time>,
    /// Pod.
    pub pod: String,
    /// Rule broken.
    pub rule: String,
    /// Subject.
    pub subject: String,
    /// The BehaviorViolation record.
    pub record: String,
}

/// Violation counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationSummary {
    /// All violations counted since the profile was created.
    #[serde(default)]
    pub total: u64,
    /// Pods tagged.
    #[serde(default)]
    pub tagged: u64,
    /// Pods evicted.
    #[serde(default)]
    pub evicted: u64,
    /// Evictions refused by a safety rule.
    #[serde(default)]
    pub refused: u64,
    /// The latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastViolation>,
    /// Times of recent evictions (for `maxKillsPerHour`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub recent_evictions: Vec<Time>,
}

/// Observed state of a BehaviorProfile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorProfileStatus {
    /// Learning, Monitoring or Enforcing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Learning, Complete, Incomplete, Bounded, TargetFound.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,
    /// Current revision of the allowed behaviour.
    #[serde(default)]
    pub revision: u64,
    /// Recent revisions, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub revisions: Vec<RevisionStatus>,
    /// Per image digest sections, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub images: Vec<ImageSectionStatus>,
    /// Learning progress.
    #[serde(default)]
    pub learning: LearningStatus,
    /// Violations.
    #[serde(default)]
    pub violations: ViolationSummary,
}
