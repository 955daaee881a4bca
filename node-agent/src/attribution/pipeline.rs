//! Attribution of decoded events: which process, cgroup, container and pod each one
//! belongs to.
//!
//! [`Pipeline::process`] takes one [`Event`] and returns an [`Attributed`] view of it,
//! updating the process table on exec, exit and identity events on the way. It runs on one
//! thread with no locks on the hot path: the cgroup cache, the process table and the
//! per-cgroup pod answers are its own; the shared [`PodStore`] is read only when its
//! generation moved. Nothing in here fails on bad input: unknown cgroups, processes that
//! are gone before they could be looked up, and containers missing from the pod index are
//! counted by [`FailureReason`] and the event is passed on with what is known.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use herdwatch_abi::{Event, EVENT_KIND_SLOTS};

use crate::attribution::argv::{escape_bytes, Argv};
use crate::attribution::cgroup::{
    CgroupInfo, CgroupKind, CgroupResolver, CgroupSource, ResolverStats,
};
use crate::attribution::idhash::{IdMap, IdSet};
use crate::attribution::pods::{PodAttribution, PodStore};
use crate::attribution::procfs::{ProcReadError, ProcSnapshot, ProcSource};
use crate::attribution::proctable::{same_start, NewProcess, Process, ProcessTable, TableStats};
use crate::error::{Error, Result};

/// Why an event was not fully attributed. The label values of
/// `herdwatch_agent_attribution_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The cgroup id matches no directory of the cgroup2 hierarchy (it was removed before
    /// the agent looked, or it is outside the agent's view).
    UnknownCgroup,
    /// The process is in a pod's cgroup but in none of its containers.
    NoContainerId,
    /// The pod watch has not delivered its first list yet.
    PodsNotSynced,
    /// No pod on this node has the container (or the pod UID in the cgroup path).
    PodNotFound,
    /// The pod is known; the container is not in its status (the sandbox, or a status
    /// that has not caught up with a just-started container).
    ContainerNotFound,
    /// The event's process was unknown and had exited before /proc could be read.
    ProcessGone,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::UnknownCgroup,
        FailureReason::NoContainerId,
        FailureReason::PodsNotSynced,
        FailureReason::PodNotFound,
        FailureReason::ContainerNotFound,
        FailureReason::ProcessGone,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownCgroup => "unknown_cgroup",
            FailureReason::NoContainerId => "no_container_id",
            FailureReason::PodsNotSynced => "pods_not_synced",
            FailureReason::PodNotFound => "pod_not_found",
            FailureReason::ContainerNotFound => "container_not_found",
            FailureReason::ProcessGone => "process_gone",
        }
    }
}

/// Everything the agent counts about attribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Events by `EventKind as usize`.
    pub events: [u64; EVENT_KIND_SLOTS as usize],
    /// Events by `FailureReason as usize`.
    pub failures: [u64; FailureReason::COUNT],
    /// /proc entries that vanished while being read (at start or on lookup).
    pub proc_vanished: u64,
    /// /proc entries that could not be read for another reason.
    pub proc_unreadable: u64,
    /// Processes gone before /proc could be read, recorded as forks of their parent.
    pub inherited: u64,
    /// Execs that entered a container from a parent not known as a container runtime.
    pub unrecognised_runtime: u64,
    /// Execs whose path was longer than the kernel reads (taken whole from /proc).
    pub exec_paths_cut: u64,
    /// Reads of /proc given up as too slow.
    pub proc_read_timeouts: u64,
    pub cgroups: ResolverStats,
    pub table: TableStats,
    /// Process table entries.
    pub processes: u64,
    /// Pods in the pod index.
    pub pods: u64,
}

/// What a [`Pipeline::seed_from_proc`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedStats {
    pub processes: u64,
    pub vanished: u64,
    pub kernel_threads: u64,
    pub unreadable: u64,
}

/// What the agent knows about where an event came from.
#[derive(Clone, Copy, Debug)]
pub struct Attributed<'a> {
    /// The process (a tombstone for an exit event); None when it was gone before it could
    /// be looked up.
    pub process: Option<&'a Process>,
    pub cgroup: Option<&'a CgroupInfo>,
    /// Set when the agent watches pods and found this container's pod.
    pub pod: Option<&'a PodAttribution>,
    /// For an exec that enters a container from outside its pod: the parent's program,
    /// when it is not a container runtime herdwatch knows (see [`KNOWN_RUNTIMES`]).
    pub unrecognised_runtime: Option<&'a str>,
}

/// Programs that start processes in containers from outside them: the runtimes (and their
/// shims and monitors) whose set-up the kernel tells from the workload. The first exec in a
/// container whose parent is none of these is counted, and marks what its workload learns.
pub const KNOWN_RUNTIMES: &[&str] = &["runc", "crun", "runsc", "youki", "conmon", "crio"];

/// The last component of an executable path.
fn program_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

/// Whether `name` (a program's file name) is one of [`KNOWN_RUNTIMES`] or a containerd shim.
pub fn is_known_runtime(name: &str) -> bool {
    KNOWN_RUNTIMES.contains(&name) || name.starts_with("containerd-shim")
}

/// Pids found gone, so that a burst of events from one exited process reads /proc once.
const MAX_GONE: usize = 4_096;
/// Per-cgroup pod answers; cleared when full.
const MAX_POD_CACHE: usize = 65_536;

/// Decoded events in, attributed events out.
pub struct Pipeline<C, P> {
    cgroups: CgroupResolver<C>,
    procs: ProcessTable,
    proc_source: P,
    pods: Option<Arc<PodStore>>,
    /// cgroup id → (pod store generation, answer).
    pod_cache: IdMap<u64, (u64, Option<PodAttribution>)>,
    gone: IdSet<u32>,
    /// Cgroup ids that [`Pipeline::learn_cgroup`] could not resolve since the last walk.
    unlearnable: IdSet<u64>,
    unlearnable_walk: u64,
    /// (cgroup id, relative exec path) → the absolute path it resolved to last, for when the
    /// process is gone before its working directory can be read (a CGI script that ran for
    /// a millisecond). Bounded: emptied when full.
    relative_execs: HashMap<(u64, Box<str>), Box<str>>,
    stats: PipelineStats,
}

impl<C: CgroupSource, P: ProcSource> Pipeline<C, P> {
    /// `pods` is None when the agent runs without Kubernetes (`observe`).
    pub fn new(
        cgroups: CgroupResolver<C>,
        procs: ProcessTable,
        proc_source: P,
        pods: Option<Arc<PodStore>>,
    ) -> Self {
        Pipeline {
            cgroups,
            procs,
            proc_source,
            pods,
            pod_cache: IdMap::default(),
            gone: IdSet::default(),
            relative_execs: HashMap::new(),
            unlearnable: IdSet::default(),
            unlearnable_walk: 0,
            stats: PipelineStats::default(),
        }
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.procs
    }

    pub fn cgroups(&self) -> &CgroupResolver<C> {
        &self.cgroups
    }

    pub fn cgroups_mut(&mut self) -> &mut CgroupResolver<C> {
        &mut self.cgroups
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            cgroups: self.cgroups.stats(),
            table: self.procs.stats(),
            processes: self.procs.len() as u64,
            pods: self.pods.as_ref().map_or(0, |s| s.read(|i| i.len()) as u64),
            proc_read_timeouts: self.proc_source.read_timeouts(),
            ..self.stats
        }
    }

    /// Records the processes that exist now, so that events of processes started before
    /// the agent are attributed and their exec sessions recognised.
    pub fn seed_from_proc(&mut self, now: Instant) -> Result<SeedStats> {
        let pids = self
            .proc_source
            .pids()
            .map_err(|source| Error::io("list", "/proc".as_ref(), source))?;
        let mut seed = SeedStats::default();
        let mut snapshots = Vec::with_capacity(pids.len());
        for pid in pids {
            match self.proc_source.read(pid) {
                Ok(snap) => snapshots.push(snap),
                Err(ProcReadError::Gone) => seed.vanished += 1,
                Err(ProcReadError::KernelThread) => seed.kernel_threads += 1,
                Err(_) => seed.unreadable += 1,
            }
        }
        // One walk for all of them; a walk failure leaves the processes without cgroups.
        let _ = self.cgroups.rescan(now);
        let found: Vec<NewProcess> = snapshots
            .into_iter()
            .map(|s| self.new_process(s, now))
            .collect();
        seed.processes = found.len() as u64;
        self.procs.seed(found);
        self.stats.proc_vanished += seed.vanished;
        self.stats.proc_unreadable += seed.unreadable;
        Ok(seed)
    }

    fn new_process(&mut self, snap: ProcSnapshot, now: Instant) -> NewProcess {
        let cgroup = snap
            .cgroup_path
            .as_deref()
            .and_then(|p| self.cgroups.resolve_path(p, now));
        NewProcess {
            pid: snap.pid,
            ppid: snap.ppid,
            start_time_ns: snap.start_time_ns,
            uid: snap.uid,
            exe: snap.exe,
            file_name: None,
            argv: snap.argv,
            cgroup_id: cgroup.map_or(0, |c| c.id),
            container: cgroup
                .and_then(|c| c.kind.container())
                .map(|c| c.id.clone()),
        }
    }

    /// Reads an unknown process from /proc into the table. False when it is gone.
    /// The path an exec ran, absolute: the kernel hands over what was passed to execve,
    /// and a relative one (a CGI script run as `lookup` from its directory) is resolved
    /// against the process's working directory inside its root, read at once (the new
    /// program has not had time to move). When that cannot be read it stays relative, and
    /// is never learned. The kernel's own reading of the directory (`cwd`, from the exec
    /// event) comes first: it was taken at the exec, and /proc may be too late.
    fn absolute_exe(&mut self, pid: u32, cgroup_id: u64, exe: &str, cwd: Option<&str>) -> String {
        if exe.starts_with('/') {
            // `//dev/shm/x` and `/usr/../tmp/x` are `/dev/shm/x` and `/tmp/x` to the kernel,
            // and so to every check after this one (drift, allow lists, policies).
            return herdwatch_model::files::normalize(exe).unwrap_or_else(|| exe.to_owned());
        }
        const MAX_RELATIVE_EXECS: usize = 4096;
        let key = (cgroup_id, Box::<str>::from(exe));
        let resolved = cwd
            .map(str::to_owned)
            .or_else(|| self.proc_source.cwd_in_root(pid))
            .and_then(|cwd| herdwatch_model::files::normalize(&format!("{cwd}/{exe}")));
        match resolved {
            Some(path) => {
                if self.relative_execs.len() >= MAX_RELATIVE_EXECS {
                    self.relative_execs.clear();
                }
                self.relative_execs.insert(key, path.as_str().into());
                path
            }
            // Gone already: where the same name last resolved in this container. (A
            // process that runs another file of that name from another directory and
            // exits at once is judged as that one; the kernel's own resolution of the
            // path will close this.)
            None => self
                .relative_execs
                .get(&key)
                .map_or_else(|| exe.to_owned(), |p| p.to_string()),
        }
    }

    fn look_up(&mut self, pid: u32, now: Instant) -> bool {
        if pid == 0 || self.gone.contains(&pid) {
            return false;
        }
        match self.proc_source.read(pid) {
            Ok(snap) => {
                let new = self.new_process(snap, now);
                self.procs.insert_found(new);
                true
            }
            Err(e) => {
                match e {
                    ProcReadError::Gone | ProcReadError::KernelThread => {
                        self.stats.proc_vanished += 1
                    }
                    ProcReadError::Malformed { .. } | ProcReadError::Io(_) => {
                        self.stats.proc_unreadable += 1
                    }
                }
                if self.gone.len() >= MAX_GONE {
                    self.gone.clear();
                }
                self.gone.insert(pid);
                false
            }
        }
    }

    /// When an exec in a container (`kind`, cgroup `cgroup_id`) has a parent outside the
    /// container and outside its pod (the kernel's own test for the runtime's entry), and that
    /// parent's program is no known runtime: its name.
    fn unrecognised_entry(
        &self,
        ppid: u32,
        parent_start_time_ns: u64,
        cgroup_id: u64,
        kind: Option<&CgroupKind>,
    ) -> bool {
        let Some(container) = kind.and_then(CgroupKind::container) else {
            return false;
        };
        // Only the parent the kernel named: the same pid and the same start time. Pids are
        // reused within minutes on a busy node (pid_max is often 32768), and the entry of an
        // earlier owner of the pid (whose exit was missed) would name a program that never
        // went near the container.
        let Some(parent) = self.procs.peek(ppid).filter(|p| {
            parent_start_time_ns != 0 && same_start(p.start_time_ns, parent_start_time_ns)
        }) else {
            return false;
        };
        if parent.cgroup_id == cgroup_id {
            return false;
        }
        let parent_pod = self
            .cgroups
            .get(parent.cgroup_id)
            .and_then(|i| i.kind.pod_uid().cloned());
        if parent_pod.is_some() && parent_pod == container.pod_uid {
            return false;
        }
        let base = program_name(&parent.exe);
        let real = parent.file_name.as_deref().unwrap_or(base);
        !(is_known_runtime(base) || is_known_runtime(real) || real.starts_with("memfd:runc"))
    }

    /// Records a process that was gone before /proc could be read as a fork of its parent
    /// (the header names it): a child that never exec'd runs its parent's program with its
    /// arguments, and that is how it is judged. A web server's per-connection child serves
    /// a request and exits within a millisecond; without this, everything it did (the
    /// syscalls of the first request, an attacker's forked helper) would be neither
    /// learned nor judged, while the kernel remembers it as reported. False when the
    /// parent is unknown too.
    fn inherit_from_parent(
        &mut self,
        h: &herdwatch_abi::EventHeader,
        kind: Option<&CgroupKind>,
        now: Instant,
    ) -> bool {
        let ppid = h.ppid;
        if ppid == 0 || ppid == h.pid {
            return false;
        }
        if self.procs.get(ppid).is_none() && !self.look_up(ppid, now) {
            return false;
        }
        let Some(parent) = self.procs.peek(ppid) else {
            return false;
        };
        let child = NewProcess {
            pid: h.pid,
            ppid,
            // Unknown: the fork's own start time was never read.
            start_time_ns: 0,
            uid: h.uid,
            exe: parent.exe.clone(),
            file_name: parent.file_name.clone(),
            argv: parent.argv.clone(),
            cgroup_id: h.cgroup_id,
            container: kind.and_then(CgroupKind::container).map(|c| c.id.clone()),
        };
        self.gone.remove(&h.pid);
        self.procs.insert_forked(child);
        self.stats.inherited += 1;
        true
    }

    /// Resolves a cgroup the cache and the walk do not know yet (created since the last
    /// walk, which the rate limit keeps from running again) through the event's process:
    /// its /proc entry names its cgroup. Ids that this cannot resolve are not tried again
    /// until the next walk, so a flood from one of them costs one /proc read.
    fn learn_cgroup(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<CgroupInfo>> {
        let walks = self.cgroups.stats().walks;
        if walks != self.unlearnable_walk {
            self.unlearnable.clear();
            self.unlearnable_walk = walks;
        }
        if pid == 0 || self.unlearnable.contains(&cgroup_id) {
            return None;
        }
        let learned = match self.proc_source.cgroup_path(pid) {
            Ok(Some(path)) => self.cgroups.learn(cgroup_id, &path).cloned(),
            _ => None,
        };
        if learned.is_none() {
            if self.unlearnable.len() >= MAX_GONE {
                self.unlearnable.clear();
            }
            self.unlearnable.insert(cgroup_id);
        }
        learned
    }

    fn fail(&mut self, reason: FailureReason) {
        self.stats.failures[reason as usize] += 1;
    }

    /// Attributes one event.
    pub fn process(&mut self, event: &Event, now: Instant) -> Attributed<'_> {
        let h = *event.header();
        self.stats.events[event.kind() as usize] += 1;
        let cgroup_id = h.cgroup_id;
        let pid = h.pid;

        let info: Option<Arc<CgroupInfo>> = match self.cgroups.resolve(cgroup_id, now) {
            Some(info) => Some(info.clone()),
            None => match self.learn_cgroup(cgroup_id, pid) {
                Some(info) => Some(info),
                None => {
                    self.fail(FailureReason::UnknownCgroup);
                    None
                }
            },
        };
        let kind = info.as_ref().map(|i| &i.kind);
        let mut entered_by: Option<u32> = None;

        match event {
            Event::Exec(e) => {
                if self.procs.peek(e.ppid).is_none() {
                    self.look_up(e.ppid, now);
                }
                if self.unrecognised_entry(e.ppid, e.parent_start_time_ns, cgroup_id, kind) {
                    entered_by = Some(e.ppid);
                    self.stats.unrecognised_runtime += 1;
                }
                self.gone.remove(&pid);
                let exe = if e.filename_truncated() {
                    // Longer than the kernel reads: the whole path, as the kernel resolved
                    // it, from /proc; when the process is gone already, what the kernel read,
                    // marked as cut, so that no exact entry takes it for another program.
                    self.stats.exec_paths_cut += 1;
                    self.proc_source.exe(pid).map_or_else(
                        || Cow::Owned(format!("{}…", escape_bytes(e.filename()))),
                        |full| Cow::Owned(full.into_string()),
                    )
                } else {
                    escape_bytes(e.filename())
                };
                let cwd = e.working_directory().map(|d| escape_bytes(&d).into_owned());
                let exe = self.absolute_exe(pid, cgroup_id, &exe, cwd.as_deref());
                let exe = memfd_exe(&exe, e.real_file_name()).unwrap_or(exe);
                self.procs.exec(NewProcess {
                    pid,
                    ppid: e.ppid,
                    start_time_ns: e.start_time_ns,
                    // The effective uid: a set-user-ID program runs as its owner, and that
                    // is what it can do (the real uid is who started it).
                    uid: if e.euid == u32::MAX { h.uid } else { e.euid },
                    exe: Box::from(exe.as_str()),
                    file_name: e
                        .real_file_name()
                        .map(|n| Box::from(escape_bytes(n).as_ref())),
                    argv: Argv::from_parts(e.argv(), e.argv_truncated()),
                    cgroup_id,
                    container: kind.and_then(CgroupKind::container).map(|c| c.id.clone()),
                });
            }
            Event::Exit(_) => self.procs.exit(pid),
            // An accepted connection whose listener is unknown carries no process (pid 0).
            _ if pid == 0 => {}
            _ => {
                if self.procs.get(pid).is_none()
                    && !self.look_up(pid, now)
                    && !self.inherit_from_parent(&h, kind, now)
                {
                    self.fail(FailureReason::ProcessGone);
                }
                if let Event::Identity(e) = event {
                    // The header has the real ids after the call.
                    if e.ret == 0 {
                        self.procs.set_uid(pid, h.uid);
                    }
                }
            }
        }

        let mut has_pod = false;
        if let Some(store) = &self.pods {
            match kind {
                Some(CgroupKind::Container(c)) => {
                    let generation = store.generation();
                    let fresh = self
                        .pod_cache
                        .get(&cgroup_id)
                        .is_some_and(|(g, _)| *g == generation);
                    if !fresh {
                        if self.pod_cache.len() >= MAX_POD_CACHE {
                            self.pod_cache.clear();
                        }
                        let answer = store.read(|index| index.lookup(c));
                        self.pod_cache.insert(cgroup_id, (generation, answer));
                    }
                    let reason = match self.pod_cache.get(&cgroup_id).map(|(_, a)| a) {
                        Some(Some(a)) if a.container.is_none() => {
                            Some(FailureReason::ContainerNotFound)
                        }
                        Some(Some(_)) => None,
                        _ if !store.synced() => Some(FailureReason::PodsNotSynced),
                        _ => Some(FailureReason::PodNotFound),
                    };
                    has_pod = !matches!(
                        reason,
                        Some(FailureReason::PodsNotSynced | FailureReason::PodNotFound)
                    );
                    if let Some(reason) = reason {
                        self.stats.failures[reason as usize] += 1;
                    }
                }
                Some(CgroupKind::Pod { .. }) => {
                    self.stats.failures[FailureReason::NoContainerId as usize] += 1
                }
                _ => {}
            }
        }

        let pod = if has_pod {
            self.pod_cache.get(&cgroup_id).and_then(|(_, a)| a.as_ref())
        } else {
            None
        };
        Attributed {
            process: self.procs.peek(pid),
            cgroup: self.cgroups.get(cgroup_id).map(|c| &**c),
            pod,
            unrecognised_runtime: entered_by
                .and_then(|ppid| self.procs.peek(ppid))
                .map(|p| program_name(&p.exe)),
        }
    }
}

/// The name of a program run from a memfd (fileless: `memfd_create`, then an exec of
/// `/dev/fd/N` or `/proc/self/fd/N`): `/memfd:<name>`, as the kernel shows such a file in
/// `/proc/<pid>/exe`, rather than the descriptor's path, which says nothing of what ran.
/// The kernel reports the file's own name, `memfd:<name>`, for every exec. None for any
/// other exec.
fn memfd_exe(exe: &str, real_file_name: Option<&[u8]>) -> Option<String> {
    let name = real_file_name?.strip_prefix(b"memfd:")?;
    let fd = exe
        .strip_prefix("/dev/fd/")
        .or_else(|| exe.strip_prefix("/proc/self/fd/"))
        .or_else(|| exe.strip_prefix("/proc/thread-self/fd/"))
        .or_else(|| {
            let (pid, fd) = exe.strip_prefix("/proc/")?.split_once("/fd/")?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(fd)
        })?;
    if fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "/memfd:{}",
        escape_bytes(name).replace('/', "\\x2f")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_run_from_a_memfd_is_named_by_the_memfd() {
        let memfd = Some(&b"memfd:payload"[..]);
        for fd_path in [
            "/dev/fd/3",
            "/proc/self/fd/3",
            "/proc/thread-self/fd/12",
            "/proc/4242/fd/7",
        ] {
            assert_eq!(
                memfd_exe(fd_path, memfd).as_deref(),
                Some("/memfd:payload"),
                "{fd_path}"
            );
        }
        assert_eq!(memfd_exe("/usr/bin/x", memfd), None, "not an fd path");
        assert_eq!(
            memfd_exe("/dev/fd/3", Some(b"busybox")),
            None,
            "a file's descriptor"
        );
        assert_eq!(memfd_exe("/dev/fd/3", None), None);
        assert_eq!(memfd_exe("/proc/x/fd/3", memfd), None);
        assert_eq!(memfd_exe("/dev/fd/", memfd), None);
        // A name cannot make the path look like another one.
        assert_eq!(
            memfd_exe("/dev/fd/3", Some(b"memfd:../usr/bin/x")).as_deref(),
            Some("/memfd:..\\x2fusr\\x2fbin\\x2fx")
        );
    }
    use crate::attribution::cgroup::ResolverConfig;
    use crate::attribution::pods::{pod_meta, ContainerKind, ContainerMeta, PodMeta, Workload};
    use crate::attribution::proctable::TableConfig;
    use crate::synth::{self, MemCgroups, MemProc};
    use herdwatch_abi::{EventKind, ACCESS_READ, IPPROTO_TCP, NET_ACCEPT, NET_CONNECT};
    use std::time::Duration;

    const UID: &str = "4f1c2a3b-5d6e-4f70-8192-a3b4c5d6e7f8";
    const WEB: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PAUSE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const HOST: u64 = 1;
    const POD_CG: u64 = 20;
    const WEB_CG: u64 = 21;
    const PAUSE_CG: u64 = 22;
    const SHIM: u32 = 500;

    fn cgroups() -> MemCgroups {
        MemCgroups {
            cgroups: vec![
                (HOST, "/".into()),
                (POD_CG, format!("/kubepods/besteffort/pod{UID}")),
                (WEB_CG, format!("/kubepods/besteffort/pod{UID}/{WEB}")),
                (PAUSE_CG, format!("/kubepods/besteffort/pod{UID}/{PAUSE}")),
            ],
            walks: 0,
        }
    }

    fn snapshot(pid: u32, ppid: u32, exe: &str, cgroup: &str) -> ProcSnapshot {
        ProcSnapshot {
            pid,
            ppid,
            start_time_ns: u64::from(pid) * 1_000_000_000,
            uid: 0,
            exe: Box::from(exe),
            argv: Argv::from_nul_block(exe.as_bytes(), false),
            cgroup_path: Some(cgroup.to_owned()),
        }
    }

    fn host_proc() -> MemProc {
        let mut p = MemProc::default();
        p.procs.insert(1, snapshot(1, 0, "/sbin/init", "/"));
        p.procs.insert(
            SHIM,
            snapshot(SHIM, 1, "/usr/bin/containerd-shim-runc-v2", "/"),
        );
        p
    }

    type TestPipeline<'a> = Pipeline<&'a mut MemCgroups, &'a mut MemProc>;

    fn pipeline<'a>(
        cg: &'a mut MemCgroups,
        proc: &'a mut MemProc,
        pods: Option<Arc<PodStore>>,
    ) -> TestPipeline<'a> {
        let config = ResolverConfig {
            min_rescan_interval: Duration::ZERO,
            ..ResolverConfig::default()
        };
        Pipeline::new(
            CgroupResolver::new(cg, config),
            ProcessTable::new(TableConfig::default()),
            proc,
            pods,
        )
    }

    fn failures(p: &TestPipeline<'_>, reason: FailureReason) -> u64 {
        p.stats().failures[reason as usize]
    }

    fn web_pod() -> PodMeta {
        PodMeta {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "web-7d4b9c-x2x9k".into(),
            labels: Default::default(),
            workload: Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                uid: Some("uid-web".into()),
            },
            containers: vec![ContainerMeta {
                name: "web".into(),
                kind: ContainerKind::App,
                image: "registry.local/web:1.2".into(),
                image_id: "registry.local/web@sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
                image_digest: Some("sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into()),
                runtime: None,
                container_ids: vec![WEB.into()],
            }],
        }
    }

    #[test]
    fn exec_then_activity_is_attributed_to_process_and_container() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        let exec = synth::exec(
            1000,
            SHIM,
            0,
            WEB_CG,
            7,
            b"/usr/sbin/nginx",
            b"nginx\0-g\0daemon off;\0",
        );
        let a = p.process(&exec, now);
        let process = a.process.unwrap();
        assert_eq!(&*process.exe, "/usr/sbin/nginx");
        assert_eq!(
            process.argv.iter().collect::<Vec<_>>(),
            ["nginx", "-g", "daemon off;"]
        );
        assert_eq!(
            a.cgroup.unwrap().kind.container().map(|c| &*c.id),
            Some(WEB)
        );
        assert!(!process.exec_session);

        let open = synth::file(1000, WEB_CG, b"/etc/nginx/nginx.conf", ACCESS_READ);
        let a = p.process(&open, now);
        assert_eq!(a.process.map(|p| p.pid), Some(1000));
        assert_eq!(a.process.map(|p| p.ppid), Some(SHIM));
        assert!(a.pod.is_none(), "no pod watch in this mode");
        let stats = p.stats();
        assert_eq!(stats.events[EventKind::Exec as usize], 1);
        assert_eq!(stats.events[EventKind::File as usize], 1);
        assert_eq!(stats.failures, [0; FailureReason::COUNT]);
        // The shim (the exec's parent) was read from /proc on demand.
        assert_eq!(stats.processes, 2);
    }

    #[test]
    fn a_path_longer_than_the_kernel_reads_is_taken_whole_from_proc_or_marked_cut() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let long = format!("/opt/{}/../../tmp/x", "d".repeat(300));
        proc.procs.insert(1000, snapshot(1000, SHIM, "/tmp/x", "/"));
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        let exec = synth::exec(1000, SHIM, 0, WEB_CG, 7, long.as_bytes(), b"x\0");
        let process = p.process(&exec, now).process.unwrap();
        assert_eq!(&*process.exe, "/tmp/x", "as the kernel resolved it");

        // Gone before /proc was read: the start the kernel read, marked as cut.
        let exec = synth::exec(1001, SHIM, 0, WEB_CG, 8, long.as_bytes(), b"x\0");
        let process = p.process(&exec, now).process.unwrap();
        assert!(process.exe.ends_with('…'), "{}", process.exe);
        assert!(process.exe.starts_with("/opt/ddd"));
        assert_eq!(p.stats().exec_paths_cut, 2);
    }

    #[test]
    fn exec_paths_are_judged_as_the_kernel_resolves_them() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        for (given, resolved) in [
            (&b"//dev/shm/x"[..], "/dev/shm/x"),
            (b"/usr/../tmp/./x", "/tmp/x"),
            (b"/opt/app/../../tmp/x", "/tmp/x"),
        ] {
            let exec = synth::exec(1000, SHIM, 0, WEB_CG, 7, given, b"x\0");
            let a = p.process(&exec, now);
            assert_eq!(&*a.process.expect("the exec's process").exe, resolved);
        }
        // Relative, with no working directory to read (the test's /proc has none): kept as
        // given, so that it is never learned and never matches an absolute entry.
        let exec = synth::exec(1001, SHIM, 0, WEB_CG, 7, b"lookup", b"lookup\0");
        assert_eq!(&*p.process(&exec, now).process.unwrap().exe, "lookup");

        // The kernel read the directory at the exec: that wins, /proc or not.
        let mut exec = synth::exec(1002, SHIM, 0, WEB_CG, 7, b"../cgi-bin/status", b"status\0");
        if let Event::Exec(e) = &mut exec {
            e.cwd[0][..4].copy_from_slice(b"www\0");
            e.cwd_depth = 1;
        }
        assert_eq!(
            &*p.process(&exec, now).process.unwrap().exe,
            "/cgi-bin/status"
        );
        let mut exec = synth::exec(1003, SHIM, 0, WEB_CG, 7, b"status", b"status\0");
        if let Event::Exec(e) = &mut exec {
            e.cwd[0][..8].copy_from_slice(b"cgi-bin\0");
            e.cwd[1][..4].copy_from_slice(b"www\0");
            e.cwd_depth = 2;
        }
        assert_eq!(
            &*p.process(&exec, now).process.unwrap().exe,
            "/www/cgi-bin/status"
        );
    }

    #[test]
    fn an_exec_keeps_the_name_of_the_file_really_run_when_known_whole() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        let sh = || synth::exec(1000, SHIM, 0, WEB_CG, 7, b"/bin/sh", b"nc\0-l\0");
        let name_of = |p: &mut TestPipeline<'_>, exec| {
            let a = p.process(&exec, now);
            let process = a.process.expect("the exec's process");
            assert_eq!(&*process.exe, "/bin/sh", "the path stays the one started");
            process.file_name.as_deref().map(str::to_owned)
        };
        let busybox = synth::with_file_name(sh(), b"busybox");
        assert_eq!(name_of(&mut p, busybox).as_deref(), Some("busybox"));
        assert_eq!(name_of(&mut p, sh()), None, "not read");
        let cut = synth::with_file_name(sh(), &[b'b'; 40]);
        assert_eq!(name_of(&mut p, cut), None, "cut: not known whole");
        let odd = synth::with_file_name(sh(), b"bb\xff");
        assert_eq!(
            name_of(&mut p, odd).as_deref(),
            Some("bb\\xff"),
            "escaped as paths are"
        );
    }

    #[test]
    fn runc_exec_in_a_container_is_an_exec_session() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        p.seed_from_proc(now).unwrap();
        p.process(
            &synth::exec(1000, SHIM, 0, WEB_CG, 10, b"/usr/sbin/nginx", b"nginx\0"),
            now,
        );
        // runc exec (host) → runc init → the shell in the container.
        p.process(
            &synth::exec(2000, SHIM, 0, HOST, 20, b"/usr/bin/runc", b"runc\0exec\0"),
            now,
        );
        p.process(
            &synth::exec(2001, 2000, 0, HOST, 21, b"/usr/bin/runc", b"runc\0init\0"),
            now,
        );
        let a = p.process(
            &synth::exec(2001, 2000, 0, WEB_CG, 21, b"/bin/sh", b"sh\0"),
            now,
        );
        assert!(a.process.unwrap().exec_session);
        let a = p.process(
            &synth::exec(2002, 2001, 0, WEB_CG, 22, b"/usr/bin/curl", b"curl\0x\0"),
            now,
        );
        assert!(a.process.unwrap().exec_session);
        let a = p.process(
            &synth::exec(1001, 1000, 0, WEB_CG, 23, b"/usr/sbin/nginx", b"nginx\0"),
            now,
        );
        assert!(!a.process.unwrap().exec_session);
        assert_eq!(p.stats().table.exec_sessions, 1);
    }

    #[test]
    fn unknown_cgroups_are_counted_and_the_event_still_passes() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let resolver = CgroupResolver::new(&mut cg, ResolverConfig::default());
        let mut p = Pipeline::new(
            resolver,
            ProcessTable::new(TableConfig::default()),
            &mut proc,
            None,
        );
        let now = Instant::now();
        let a = p.process(&synth::syscall(SHIM, 999, 0), now);
        assert!(a.cgroup.is_none());
        assert_eq!(
            a.process.map(|p| &*p.exe),
            Some("/usr/bin/containerd-shim-runc-v2")
        );
        assert_eq!(failures(&p, FailureReason::UnknownCgroup), 1);
        // The shim's /proc entry names another cgroup; a flood from this id reads /proc
        // no more until the next walk.
        for nr in 1..100 {
            p.process(&synth::syscall(SHIM, 999, nr), now);
        }
        assert_eq!(failures(&p, FailureReason::UnknownCgroup), 100);
        assert_eq!(p.stats().cgroups.walks, 1);
        drop(p);
        // One read to learn the cgroup, one to learn the process.
        assert_eq!(proc.reads, 2);
    }

    #[test]
    fn a_cgroup_newer_than_the_last_walk_is_learned_from_proc() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let fresh = format!("/kubepods/besteffort/pod{UID}/{}", "c".repeat(64));
        proc.procs
            .insert(1500, snapshot(1500, SHIM, "/job", &fresh));
        let config = ResolverConfig {
            min_rescan_interval: Duration::from_secs(3600),
            ..ResolverConfig::default()
        };
        let resolver = CgroupResolver::new(&mut cg, config);
        let mut p = Pipeline::new(
            resolver,
            ProcessTable::new(TableConfig::default()),
            &mut proc,
            None,
        );
        let now = Instant::now();
        p.cgroups_mut().rescan(now).unwrap();
        // The container is created after the walk, and the rate limit forbids another.
        p.cgroups_mut()
            .source_mut()
            .cgroups
            .push((30, fresh.clone()));
        let a = p.process(&synth::syscall(1500, 30, 0), now);
        assert_eq!(a.cgroup.map(|c| &*c.path), Some(fresh.as_str()));
        assert_eq!(p.stats().failures, [0; FailureReason::COUNT]);
        assert_eq!(p.stats().cgroups.learned, 1);
        assert_eq!(p.stats().cgroups.walks, 1);
        // A process whose cgroup moved on (its path has another id) teaches nothing.
        let a = p.process(&synth::syscall(1500, 31, 0), now);
        assert!(a.cgroup.is_none());
        assert_eq!(failures(&p, FailureReason::UnknownCgroup), 1);
    }

    #[test]
    fn processes_gone_before_attribution_are_counted_once_per_pid() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        for _ in 0..5 {
            let a = p.process(&synth::file(31_337, WEB_CG, b"/tmp/x", ACCESS_READ), now);
            assert!(a.process.is_none());
            assert!(a.cgroup.is_some());
        }
        assert_eq!(failures(&p, FailureReason::ProcessGone), 5);
        assert_eq!(p.stats().proc_vanished, 1);
        drop(p);
        assert_eq!(proc.reads, 1, "/proc is read once for a gone pid");
    }

    #[test]
    fn an_entry_from_a_program_that_is_no_known_runtime_is_flagged() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        proc.procs
            .insert(700, snapshot(700, 1, "/usr/local/bin/myruntime", "/"));
        proc.procs
            .insert(701, snapshot(701, 1, "/usr/sbin/runc", "/"));
        proc.procs.insert(
            702,
            snapshot(
                702,
                1,
                "/pause",
                &format!("/kubepods/besteffort/pod{UID}/{PAUSE}"),
            ),
        );
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        let with_parent_start = |mut exec: Event, start: u64| {
            if let Event::Exec(e) = &mut exec {
                e.parent_start_time_ns = start;
            }
            exec
        };
        // The kernel names a parent that started at another time than the process the
        // table has under that pid: another owner of the pid, not the parent.
        let exec = synth::exec(999, 700, 0, WEB_CG, 7, b"/bin/sh", b"sh\0");
        let exec = with_parent_start(exec, 5_000_000_000);
        assert_eq!(p.process(&exec, now).unrecognised_runtime, None);
        // Parent on the host, not a runtime: flagged with its name.
        let exec = synth::exec(1000, 700, 0, WEB_CG, 7, b"/bin/sh", b"sh\0");
        let exec = with_parent_start(exec, 700_000_000_000);
        assert_eq!(
            p.process(&exec, now).unrecognised_runtime,
            Some("myruntime")
        );
        // runc, the containerd shim, a sibling container of the pod, a process of the same
        // container: not entries by an unknown program.
        for (pid, ppid) in [(1001, 701), (1002, SHIM), (1003, 702), (1004, 1000)] {
            // The table's start times: /proc's for the seeded ones, the exec's for 1000.
            let start = if ppid == 1000 {
                7
            } else {
                u64::from(ppid) * 1_000_000_000
            };
            let exec = synth::exec(pid, ppid, 0, WEB_CG, 7, b"/bin/sh", b"sh\0");
            let exec = with_parent_start(exec, start);
            assert_eq!(
                p.process(&exec, now).unrecognised_runtime,
                None,
                "parent {ppid}"
            );
        }
        assert_eq!(p.stats().unrecognised_runtime, 1);
    }

    #[test]
    fn a_fork_gone_before_it_was_read_is_judged_as_its_parent() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        proc.procs.insert(
            1234,
            snapshot(
                1234,
                1000,
                "/bin/httpd",
                &format!("/kubepods/besteffort/pod{UID}/{WEB}"),
            ),
        );
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        // pid 1300: the per-connection child, already exited; its parent is alive.
        let mut event = synth::syscall(1300, WEB_CG, 40);
        event.header_mut().ppid = 1234;
        let a = p.process(&event, now);
        let child = a.process.expect("the child is recorded from its parent");
        assert_eq!(
            (child.pid, child.ppid, &*child.exe, child.cgroup_id),
            (1300, 1234, "/bin/httpd", WEB_CG)
        );
        assert_eq!(child.origin, crate::attribution::proctable::Origin::Fork);
        assert_eq!(child.container.as_deref(), Some(WEB));
        // Its next events find it at once; its exit makes it a tombstone.
        let mut file = synth::file(1300, WEB_CG, b"/etc/localtime", ACCESS_READ);
        file.header_mut().ppid = 1234;
        assert!(p.process(&file, now).process.is_some());
        assert_eq!(failures(&p, FailureReason::ProcessGone), 0);
        assert_eq!(p.stats().inherited, 1);

        // A child whose parent is gone too is still a failure, counted.
        let mut orphan = synth::syscall(1400, WEB_CG, 40);
        orphan.header_mut().ppid = 1399;
        assert!(p.process(&orphan, now).process.is_none());
        assert_eq!(failures(&p, FailureReason::ProcessGone), 1);
    }

    #[test]
    fn forked_children_are_read_from_proc() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        proc.procs.insert(
            1234,
            snapshot(
                1234,
                1000,
                "/usr/sbin/nginx",
                &format!("/kubepods/besteffort/pod{UID}/{WEB}"),
            ),
        );
        let mut p = pipeline(&mut cg, &mut proc, None);
        let a = p.process(
            &synth::net(1234, WEB_CG, NET_CONNECT, IPPROTO_TCP, [10, 0, 0, 1], 5432),
            Instant::now(),
        );
        let process = a.process.unwrap();
        assert_eq!(process.origin, crate::attribution::proctable::Origin::Proc);
        assert_eq!(process.container.as_deref(), Some(WEB));
        assert_eq!(process.cgroup_id, WEB_CG);
        assert_eq!(failures(&p, FailureReason::ProcessGone), 0);
    }

    #[test]
    fn exits_leave_tombstones_and_identity_changes_update_the_uid() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let now = Instant::now();
        p.process(
            &synth::exec(1000, SHIM, 0, WEB_CG, 7, b"/app", b"app\0"),
            now,
        );
        let a = p.process(&synth::identity(1000, WEB_CG, 105, 0, 65534), now);
        assert_eq!(a.process.unwrap().uid, 65534);
        let a = p.process(&synth::exit(1000, WEB_CG, 0), now);
        assert!(a.process.unwrap().exited);
        // An event of the exited process still in flight is attributed.
        let a = p.process(&synth::file(1000, WEB_CG, b"/x", ACCESS_READ), now);
        assert_eq!(a.process.map(|p| &*p.exe), Some("/app"));
    }

    #[test]
    fn accepted_connections_without_a_listener_process_are_not_failures() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let a = p.process(
            &synth::net(0, WEB_CG, NET_ACCEPT, IPPROTO_TCP, [10, 0, 0, 9], 40_000),
            Instant::now(),
        );
        assert!(a.process.is_none());
        assert_eq!(p.stats().failures, [0; FailureReason::COUNT]);
        drop(p);
        assert_eq!(proc.reads, 0);
    }

    #[test]
    fn pod_attribution_and_its_failures() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let store = Arc::new(PodStore::default());
        let mut p = pipeline(&mut cg, &mut proc, Some(store.clone()));
        let now = Instant::now();
        p.process(
            &synth::exec(1000, SHIM, 0, WEB_CG, 7, b"/app", b"app\0"),
            now,
        );
        let ev = synth::file(1000, WEB_CG, b"/data", ACCESS_READ);

        // Before the first list.
        assert!(p.process(&ev, now).pod.is_none());
        assert_eq!(failures(&p, FailureReason::PodsNotSynced), 2);

        // Synced, but the pod is not there.
        store.replace_all(Vec::new());
        assert!(p.process(&ev, now).pod.is_none());
        assert_eq!(failures(&p, FailureReason::PodNotFound), 1);

        // The pod arrives: the cached answer is replaced.
        store.upsert(web_pod());
        let a = p.process(&ev, now);
        let pod = a.pod.expect("attributed");
        assert_eq!(pod.pod.namespace, "shop");
        assert_eq!(pod.pod.workload.kind, "Deployment");
        let container = pod.container().unwrap();
        assert_eq!(container.name, "web");
        assert!(container
            .image_digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:0011"));
        assert_eq!(p.stats().pods, 1);

        // The sandbox is in the pod but not in its container statuses.
        let a = p.process(&synth::syscall(SHIM, PAUSE_CG, 34), now);
        assert_eq!(a.pod.map(|p| p.pod.name.as_str()), Some("web-7d4b9c-x2x9k"));
        assert!(a.pod.unwrap().container().is_none());
        assert_eq!(failures(&p, FailureReason::ContainerNotFound), 1);

        // A process in the pod's own cgroup, and one on the host.
        p.process(&synth::syscall(SHIM, POD_CG, 0), now);
        assert_eq!(failures(&p, FailureReason::NoContainerId), 1);
        p.process(&synth::syscall(SHIM, HOST, 0), now);
        let total: u64 = p.stats().failures.iter().sum();
        assert_eq!(total, 2 + 1 + 1 + 1);

        // The pod is deleted.
        store.remove(UID);
        assert!(p.process(&ev, now).pod.is_none());
        assert_eq!(failures(&p, FailureReason::PodNotFound), 2);
    }

    #[test]
    fn pod_meta_from_the_api_feeds_the_pipeline() {
        // The same path as the watch: a Pod object → PodMeta → store.
        use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                uid: Some(UID.into()),
                namespace: Some("ns".into()),
                name: Some("p".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    container_id: Some(format!("containerd://{WEB}")),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let store = Arc::new(PodStore::default());
        store.replace_all(vec![pod_meta(
            &pod,
            Workload {
                kind: "Pod".into(),
                name: "p".into(),
                uid: None,
            },
        )
        .unwrap()]);
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, Some(store));
        let a = p.process(&synth::syscall(SHIM, WEB_CG, 0), Instant::now());
        assert_eq!(
            a.pod.and_then(|p| p.container()).map(|c| c.name.as_str()),
            Some("c")
        );
    }

    #[test]
    fn seeding_counts_vanished_processes() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        proc.procs.insert(
            1000,
            snapshot(
                1000,
                SHIM,
                "/app",
                &format!("/kubepods/besteffort/pod{UID}/{WEB}"),
            ),
        );
        proc.procs.insert(
            2000,
            snapshot(
                2000,
                SHIM,
                "/bin/sh",
                &format!("/kubepods/besteffort/pod{UID}/{WEB}"),
            ),
        );
        proc.vanishing = vec![4242, 4243];
        let mut p = pipeline(&mut cg, &mut proc, None);
        let seed = p.seed_from_proc(Instant::now()).unwrap();
        assert_eq!(seed.processes, 4);
        assert_eq!(seed.vanished, 2);
        assert_eq!(p.stats().proc_vanished, 2);
        assert_eq!(p.processes().container_init(WEB), Some(1000));
        assert!(p.processes().peek(2000).unwrap().exec_session);
        assert_eq!(p.processes().peek(1000).unwrap().cgroup_id, WEB_CG);
    }

    #[test]
    fn non_utf8_exec_paths_and_argv_do_not_break_anything() {
        let (mut cg, mut proc) = (cgroups(), host_proc());
        let mut p = pipeline(&mut cg, &mut proc, None);
        let mut argv = b"\xff\xfe\0".to_vec();
        argv.extend(std::iter::repeat_n(b'a', 2000));
        let a = p.process(
            &synth::exec(1000, SHIM, 0, WEB_CG, 7, b"/tmp/\xc3\x28bin", &argv),
            Instant::now(),
        );
        let process = a.process.unwrap();
        assert_eq!(&*process.exe, "/tmp/\\xc3(bin");
        assert_eq!(process.argv.args[0].as_ref(), "\\xff\\xfe");
        assert!(process.argv.truncated);
    }
}
