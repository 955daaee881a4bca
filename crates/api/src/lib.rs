//! herdwatch's custom resources (group `herdwatch.dev`, version `v1alpha1`) and their
//! conversions to and from the behaviour model.
//!
//! Data enters as objects read from the API server (deserialised into the types here) or as
//! model values to be written (converted with the `From`/`TryFrom` impls and helpers in
//! [`convert`]); it leaves as those objects, serialised for server-side apply, or as model
//! values for `herdwatch-model` to decide on. The `crdgen` binary writes the CustomResource
//! Definitions derived from these types (schema and CEL validation rules included) to
//! `crds/` and to the Helm chart.
//!
//! - [`BehaviorProfile`] (`bp`): one workload container's allowed behaviour, phase and history.
//! - [`ClusterBehaviorPolicy`] (`cbp`): cluster-wide deny rules.
//! - [`BehaviorViolation`] (`bv`): the record of one (pod, rule, subject).
//! - [`BehaviorObservation`] (`bo`): one agent's observation of one workload on its node, the
//!   bounded-rate channel from agents to the operator.

pub mod common;
pub mod conditions;
pub mod convert;
pub mod examples;
pub mod observation;
pub mod policy;
pub mod profile;
pub mod violation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use observation::{BehaviorObservation, BehaviorObservationSpec};
pub use policy::{ClusterBehaviorPolicy, ClusterBehaviorPolicySpec};
pub use profile::{BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus};
pub use violation::{BehaviorViolation, BehaviorViolationSpec, BehaviorViolationStatus};

/// API group of every herdwatch resource.
pub const GROUP: &str = "herdwatch.dev";
/// API version of every herdwatch resource.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition herdwatch installs, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        BehaviorProfile::crd(),
        ClusterBehaviorPolicy::crd(),
        BehaviorViolation::crd(),
        BehaviorObservation::crd(),
    ]
}

/// Errors reading resources into the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field holds a value the model cannot use.
    #[error("{field}: {source}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What the model said.
        #[source]
        source: herdwatch_model::Error,
    },
    /// A required field is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
}

impl Error {
    /// The same error with `prefix.` in front of its field path.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Error::Invalid { field, source } => Error::Invalid {
                field: format!("{prefix}.{field}"),
                source,
            },
            other => other,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
