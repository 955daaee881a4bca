//! Cgroup ids to cgroup paths, and cgroup paths to containers and pods.
//!
//! Every event carries `bpf_get_current_cgroup_id()`: the inode number of the task's
//! directory in the cgroup2 hierarchy (kernfs hands out the node id as the inode number).
//! [`CgroupResolver`] turns that id into the directory's path by walking the hierarchy and
//! caching what it found; a miss triggers a new walk, at most one per
//! [`ResolverConfig::min_rescan_interval`], so an event storm from unknown cgroups costs
//! bounded work. [`parse_cgroup_path`] then reads the container runtime, container id and
//! pod UID out of the path; it is pure and knows the shapes that containerd, CRI-O, docker
//! and plain runc give cgroups under the kubelet's cgroupfs and systemd drivers.

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attribution::idhash::IdMap;
use crate::error::{Error, Result};

/// The container runtime a cgroup path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    Runc,
    /// The path holds a bare container id (the cgroupfs driver of containerd and docker
    /// look alike); the pod's `containerID` says which runtime it was.
    Unspecified,
}

impl Runtime {
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Runc => "runc",
            Runtime::Unspecified => "unknown",
        }
    }
}

/// A container as its cgroup path names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// The runtime's container id (64 hex digits for the Kubernetes runtimes).
    pub id: Arc<str>,
    /// The pod UID in its dashed form, for containers of Kubernetes pods.
    pub pod_uid: Option<Arc<str>>,
}

/// What a cgroup path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupKind {
    /// A container's cgroup, or one nested inside it.
    Container(ContainerRef),
    /// A pod's own cgroup (or a runtime helper in it, such as CRI-O's conmon), outside any
    /// of its containers.
    Pod { pod_uid: Arc<str> },
    /// Anything else: the root, system services, user sessions.
    Host,
}

impl CgroupKind {
    pub fn container(&self) -> Option<&ContainerRef> {
        match self {
            CgroupKind::Container(c) => Some(c),
            _ => None,
        }
    }

    pub fn pod_uid(&self) -> Option<&Arc<str>> {
        match self {
            CgroupKind::Container(c) => c.pod_uid.as_ref(),
            CgroupKind::Pod { pod_uid } => Some(pod_uid),
            CgroupKind::Host => None,
        }
    }
}

/// Reads a cgroup path (as `/proc/<pid>/cgroup` shows it, relative to the cgroup2 root).
///
/// Kubernetes paths are found by their pod component wherever it sits, so that a kubelet
/// with a custom `--cgroup-root` or a node nested in another container (kind) parses the
/// same; the component right after it is the container. Paths without a pod are matched
/// against the shapes runtimes use outside Kubernetes.
pub fn parse_cgroup_path(path: &str) -> CgroupKind {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();

    // containerd with `SystemdCgroup = true` in front of a runc that manages cgroupfs
    // leaves the systemd notation "slice:prefix:id" as a literal directory name.
    for comp in comps.iter().rev() {
        if let Some(kind) = parse_systemd_triplet(comp) {
            return kind;
        }
    }

    for (i, comp) in comps.iter().enumerate().rev() {
        if let Some(pod_uid) = pod_uid_of(comp) {
            let pod_uid: Arc<str> = Arc::from(pod_uid);
            if let Some((runtime, id)) = comps.get(i + 1).and_then(|c| container_of(c)) {
                return CgroupKind::Container(ContainerRef {
                    runtime,
                    id: Arc::from(id),
                    pod_uid: Some(pod_uid),
                });
            }
            return CgroupKind::Pod { pod_uid };
        }
    }

    // Not a pod. systemd-driven runtimes name the scope after the container.
    for comp in comps.iter().rev() {
        if let Some((runtime, id)) = scope_container(comp) {
            return CgroupKind::Container(ContainerRef {
                runtime,
                id: Arc::from(id),
                pod_uid: None,
            });
        }
    }
    // cgroupfs-driven runtimes: containerd puts a container at /<namespace>/<id> (`ctr run`
    // uses the "default" namespace, the CRI plugin "k8s.io"), docker at /docker/<id>.
    if let [.., parent, id] = comps.as_slice() {
        let runtime = match *parent {
            "default" | "k8s.io" | "moby" if valid_name(id) => Some(Runtime::Containerd),
            "docker" if is_container_id(id) => Some(Runtime::Docker),
            p if !p.contains('.') && is_container_id(id) => Some(Runtime::Unspecified),
            _ => None,
        };
        if let Some(runtime) = runtime {
            return CgroupKind::Container(ContainerRef {
                runtime,
                id: Arc::from(*id),
                pod_uid: None,
            });
        }
    }
    // `runc run <id>` without a cgroupsPath puts the container at /<id>. Only a full-length
    // id is taken for one: a short top-level name is as likely to be anything else.
    if let [id] = comps.as_slice() {
        if is_container_id(id) {
            return CgroupKind::Container(ContainerRef {
                runtime: Runtime::Runc,
                id: Arc::from(*id),
                pod_uid: None,
            });
        }
    }
    CgroupKind::Host
}

/// `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`.
fn parse_systemd_triplet(comp: &str) -> Option<CgroupKind> {
    let mut parts = comp.split(':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let runtime = runtime_of_prefix(prefix)?;
    if !is_container_id(id) {
        return None;
    }
    let pod_uid = pod_uid_of(slice).map(Arc::from);
    Some(CgroupKind::Container(ContainerRef {
        runtime,
        id: Arc::from(id),
        pod_uid,
    }))
}

fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    Some(match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        "libpod" => Runtime::Podman,
        _ => return None,
    })
}

/// The pod UID in a pod cgroup component, dashed:
/// `pod<uid>` (cgroupfs) or `…-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(comp: &str) -> Option<String> {
    let raw = if let Some(slice) = comp.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        &slice[at + 4..]
    } else {
        comp.strip_prefix("pod")?
    };
    // Pod UIDs are UUIDs (36 characters with dashes); static pods use a 32-hex-digit hash.
    let ok = (32..=36).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
        && raw.bytes().filter(u8::is_ascii_hexdigit).count() == 32;
    ok.then(|| raw.replace('_', "-"))
}

/// The container in the component right below a pod's cgroup.
fn container_of(comp: &str) -> Option<(Runtime, &str)> {
    if let Some(found) = scope_container(comp) {
        return Some(found);
    }
    // CRI-O under cgroupfs.
    if let Some(id) = comp.strip_prefix("crio-") {
        return is_container_id(id).then_some((Runtime::CriO, id));
    }
    // containerd and docker under cgroupfs: the bare id.
    is_container_id(comp).then_some((Runtime::Unspecified, comp))
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`,
/// `runc-<id>.scope`. CRI-O's monitor (`crio-conmon-<id>.scope`) is not the container.
fn scope_container(comp: &str) -> Option<(Runtime, &str)> {
    let name = comp.strip_suffix(".scope")?;
    if name.starts_with("crio-conmon-") {
        return None;
    }
    if let Some(id) = name.strip_prefix("runc-") {
        return valid_name(id).then_some((Runtime::Runc, id));
    }
    let (prefix, id) = name.rsplit_once('-')?;
    let runtime = runtime_of_prefix(prefix)?;
    is_container_id(id).then_some((runtime, id))
}

/// The 64-hex-digit ids that containerd's CRI plugin, CRI-O and docker generate.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Names a user may give a container (`ctr run IMAGE NAME`, `runc run NAME`).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.contains(['.', ':'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where the cgroup2 hierarchy is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// The hierarchy path the mount shows (`/` unless a subtree is bind-mounted).
    pub root: String,
}

/// Finds the cgroup2 mount in `/proc/self/mountinfo` text (see proc(5)). A mount of the
/// whole hierarchy wins over a bind mount of a subtree.
pub fn parse_mountinfo(text: &str) -> Option<Cgroup2Mount> {
    let mut found: Option<Cgroup2Mount> = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount = Cgroup2Mount {
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            root: unescape_mountinfo(root),
        };
        let whole = mount.root == "/";
        if found.is_none() || whole && found.as_ref().is_some_and(|f| f.root != "/") {
            found = Some(mount);
        }
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`. Only three octal digits
/// that make a byte (`\000` to `\377`) are an escape; anything else is kept as it is.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the cgroup2 mount of this machine.
pub fn find_cgroup2_mount(mountinfo: &Path) -> Result<Cgroup2Mount> {
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|source| Error::io("read mount table", mountinfo, source))?;
    parse_mountinfo(&text).ok_or_else(|| Error::NoCgroup2 {
        mountinfo: mountinfo.to_owned(),
    })
}

/// What one walk of the hierarchy met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    pub cgroups: u64,
    /// Directories that disappeared between being listed and being read.
    pub vanished: u64,
    /// The walk stopped at the depth or entry bound.
    pub truncated: bool,
}

/// A view of the cgroup hierarchy: the filesystem in the agent, a table in tests.
pub trait CgroupSource {
    /// Calls `visit(id, path)` for every cgroup; `path` is relative to the hierarchy root
    /// and starts with `/` (the root itself is `/`).
    fn walk(&mut self, visit: &mut dyn FnMut(u64, &str)) -> Result<WalkStats>;

    /// The id of the cgroup at `path`, if it exists: one lookup, no walk.
    fn id_of(&mut self, path: &str) -> Option<u64>;
}

impl<S: CgroupSource + ?Sized> CgroupSource for &mut S {
    fn walk(&mut self, visit: &mut dyn FnMut(u64, &str)) -> Result<WalkStats> {
        (**self).walk(visit)
    }

    fn id_of(&mut self, path: &str) -> Option<u64> {
        (**self).id_of(path)
    }
}

/// The cgroup2 filesystem.
#[derive(Clone, Debug)]
pub struct FsCgroupSource {
    mount: Cgroup2Mount,
    /// Directory depth below the mount at which the walk stops.
    pub max_depth: usize,
    /// Directories after which the walk stops.
    pub max_cgroups: u64,
}

impl FsCgroupSource {
    pub fn new(mount: Cgroup2Mount) -> Self {
        // Kubernetes nests about six deep (kubepods/qos/pod/container, plus a cgroup-root
        // and a kind node); systemd-in-a-container adds a few more.
        FsCgroupSource {
            mount,
            max_depth: 32,
            max_cgroups: 200_000,
        }
    }

    pub fn mount(&self) -> &Cgroup2Mount {
        &self.mount
    }

    /// The directory of a hierarchy path under this mount.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let root = self.mount.root.trim_end_matches('/');
        let rel = path.strip_prefix(root)?;
        if !(rel.is_empty() || rel.starts_with('/')) || rel.split('/').any(|c| c == "..") {
            return None;
        }
        Some(self.mount.mount_point.join(rel.trim_start_matches('/')))
    }

    fn hierarchy_path(&self, rel: &str) -> String {
        match (self.mount.root.trim_end_matches('/'), rel) {
            ("", rel) => rel.to_owned(),
            (root, "/") => root.to_owned(),
            (root, rel) => format!("{root}{rel}"),
        }
    }
}

impl CgroupSource for FsCgroupSource {
    fn id_of(&mut self, path: &str) -> Option<u64> {
        std::fs::metadata(self.dir_of(path)?)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| m.ino())
    }

    fn walk(&mut self, visit: &mut dyn FnMut(u64, &str)) -> Result<WalkStats> {
        let top = &self.mount.mount_point;
        let meta = std::fs::metadata(top)
            .map_err(|source| Error::io("stat cgroup2 mount", top, source))?;
        let mut stats = WalkStats {
            cgroups: 1,
            ..WalkStats::default()
        };
        visit(meta.ino(), &self.hierarchy_path("/"));

        let mut stack: Vec<(PathBuf, String, usize)> = vec![(top.clone(), String::new(), 0)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    stats.vanished += 1;
                    continue;
                }
                Err(source) if depth == 0 => {
                    return Err(Error::io("list cgroup2 mount", &dir, source))
                }
                Err(_) => {
                    stats.vanished += 1;
                    continue;
                }
            };
            for entry in entries {
                let Ok(entry) = entry else {
                    stats.vanished += 1;
                    continue;
                };
                // d_type from readdir: no stat per entry. kernfs reports directories.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if stats.cgroups >= self.max_cgroups {
                    stats.truncated = true;
                    return Ok(stats);
                }
                let name = entry.file_name();
                let child_rel = format!("{rel}/{}", name.to_string_lossy());
                // kernfs readdir reports the node id as d_ino, which is the cgroup id.
                visit(entry.ino(), &self.hierarchy_path(&child_rel));
                stats.cgroups += 1;
                if depth + 1 < self.max_depth {
                    stack.push((entry.path(), child_rel, depth + 1));
                } else {
                    stats.truncated = true;
                }
            }
        }
        Ok(stats)
    }
}

/// A resolved cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    pub id: u64,
    /// Path relative to the cgroup2 root, as `/proc/<pid>/cgroup` shows it.
    pub path: Arc<str>,
    pub kind: CgroupKind,
}

/// Bounds of the resolver.
#[derive(Clone, Copy, Debug)]
pub struct ResolverConfig {
    /// At most one walk per interval, however many unknown ids arrive.
    pub min_rescan_interval: Duration,
    /// Cached cgroups; past this, cgroups that have disappeared go first, then new ones
    /// are not cached.
    pub max_entries: usize,
    /// A cgroup that a walk no longer finds stays cached for this many more walks, so
    /// that the last events of a short-lived container still resolve.
    pub keep_missing_walks: u64,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            min_rescan_interval: Duration::from_millis(50),
            max_entries: 65_536,
            keep_missing_walks: 3,
        }
    }
}

/// Counters of the resolver, read by the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub walks: u64,
    pub walk_errors: u64,
    pub vanished: u64,
    pub evicted: u64,
    /// Lookups of unknown ids that were not allowed to walk (rate limit).
    pub rate_limited: u64,
    /// Cgroups learned from a process's /proc entry instead of a walk.
    pub learned: u64,
    /// Container cgroups found by the last walk.
    pub containers: u64,
    /// Distinct pod UIDs found by the last walk.
    pub pods: u64,
}

struct Entry {
    info: Arc<CgroupInfo>,
    seen_walk: u64,
}

/// Cgroup id → [`CgroupInfo`], cached, refreshed by walking the hierarchy on a miss.
pub struct CgroupResolver<S> {
    source: S,
    config: ResolverConfig,
    entries: IdMap<u64, Entry>,
    by_path: HashMap<Arc<str>, u64>,
    walk_no: u64,
    last_walk: Option<Instant>,
    stats: ResolverStats,
}

impl<S: CgroupSource> CgroupResolver<S> {
    pub fn new(source: S, config: ResolverConfig) -> Self {
        CgroupResolver {
            source,
            config,
            entries: IdMap::default(),
            by_path: HashMap::new(),
            walk_no: 0,
            last_walk: None,
            stats: ResolverStats::default(),
        }
    }

    pub fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// The hierarchy this resolver reads.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached entry, without walking.
    pub fn get(&self, id: u64) -> Option<&Arc<CgroupInfo>> {
        self.entries.get(&id).map(|e| &e.info)
    }

    /// Resolves `id`, walking the hierarchy on a miss when the rate limit allows.
    pub fn resolve(&mut self, id: u64, now: Instant) -> Option<&Arc<CgroupInfo>> {
        if !self.entries.contains_key(&id) {
            if !self.may_walk(now) {
                self.stats.rate_limited += 1;
                return None;
            }
            // A failed walk is counted; the id stays unknown.
            let _ = self.rescan(now);
        }
        self.entries.get(&id).map(|e| &e.info)
    }

    /// Resolves a path as `/proc/<pid>/cgroup` shows it (for processes found in /proc).
    pub fn resolve_path(&mut self, path: &str, now: Instant) -> Option<&Arc<CgroupInfo>> {
        if !self.by_path.contains_key(path) && self.may_walk(now) {
            let _ = self.rescan(now);
        }
        let id = *self.by_path.get(path)?;
        self.entries.get(&id).map(|e| &e.info)
    }

    /// Learns one cgroup without a walk: `path` is where a process of the event says it
    /// is (`/proc/<pid>/cgroup`); it is taken only if that directory has the event's id
    /// (the process may have moved since).
    pub fn learn(&mut self, id: u64, path: &str) -> Option<&Arc<CgroupInfo>> {
        if !self.entries.contains_key(&id) {
            if self.entries.len() >= self.config.max_entries || self.source.id_of(path) != Some(id)
            {
                return None;
            }
            let path: Arc<str> = Arc::from(path);
            let info = Arc::new(CgroupInfo {
                id,
                kind: parse_cgroup_path(&path),
                path: path.clone(),
            });
            if info.kind.container().is_some() {
                self.stats.containers += 1;
            }
            self.stats.learned += 1;
            self.by_path.insert(path, id);
            self.entries.insert(
                id,
                Entry {
                    info,
                    seen_walk: self.walk_no,
                },
            );
        }
        self.entries.get(&id).map(|e| &e.info)
    }

    fn may_walk(&self, now: Instant) -> bool {
        self.last_walk
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.min_rescan_interval)
    }

    /// Walks the hierarchy now, whatever the rate limit says.
    pub fn rescan(&mut self, now: Instant) -> Result<WalkStats> {
        self.last_walk = Some(now);
        self.walk_no += 1;
        self.stats.walks += 1;
        let walk_no = self.walk_no;
        let entries = &mut self.entries;
        let mut new: Vec<(u64, String)> = Vec::new();
        let result = self
            .source
            .walk(&mut |id, path| match entries.get_mut(&id) {
                Some(e) if *e.info.path == *path => e.seen_walk = walk_no,
                // New, or an id the kernel reused for another directory after the old one
                // was removed: parsed below.
                _ => new.push((id, path.to_owned())),
            });
        let walk = match result {
            Ok(w) => w,
            Err(e) => {
                self.stats.walk_errors += 1;
                return Err(e);
            }
        };
        self.stats.vanished += walk.vanished;

        // Forget cgroups gone for long enough; when the new ones would not fit, forget
        // every missing one now.
        let keep = self.config.keep_missing_walks;
        let max_entries = self.config.max_entries;
        let kept = self
            .entries
            .values()
            .filter(|e| walk_no - e.seen_walk <= keep)
            .count();
        let pressed = kept + new.len() > max_entries;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.seen_walk == walk_no || (!pressed && walk_no - e.seen_walk <= keep));
        self.stats.evicted += (before - self.entries.len()) as u64;
        for (id, path) in new {
            if self.entries.len() >= max_entries && !self.entries.contains_key(&id) {
                self.stats.evicted += 1;
                continue;
            }
            let path: Arc<str> = Arc::from(path);
            let info = Arc::new(CgroupInfo {
                id,
                kind: parse_cgroup_path(&path),
                path: path.clone(),
            });
            self.by_path.insert(path, id);
            self.entries.insert(
                id,
                Entry {
                    info,
                    seen_walk: walk_no,
                },
            );
        }
        let entries = &self.entries;
        self.by_path
            .retain(|path, id| entries.get(id).is_some_and(|e| e.info.path == *path));

        let mut pods = std::collections::HashSet::new();
        let mut containers = 0;
        for e in self.entries.values().filter(|e| e.seen_walk == walk_no) {
            if e.info.kind.container().is_some() {
                containers += 1;
            }
            if let Some(uid) = e.info.kind.pod_uid() {
                pods.insert(uid.clone());
            }
        }
        self.stats.containers = containers;
        self.stats.pods = pods.len() as u64;
        Ok(walk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::MemCgroups;

    const ID: &str = "8d3c2f1b4a5e6d7c8b9a0f1e2d3c4b5a6978877665544332211000ffeeddccbb";
    const UID: &str = "4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8";
    const UID_US: &str = "4f1c2a3b_5d6e_4f70_8192_a3b4c5d6e7f8";

    fn container(runtime: Runtime, id: &str, pod: Option<&str>) -> CgroupKind {
        CgroupKind::Container(ContainerRef {
            runtime,
            id: Arc::from(id),
            pod_uid: pod.map(Arc::from),
        })
    }

    fn pod(uid: &str) -> CgroupKind {
        CgroupKind::Pod {
            pod_uid: Arc::from(uid),
        }
    }

    #[test]
    fn kubernetes_paths() {
        let cases: Vec<(String, CgroupKind)> = vec![
            // cgroupfs driver (containerd or docker: a bare id), v2 and hybrid alike.
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), container(Runtime::Unspecified, ID, Some(UID))),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), container(Runtime::Unspecified, ID, Some(UID))),
            // Guaranteed pods have no QoS level.
            (format!("/kubepods/pod{UID}/{ID}"), container(Runtime::Unspecified, ID, Some(UID))),
            // CRI-O under cgroupfs.
            (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), container(Runtime::CriO, ID, Some(UID))),
            // systemd driver: containerd, CRI-O, docker (cri-dockerd).
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                container(Runtime::Containerd, ID, Some(UID)),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{ID}.scope"),
                container(Runtime::CriO, ID, Some(UID)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{ID}.scope"),
                container(Runtime::Docker, ID, Some(UID)),
            ),
            // CRI-O nests the payload one level down when systemd runs in the container.
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{ID}.scope/container"),
                container(Runtime::CriO, ID, Some(UID)),
            ),
            // A process in a cgroup the container made for itself still belongs to it.
            (format!("/kubepods/besteffort/pod{UID}/{ID}/sub/cgroup"), container(Runtime::Unspecified, ID, Some(UID))),
            // containerd in systemd notation written by a cgroupfs runc (hybrid hosts).
            (
                format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}"),
                container(Runtime::Containerd, ID, Some(UID)),
            ),
            (
                format!("/system.slice/crio.service/kubepods-pod{UID_US}.slice:crio:{ID}"),
                container(Runtime::CriO, ID, Some(UID)),
            ),
            // kind: the node is itself a container and the kubelet uses --cgroup-root.
            (
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                container(Runtime::Containerd, ID, Some(UID)),
            ),
            (
                format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{}", ID.replace('8', "9")),
                container(Runtime::Unspecified, &ID.replace('8', "9"), Some(UID)),
            ),
            // Static pods have a 32-hex-digit hash for a UID.
            (
                format!("/kubepods/burstable/pod0123456789abcdef0123456789abcdef/{ID}"),
                container(Runtime::Unspecified, ID, Some("0123456789abcdef0123456789abcdef")),
            ),
            // Pod-level cgroups and CRI-O's monitor are the pod, not a container.
            (format!("/kubepods/besteffort/pod{UID}"), pod(UID)),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"),
                pod(UID),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-conmon-{ID}.scope"),
                pod(UID),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    #[test]
    fn runtime_paths_outside_kubernetes() {
        let cases: Vec<(String, CgroupKind)> = vec![
            (
                format!("/system.slice/docker-{ID}.scope"),
                container(Runtime::Docker, ID, None),
            ),
            (
                format!("/docker/{ID}"),
                container(Runtime::Docker, ID, None),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                container(Runtime::Podman, ID, None),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                container(Runtime::Podman, ID, None),
            ),
            // `ctr run` (containerd namespace "default"), user-chosen names included.
            (
                format!("/default/{ID}"),
                container(Runtime::Containerd, ID, None),
            ),
            (
                "/default/web-1".to_owned(),
                container(Runtime::Containerd, "web-1", None),
            ),
            (
                format!("/k8s.io/{ID}"),
                container(Runtime::Containerd, ID, None),
            ),
            // runc with the systemd driver and without a cgroupsPath.
            (
                "/system.slice/runc-box1.scope".to_owned(),
                container(Runtime::Runc, "box1", None),
            ),
            (
                "/system.slice/runc-web-box.scope".to_owned(),
                container(Runtime::Runc, "web-box", None),
            ),
            (format!("/{ID}"), container(Runtime::Runc, ID, None)),
            // A custom parent with a full-length id.
            (
                format!("/containers/{ID}"),
                container(Runtime::Unspecified, ID, None),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    #[test]
    fn host_paths_are_not_containers() {
        for path in [
            "/",
            "",
            "/init.scope",
            "/system.slice/containerd.service",
            "/system.slice/kubelet.service",
            "/user.slice/user-0.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope",
            "/kubepods",
            "/kubepods/besteffort",
            "/kubepods.slice/kubepods-burstable.slice",
            "/herdwatch-test-1234",
            // Not quite a pod: the UID is too short, the id is not hex.
            "/kubepods/besteffort/pod1234/abc",
            "/default/..",
            "/system.slice/docker-notanid.scope",
            "/system.slice/cri-containerd-xyz.scope",
            // Upper-case hex is not what runtimes generate.
            "/docker/8D3C2F1B4A5E6D7C8B9A0F1E2D3C4B5A6978877665544332211000FFEEDDCCBB",
        ] {
            assert_eq!(parse_cgroup_path(path), CgroupKind::Host, "{path}");
        }
    }

    #[test]
    fn malformed_pod_components_fall_back_safely() {
        // A container below something that only looks like a pod is still a container,
        // without a pod UID.
        let path = format!("/kubepods/besteffort/podnotauid/{ID}");
        assert_eq!(
            parse_cgroup_path(&path),
            container(Runtime::Unspecified, ID, None)
        );
        // Unknown runtime prefix in the triplet form.
        let path = format!("/system.slice/kubepods-pod{UID_US}.slice:rkt:{ID}");
        assert_eq!(parse_cgroup_path(&path), CgroupKind::Host);
    }

    #[test]
    fn mountinfo_of_a_hybrid_host() {
        let text = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
        assert_eq!(
            parse_mountinfo(text),
            Some(Cgroup2Mount {
                mount_point: PathBuf::from("/sys/fs/cgroup/unified"),
                root: "/".into()
            })
        );
    }

    #[test]
    fn mountinfo_prefers_the_whole_hierarchy_and_unescapes() {
        let text = "\
50 31 0:38 /kubepods /host\\040cgroup rw - cgroup2 cgroup2 rw
51 31 0:38 / /sys/fs/cgroup rw shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            parse_mountinfo(text),
            Some(Cgroup2Mount {
                mount_point: PathBuf::from("/sys/fs/cgroup"),
                root: "/".into()
            })
        );
        let only_sub = "50 31 0:38 /kubepods /host\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(only_sub),
            Some(Cgroup2Mount {
                mount_point: PathBuf::from("/host cgroup"),
                root: "/kubepods".into()
            })
        );
        assert_eq!(
            parse_mountinfo("42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn mountinfo_octal_beyond_a_byte_is_not_an_escape() {
        // Found by `any_mountinfo_text_parses_without_panicking`: `\400` overflowed a byte.
        let text = "1 2 0:3 / /a\\400\\040b rw - cgroup2 none rw\n";
        assert_eq!(
            parse_mountinfo(text),
            Some(Cgroup2Mount {
                mount_point: PathBuf::from("/a\\400 b"),
                root: "/".into()
            })
        );
    }

    #[test]
    fn resolver_walks_on_a_miss_and_rate_limits_walks() {
        let mut fs = MemCgroups::default();
        fs.cgroups.push((1, "/".into()));
        fs.cgroups
            .push((100, format!("/kubepods/besteffort/pod{UID}/{ID}")));
        let t0 = Instant::now();
        let config = ResolverConfig {
            min_rescan_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let mut r = CgroupResolver::new(&mut fs, config);

        let info = r
            .resolve(100, t0)
            .expect("resolved by the first walk")
            .clone();
        assert_eq!(info.kind.container().map(|c| &*c.id), Some(ID));
        assert_eq!(r.resolve(1, t0).map(|i| &*i.path), Some("/"));
        // An unknown id right after a walk does not walk again.
        assert!(r.resolve(200, t0 + Duration::from_millis(10)).is_none());
        assert_eq!(r.stats().walks, 1);
        assert_eq!(r.stats().rate_limited, 1);
        // ...until the interval has passed.
        assert!(r.resolve(200, t0 + Duration::from_millis(60)).is_none());
        assert_eq!(r.stats().walks, 2);
        assert_eq!(r.stats().containers, 1);
        assert_eq!(r.stats().pods, 1);
        drop(r);
        assert_eq!(fs.walks, 2);
    }

    #[test]
    fn resolver_keeps_vanished_cgroups_for_a_few_walks_then_forgets_them() {
        let mut fs = MemCgroups::default();
        fs.cgroups.push((100, format!("/default/{ID}")));
        let t0 = Instant::now();
        let config = ResolverConfig {
            min_rescan_interval: Duration::ZERO,
            keep_missing_walks: 2,
            ..Default::default()
        };
        let mut r = CgroupResolver::new(&mut fs, config);
        assert!(r.resolve(100, t0).is_some());
        r.source.cgroups.clear();
        r.source.cgroups.push((101, "/other".into()));
        for _ in 0..2 {
            r.rescan(t0).unwrap();
            assert!(r.get(100).is_some(), "kept while recently seen");
        }
        r.rescan(t0).unwrap();
        assert!(r.get(100).is_none());
        assert!(r.resolve_path(&format!("/default/{ID}"), t0).is_none());
        assert_eq!(r.resolve_path("/other", t0).map(|i| i.id), Some(101));
        assert_eq!(r.stats().evicted, 1);
    }

    #[test]
    fn resolver_is_bounded() {
        let mut fs = MemCgroups::default();
        for i in 0..100 {
            fs.cgroups.push((i, format!("/c{i}")));
        }
        let config = ResolverConfig {
            max_entries: 10,
            min_rescan_interval: Duration::ZERO,
            ..Default::default()
        };
        let mut r = CgroupResolver::new(&mut fs, config);
        r.rescan(Instant::now()).unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.stats().evicted, 90);
        // The bound holds across walks when the hierarchy changes under it.
        r.source.cgroups.retain(|(id, _)| *id >= 50);
        r.rescan(Instant::now()).unwrap();
        assert_eq!(r.len(), 10);
        // The cgroups that exist now pushed out those that are gone.
        assert!(r.get(5).is_none());
        assert_eq!(
            r.resolve_path("/c50", Instant::now()).map(|i| i.id),
            Some(50)
        );
    }

    #[test]
    fn resolver_learns_one_cgroup_without_a_walk_when_the_id_matches() {
        let mut fs = MemCgroups::default();
        fs.cgroups.push((1, "/".into()));
        let config = ResolverConfig {
            min_rescan_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let mut r = CgroupResolver::new(&mut fs, config);
        let t0 = Instant::now();
        r.rescan(t0).unwrap();
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        r.source_mut().cgroups.push((42, path.clone()));
        assert!(r.resolve(42, t0).is_none(), "rate limited");
        assert!(r.learn(43, &path).is_none(), "the path has another id");
        let info = r.learn(42, &path).expect("learned").clone();
        assert_eq!(info.kind.container().map(|c| &*c.id), Some(ID));
        assert_eq!(r.resolve(42, t0).map(|i| i.id), Some(42));
        assert_eq!(r.resolve_path(&path, t0).map(|i| i.id), Some(42));
        assert_eq!(r.stats().learned, 1);
        assert_eq!(r.stats().walks, 1);
        assert_eq!(r.stats().containers, 1);
    }

    #[test]
    fn resolver_reparses_a_reused_id() {
        let mut fs = MemCgroups::default();
        fs.cgroups.push((7, "/a".into()));
        let mut r = CgroupResolver::new(
            &mut fs,
            ResolverConfig {
                min_rescan_interval: Duration::ZERO,
                ..Default::default()
            },
        );
        r.rescan(Instant::now()).unwrap();
        r.source.cgroups[0].1 = format!("/docker/{ID}");
        r.rescan(Instant::now()).unwrap();
        assert_eq!(
            r.get(7).and_then(|i| i.kind.container()).map(|c| c.runtime),
            Some(Runtime::Docker)
        );
        assert!(r.resolve_path("/a", Instant::now()).is_none());
    }

    /// A temporary directory tree that removes itself.
    struct TempTree(PathBuf);

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn filesystem_walk_reports_inodes_and_relative_paths() {
        let top =
            std::env::temp_dir().join(format!("herdwatch-cgroup-walk-{}", std::process::id()));
        let _guard = TempTree(top.clone());
        let leaf = top.join(format!("kubepods/besteffort/pod{UID}/{ID}"));
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(top.join("kubepods/cgroup.procs"), b"").unwrap();
        let want_ino = std::fs::metadata(&leaf).unwrap().ino();

        let mut source = FsCgroupSource::new(Cgroup2Mount {
            mount_point: top.clone(),
            root: "/".into(),
        });
        let mut seen = Vec::new();
        let stats = source
            .walk(&mut |id, path| seen.push((id, path.to_owned())))
            .unwrap();
        assert_eq!(stats.cgroups, 5, "{seen:?}");
        assert!(seen.contains(&(std::fs::metadata(&top).unwrap().ino(), "/".to_owned())));
        assert!(seen.contains(&(want_ino, format!("/kubepods/besteffort/pod{UID}/{ID}"))));
        assert!(!seen.iter().any(|(_, p)| p.ends_with("cgroup.procs")));

        // A bind-mounted subtree reports hierarchy paths.
        let mut sub = FsCgroupSource::new(Cgroup2Mount {
            mount_point: top.join("kubepods"),
            root: "/kubepods".into(),
        });
        let mut seen = Vec::new();
        sub.walk(&mut |id, path| seen.push((id, path.to_owned())))
            .unwrap();
        assert!(seen.iter().any(|(_, p)| p == "/kubepods"));
        assert!(seen.contains(&(want_ino, format!("/kubepods/besteffort/pod{UID}/{ID}"))));

        // One lookup, without a walk; paths outside the mount are refused.
        let leaf_path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(source.id_of(&leaf_path), Some(want_ino));
        assert_eq!(source.id_of("/nope"), None);
        assert_eq!(source.id_of("/kubepods/../../etc"), None);
        assert_eq!(
            source.id_of("/kubepods/cgroup.procs"),
            None,
            "not a directory"
        );
        assert_eq!(sub.id_of(&leaf_path), Some(want_ino));
        assert_eq!(sub.id_of("/kubepodsx"), None);
        assert_eq!(sub.id_of("/other"), None);

        // Bounds stop the walk and say so.
        let mut shallow = FsCgroupSource::new(Cgroup2Mount {
            mount_point: top.clone(),
            root: "/".into(),
        });
        shallow.max_depth = 2;
        let stats = shallow.walk(&mut |_, _| {}).unwrap();
        assert!(stats.truncated);
        assert_eq!(stats.cgroups, 3);
    }

    #[test]
    fn filesystem_walk_of_a_missing_mount_is_an_error() {
        let mut source = FsCgroupSource::new(Cgroup2Mount {
            mount_point: PathBuf::from("/nonexistent/herdwatch/cgroup"),
            root: "/".into(),
        });
        let err = source.walk(&mut |_, _| {}).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/herdwatch/cgroup"),
            "{err}"
        );
    }

    /// Property tests. Cgroup directory names come from container runtimes, which build them
    /// from ids and names that users choose (`ctr run IMAGE NAME`, `runc run NAME`), and a
    /// privileged container can create cgroups of its own: the parser must hold up on any
    /// name, and must not take what only resembles a container for one.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// An id as containerd's CRI plugin, CRI-O and docker generate it.
        fn container_id() -> impl Strategy<Value = String> {
            "[0-9a-f]{64}"
        }

        /// A pod UID in its dashed form: a UUID, or the hash a static pod has for one.
        fn pod_uid() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9a-f]{32}"
            ]
        }

        /// What no runtime generates as an id: hex of another length, upper-case hex, or 64
        /// characters of which one is not lower-case hex (never `/`, which would make it two
        /// path components).
        fn not_a_container_id() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9a-f]{1,63}",
                "[0-9a-f]{65,80}",
                "[0-9A-F]{64}".prop_filter("one upper-case digit at least", |s| {
                    s.bytes().any(|b| b.is_ascii_uppercase())
                }),
                (container_id(), 0..64usize, "[^0-9a-f/]").prop_map(|(id, at, other)| {
                    format!("{}{other}{}", &id[..at], &id[at + 1..])
                }),
            ]
        }

        /// Names `ctr run` and `runc run` accept. A name that is itself a pod component
        /// would make the path a pod's, which is right but not what these tests are about.
        fn container_name() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_-]{1,128}".prop_filter("not a pod component", |n| pod_uid_of(n).is_none())
        }

        /// Names that are not valid: a character outside the allowed set, or too long.
        fn not_a_container_name() -> impl Strategy<Value = String> {
            prop_oneof![
                (
                    container_name(),
                    0..128usize,
                    prop_oneof![Just('.'), Just(':'), Just(' '), Just('@'), Just('é')]
                )
                    .prop_map(|(mut name, at, c)| {
                        name.insert(at.min(name.len()), c);
                        name
                    }),
                "[A-Za-z_-][A-Za-z0-9_-]{128,160}",
            ]
        }

        /// The cgroup a Kubernetes pod's container gets, by cgroup driver and runtime.
        #[derive(Clone, Copy, Debug)]
        enum PodLayout {
            /// cgroupfs driver, containerd or docker: `pod<uid>/<id>`.
            Cgroupfs,
            /// cgroupfs driver, CRI-O: `pod<uid>/crio-<id>`.
            CgroupfsCrio,
            /// systemd driver: `…-pod<uid>.slice/<runtime>-<id>.scope`.
            Systemd(Runtime),
            /// containerd with `SystemdCgroup = true` over a cgroupfs runc:
            /// `…-pod<uid>.slice:<runtime>:<id>` as one directory name.
            Triplet(Runtime),
        }

        impl PodLayout {
            fn runtime(self) -> Runtime {
                match self {
                    PodLayout::Cgroupfs => Runtime::Unspecified,
                    PodLayout::CgroupfsCrio => Runtime::CriO,
                    PodLayout::Systemd(r) | PodLayout::Triplet(r) => r,
                }
            }

            /// The path of container `id` of pod `uid` in QoS class `qos` (`None`:
            /// Guaranteed, which has no class cgroup), below the kubelet's `root`, with
            /// `nested` (empty, or `/name`) for a cgroup the container made inside its own.
            fn path(
                self,
                root: &str,
                qos: Option<&str>,
                uid: &str,
                id: &str,
                nested: &str,
            ) -> String {
                let uid_us = uid.replace('-', "_");
                let pod_slice = match qos {
                    Some(q) => {
                        format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid_us}.slice")
                    }
                    None => format!("kubepods.slice/kubepods-pod{uid_us}.slice"),
                };
                let pod_dir = match qos {
                    Some(q) => format!("kubepods/{q}/pod{uid}"),
                    None => format!("kubepods/pod{uid}"),
                };
                match self {
                    PodLayout::Cgroupfs => format!("{root}/{pod_dir}/{id}{nested}"),
                    PodLayout::CgroupfsCrio => format!("{root}/{pod_dir}/crio-{id}{nested}"),
                    PodLayout::Systemd(r) => {
                        format!("{root}/{pod_slice}/{}-{id}.scope{nested}", prefix_of(r))
                    }
                    PodLayout::Triplet(r) => {
                        let slice = pod_slice.rsplit('/').next().unwrap_or_default();
                        format!(
                            "{root}/system.slice/containerd.service/{slice}:{}:{id}{nested}",
                            prefix_of(r)
                        )
                    }
                }
            }
        }

        /// The runtime's name in systemd scopes and triplets.
        fn prefix_of(runtime: Runtime) -> &'static str {
            match runtime {
                Runtime::Containerd => "cri-containerd",
                Runtime::CriO => "crio",
                Runtime::Docker => "docker",
                Runtime::Podman => "libpod",
                Runtime::Runc | Runtime::Unspecified => unreachable!("no prefix"),
            }
        }

        fn pod_layout() -> impl Strategy<Value = PodLayout> {
            let kube_runtime = || {
                prop_oneof![
                    Just(Runtime::Containerd),
                    Just(Runtime::CriO),
                    Just(Runtime::Docker)
                ]
            };
            prop_oneof![
                Just(PodLayout::Cgroupfs),
                Just(PodLayout::CgroupfsCrio),
                kube_runtime().prop_map(PodLayout::Systemd),
                kube_runtime().prop_map(PodLayout::Triplet),
            ]
        }

        /// Where the kubelet's hierarchy starts: the root, a `--cgroup-root`, or a node that
        /// is itself a container (kind), whose own id must not be taken for the pod's.
        fn kubelet_root() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("/custom-root".to_owned()),
                Just("/kubelet.slice".to_owned()),
                container_id().prop_map(|id| format!("/docker/{id}")),
            ]
        }

        fn qos() -> impl Strategy<Value = Option<&'static str>> {
            prop_oneof![
                Just(None),
                Just(Some("besteffort")),
                Just(Some("burstable"))
            ]
        }

        fn nested() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), "/[a-z]{1,8}"]
        }

        /// The cgroup a runtime gives a container outside Kubernetes, with the runtime it
        /// names; only the systemd scopes can have cgroups nested below the container's.
        fn standalone_path(layout: u8, id: &str, nested: &str) -> (String, Runtime) {
            match layout % 4 {
                0 => (
                    format!("/system.slice/docker-{id}.scope{nested}"),
                    Runtime::Docker,
                ),
                1 => (format!("/docker/{id}"), Runtime::Docker),
                2 => (
                    format!("/machine.slice/libpod-{id}.scope{nested}"),
                    Runtime::Podman,
                ),
                _ => (format!("/{id}"), Runtime::Runc),
            }
        }

        /// A path component from the shapes the parser looks for, near misses of them, and
        /// anything at all, so that arbitrary paths reach every branch.
        fn component() -> impl Strategy<Value = String> {
            let scope_prefix = prop_oneof![
                Just("cri-containerd"),
                Just("crio"),
                Just("crio-conmon"),
                Just("docker"),
                Just("libpod"),
                Just("runc"),
                Just("rkt"),
            ];
            let id_like = || prop_oneof![container_id(), not_a_container_id(), container_name()];
            prop_oneof![
                Just(String::new()),
                Just("kubepods".to_owned()),
                Just("default".to_owned()),
                Just("docker".to_owned()),
                Just("k8s.io".to_owned()),
                "kubepods(-[a-z]{0,10})?.slice",
                pod_uid().prop_map(|u| format!("pod{u}")),
                pod_uid()
                    .prop_map(|u| format!("kubepods-burstable-pod{}.slice", u.replace('-', "_"))),
                "pod[0-9a-f_-]{30,38}",
                id_like(),
                (scope_prefix.clone(), id_like()).prop_map(|(p, id)| format!("{p}-{id}.scope")),
                (pod_uid(), scope_prefix, id_like()).prop_map(|(u, p, id)| {
                    format!("kubepods-pod{}.slice:{p}:{id}", u.replace('-', "_"))
                }),
                "[:.a-z0-9_-]{0,12}",
                any::<String>().prop_map(|s| s.replace('/', "")),
            ]
        }

        fn any_path() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::collection::vec(component(), 0..8)
                    .prop_map(|cs| format!("/{}", cs.join("/"))),
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..200)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        }

        /// What any parse result must satisfy: ids and UIDs are taken from the path, have
        /// the shape the runtimes give them, and are bounded.
        fn check_result(path: &str, kind: &CgroupKind) -> Result<(), TestCaseError> {
            if let CgroupKind::Container(c) = kind {
                prop_assert!(
                    !c.id.contains('/') && path.contains(&*c.id),
                    "{:?} in {}",
                    c.id,
                    path
                );
                let named = matches!(c.runtime, Runtime::Containerd | Runtime::Runc);
                prop_assert!(
                    is_container_id(&c.id) || named && valid_name(&c.id),
                    "{:?} is no {:?} id",
                    c.id,
                    c.runtime
                );
                prop_assert!(c.id.len() <= 128);
            }
            if let Some(uid) = kind.pod_uid() {
                prop_assert!((32..=36).contains(&uid.len()), "{}", uid);
                prop_assert_eq!(uid.bytes().filter(u8::is_ascii_hexdigit).count(), 32);
                prop_assert!(
                    uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
                    "{}",
                    uid
                );
                prop_assert!(
                    path.replace('_', "-").contains(&**uid),
                    "{} in {}",
                    uid,
                    path
                );
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_path_parses_to_ids_taken_from_it(path in any_path()) {
                let kind = parse_cgroup_path(&path);
                check_result(&path, &kind)?;
            }

            #[test]
            fn a_pod_container_is_found_in_every_layout(
                layout in pod_layout(),
                root in kubelet_root(),
                qos in qos(),
                uid in pod_uid(),
                id in container_id(),
                nested in nested(),
            ) {
                let path = layout.path(&root, qos, &uid, &id, &nested);
                prop_assert_eq!(
                    parse_cgroup_path(&path),
                    container(layout.runtime(), &id, Some(&uid)),
                    "{}", path
                );
            }

            #[test]
            fn a_pod_cgroup_with_a_malformed_id_is_the_pod_not_a_container(
                layout in pod_layout(),
                root in kubelet_root(),
                qos in qos(),
                uid in pod_uid(),
                id in not_a_container_id(),
                nested in nested(),
            ) {
                let path = layout.path(&root, qos, &uid, &id, &nested);
                let want = match layout {
                    // The one directory names pod and container at once; without a
                    // container the name is nothing herdwatch knows.
                    PodLayout::Triplet(_) => CgroupKind::Host,
                    _ => pod(&uid),
                };
                prop_assert_eq!(parse_cgroup_path(&path), want, "{}", path);
            }

            #[test]
            fn a_standalone_container_is_found_by_its_id(
                layout in any::<u8>(),
                id in container_id(),
                nested in nested(),
            ) {
                let (path, runtime) = standalone_path(layout, &id, &nested);
                prop_assert_eq!(
                    parse_cgroup_path(&path),
                    container(runtime, &id, None),
                    "{}", path
                );
            }

            #[test]
            fn a_standalone_cgroup_with_a_malformed_id_is_not_a_container(
                layout in any::<u8>(),
                id in not_a_container_id(),
                nested in nested(),
            ) {
                let (path, _) = standalone_path(layout, &id, &nested);
                prop_assert_eq!(parse_cgroup_path(&path), CgroupKind::Host, "{}", path);
            }

            #[test]
            fn user_named_containers_are_found_by_valid_names_only(
                namespace in prop_oneof![Just("default"), Just("k8s.io"), Just("moby")],
                name in container_name(),
                bad in not_a_container_name(),
            ) {
                prop_assert_eq!(
                    parse_cgroup_path(&format!("/{namespace}/{name}")),
                    container(Runtime::Containerd, &name, None)
                );
                prop_assert_eq!(
                    parse_cgroup_path(&format!("/system.slice/runc-{name}.scope")),
                    container(Runtime::Runc, &name, None)
                );
                prop_assert_eq!(
                    parse_cgroup_path(&format!("/{namespace}/{bad}")),
                    CgroupKind::Host
                );
                prop_assert_eq!(
                    parse_cgroup_path(&format!("/system.slice/runc-{bad}.scope")),
                    CgroupKind::Host
                );
            }
        }

        /// mountinfo fields as the kernel writes them (`mangle()` in fs/proc_namespace.c):
        /// space, tab, newline and backslash as three octal digits.
        fn escape_mountinfo(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        }

        /// One mountinfo line: mount id, parent id, device, root, mount point, options,
        /// optional fields, separator, filesystem type, source, super options.
        fn mountinfo_line(fstype: &str, root: &str, mount_point: &str, shared: bool) -> String {
            let optional = if shared { " shared:4 master:1" } else { "" };
            format!(
                "51 31 0:38 {} {} rw,nosuid{optional} - {fstype} {fstype} rw,nsdelegate",
                escape_mountinfo(root),
                escape_mountinfo(mount_point)
            )
        }

        fn mount_root() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("/".to_owned()),
                prop::collection::vec(prop_oneof!["[a-z.]{1,8}", any::<String>()], 1..4)
                    .prop_map(|cs| format!("/{}", cs.join("/"))),
            ]
        }

        /// A field of a mountinfo line that is mostly escapes, well-formed or not.
        fn mountinfo_field() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    r"\\[0-7]{3}",
                    r"\\[0-9]{0,3}",
                    "[a-z/]{0,4}",
                    any::<String>()
                ],
                0..6,
            )
            .prop_map(|parts| parts.concat().replace([' ', '\n'], ""))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn any_mountinfo_text_parses_without_panicking(
                lines in prop::collection::vec(
                    prop_oneof![
                        (mountinfo_field(), mountinfo_field(), any::<bool>())
                            .prop_map(|(root, mp, shared)| {
                                let fstype = if shared { "cgroup2" } else { "tmpfs" };
                                format!("1 2 0:3 {root} {mp} rw - {fstype} none rw")
                            }),
                        any::<String>(),
                    ],
                    0..6,
                ),
            ) {
                let _ = parse_mountinfo(&lines.join("\n"));
            }

            #[test]
            fn mountinfo_fields_unescape_to_what_was_mounted(
                mounts in prop::collection::vec(
                    (
                        prop_oneof![Just("cgroup2"), Just("cgroup"), Just("tmpfs")],
                        mount_root(),
                        any::<String>(),
                        any::<bool>(),
                    ),
                    0..6,
                ),
            ) {
                let text: String = mounts
                    .iter()
                    .map(|(fstype, root, mp, shared)| {
                        mountinfo_line(fstype, root, mp, *shared) + "\n"
                    })
                    .collect();
                // The first mount of the whole hierarchy, else the first cgroup2 mount.
                let cgroup2: Vec<_> = mounts.iter().filter(|m| m.0 == "cgroup2").collect();
                let want = cgroup2
                    .iter()
                    .find(|m| m.1 == "/")
                    .or(cgroup2.first())
                    .map(|m| Cgroup2Mount { mount_point: PathBuf::from(&m.2), root: m.1.clone() });
                prop_assert_eq!(parse_mountinfo(&text), want, "{}", text);
            }
        }
    }
}
