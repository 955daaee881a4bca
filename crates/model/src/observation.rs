//! Observations: what one agent saw one workload do, published as a compact, bounded,
//! idempotent delta.
//!
//! # The channel
//!
//! Each agent keeps one [`Observation`] per (workload, container, image digest) on its node
//! and publishes it as one `BehaviorObservation` object, named by [`Observation::object_name`],
//! written by server-side apply with the agent's field manager. The agent never writes per
//! event: [`Observation::observe`] reports a change only when something *material* happened
//! (a new entry, a new replica, wider file access, a last-seen time that moved by at least
//! [`LAST_SEEN_GRANULARITY`], a new loss count), and the agent applies changed observations at
//! most once per publish interval. Steady state is therefore no writes at all, and the worst
//! case is one small write per (workload, node) per interval.
//!
//! The object holds the agent's whole accumulated observation, not the change since the last
//! write. Merging it into a profile ([`crate::profile::Profile::merge_observation`]) is
//! idempotent (min/max times, set unions, maxima of counters), so the operator may merge the
//! same object any number of times, in any order with other nodes' objects, and a missed
//! watch event only delays a merge. An agent that restarts reads its own objects back (they
//! carry a node label) and seeds its accumulators from them, so nothing it had published is
//! lost; a new `agentStarted` tells the operator the loss counter restarted.
//!
//! Size is bounded by the same per-category [`Limits`] as profiles; entries past them are
//! counted in `dropped`, which keeps the profile from being promoted as complete.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::behavior::{
    Access, BehaviorSet, EgressRule, Entry, FileRule, Limits, ListenRule, Merged, ProcessRule,
    Rule, Rules, Seen, SyscallRule,
};
use crate::event::{Event, EventKind, Process};
use crate::files::learned_path;
use crate::net::Cidr;
use crate::policy::applet_pattern;
use crate::sketch::{fnv1a64, ReplicaId, WorkloadReplicas};
use crate::time::Timestamp;

/// A last-seen time moving by less than this is not worth a write.
pub const LAST_SEEN_GRANULARITY: Duration = Duration::from_secs(300);

/// Which workload container an observation is about. With the image digest, this is the
/// learning key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadKey {
    /// Namespace.
    pub namespace: String,
    /// Kind of the top-level owner: Deployment, StatefulSet, DaemonSet, Job, CronJob, or Pod
    /// for a pod without owner.
    pub owner_kind: String,
    /// Name of the top-level owner.
    pub owner_name: String,
    /// Container name.
    pub container: String,
}

/// One agent's accumulated observation of one workload container running one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The workload container.
    pub workload: WorkloadKey,
    /// Image digest (`sha256:…`) of the container.
    pub image_digest: String,
    /// The node the agent runs on.
    pub node: String,
    /// When this agent instance started; a new value means its loss counter restarted.
    pub agent_started: Timestamp,
    /// When the content last changed materially.
    pub updated: Timestamp,
    /// What was seen.
    pub behavior: BehaviorSet,
    /// Replicas (pods) of the workload this agent watched.
    pub replicas: WorkloadReplicas,
    /// Of those, replicas whose container started before the agent attached.
    pub late_attach: WorkloadReplicas,
    /// Events this agent lost (ring buffer full, maps full) while any of these replicas ran.
    pub events_lost: u64,
    /// Entries not recorded because a category was at its limit.
    pub dropped: u64,
    /// Programs outside the container that started processes in it and are not a container
    /// runtime herdwatch knows ([`MAX_UNRECOGNISED_RUNTIMES`] at most, sorted): their own
    /// set-up may have been learned as the workload's.
    #[serde(default)]
    pub unrecognised_runtimes: Vec<String>,
}

/// Most unrecognised runtime names an observation or a profile keeps.
pub const MAX_UNRECOGNISED_RUNTIMES: usize = 4;

/// Adds `name` to a sorted, bounded list of names; whether it was new.
pub fn note_name(names: &mut Vec<String>, name: &str) -> bool {
    match names.binary_search_by(|n| n.as_str().cmp(name)) {
        Ok(_) => false,
        Err(_) if names.len() >= MAX_UNRECOGNISED_RUNTIMES => false,
        Err(at) => {
            names.insert(at, name.to_owned());
            true
        }
    }
}

/// The process entry learning records for `p` running as `uid`: its exact executable and
/// uid, and for a multi-call binary the arguments that choose its applet
/// ([`applet_pattern`]), so that a profile that saw `busybox sh` allows `sh` with any
/// arguments but not `busybox nc`. A uid change records the same pattern as the exec of the
/// program that made it: uid changes are judged without arguments, so the entry allows the
/// change whatever the pattern, while an entry without one would allow every applet to run
/// as the new uid.
fn learned_process(p: &Process<'_>, uid: u32) -> ProcessRule {
    ProcessRule {
        exe: p.exe.to_owned(),
        argv: applet_pattern(p.exe, p.file_name, p.argv),
        uid: Some(uid),
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Records `rule` seen at `at` by `replica`, reporting only material changes.
fn observe_rule<R: Rule>(
    rules: &mut Rules<R>,
    rule: R,
    at: Timestamp,
    replica: ReplicaId,
    limit: usize,
) -> Merged {
    let fresh = Entry {
        rule,
        seen: Seen::once(at, replica),
    };
    match rules.get(fresh.rule.key()) {
        Some(existing) => {
            let widens = fresh.rule.minus(&existing.rule).is_some();
            let new_replica = existing.seen.replicas.would_insert(replica);
            let moved = existing
                .seen
                .last_seen
                .is_none_or(|last| at.since(last) >= LAST_SEEN_GRANULARITY);
            if widens || new_replica || moved {
                rules.merge_entry(&fresh, limit)
            } else {
                Merged::Unchanged
            }
        }
        None => rules.merge_entry(&fresh, limit),
    }
}

impl Observation {
    /// An empty observation.
    pub fn new(
        workload: WorkloadKey,
        image_digest: &str,
        node: &str,
        agent_started: Timestamp,
    ) -> Self {
        Self {
            workload,
            image_digest: image_digest.to_owned(),
            node: node.to_owned(),
            agent_started,
            updated: agent_started,
            behavior: BehaviorSet::new(),
            replicas: WorkloadReplicas::new(),
            late_attach: WorkloadReplicas::new(),
            events_lost: 0,
            dropped: 0,
            unrecognised_runtimes: Vec::new(),
        }
    }

    /// Notes that `runtime`, a program herdwatch does not know as a container runtime,
    /// started a process in the container. Returns whether that is new.
    pub fn note_unrecognised_runtime(&mut self, runtime: &str, now: Timestamp) -> bool {
        let changed = note_name(&mut self.unrecognised_runtimes, runtime);
        if changed {
            self.updated = now;
        }
        changed
    }

    /// The `BehaviorObservation` object name: readable owner and node, plus a stable hash of
    /// the whole key, at most 63 characters.
    pub fn object_name(&self) -> String {
        let w = &self.workload;
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            w.namespace, w.owner_kind, w.owner_name, w.container, self.image_digest, self.node
        );
        let hash = fnv1a64(key.as_bytes());
        let readable: String = format!("{}-{}", w.owner_name, self.node)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(46)
            .collect();
        let readable = readable.trim_matches('-');
        if readable.is_empty() {
            format!("obs-{hash:016x}")
        } else {
            format!("{readable}-{hash:016x}")
        }
    }

    /// Notes that the agent watches `replica`, which started before the agent attached when
    /// `late`. Returns whether that is new.
    pub fn attach_replica(&mut self, replica: ReplicaId, late: bool, now: Timestamp) -> bool {
        let mut changed = self.replicas.insert(replica);
        if late {
            changed |= self.late_attach.insert(replica);
        }
        if changed {
            self.updated = now;
        }
        changed
    }

    /// Sets the agent's count of lost events; returns whether it changed.
    pub fn set_events_lost(&mut self, total: u64, now: Timestamp) -> bool {
        if total > self.events_lost {
            self.events_lost = total;
            self.updated = now;
            true
        } else {
            false
        }
    }

    /// Records one event seen in `replica` at `now`. Returns whether the observation changed
    /// materially, i.e. whether it needs publishing.
    pub fn observe(
        &mut self,
        event: &Event<'_>,
        replica: ReplicaId,
        now: Timestamp,
        limits: &Limits,
    ) -> bool {
        let p = &event.process;
        // An executable the agent could not make absolute (a relative exec whose working
        // directory was gone) is not learned: such an entry would allow whatever runs under
        // that name from any directory, and the profile's schema refuses it.
        if matches!(event.kind, EventKind::Exec | EventKind::SetUid { .. })
            && !p.exe.starts_with('/')
        {
            return false;
        }
        let b = &mut self.behavior;
        let merged = match event.kind {
            EventKind::Exec => observe_rule(
                &mut b.processes,
                learned_process(p, p.uid),
                now,
                replica,
                limits.processes,
            ),
            EventKind::SetUid { uid } => observe_rule(
                &mut b.processes,
                learned_process(p, uid),
                now,
                replica,
                limits.processes,
            ),
            EventKind::Syscall { name } => observe_rule(
                &mut b.syscalls,
                SyscallRule {
                    name: name.to_owned(),
                },
                now,
                replica,
                limits.syscalls,
            ),
            EventKind::Connect { ip, port, protocol } => observe_rule(
                &mut b.egress,
                EgressRule {
                    peer: Cidr::host(unmap(ip)),
                    port: Some(port),
                    protocol,
                },
                now,
                replica,
                limits.egress,
            ),
            EventKind::Listen { port, protocol } => observe_rule(
                &mut b.listen,
                ListenRule { port, protocol },
                now,
                replica,
                limits.listen,
            ),
            // Paths that are not learnable (another process's root, a relative path) are
            // left out: judged, never allowed by learning.
            EventKind::File { path, access } => match learned_path(path) {
                Some(pattern) => observe_rule(
                    &mut b.files,
                    FileRule::path(
                        &pattern,
                        if access.is_empty() {
                            Access::READ
                        } else {
                            access
                        },
                    ),
                    now,
                    replica,
                    limits.files,
                ),
                None => Merged::Unchanged,
            },
        };
        let changed = match merged {
            Merged::Added | Merged::Widened | Merged::Refreshed => true,
            Merged::Unchanged => false,
            Merged::Dropped => {
                self.dropped += 1;
                // Counting drops is worth a write only when it first happens.
                self.dropped == 1
            }
        };
        if changed {
            self.updated = now;
        }
        changed
    }

    /// Takes in an observation an earlier instance of this agent published for the same key
    /// (read back at start), so that restarting loses nothing that was published. Entries,
    /// times and replicas are unions; `earlier`'s counts of lost events and dropped entries
    /// are added to this instance's, which started from zero. Returns whether `self` now holds
    /// anything `earlier` did not, i.e. whether it needs publishing.
    pub fn absorb(&mut self, earlier: &Observation, limits: &Limits) -> bool {
        let mut combined = earlier.clone();
        let report = combined.behavior.merge(&self.behavior, limits);
        let mut new = report.changed();
        new |= combined.replicas.merge(&self.replicas);
        new |= combined.late_attach.merge(&self.late_attach);
        for name in &self.unrecognised_runtimes {
            new |= note_name(&mut combined.unrecognised_runtimes, name);
        }
        combined.events_lost = earlier.events_lost.saturating_add(self.events_lost);
        combined.dropped = earlier
            .dropped
            .saturating_add(self.dropped)
            .saturating_add(report.dropped.total());
        new |= combined.events_lost != earlier.events_lost || combined.dropped != earlier.dropped;
        combined.agent_started = self.agent_started;
        combined.updated = if new {
            self.updated.max(earlier.updated)
        } else {
            earlier.updated
        };
        *self = combined;
        new
    }

    /// The first sighting of every entry, all categories together.
    fn first_sightings(&self) -> impl Iterator<Item = Timestamp> + '_ {
        fn of<R: Rule>(r: &Rules<R>) -> impl Iterator<Item = Timestamp> + '_ {
            r.entries().iter().filter_map(|e| e.seen.first_seen)
        }
        let b = &self.behavior;
        of(&b.processes)
            .chain(of(&b.syscalls))
            .chain(of(&b.egress))
            .chain(of(&b.listen))
            .chain(of(&b.files))
    }

    /// The latest first sighting of any entry (when the observation last learned something).
    pub fn newest_entry(&self) -> Option<Timestamp> {
        self.first_sightings().max()
    }

    /// The earliest first sighting of any entry.
    pub fn behavior_first_seen(&self) -> Option<Timestamp> {
        self.first_sightings().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Process;
    use crate::net::Protocol;

    fn key() -> WorkloadKey {
        WorkloadKey {
            namespace: "shop".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            container: "nginx".into(),
        }
    }

    fn obs() -> Observation {
        Observation::new(key(), "sha256:aaaa", "node-1", Timestamp(1000))
    }

    #[test]
    fn only_material_changes_ask_for_a_write() {
        let mut o = obs();
        let argv = vec!["nginx".to_owned()];
        let p = Process {
            exe: "/usr/sbin/nginx",
            file_name: None,
            argv: &argv,
            uid: 101,
            exec_session: false,
            in_image: Some(true),
        };
        let r1 = ReplicaId::from_pod_uid("pod-1");
        let r2 = ReplicaId::from_pod_uid("pod-2");
        let l = Limits::DEFAULT;
        assert!(
            o.observe(&Event::exec(p), r1, Timestamp(1000), &l),
            "new entry"
        );
        assert!(
            !o.observe(&Event::exec(p), r1, Timestamp(1010), &l),
            "repeat within granularity"
        );
        assert!(
            o.observe(&Event::exec(p), r2, Timestamp(1020), &l),
            "new replica"
        );
        assert!(
            !o.observe(&Event::exec(p), r1, Timestamp(1300), &l),
            "280s after the last sighting"
        );
        assert!(
            o.observe(&Event::exec(p), r1, Timestamp(1320), &l),
            "last seen moved enough"
        );
        let e = &o.behavior.processes.entries()[0];
        assert_eq!(
            (e.seen.first_seen, e.seen.last_seen, e.seen.seen_replicas()),
            (Some(Timestamp(1000)), Some(Timestamp(1320)), 2)
        );

        let read = Event {
            process: p,
            kind: EventKind::File {
                path: "/etc/nginx/nginx.conf",
                access: Access::READ,
            },
        };
        let write = Event {
            process: p,
            kind: EventKind::File {
                path: "/etc/nginx/nginx.conf",
                access: Access::WRITE,
            },
        };
        assert!(o.observe(&read, r1, Timestamp(1400), &l));
        assert!(!o.observe(&read, r1, Timestamp(1401), &l));
        assert!(
            o.observe(&write, r1, Timestamp(1402), &l),
            "wider access is material"
        );
        assert_eq!(o.newest_entry(), Some(Timestamp(1400)));
    }

    fn learned(o: &Observation) -> Vec<String> {
        o.behavior
            .processes
            .entries()
            .iter()
            .map(|e| e.rule.to_string())
            .collect()
    }

    #[test]
    fn multi_call_binaries_are_learned_per_applet() {
        let mut o = obs();
        let l = Limits::DEFAULT;
        for (exe, argv, uid) in [
            ("/bin/busybox", "sh -c x", 0),
            ("/bin/busybox", "sh -c y", 0),
            ("/bin/busybox", "busybox wget http://x/", 0),
            ("/proc/self/exe", "wget -q http://x/", 0),
            ("/bin/busybox", "-sh", 0),
            ("/usr/sbin/httpd", "httpd -f -p 8080", 33),
            ("/bin/sh", "sh -c x", 0),
        ] {
            let argv: Vec<String> = argv.split(' ').map(str::to_owned).collect();
            let p = Process {
                exe,
                file_name: None,
                argv: &argv,
                uid,
                exec_session: false,
                in_image: Some(true),
            };
            o.observe(&Event::exec(p), ReplicaId(1), Timestamp(10), &l);
        }
        assert_eq!(
            learned(&o),
            [
                "/bin/busybox [-sh **] as uid 0",
                "/bin/busybox [busybox wget **] as uid 0",
                "/bin/busybox [sh **] as uid 0",
                // Not a multi-call name: learned as before, whatever it links to.
                "/bin/sh as uid 0",
                "/proc/self/exe [wget **] as uid 0",
                "/usr/sbin/httpd as uid 33",
            ]
        );
    }

    #[test]
    fn a_link_to_a_multi_call_binary_is_learned_per_applet() {
        let mut o = obs();
        let l = Limits::DEFAULT;
        for (exe, file_name, argv) in [
            // `/bin/sh` → busybox, seen through the exec event's real file name.
            ("/bin/sh", Some("busybox"), "sh -c x"),
            ("/usr/sbin/httpd", Some("busybox"), "httpd -f -p 8080"),
            ("/usr/bin/nc", Some("toybox"), "nc -l"),
            // A link to something else, or a script's interpreter: as before.
            ("/bin/bash-link", Some("bash"), "sh -c x"),
            ("/app/start", Some("python3.12"), "/app/start --x"),
        ] {
            let argv: Vec<String> = argv.split(' ').map(str::to_owned).collect();
            let p = Process {
                exe,
                file_name,
                argv: &argv,
                uid: 0,
                exec_session: false,
                in_image: Some(true),
            };
            o.observe(&Event::exec(p), ReplicaId(1), Timestamp(10), &l);
        }
        assert_eq!(
            learned(&o),
            [
                "/app/start as uid 0",
                "/bin/bash-link as uid 0",
                "/bin/sh [sh **] as uid 0",
                "/usr/bin/nc [nc **] as uid 0",
                "/usr/sbin/httpd [httpd **] as uid 0",
            ]
        );
    }

    #[test]
    fn a_uid_change_is_learned_with_the_applet_of_the_program_that_made_it() {
        let mut o = obs();
        let l = Limits::DEFAULT;
        let su = vec!["su".to_owned(), "app".to_owned()];
        let nginx = vec!["nginx".to_owned()];
        for (exe, argv) in [("/bin/busybox", &su), ("/usr/sbin/nginx", &nginx)] {
            let ev = Event {
                process: Process::root_in_image(exe, argv),
                kind: EventKind::SetUid { uid: 1000 },
            };
            assert!(o.observe(&ev, ReplicaId(1), Timestamp(10), &l));
        }
        assert_eq!(
            learned(&o),
            [
                "/bin/busybox [su **] as uid 1000",
                "/usr/sbin/nginx as uid 1000"
            ]
        );
    }

    #[test]
    fn applet_entries_count_against_the_process_limit() {
        let mut o = obs();
        let limits = Limits {
            processes: 2,
            ..Limits::DEFAULT
        };
        for applet in ["sh", "ls", "wget", "sh"] {
            let argv = vec![applet.to_owned()];
            let p = Process::root_in_image("/bin/busybox", &argv);
            o.observe(&Event::exec(p), ReplicaId(1), Timestamp(10), &limits);
        }
        assert_eq!(
            learned(&o),
            [
                "/bin/busybox [ls **] as uid 0",
                "/bin/busybox [sh **] as uid 0"
            ]
        );
        assert_eq!(o.dropped, 1, "wget did not fit; sh again is known");
    }

    #[test]
    fn bounded_by_limits_and_counts_drops() {
        let mut o = obs();
        let argv = vec![];
        let p = Process {
            exe: "/app",
            file_name: None,
            argv: &argv,
            uid: 1,
            exec_session: false,
            in_image: None,
        };
        let limits = Limits {
            listen: 2,
            ..Limits::DEFAULT
        };
        let r = ReplicaId(1);
        for port in 1..=5 {
            o.observe(
                &Event {
                    process: p,
                    kind: EventKind::Listen {
                        port,
                        protocol: Protocol::Tcp,
                    },
                },
                r,
                Timestamp(1),
                &limits,
            );
        }
        assert_eq!(o.behavior.listen.len(), 2);
        assert_eq!(o.dropped, 3);
    }

    #[test]
    fn learned_files_are_what_was_opened_and_never_more() {
        let argv = vec![];
        let p = Process::root_in_image("/bin/httpd", &argv);
        let l = Limits::DEFAULT;
        let mut o = obs();
        for path in [
            "/",
            "/etc/passwd",
            "/proc/1234/status",
            "/proc/1/root/etc/shadow",
            "/www/../www/index.html",
        ] {
            let open = Event {
                process: p,
                kind: EventKind::File {
                    path,
                    access: Access::READ,
                },
            };
            o.observe(&open, ReplicaId(1), Timestamp(1000), &l);
        }
        let paths: Vec<&str> = o
            .behavior
            .files
            .entries()
            .iter()
            .map(|e| e.rule.path.as_str())
            .collect();
        assert_eq!(
            paths,
            ["/", "/etc/passwd", "/proc/*/status", "/www/index.html"],
            "the directory as itself, generated names folded, another process's root not learned"
        );
        let idx = crate::matching::ProfileIndex::build(&o.behavior);
        assert!(idx.allows_file("/proc/77/status", Access::READ));
        for denied in [
            "/etc/shadow",
            "/proc/77/environ",
            "/etc/hostname",
            "/www/secret",
        ] {
            assert!(!idx.allows_file(denied, Access::READ), "{denied}");
        }
    }

    #[test]
    fn relative_executables_are_not_learned() {
        let argv = vec![];
        let mut o = obs();
        let relative = Event::exec(Process::root_in_image("lookup", &argv));
        assert!(!o.observe(&relative, ReplicaId(1), Timestamp(1000), &Limits::DEFAULT));
        assert!(o.behavior.processes.is_empty());
    }

    #[test]
    fn unrecognised_runtimes_are_a_bounded_sorted_set_that_survives_a_restart() {
        let mut o = Observation::new(key(), "sha256:aaaa", "node-a", Timestamp(0));
        assert!(o.note_unrecognised_runtime("zrt", Timestamp(1)));
        assert!(o.note_unrecognised_runtime("art", Timestamp(2)));
        assert!(
            !o.note_unrecognised_runtime("art", Timestamp(3)),
            "known already"
        );
        assert_eq!(o.updated, Timestamp(2));
        for i in 0..10 {
            o.note_unrecognised_runtime(&format!("rt{i}"), Timestamp(4));
        }
        assert_eq!(o.unrecognised_runtimes.len(), MAX_UNRECOGNISED_RUNTIMES);
        assert_eq!(&o.unrecognised_runtimes[..2], ["art", "rt0"]);

        // An agent restarted keeps what it published before, and publishes a new name.
        let mut earlier = Observation::new(key(), "sha256:aaaa", "node-a", Timestamp(0));
        earlier.note_unrecognised_runtime("art", Timestamp(1));
        let mut fresh = Observation::new(key(), "sha256:aaaa", "node-a", Timestamp(9));
        assert!(
            !fresh.clone().absorb(&earlier, &Limits::DEFAULT),
            "nothing new"
        );
        fresh.note_unrecognised_runtime("new", Timestamp(9));
        assert!(
            fresh.absorb(&earlier, &Limits::DEFAULT),
            "a new name needs publishing"
        );
        assert_eq!(fresh.unrecognised_runtimes, ["art", "new"]);
    }

    #[test]
    fn replicas_late_attach_and_losses() {
        let mut o = obs();
        assert!(o.attach_replica(ReplicaId(1), false, Timestamp(5)));
        assert!(!o.attach_replica(ReplicaId(1), false, Timestamp(6)));
        assert!(o.attach_replica(ReplicaId(2), true, Timestamp(7)));
        assert_eq!((o.replicas.count(), o.late_attach.count()), (2, 1));
        assert!(o.set_events_lost(4, Timestamp(8)));
        assert!(!o.set_events_lost(4, Timestamp(9)));
    }

    #[test]
    fn absorbing_what_an_earlier_agent_published() {
        let argv = vec![];
        let p = |exe| Process {
            exe,
            file_name: None,
            argv: &argv,
            uid: 1,
            exec_session: false,
            in_image: None,
        };
        let l = Limits::DEFAULT;
        let mut earlier = obs();
        earlier.observe(&Event::exec(p("/app")), ReplicaId(1), Timestamp(100), &l);
        earlier.set_events_lost(5, Timestamp(100));
        earlier.attach_replica(ReplicaId(1), true, Timestamp(100));

        // Nothing new since the restart: nothing to publish, and the earlier times stay.
        let mut restarted = Observation::new(key(), "sha256:aaaa", "node-1", Timestamp(2000));
        assert!(!restarted.absorb(&earlier, &l));
        assert_eq!(restarted.behavior, earlier.behavior);
        assert_eq!(restarted.updated, earlier.updated);
        assert_eq!(restarted.agent_started, Timestamp(2000));
        assert_eq!(restarted.events_lost, 5);
        assert_eq!(restarted.late_attach.count(), 1);

        // Seen before the earlier one was read back: kept, and losses add up.
        let mut busy = Observation::new(key(), "sha256:aaaa", "node-1", Timestamp(2000));
        busy.observe(
            &Event::exec(p("/bin/sh")),
            ReplicaId(2),
            Timestamp(2001),
            &l,
        );
        busy.set_events_lost(2, Timestamp(2001));
        assert!(busy.absorb(&earlier, &l));
        assert_eq!(busy.behavior.processes.len(), 2);
        assert_eq!(busy.events_lost, 7);
        assert_eq!(
            busy.replicas.count(),
            1,
            "replica 2 was only seen in an event"
        );
        assert_eq!(busy.updated, Timestamp(2001));
    }

    #[test]
    fn object_names_are_stable_and_valid() {
        let o = obs();
        let n = o.object_name();
        assert!(n.starts_with("web-node-1-"), "{n}");
        assert!(n.len() <= 63);
        let mut other = obs();
        other.image_digest = "sha256:bbbb".into();
        assert_ne!(other.object_name(), n, "digest is part of the key");
    }

    #[test]
    fn round_trips_through_serde() {
        let mut o = obs();
        let argv = vec![];
        let p = Process {
            exe: "/app",
            file_name: None,
            argv: &argv,
            uid: 1,
            exec_session: false,
            in_image: None,
        };
        o.observe(
            &Event {
                process: p,
                kind: EventKind::Connect {
                    ip: "::ffff:10.0.0.1".parse().unwrap(),
                    port: 5432,
                    protocol: Protocol::Tcp,
                },
            },
            ReplicaId(3),
            Timestamp(9),
            &Limits::DEFAULT,
        );
        assert_eq!(
            o.behavior.egress.entries()[0].rule.peer.to_string(),
            "10.0.0.1"
        );
        let back: Observation = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
