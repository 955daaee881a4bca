//! ClusterBehaviorPolicy: rules platform teams write once for many namespaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ResponseAction, ResponseLimits};

/// What a rule denies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DenyKind {
    /// Starting a shell (sh, bash, dash, ash, zsh, …), also through busybox.
    #[default]
    Shells,
    /// Starting any program in `binaries`, also as the applet of busybox or toybox
    /// (`busybox wget` counts as `wget`).
    Binaries,
    /// Starting an executable that is not in the image (written after the container started).
    Drift,
    /// Running as root (uid 0), by start or by changing user.
    Root,
    /// Connecting outside `cidrs` (loopback is always allowed).
    EgressOutside,
    /// Starting programs in an exec session (`kubectl exec`).
    ExecSessions,
}

/// What a rule does not apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleExceptions {
    /// Executable paths the rule ignores: globs in which `*` stops at `/` and `**` crosses it,
    /// matched against the path as the kernel resolved it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub executables: Vec<String>,
    /// Container names the rule ignores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub containers: Vec<String>,
}

/// One rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.deny != 'Binaries' || (has(self.binaries) && size(self.binaries) > 0)").message("deny Binaries needs a non-empty binaries list, such as [curl, wget, nc]"))]
#[x_kube(validation = Rule::new("self.deny == 'Binaries' || !has(self.binaries)").message("binaries is only used with deny Binaries"))]
#[x_kube(validation = Rule::new("self.deny != 'EgressOutside' || (has(self.cidrs) && size(self.cidrs) > 0)").message("deny EgressOutside needs cidrs: the networks egress may go to, such as [10.0.0.0/8]"))]
#[x_kube(validation = Rule::new("self.deny == 'EgressOutside' || !has(self.cidrs)").message("cidrs is only used with deny EgressOutside"))]
#[x_kube(validation = Rule::new("!(has(self.killContainerInit) && self.killContainerInit) || (has(self.killProcess) && self.killProcess)").message("killContainerInit only applies with killProcess: true"))]
pub struct PolicyRule {
    /// Name, unique within the policy; part of violation records and metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What the rule denies.
    pub deny: DenyKind,
    /// For deny Binaries: program names (`wget`, matched against the executable's name,
    /// `argv[0]`'s, and the applet busybox or toybox is asked to run, so that `busybox wget`
    /// counts as `wget`) or absolute path globs (`/opt/tools/*`, matched against the executable
    /// as the kernel resolved it; `*` stops at `/`, `/opt/tools/**` also covers subdirectories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 4096)))]
    pub binaries: Option<Vec<String>>,
    /// For deny EgressOutside: networks that egress may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) || isIP(c))").message("cidrs must be IP addresses or CIDRs such as 10.0.0.0/8"))]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub cidrs: Option<Vec<String>>,
    /// The response: None, Tag or Kill.
    #[serde(default)]
    pub action: ResponseAction,
    /// Also kill the offending process in the kernel (SIGKILL).
    #[serde(default)]
    pub kill_process: bool,
    /// With killProcess: also kill the process when it is its container's init (PID 1),
    /// which restarts the container. Off by default, so that a rule that kills shells does
    /// not crash-loop every image whose entrypoint is a shell: the init is then only
    /// recorded, and the pod answered by the action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_container_init: bool,
    /// What the rule does not apply to.
    #[serde(default)]
    pub exceptions: RuleExceptions,
}

/// Desired state of a ClusterBehaviorPolicy.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "herdwatch.dev",
    version = "v1alpha1",
    kind = "ClusterBehaviorPolicy",
    shortname = "cbp",
    category = "herdwatch",
    derive = "PartialEq",
    doc = "Behaviour denied in every pod the selectors pick, with or without a learned profile.",
    printcolumn(name = "Deny", type_ = "string", json_path = ".spec.rules[*].deny"),
    printcolumn(name = "DryRun", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.rules.exists(r, has(r.killProcess) && r.killProcess) || (has(self.namespaceSelector) && ((has(self.namespaceSelector.matchLabels) && size(self.namespaceSelector.matchLabels) > 0) || (has(self.namespaceSelector.matchExpressions) && size(self.namespaceSelector.matchExpressions) > 0)))").message("a rule with killProcess needs a non-empty namespaceSelector: name the namespaces whose processes may be killed, such as matchLabels {team: payments}"))]
pub struct ClusterBehaviorPolicySpec {
    /// Namespaces whose pods the policy applies to; absent or empty: all namespaces. A
    /// policy with a `killProcess` rule must name them (non-empty), so that no policy kills
    /// processes cluster-wide by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods within those namespaces; absent or empty: all pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The rules.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("rules needs at least one rule"))]
    #[schemars(length(max = 64))]
    pub rules: Vec<PolicyRule>,
    /// Decide and record, but change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Allow evicting pods that have no controller owner.
    #[serde(default)]
    pub allow_unowned: bool,
    /// Eviction limits for this policy.
    #[serde(default)]
    pub limits: ResponseLimits,
}
