//! The agent's bounded view of the processes on the node, and which of them are exec
//! sessions.
//!
//! Entries come from exec events, from /proc at start ([`ProcessTable::seed`]) and from
//! /proc when an event names a process the table does not know (a forked child that never
//! called exec). Exit events turn entries into tombstones that stay for a while, so that
//! events still in flight for a process that just exited, and children that exec after
//! their parent exited, are still attributed. Everything is bounded: live processes by
//! least-recent use, tombstones by age, containers by count; each eviction is counted.
//!
//! # Exec sessions
//!
//! A container's processes descend from its init: the first process that entered the
//! container's cgroup from a parent outside it (the runtime: runc, reparented to the
//! containerd shim or conmon). `kubectl exec` (`runc exec`) starts a process the same
//! way, from a runtime parent outside the container, while the init is alive: that process
//! and everything it starts is an exec session.
//!
//! So, when a process is seen in a container (its exec event, or /proc):
//! - parent in the same container: it inherits the parent's exec-session flag;
//! - parent outside the container: it is the container's init if the container has no live
//!   init, an exec session otherwise;
//! - parent unknown (gone before anyone saw it): it is the init if the container has none,
//!   and otherwise, without evidence either way, not an exec session (counted as
//!   `parent_unknown`, so that a false alarm is never raised from missing data).
//!
//! A known pid whose exec event names a different container than before has *entered* the
//! container (runc's `runc init` helper execs the payload after joining the cgroup) and is
//! classified again. When the init exits the container has no init until a process enters
//! it again (a docker restart keeps the container id).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::attribution::argv::Argv;
use crate::attribution::idhash::IdMap;

/// Exec events carry `start_boottime` in nanoseconds; /proc gives the same clock in ticks
/// (10 ms). Two readings of one process's start time differ by less than this.
pub const START_TIME_TOLERANCE_NS: u64 = 20_000_000;

/// Whether two readings of a start time (one possibly from /proc) are the same process's.
pub fn same_start(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= START_TIME_TOLERANCE_NS
}

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An exec event.
    Exec,
    /// /proc: at start, or looked up for a pid the events named.
    Proc,
    /// A fork gone before /proc could be read, taken as a copy of its parent.
    Fork,
}

/// A process the table knows.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub start_time_ns: u64,
    pub uid: u32,
    pub exe: Box<str>,
    /// The name of the file really run, as the exec event read it (see the model's
    /// `Process::file_name`); `None` for a process found in /proc.
    pub file_name: Option<Box<str>>,
    pub argv: Argv,
    pub cgroup_id: u64,
    /// The container id, when the cgroup is a container's.
    pub container: Option<Arc<str>>,
    /// Started by `kubectl exec` / `runc exec`, or a descendant of such a process.
    pub exec_session: bool,
    /// An exit event was seen; the entry is a tombstone.
    pub exited: bool,
    pub origin: Origin,
    last_used: u64,
}

/// A process to record.
#[derive(Clone, Debug)]
pub struct NewProcess {
    pub pid: u32,
    pub ppid: u32,
    pub start_time_ns: u64,
    pub uid: u32,
    pub exe: Box<str>,
    pub file_name: Option<Box<str>>,
    pub argv: Argv,
    pub cgroup_id: u64,
    pub container: Option<Arc<str>>,
}

/// Bounds of the table.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    /// Live processes. A node with 110 pods runs a few thousand.
    pub max_processes: usize,
    /// Tombstones of exited processes.
    pub max_exited: usize,
    /// Containers whose init is tracked.
    pub max_containers: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_processes: 32_768,
            max_exited: 4_096,
            max_containers: 16_384,
        }
    }
}

/// Counters of the table, read by the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Live processes evicted because the table was full.
    pub evicted: u64,
    /// Containers forgotten because too many were tracked.
    pub containers_evicted: u64,
    /// A process entered a container whose init is alive, from a parent the table did not
    /// know: it could not be classified and was taken as not an exec session.
    pub parent_unknown: u64,
    /// An exec event reused the pid of a process whose exit was never seen.
    pub exits_missed: u64,
    /// Processes classified as the root of an exec session.
    pub exec_sessions: u64,
}

#[derive(Clone, Copy, Debug)]
struct InitRef {
    pid: u32,
    start_time_ns: u64,
}

/// pid → [`Process`], bounded.
pub struct ProcessTable {
    config: TableConfig,
    procs: IdMap<u32, Process>,
    /// Exited entries, oldest first: (pid, start time).
    exited: VecDeque<(u32, u64)>,
    inits: HashMap<Arc<str>, InitRef>,
    init_by_pid: IdMap<u32, Arc<str>>,
    tick: u64,
    stats: TableStats,
}

impl ProcessTable {
    pub fn new(config: TableConfig) -> Self {
        ProcessTable {
            config: TableConfig {
                max_processes: config.max_processes.max(1),
                max_exited: config.max_exited.max(1),
                max_containers: config.max_containers.max(1),
            },
            procs: IdMap::default(),
            exited: VecDeque::new(),
            inits: HashMap::new(),
            init_by_pid: IdMap::default(),
            tick: 0,
            stats: TableStats::default(),
        }
    }

    /// Entries, tombstones included.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Containers with a live init.
    pub fn containers(&self) -> usize {
        self.inits.len()
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Every entry, tombstones included, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// The entry, without marking it used.
    pub fn peek(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// The entry, marked as recently used.
    pub fn get(&mut self, pid: u32) -> Option<&Process> {
        self.tick += 1;
        let tick = self.tick;
        let p = self.procs.get_mut(&pid)?;
        p.last_used = tick;
        Some(p)
    }

    /// The init of a container, when known and alive.
    pub fn container_init(&self, container: &str) -> Option<u32> {
        self.inits.get(container).map(|i| i.pid)
    }

    /// Records an exec event.
    pub fn exec(&mut self, new: NewProcess) -> &Process {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.procs.get_mut(&new.pid) {
            let same_process = !old.exited && same_start(old.start_time_ns, new.start_time_ns);
            if same_process && old.container == new.container {
                // The process replaced its image in place (`exec ls` in a shell): it keeps
                // its place in the tree.
                old.ppid = new.ppid;
                old.uid = new.uid;
                old.exe = new.exe;
                old.file_name = new.file_name;
                old.argv = new.argv;
                old.cgroup_id = new.cgroup_id;
                old.origin = Origin::Exec;
                old.last_used = tick;
                return self.procs.get(&new.pid).expect("entry updated above");
            }
            if !old.exited && !same_process {
                self.stats.exits_missed += 1;
            }
        }
        self.insert(new, Origin::Exec)
    }

    /// Records a process found in /proc.
    pub fn insert_found(&mut self, new: NewProcess) -> &Process {
        self.insert(new, Origin::Proc)
    }

    /// Records a forked child known only from its parent.
    pub fn insert_forked(&mut self, new: NewProcess) -> &Process {
        self.insert(new, Origin::Fork)
    }

    /// Fills the table from a /proc snapshot taken at start. Parents are recorded before
    /// their children whatever the order of `snapshot`, so that the first process of each
    /// container is found as its init.
    pub fn seed(&mut self, snapshot: Vec<NewProcess>) {
        let mut order: Vec<usize> = (0..snapshot.len()).collect();
        order.sort_by_key(|&i| (snapshot[i].start_time_ns, snapshot[i].pid));
        let index: IdMap<u32, usize> = snapshot
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, i))
            .collect();
        let mut done = vec![false; snapshot.len()];
        let mut chain = Vec::new();
        for start in order {
            // Walk up to the first ancestor already recorded (or outside the snapshot),
            // then record the chain top-down.
            let mut i = start;
            while !done[i] {
                done[i] = true;
                chain.push(i);
                match index.get(&snapshot[i].ppid) {
                    Some(&parent) if parent != i => i = parent,
                    _ => break,
                }
            }
            while let Some(i) = chain.pop() {
                self.insert(snapshot[i].clone(), Origin::Proc);
            }
        }
    }

    /// Records an exit: the entry becomes a tombstone; the container loses its init if
    /// this was it.
    pub fn exit(&mut self, pid: u32) {
        if let Some(container) = self.init_by_pid.remove(&pid) {
            self.inits.remove(&container);
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if p.exited {
            return;
        }
        p.exited = true;
        self.exited.push_back((pid, p.start_time_ns));
        while self.exited.len() > self.config.max_exited {
            if let Some((old_pid, start)) = self.exited.pop_front() {
                self.remove_tombstone(old_pid, start);
            }
        }
    }

    /// Records a successful identity change.
    pub fn set_uid(&mut self, pid: u32, uid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.uid = uid;
        }
    }

    fn remove_tombstone(&mut self, pid: u32, start: u64) {
        if self
            .procs
            .get(&pid)
            .is_some_and(|p| p.exited && p.start_time_ns == start)
        {
            self.procs.remove(&pid);
        }
    }

    fn insert(&mut self, new: NewProcess, origin: Origin) -> &Process {
        self.tick += 1;
        let exec_session = self.classify(&new);
        if !self.procs.contains_key(&new.pid) && self.procs.len() >= self.config.max_processes {
            self.make_room();
        }
        let process = Process {
            pid: new.pid,
            ppid: new.ppid,
            start_time_ns: new.start_time_ns,
            uid: new.uid,
            exe: new.exe,
            file_name: new.file_name,
            argv: new.argv,
            cgroup_id: new.cgroup_id,
            container: new.container,
            exec_session,
            exited: false,
            origin,
            last_used: self.tick,
        };
        let pid = new.pid;
        self.procs.insert(pid, process);
        self.procs.get(&pid).expect("inserted above")
    }

    fn classify(&mut self, new: &NewProcess) -> bool {
        let Some(container) = &new.container else {
            return false;
        };
        let parent_session = match self.procs.get(&new.ppid) {
            Some(parent) if parent.pid != new.pid => {
                let inside = parent
                    .container
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, container) || c == container);
                inside.then_some(parent.exec_session)
            }
            _ => {
                if self.inits.contains_key(container) && !self.is_init(container, new) {
                    self.stats.parent_unknown += 1;
                    return false;
                }
                None
            }
        };
        if let Some(inherited) = parent_session {
            return inherited;
        }
        // The parent is outside the container: the runtime started this process.
        match self.inits.get(container) {
            Some(_) if self.is_init(container, new) => false,
            Some(_) => {
                self.stats.exec_sessions += 1;
                true
            }
            None => {
                self.set_init(container.clone(), new.pid, new.start_time_ns);
                false
            }
        }
    }

    fn is_init(&self, container: &str, p: &NewProcess) -> bool {
        self.inits
            .get(container)
            .is_some_and(|i| i.pid == p.pid && same_start(i.start_time_ns, p.start_time_ns))
    }

    fn set_init(&mut self, container: Arc<str>, pid: u32, start_time_ns: u64) {
        if self.inits.len() >= self.config.max_containers {
            // Forget containers whose init is no longer in the table first.
            let procs = &self.procs;
            let before = self.inits.len();
            self.inits
                .retain(|_, i| procs.get(&i.pid).is_some_and(|p| !p.exited));
            if self.inits.len() >= self.config.max_containers {
                if let Some(k) = self.inits.keys().next().cloned() {
                    self.inits.remove(&k);
                }
            }
            self.stats.containers_evicted += (before - self.inits.len()) as u64;
            let inits = &self.inits;
            self.init_by_pid.retain(|_, c| inits.contains_key(c));
        }
        if let Some(old) = self
            .inits
            .insert(container.clone(), InitRef { pid, start_time_ns })
        {
            self.init_by_pid.remove(&old.pid);
        }
        self.init_by_pid.insert(pid, container);
    }

    /// Frees a batch of slots: tombstones first, then the least recently used processes.
    fn make_room(&mut self) {
        let batch = (self.config.max_processes / 32).max(1);
        let mut freed = 0;
        while freed < batch {
            let Some((pid, start)) = self.exited.pop_front() else {
                break;
            };
            let before = self.procs.len();
            self.remove_tombstone(pid, start);
            freed += before - self.procs.len();
        }
        if self.procs.len() < self.config.max_processes {
            return;
        }
        let mut ages: Vec<(u64, u32)> = self.procs.values().map(|p| (p.last_used, p.pid)).collect();
        let n = (batch - freed).clamp(1, ages.len());
        ages.select_nth_unstable(n - 1);
        for &(_, pid) in &ages[..n] {
            if let Some(p) = self.procs.remove(&pid) {
                if !p.exited {
                    self.stats.evicted += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIM: u32 = 500;
    const RUNC: u32 = 900;

    fn container(id: &str) -> Option<Arc<str>> {
        Some(Arc::from(id))
    }

    fn proc(pid: u32, ppid: u32, start: u64, exe: &str, c: Option<Arc<str>>) -> NewProcess {
        NewProcess {
            pid,
            ppid,
            start_time_ns: start * 1_000_000_000,
            uid: 0,
            exe: Box::from(exe),
            file_name: None,
            argv: Argv::from_nul_block(exe.as_bytes(), false),
            cgroup_id: c.as_ref().map_or(1, |c| c.len() as u64 + 100),
            container: c,
        }
    }

    fn host_with_shim() -> ProcessTable {
        let mut t = ProcessTable::new(TableConfig::default());
        t.exec(proc(1, 0, 0, "/sbin/init", None));
        t.exec(proc(SHIM, 1, 1, "/usr/bin/containerd-shim-runc-v2", None));
        // The shim running `runc exec`.
        t.exec(proc(RUNC, SHIM, 10, "/usr/bin/runc", None));
        t
    }

    fn session(t: &ProcessTable, pid: u32) -> bool {
        t.peek(pid)
            .unwrap_or_else(|| panic!("pid {pid} not in the table"))
            .exec_session
    }

    #[test]
    fn kubectl_exec_is_an_exec_session_and_the_workload_is_not() {
        let web = container("web");
        let mut t = host_with_shim();
        // runc create → runc init (in the shim's cgroup) → joins the cgroup and execs nginx,
        // reparented to the shim.
        t.exec(proc(1000, SHIM, 2, "/usr/bin/runc", None));
        t.exec(proc(1000, SHIM, 2, "/usr/sbin/nginx", web.clone()));
        t.exec(proc(1001, 1000, 3, "/usr/sbin/nginx", web.clone()));
        assert_eq!(t.container_init("web"), Some(1000));
        assert!(!session(&t, 1000));
        assert!(!session(&t, 1001), "a worker of the init is not a session");

        // kubectl exec: the shim runs `runc exec`, whose `runc init` joins the cgroup and
        // execs the shell.
        t.exec(proc(RUNC, SHIM, 10, "/usr/bin/runc", None));
        t.exec(proc(2000, RUNC, 10, "/usr/bin/runc", None));
        t.exec(proc(2000, RUNC, 10, "/bin/sh", web.clone()));
        assert!(session(&t, 2000));
        // What the shell runs is part of the session, however deep.
        t.exec(proc(2001, 2000, 11, "/usr/bin/curl", web.clone()));
        t.exec(proc(2002, 2001, 12, "/bin/busybox", web.clone()));
        assert!(session(&t, 2001));
        assert!(session(&t, 2002));
        // The workload's own new processes are still not sessions.
        t.exec(proc(1002, 1000, 13, "/usr/sbin/nginx", web.clone()));
        assert!(!session(&t, 1002));
        assert_eq!(t.stats().exec_sessions, 1);
    }

    #[test]
    fn host_processes_are_never_exec_sessions() {
        let mut t = host_with_shim();
        t.exec(proc(3000, 1, 5, "/usr/bin/ssh", None));
        t.exec(proc(3001, 3000, 6, "/bin/bash", None));
        assert!(!session(&t, 3000));
        assert!(!session(&t, 3001));
    }

    #[test]
    fn a_session_that_replaces_its_image_stays_a_session() {
        let c = container("c");
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/app", c.clone()));
        t.exec(proc(2000, RUNC, 10, "/bin/sh", c.clone()));
        assert!(session(&t, 2000));
        // `exec ls` in the shell: same pid, same start time, same container.
        let p = t.exec(proc(2000, RUNC, 10, "/bin/ls", c.clone()));
        assert!(p.exec_session);
        assert_eq!(&*p.exe, "/bin/ls");
        // And the init replacing its image is still the init.
        let p = t.exec(proc(1000, SHIM, 2, "/app-v2", c.clone()));
        assert!(!p.exec_session);
        assert_eq!(t.container_init("c"), Some(1000));
    }

    #[test]
    fn containers_do_not_share_inits() {
        let (a, b) = (container("a"), container("b"));
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/a", a.clone()));
        t.exec(proc(1100, SHIM, 3, "/b", b.clone()));
        assert!(!session(&t, 1000));
        assert!(
            !session(&t, 1100),
            "the first process of another container is its init"
        );
        // A process of container a that starts a process seen in container b (a shared
        // pid namespace cannot move cgroups, so this is a runtime doing it) enters b.
        t.exec(proc(1101, 1000, 4, "/x", b.clone()));
        assert!(session(&t, 1101));
    }

    #[test]
    fn init_exit_lets_a_restarted_container_find_its_new_init() {
        let c = container("c");
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/app", c.clone()));
        t.exit(1000);
        assert_eq!(t.container_init("c"), None);
        // docker restart: same container id, a new init from the runtime.
        t.exec(proc(1500, SHIM, 20, "/app", c.clone()));
        assert!(!session(&t, 1500));
        assert_eq!(t.container_init("c"), Some(1500));
    }

    #[test]
    fn children_of_an_exited_parent_still_inherit() {
        let c = container("c");
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/app", c.clone()));
        t.exec(proc(2000, RUNC, 10, "/bin/sh", c.clone()));
        // `sh -c 'cmd &'`: the shell exits before the background child's exec is seen.
        t.exit(2000);
        t.exec(proc(2001, 2000, 11, "/usr/bin/wget", c.clone()));
        assert!(session(&t, 2001));
        assert!(t.peek(2000).unwrap().exited);
    }

    #[test]
    fn unknown_parent_is_not_taken_for_a_session() {
        let c = container("c");
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/app", c.clone()));
        t.exec(proc(4000, 3999, 30, "/bin/thing", c.clone()));
        assert!(!session(&t, 4000));
        assert_eq!(t.stats().parent_unknown, 1);
        // With no init yet, the first process is the init whatever its parent.
        t.exec(proc(5000, 4999, 31, "/bin/other", container("d")));
        assert_eq!(t.container_init("d"), Some(5000));
        assert_eq!(t.stats().parent_unknown, 1);
    }

    #[test]
    fn pid_reuse_replaces_the_entry() {
        let c = container("c");
        let mut t = host_with_shim();
        t.exec(proc(1000, SHIM, 2, "/app", c.clone()));
        t.exec(proc(2000, RUNC, 10, "/bin/sh", c.clone()));
        assert!(session(&t, 2000));
        // The exit of 2000 was lost; pid 2000 now belongs to a child of the init.
        t.exec(proc(2000, 1000, 50, "/app-worker", c.clone()));
        assert!(!session(&t, 2000));
        assert_eq!(t.stats().exits_missed, 1);
        // Reuse after a seen exit is not a missed exit.
        t.exit(2000);
        t.exec(proc(2000, 1000, 60, "/app-worker", c.clone()));
        assert_eq!(t.stats().exits_missed, 1);
        assert!(!t.peek(2000).unwrap().exited);
    }

    #[test]
    fn seeding_finds_inits_and_sessions_in_any_order() {
        let c = container("c");
        let mut snapshot = vec![
            proc(1, 0, 0, "/sbin/init", None),
            proc(SHIM, 1, 1, "/shim", None),
            proc(1000, SHIM, 2, "/app", c.clone()),
            proc(1001, 1000, 3, "/app-worker", c.clone()),
            proc(2000, SHIM, 10, "/bin/sh", c.clone()),
            proc(2001, 2000, 11, "/bin/top", c.clone()),
            // Same start tick as its parent and a lower pid (pids wrapped): order by
            // start time alone would see the child first.
            proc(7, 2001, 11, "/bin/cat", c.clone()),
        ];
        snapshot.reverse();
        let mut t = ProcessTable::new(TableConfig::default());
        t.seed(snapshot);
        assert_eq!(t.len(), 7);
        assert_eq!(t.container_init("c"), Some(1000));
        for (pid, want) in [
            (1000, false),
            (1001, false),
            (2000, true),
            (2001, true),
            (7, true),
            (1, false),
        ] {
            assert_eq!(session(&t, pid), want, "pid {pid}");
        }
        assert!(t.peek(1000).is_some_and(|p| p.origin == Origin::Proc));
        assert_eq!(t.stats().parent_unknown, 0);
    }

    #[test]
    fn seeded_start_times_match_exec_start_times_within_a_tick() {
        let c = container("c");
        let mut t = host_with_shim();
        let mut init = proc(1000, SHIM, 2, "/app", c.clone());
        init.start_time_ns += 7_000_000; // /proc's tick rounding
        t.seed(vec![init]);
        // The init execs again after the agent started: still the init.
        let p = t.exec(proc(1000, SHIM, 2, "/app-v2", c.clone()));
        assert!(!p.exec_session);
        assert_eq!(t.stats().exits_missed, 0);
    }

    #[test]
    fn table_is_bounded_and_keeps_recently_used_processes() {
        let mut t = ProcessTable::new(TableConfig {
            max_processes: 64,
            max_exited: 16,
            max_containers: 8,
        });
        t.exec(proc(1, 0, 0, "/init", None));
        for pid in 2..10_000u32 {
            t.exec(proc(pid, 1, u64::from(pid), "/bin/x", None));
            // pid 1 is in use all the time.
            assert!(t.get(1).is_some());
            assert!(t.len() <= 64, "{} entries", t.len());
        }
        assert!(t.peek(1).is_some(), "the busiest process survives eviction");
        assert!(t.peek(9_999).is_some(), "the newest process is there");
        assert!(t.peek(2).is_none());
        assert!(t.stats().evicted >= 9_998 - 64);
    }

    #[test]
    fn tombstones_are_bounded_and_evicted_first() {
        let mut t = ProcessTable::new(TableConfig {
            max_processes: 100,
            max_exited: 10,
            max_containers: 8,
        });
        for pid in 1..=50u32 {
            t.exec(proc(pid, 1, u64::from(pid), "/bin/x", None));
            t.exit(pid);
        }
        assert_eq!(t.len(), 10, "only the last tombstones are kept");
        assert!(t.peek(50).is_some_and(|p| p.exited));
        assert!(t.peek(40).is_none());
        // Filling the table takes tombstones before live processes.
        for pid in 100..190u32 {
            t.exec(proc(pid, 1, u64::from(pid), "/bin/y", None));
        }
        assert_eq!(t.len(), 100);
        t.exec(proc(500, 1, 500, "/bin/z", None));
        assert!(t.len() <= 100);
        assert_eq!(t.stats().evicted, 0, "tombstones made the room");
        assert!((100..190).all(|pid| t.peek(pid).is_some()));
    }

    #[test]
    fn tracked_containers_are_bounded() {
        let mut t = ProcessTable::new(TableConfig {
            max_processes: 1000,
            max_exited: 10,
            max_containers: 8,
        });
        for i in 0..100u32 {
            t.exec(proc(
                1000 + i,
                SHIM,
                u64::from(i),
                "/app",
                container(&format!("c{i}")),
            ));
        }
        assert!(t.containers() <= 8);
        assert_eq!(t.stats().containers_evicted, 92);
        assert_eq!(t.container_init("c99"), Some(1099));
    }

    #[test]
    fn exit_of_an_unknown_or_repeated_pid_is_harmless() {
        let mut t = host_with_shim();
        t.exit(424_242);
        t.exit(SHIM);
        t.exit(SHIM);
        assert_eq!(t.len(), 3);
        assert!(t.peek(SHIM).unwrap().exited);
    }

    #[test]
    fn set_uid_updates_the_entry() {
        let mut t = host_with_shim();
        t.set_uid(SHIM, 1000);
        assert_eq!(t.peek(SHIM).unwrap().uid, 1000);
        t.set_uid(31_337, 0);
    }
}
