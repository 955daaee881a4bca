//! Types shared by several resources: modes, actions, behaviour entries and their lists.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whole hours, minutes and seconds, as `parse_duration` in the model reads them.
pub const DURATION_PATTERN: &str = "^([0-9]+(h|m|s))+$";

/// What a profile is for: learning only, or judging events (and how hard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Learn; never respond.
    Learn,
    /// After learning, record and tag violations; evictions are dry runs.
    #[default]
    Monitor,
    /// After learning, respond as `response` says.
    Enforce,
}

/// The phase a profile is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Recording behaviour.
    #[default]
    Learning,
    /// Judging events; no evictions.
    Monitoring,
    /// Judging events and responding.
    Enforcing,
}

/// The response to a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResponseAction {
    /// Record only (metric and BehaviorViolation).
    None,
    /// Also label and annotate the pod and post an Event.
    #[default]
    Tag,
    /// Also evict the pod through the Eviction API, so that its controller replaces it.
    Kill,
}

/// Transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// Kind of file access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FileAccess {
    /// Opening for reading.
    Read,
    /// Opening an existing file for writing.
    Write,
    /// Creating a file.
    Create,
    /// Emptying a file as it is opened (`O_TRUNC`).
    Truncate,
}

/// When and by how many replicas an entry was observed. Empty on hand-written entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// First observation anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// Latest observation anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// Distinct replicas (pods) that showed it; exact up to 8, estimated above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seen_replicas: Option<u32>,
    /// Compact record of which replicas showed it (written by herdwatch; do not edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9a-f]{4}){0,64}$"))]
    pub replica_sketch: Option<String>,
}

/// An executable the workload may run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    /// Absolute path of the executable, matched against the path as the kernel resolved it
    /// (`/usr/../tmp/x` is `/tmp/x`); `*` and `?` are globs that stop at `/`, `**` crosses it.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("exe must be an absolute path such as /usr/sbin/nginx"))]
    #[schemars(length(min = 1, max = 4096))]
    pub exe: String,
    /// Arguments, one glob per argument (`argv[0]` included); a `**` item matches any number of
    /// arguments (at most 8 of them). Absent: any arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.filter(t, t == '**').size() <= 8").message("argv may have at most 8 ** items: a run of them means the same as one"))]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub argv: Option<Vec<String>>,
    /// User id; absent: any user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967294u32))]
    pub uid: Option<u32>,
    /// Observations.
    #[serde(flatten)]
    pub seen: Seen,
}

/// A system call the workload may make.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyscallEntry {
    /// Syscall name, e.g. `openat`.
    #[schemars(length(min = 1, max = 64), regex(pattern = "^[a-z0-9_]+$"))]
    pub name: String,
    /// Observations.
    #[serde(flatten)]
    pub seen: Seen,
}

/// A peer the workload may connect to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressEntry {
    /// IP address or CIDR.
    #[x_kube(validation = Rule::new("isIP(self) || isCIDR(self)").message("peer must be an IP address such as 10.0.0.7 or a CIDR such as 10.0.0.0/8"))]
    #[schemars(length(min = 1, max = 64))]
    pub peer: String,
    /// Destination port; absent: any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Observations.
    #[serde(flatten)]
    pub seen: Seen,
}

/// A port the workload may listen on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenEntry {
    /// Port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Observations.
    #[serde(flatten)]
    pub seen: Seen,
}

/// File access allowed for one path, or for a directory and everything below it.
/// - `path`: that file or directory only (a directory's listing, not what is in it). `*`
///   stands for exactly one path component, as learning writes for generated names
///   (`/proc/*/status`); it never crosses `/`.
/// - `prefix`: the directory and everything below it, by whole components (`/etc/nginx`
///   covers `/etc/nginx/nginx.conf`, not `/etc/nginx2`). Learning never writes one.
///
/// Sensitive paths (the agent's `--sensitive-paths`, chart value `agent.sensitivePaths`:
/// /etc/shadow, service account tokens, /proc/*/environ, keys...) are allowed only by a
/// `path` that names them literally, never by a `prefix` or a `*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) != has(self.prefix)").message("a file entry has either path (one file or directory; * for one path component) or prefix (a directory and everything below it): set exactly one"))]
pub struct FileEntry {
    /// One file or directory, as the kernel resolves it; `*` for one whole component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('//') && !self.contains('/../') && !self.endsWith('/..') && !self.contains('/./')").message("path must be absolute and resolved, such as /etc/nginx/nginx.conf: no //, . or .. components"))]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// A directory: it and everything below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("prefix must be an absolute path such as /etc/nginx"))]
    #[schemars(length(min = 1, max = 4096))]
    pub prefix: Option<String>,
    /// Access allowed.
    #[x_kube(validation = Rule::new("size(self) > 0").message("access needs at least one of read, write, create, truncate"))]
    #[schemars(length(max = 4))]
    pub access: Vec<FileAccess>,
    /// Observations.
    #[serde(flatten)]
    pub seen: Seen,
}

impl FileEntry {
    /// The model's path pattern of this entry (a `prefix` is `<prefix>/**`).
    pub fn pattern(&self) -> String {
        match (&self.path, &self.prefix) {
            (Some(path), _) => path.clone(),
            (None, Some(prefix)) => {
                herdwatch_model::behavior::FileRule::below(
                    prefix,
                    herdwatch_model::behavior::Access::NONE,
                )
                .path
            }
            (None, None) => String::new(),
        }
    }
}

/// Network behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBehavior {
    /// Outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub egress: Vec<EgressEntry>,
    /// Listening ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub listen: Vec<ListenEntry>,
}

/// Behaviour, per category. In a profile this is what is allowed; in an observation, what
/// was seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// Executables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub processes: Vec<ProcessEntry>,
    /// System calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub syscalls: Vec<SyscallEntry>,
    /// Network.
    #[serde(default)]
    pub network: NetworkBehavior,
    /// Files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub files: Vec<FileEntry>,
}

/// A process rule without observations (in diffs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRef {
    /// Executable.
    pub exe: String,
    /// Argument pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

/// An egress rule without observations (in diffs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRef {
    /// IP address or CIDR.
    pub peer: String,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

/// A listen rule without observations (in diffs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenRef {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A file rule without observations (in diffs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileRef {
    /// Path pattern (`/**` at the end: the directory and everything below it).
    pub prefix: String,
    /// Access.
    pub access: Vec<FileAccess>,
}

/// Rules added or removed, per category; bounded, with a count of the rules left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorChanges {
    /// Executables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub processes: Vec<ProcessRef>,
    /// Syscall names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub syscalls: Vec<String>,
    /// Egress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<EgressRef>,
    /// Listening ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub listen: Vec<ListenRef>,
    /// Files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub files: Vec<FileRef>,
    /// Rules changed but not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Limits on eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseLimits {
    /// Evictions allowed in any hour.
    #[serde(default = "default_max_kills")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_kills_per_hour: u32,
    /// Ready replicas the owner must keep after an eviction.
    #[serde(default = "default_min_ready")]
    #[schemars(range(min = 0, max = 100000))]
    pub min_ready_replicas: u32,
}

fn default_max_kills() -> u32 {
    3
}

fn default_min_ready() -> u32 {
    1
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_kills_per_hour: default_max_kills(),
            min_ready_replicas: default_min_ready(),
        }
    }
}

/// A summary of replicas: the count and herdwatch's compact record of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSummary {
    /// Distinct replicas; exact up to 64, estimated above.
    #[serde(default)]
    pub count: u32,
    /// Compact record (written by herdwatch; do not edit).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = "^([0-9a-f]{4}){0,64}$"))]
    pub sketch: String,
}
