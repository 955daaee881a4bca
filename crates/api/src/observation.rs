//! BehaviorObservation: one agent's accumulated observation of one workload container image
//! on one node; the bounded-rate channel from agents to the operator (see
//! `herdwatch_model::observation` for the protocol).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Behavior, ReplicaSummary};

/// Label on every BehaviorObservation naming the agent's node, so that a restarted agent can
/// list its own observations back.
pub const NODE_LABEL: &str = "herdwatch.dev/node";
/// Field manager agents use for server-side apply.
pub const AGENT_FIELD_MANAGER: &str = "herdwatch-agent";

/// The field selector that lists the observations of one workload container (the CRD makes
/// `spec.workload.kind`, `.name` and `.container` selectable).
pub fn workload_field_selector(kind: &str, name: &str, container: &str) -> String {
    format!(
        "spec.workload.kind={kind},spec.workload.name={name},spec.workload.container={container}"
    )
}

/// The workload container observed (in the object's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedWorkload {
    /// Kind of the top-level owner (Pod for a pod without one).
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the top-level owner.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Container name.
    #[schemars(length(min = 1, max = 63))]
    pub container: String,
}

/// What one agent saw.
#[expect(
    clippy::duplicated_attributes,
    reason = "every printcolumn(...) of the kube derive repeats the same keys, which clippy reads as duplicates"
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "herdwatch.dev",
    version = "v1alpha1",
    kind = "BehaviorObservation",
    namespaced,
    shortname = "bo",
    category = "herdwatch",
    derive = "PartialEq",
    doc = "Behaviour one herdwatch agent observed for one workload container image on its node. Written by the agent, merged into the BehaviorProfile by the operator.",
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.workload.kind",
        priority = "1"
    ),
    printcolumn(name = "Workload", type_ = "string", json_path = ".spec.workload.name"),
    printcolumn(
        name = "Container",
        type_ = "string",
        json_path = ".spec.workload.container"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Lost", type_ = "integer", json_path = ".spec.eventsLost"),
    printcolumn(name = "Updated", type_ = "date", json_path = ".spec.updatedAt"),
    // The operator lists one workload container's observations with a field selector on
    // these, so that merging a profile reads only its own observations.
    selectable = ".spec.workload.kind",
    selectable = ".spec.workload.name",
    selectable = ".spec.workload.container"
)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorObservationSpec {
    /// The workload container.
    #[x_kube(validation = Rule::new("self == oldSelf").message("workload is immutable: it is part of the object's name"))]
    pub workload: ObservedWorkload,
    /// Image digest of the container, e.g. `sha256:…`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("imageDigest is immutable: it is part of the object's name"))]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9_+.-]+:[A-Fa-f0-9]{32,}$")
    )]
    pub image_digest: String,
    /// The agent's node.
    #[x_kube(validation = Rule::new("self == oldSelf").message("node is immutable: it is part of the object's name"))]
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// When the agent instance started; a new value means its loss counter restarted.
    pub agent_started_at: Time,
    /// When the content last changed.
    pub updated_at: Time,
    /// What was seen.
    #[serde(default)]
    pub observed: Behavior,
    /// Replicas the agent watched.
    #[serde(default)]
    pub replicas: ReplicaSummary,
    /// Replicas whose container started before the agent attached.
    #[serde(default)]
    pub late_attach: ReplicaSummary,
    /// Events the agent lost while these replicas ran.
    #[serde(default)]
    pub events_lost: u64,
    /// Entries not recorded because a category was at its limit.
    #[serde(default)]
    pub dropped: u64,
    /// Programs outside the containers that started processes in them and that herdwatch
    /// does not know as a container runtime: their own set-up may have been learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(max = 64)))]
    pub unrecognised_runtimes: Vec<String>,
}
