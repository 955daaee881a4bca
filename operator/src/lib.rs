//! The herdwatch operator: the cluster-side shell around `herdwatch-model`.
//!
//! Data enters from the API server through watches: workloads (Deployments, StatefulSets,
//! DaemonSets) in namespaces labelled [`LEARN_LABEL`]`=`[`LEARN_ENABLED`], BehaviorProfiles,
//! the BehaviorObservations agents publish, and the BehaviorViolations agents record. Every
//! decision is a call into the model: [`herdwatch_model::Profile::merge_observation`] and
//! [`herdwatch_model::evaluate`] for learning, [`herdwatch_model::response::decide`] for
//! responses, [`herdwatch_model::response::expired`] for retention. Data leaves as writes:
//! created profiles, the merged `spec.allowed` of a profile (read, merge, replace with a
//! resourceVersion precondition), status by server-side apply with the field manager
//! [`FIELD_MANAGER`], pod labels and annotations, Kubernetes Events, evictions through the
//! Eviction API, deletions of expired records, and Prometheus metrics on `/metrics`.
//!
//! - [`workload`]: creates a profile per container of every workload in an opted-in namespace.
//! - [`profile`]: merges a workload's observations into its profile and moves its phase.
//! - [`violation`]: answers violations (tag, evict, refuse) and keeps records within retention.
//! - [`gc`]: deletes observations of vanished nodes and stale observations.
//! - [`lease`]: leader election with a `coordination.k8s.io/v1` Lease, so that only one replica
//!   acts; [`run`] starts the controllers while this replica leads and stops them when it does
//!   not.
//! - [`context`], [`args`], [`metrics`], [`http`], [`names`]: shared state, flags, metrics, the
//!   `/metrics` `/healthz` `/readyz` server, and object naming.

pub mod args;
pub mod context;
pub mod gc;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod profile;
pub mod run;
pub mod violation;
pub mod workload;

/// Field manager of every write the operator makes (status by server-side apply, spec
/// updates, created objects), so `managedFields` shows which fields are herdwatch's.
pub const FIELD_MANAGER: &str = "herdwatch-operator";

/// Namespace label that opts a namespace in to learning: every Deployment, StatefulSet and
/// DaemonSet in a namespace labelled `herdwatch.dev/learn=enabled` gets a BehaviorProfile per
/// container. Removing the label stops new profiles from being created; existing profiles
/// are left alone (they may hold hand edits).
pub const LEARN_LABEL: &str = "herdwatch.dev/learn";
/// The value of [`LEARN_LABEL`] that opts in.
pub const LEARN_ENABLED: &str = "enabled";

/// Label on the profiles the operator created itself (not on hand-written ones). Only such
/// profiles are deleted once their workload has been gone for the orphan retention.
pub const CREATED_BY_LABEL: &str = "herdwatch.dev/created-by";
/// The value of [`CREATED_BY_LABEL`].
pub const CREATED_BY_OPERATOR: &str = "operator";

/// Pod label naming the rule a pod broke (a label-value-safe form of the rule reference).
pub const VIOLATION_LABEL: &str = "herdwatch.dev/violation";
/// Pod annotation with a one-line summary of the latest violation.
pub const VIOLATION_SUMMARY_ANNOTATION: &str = "herdwatch.dev/violation-summary";
/// `reportingController` of the Events the operator posts.
pub const REPORTING_CONTROLLER: &str = "herdwatch.dev/operator";

/// Errors of the operator's reconcilers and runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A resource holds a value the model cannot use (its schema should have refused it).
    #[error("invalid resource: {0}")]
    Invalid(#[from] herdwatch_api::Error),
    /// An object has no name or namespace (never true of objects read from the API).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A write kept conflicting with other writers; the reconcile is retried with backoff.
    #[error("{object}: write still conflicted after {attempts} attempts")]
    Conflict {
        /// The object written.
        object: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Encoding or decoding JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Registering or encoding metrics.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding or serving the HTTP port.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A short, bounded label for the `reason` of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                404 => "api_not_found",
                403 => "api_forbidden",
                409 => "api_conflict",
                422 => "api_invalid",
                429 => "api_too_many_requests",
                500..=599 => "api_server_error",
                _ => "api_other",
            },
            Error::Kube(_) => "api_transport",
            Error::Invalid(_) => "invalid_resource",
            Error::MissingField(_) => "missing_field",
            Error::Conflict { .. } => "conflict_retries",
            Error::Json(_) => "json",
            Error::Metrics(_) => "metrics",
            Error::Io(_) => "io",
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The HTTP status of an API error, if the error is one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
