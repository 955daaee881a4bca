//! A workload's profile: its allowed behaviour, revision history, image sections and learning
//! state, and how observations are merged into it.
//!
//! # Image sections
//!
//! Each image digest the workload ran gets an [`ImageSection`]. The first digest is the
//! baseline. A later digest starts a section *seeded from* the previous one: the allowed set
//! carries over (a new version rarely starts from nothing), and whatever the new digest adds
//! is listed in its section as a diff, so "what does v2 do that v1 did not" is answered
//! without keeping a full set per digest. One allowed set serves all digests, which keeps the
//! object small; pods still on the old digest during a rollout are judged against the union.
//!
//! # Revisions
//!
//! Every merge that adds or widens a rule is a revision; revisions within
//! [`REVISION_COALESCE`] of each other for the same digest are folded into one, so learning
//! does not produce hundreds. At most [`MAX_REVISIONS`] are kept, each listing at most
//! [`MAX_LISTED_PER_REVISION`] rules. Per-entry `firstSeen` survives all trimming, so "did it
//! always run as root, or is that new?" stays answerable.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::behavior::{
    BehaviorDiff, BehaviorSet, Category, Changes, Limits, MergeReport, Rule, Rules,
};
use crate::condition::{self as cond, Condition, Status};
use crate::learning::Phase;
use crate::observation::Observation;
use crate::time::{max_time, min_time, Timestamp};

/// Revisions kept.
pub const MAX_REVISIONS: usize = 32;
/// Rules listed per revision (more are counted).
pub const MAX_LISTED_PER_REVISION: usize = 32;
/// Image sections kept.
pub const MAX_IMAGES: usize = 8;
/// Rules listed per image section (more are counted).
pub const MAX_LISTED_PER_IMAGE: usize = 64;
/// How late an agent's report of what it saw may reach the operator by default: a few of
/// the agent's publish intervals (10 s).
pub const DEFAULT_REPORT_DELAY: Duration = Duration::from_secs(30);
/// Additions this close together, for the same digest, share a revision.
pub const REVISION_COALESCE: Duration = Duration::from_secs(600);
/// Estimated object size above which the profile reports `TooLarge` and trims history. The
/// API server refuses objects over 1.5 MiB; this leaves room for metadata and managed fields.
pub const SIZE_BUDGET: usize = 1024 * 1024;

/// One revision of the allowed set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Revision number, increasing.
    pub revision: u64,
    /// When it was made.
    pub time: Timestamp,
    /// The image digest whose observation made it (none for a hand edit).
    pub image_digest: Option<String>,
    /// Rules added or widened.
    pub added: Changes,
    /// Rules removed or narrowed (hand edits only: learning never removes).
    pub removed: Changes,
}

/// What one image digest added over the one before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSection {
    /// Image digest.
    pub digest: String,
    /// First observation of this digest.
    pub first_seen: Timestamp,
    /// Latest observation of this digest.
    pub last_seen: Timestamp,
    /// The digest whose behaviour seeded this one; `None` for the baseline.
    pub seeded_from: Option<String>,
    /// Profile revision when this digest first appeared.
    pub base_revision: u64,
    /// Rules this digest added over its seed.
    pub added: Changes,
}

/// A workload's profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Allowed behaviour (learned and hand-written).
    pub behavior: BehaviorSet,
    /// Entry limits.
    pub limits: Limits,
    /// Current revision number.
    pub revision: u64,
    /// Recent revisions, oldest first.
    pub history: Vec<Revision>,
    /// Image sections, oldest first.
    pub images: Vec<ImageSection>,
    /// Learning state.
    pub learning: crate::learning::LearningState,
}

/// What merging an observation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// What the behaviour merge did.
    pub report: MergeReport,
    /// Whether the observation's digest started a new image section.
    pub new_image: bool,
    /// The revision the additions went into, if any.
    pub revision: Option<u64>,
}

/// When the observation first saw each added rule; the latest of them.
fn latest_first_seen(added: &Changes, obs: &BehaviorSet) -> Option<Timestamp> {
    fn scan<R: Rule>(rules: &[R], from: &Rules<R>) -> Option<Timestamp> {
        rules
            .iter()
            .filter_map(|r| from.get(r.key()).and_then(|e| e.seen.first_seen))
            .max()
    }
    [
        scan(&added.processes, &obs.processes),
        scan(&added.syscalls, &obs.syscalls),
        scan(&added.egress, &obs.egress),
        scan(&added.listen, &obs.listen),
        scan(&added.files, &obs.files),
    ]
    .into_iter()
    .fold(None, max_time)
}

impl Profile {
    /// An empty profile that starts learning at `now`.
    pub fn new(now: Timestamp) -> Self {
        Self {
            learning: crate::learning::LearningState::new(now),
            ..Self::default()
        }
    }

    /// [`Profile::merge_observation_within`] with [`DEFAULT_REPORT_DELAY`].
    pub fn merge_observation(&mut self, obs: &Observation, now: Timestamp) -> MergeOutcome {
        self.merge_observation_within(obs, now, DEFAULT_REPORT_DELAY)
    }

    /// Merges one agent's observation. While Learning, new rules are added (within the
    /// limits); once promoted, only the times and replicas of known rules are refreshed,
    /// since anything new is a violation, not something to learn. Idempotent.
    ///
    /// Agents report what they saw up to `report_delay` late, so for that long after the
    /// promotion, entries first seen before it are still learned: they are the learning
    /// window's behaviour that was on its way. Without this, a pod that did something in
    /// the last seconds of learning is never judged for it (its agent saw it while
    /// learning) while every later pod is flagged for it.
    pub fn merge_observation_within(
        &mut self,
        obs: &Observation,
        now: Timestamp,
        report_delay: Duration,
    ) -> MergeOutcome {
        let learning = self.learning.phase == Phase::Learning;
        let late_for = self
            .learning
            .promoted_at
            .filter(|promoted| !learning && now < *promoted + report_delay);
        let report = match late_for {
            Some(promoted) => self.merge_late(obs, promoted),
            None => self.merge_in_phase(obs, learning, now),
        };
        let new_image = self.note_image(obs, &report.added);
        let revision = (!report.added.is_empty()).then(|| {
            self.add_revision(
                Some(&obs.image_digest),
                report.added.clone(),
                Changes::default(),
                now,
            )
        });
        self.trim_to_budget();
        MergeOutcome {
            report,
            new_image,
            revision,
        }
    }

    /// While Learning: adds within the limits and keeps the learning state. Once promoted:
    /// refreshes what is known and adds nothing.
    fn merge_in_phase(&mut self, obs: &Observation, learning: bool, now: Timestamp) -> MergeReport {
        let limits = if learning { self.limits } else { Limits::NONE };
        let mut report = self.behavior.merge(&obs.behavior, &limits);
        if !learning {
            report.dropped = Default::default();
        }

        if learning {
            self.learning.replicas.merge(&obs.replicas);
            self.learning.late_attach.merge(&obs.late_attach);
            for name in &obs.unrecognised_runtimes {
                crate::observation::note_name(&mut self.learning.unrecognised_runtimes, name);
            }
            self.learning.note_loss(&obs.node, obs.events_lost);
            // Maxima rather than sums, so that merging the same observation again does not
            // count its drops twice.
            self.learning.entries_dropped = self
                .learning
                .entries_dropped
                .max(report.dropped.total())
                .max(obs.dropped);
            if !report.added.is_empty() {
                let at = latest_first_seen(&report.added, &obs.behavior).unwrap_or(now);
                self.learning.last_change = max_time(self.learning.last_change, Some(at));
            }
        }
        report
    }

    /// Learns the entries of `obs` first seen by `promoted`, then refreshes the rest.
    fn merge_late(&mut self, obs: &Observation, promoted: Timestamp) -> MergeReport {
        let early = obs.behavior.seen_by(promoted);
        let mut report = self.behavior.merge(&early, &self.limits);
        report.dropped = Default::default();
        let rest = self.behavior.merge(&obs.behavior, &Limits::NONE);
        report.refreshed += rest.refreshed;
        report
    }

    fn note_image(&mut self, obs: &Observation, added: &Changes) -> bool {
        let first = obs.behavior_first_seen().unwrap_or(obs.updated);
        if let Some(s) = self
            .images
            .iter_mut()
            .find(|s| s.digest == obs.image_digest)
        {
            s.first_seen = min_time(Some(s.first_seen), Some(first)).unwrap_or(first);
            s.last_seen = s.last_seen.max(obs.updated);
            if s.seeded_from.is_some() {
                s.added.extend_bounded(added.clone(), MAX_LISTED_PER_IMAGE);
            }
            return false;
        }
        let seed = self
            .images
            .iter()
            .max_by_key(|s| s.last_seen)
            .map(|s| s.digest.clone());
        let mut section = ImageSection {
            digest: obs.image_digest.clone(),
            first_seen: first,
            last_seen: obs.updated,
            base_revision: self.revision,
            added: Changes::default(),
            seeded_from: seed,
        };
        if section.seeded_from.is_some() {
            section
                .added
                .extend_bounded(added.clone(), MAX_LISTED_PER_IMAGE);
        }
        self.images.push(section);
        if self.images.len() > MAX_IMAGES {
            if let Some(oldest) = self
                .images
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(i, _)| i)
            {
                self.images.remove(oldest);
            }
        }
        true
    }

    fn add_revision(
        &mut self,
        digest: Option<&String>,
        added: Changes,
        removed: Changes,
        now: Timestamp,
    ) -> u64 {
        if let Some(last) = self.history.last_mut() {
            let same_digest = last.image_digest.as_ref() == digest;
            if same_digest
                && digest.is_some()
                && now.since(last.time) < REVISION_COALESCE
                && last.removed.is_empty()
            {
                last.added.extend_bounded(added, MAX_LISTED_PER_REVISION);
                return last.revision;
            }
        }
        self.revision += 1;
        let mut rev = Revision {
            revision: self.revision,
            time: now,
            image_digest: digest.cloned(),
            added: Changes::default(),
            removed: Changes::default(),
        };
        rev.added.extend_bounded(added, MAX_LISTED_PER_REVISION);
        rev.removed.extend_bounded(removed, MAX_LISTED_PER_REVISION);
        self.history.push(rev);
        if self.history.len() > MAX_REVISIONS {
            let excess = self.history.len() - MAX_REVISIONS;
            self.history.drain(..excess);
        }
        self.revision
    }

    /// Replaces the allowed set with a hand-edited one, recording what changed as a revision.
    /// Returns the diff (empty when nothing changed, and then no revision is made).
    pub fn replace_behavior(&mut self, edited: BehaviorSet, now: Timestamp) -> BehaviorDiff {
        let diff = self.behavior.diff(&edited);
        if !diff.is_empty() {
            self.add_revision(None, diff.added.clone(), diff.removed.clone(), now);
            self.behavior = edited;
        }
        diff
    }

    /// Rough size of the profile serialised as JSON in an object.
    pub fn estimated_size(&self) -> usize {
        self.behavior.estimated_size()
            + self
                .history
                .iter()
                .map(|r| {
                    crate::behavior::changes_estimated_size(&r.added)
                        + crate::behavior::changes_estimated_size(&r.removed)
                        + 100
                })
                .sum::<usize>()
            + self
                .images
                .iter()
                .map(|s| crate::behavior::changes_estimated_size(&s.added) + 250)
                .sum::<usize>()
            + 1024
    }

    /// Trims history (oldest first), then image section listings, until the estimate is
    /// under [`SIZE_BUDGET`]. Returns whether anything was trimmed.
    pub fn trim_to_budget(&mut self) -> bool {
        let mut trimmed = false;
        while self.estimated_size() > SIZE_BUDGET && self.history.len() > 1 {
            self.history.remove(0);
            trimmed = true;
        }
        if self.estimated_size() > SIZE_BUDGET {
            for s in &mut self.images {
                let listed = s.added.len() as u64;
                s.added = Changes {
                    truncated: s.added.truncated + listed,
                    ..Changes::default()
                };
                trimmed = true;
            }
        }
        trimmed
    }

    /// The `Bounded` condition: False with `TooManyEntries` when a category is at its limit,
    /// or `TooLarge` when the object nears the size budget.
    pub fn bounds_condition(&self) -> Condition {
        let full: Vec<String> = Category::ALL
            .into_iter()
            .filter(|c| self.behavior.count(*c) >= self.limits.of(*c))
            .map(|c| format!("{c} {}/{}", self.behavior.count(c), self.limits.of(c)))
            .collect();
        if !full.is_empty() {
            return Condition::new(
                cond::BOUNDED,
                Status::False,
                cond::REASON_TOO_MANY_ENTRIES,
                format!("at the entry limit: {}; new behaviour there is not learned (raise spec.limits)", full.join(", ")),
            );
        }
        let size = self.estimated_size();
        if size > SIZE_BUDGET * 3 / 4 {
            return Condition::new(
                cond::BOUNDED,
                Status::False,
                cond::REASON_TOO_LARGE,
                format!(
                    "estimated size {} kB nears the {} kB budget; history is trimmed to fit",
                    size / 1024,
                    SIZE_BUDGET / 1024
                ),
            );
        }
        Condition::new(
            cond::BOUNDED,
            Status::True,
            cond::REASON_WITHIN_LIMITS,
            format!("{} entries, about {} kB", self.behavior.len(), size / 1024),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::{Access, ProcessRule};
    use crate::event::{Event, EventKind, Process};
    use crate::learning::{evaluate, LearningSpec, Mode};
    use crate::net::Protocol;
    use crate::observation::WorkloadKey;
    use crate::sketch::ReplicaId;

    fn key() -> WorkloadKey {
        WorkloadKey {
            namespace: "shop".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            container: "app".into(),
        }
    }

    /// An observation by `node` of `pods`, each running `exes` at `at`.
    fn observed(node: &str, digest: &str, pods: &[&str], exes: &[&str], at: i64) -> Observation {
        let mut o = Observation::new(key(), digest, node, Timestamp(0));
        let argv = vec![];
        for pod in pods {
            let r = ReplicaId::from_pod_uid(pod);
            o.attach_replica(r, false, Timestamp(at));
            for exe in exes {
                let p = Process {
                    exe,
                    file_name: None,
                    argv: &argv,
                    uid: 1000,
                    exec_session: false,
                    in_image: Some(true),
                };
                o.observe(&Event::exec(p), r, Timestamp(at), &Limits::DEFAULT);
                o.observe(
                    &Event {
                        process: p,
                        kind: EventKind::Syscall { name: "read" },
                    },
                    r,
                    Timestamp(at),
                    &Limits::DEFAULT,
                );
            }
        }
        o
    }

    #[test]
    fn merges_nodes_into_one_profile_idempotently() {
        let mut p = Profile::new(Timestamp(0));
        let a = observed("node-a", "sha256:v1", &["p1", "p2"], &["/app/server"], 100);
        let b = observed(
            "node-b",
            "sha256:v1",
            &["p3"],
            &["/app/server", "/app/worker"],
            200,
        );
        let out = p.merge_observation(&a, Timestamp(150));
        assert_eq!(out.report.added.processes.len(), 1);
        assert_eq!(out.revision, Some(1));
        assert!(out.new_image);
        let out = p.merge_observation(&b, Timestamp(250));
        assert_eq!(
            out.report.added.processes,
            vec![ProcessRule {
                exe: "/app/worker".into(),
                argv: None,
                uid: Some(1000)
            }]
        );
        assert_eq!(out.revision, Some(1), "coalesced into the same revision");
        let server = &p.behavior.processes.entries()[0];
        assert_eq!(server.seen.seen_replicas(), 3);
        assert_eq!(
            (server.seen.first_seen, server.seen.last_seen),
            (Some(Timestamp(100)), Some(Timestamp(200)))
        );
        assert_eq!(p.learning.replicas.count(), 3);
        assert_eq!(p.learning.last_change, Some(Timestamp(200)));

        let snapshot = p.clone();
        let again = p.merge_observation(&b, Timestamp(9999));
        assert!(!again.report.changed());
        assert_eq!(again.revision, None);
        assert_eq!(
            p, snapshot,
            "merging the same observation again changes nothing"
        );
    }

    #[test]
    fn new_digest_starts_a_seeded_section_with_a_diff() {
        let mut p = Profile::new(Timestamp(0));
        p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/app/server"], 100),
            Timestamp(100),
        );
        let out = p.merge_observation(
            &observed(
                "n",
                "sha256:v2",
                &["p9"],
                &["/app/server", "/usr/bin/curl"],
                5000,
            ),
            Timestamp(5000),
        );
        assert!(out.new_image);
        assert_eq!(p.images.len(), 2);
        let v2 = &p.images[1];
        assert_eq!(v2.seeded_from.as_deref(), Some("sha256:v1"));
        assert_eq!(v2.base_revision, 1);
        assert_eq!(
            v2.added.processes,
            vec![ProcessRule {
                exe: "/usr/bin/curl".into(),
                argv: None,
                uid: Some(1000)
            }]
        );
        assert!(
            v2.added.syscalls.is_empty(),
            "read was already allowed by the seed"
        );
        assert!(p.images[0].added.is_empty(), "the baseline lists nothing");
        assert_eq!(p.revision, 2, "another digest is another revision");
        assert_eq!(p.history[1].image_digest.as_deref(), Some("sha256:v2"));
    }

    #[test]
    fn promoted_profiles_refresh_but_do_not_learn() {
        let mut p = Profile::new(Timestamp(0));
        p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/app/server"], 100),
            Timestamp(100),
        );
        p.learning.phase = Phase::Enforcing;
        let out = p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/app/server", "/bin/sh"], 900),
            Timestamp(900),
        );
        assert!(out.report.added.is_empty());
        assert_eq!(
            p.behavior.processes.len(),
            1,
            "a shell seen while enforcing is not learned"
        );
        assert_eq!(
            p.behavior.processes.entries()[0].seen.last_seen,
            Some(Timestamp(900))
        );
        assert_eq!(p.learning.entries_dropped, 0);
    }

    #[test]
    fn what_learning_saw_is_learned_if_it_arrives_just_after_the_promotion() {
        let mut p = Profile::new(Timestamp(0));
        p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/app/server"], 100),
            Timestamp(100),
        );
        p.learning.phase = Phase::Enforcing;
        p.learning.promoted_at = Some(Timestamp(1000));
        let delay = Duration::from_secs(30);

        // Seen at 995 by a pod still learning, reported at 1010: learned.
        let on_its_way = observed("n", "sha256:v1", &["p1"], &["/app/server", "/app/cgi"], 995);
        let out = p.merge_observation_within(&on_its_way, Timestamp(1010), delay);
        assert_eq!(out.report.added.processes.len(), 1, "{out:?}");
        assert!(
            p.behavior
                .processes
                .entries()
                .iter()
                .any(|e| e.rule.exe == "/app/cgi"),
            "the CGI is learned"
        );
        assert!(out.revision.is_some(), "the addition is a revision");

        // Seen after the promotion: a violation, not something to learn, however soon.
        let after = observed("n", "sha256:v1", &["p1"], &["/bin/sh"], 1001);
        let out = p.merge_observation_within(&after, Timestamp(1005), delay);
        assert!(out.report.added.is_empty(), "{out:?}");

        // Seen before the promotion but reported after the delay: too late.
        let stale = observed("n", "sha256:v1", &["p1"], &["/app/old"], 990);
        let out = p.merge_observation_within(&stale, Timestamp(1031), delay);
        assert!(out.report.added.is_empty(), "{out:?}");
        assert_eq!(p.behavior.processes.len(), 2);
    }

    #[test]
    fn losses_and_late_attach_flow_into_learning() {
        let mut p = Profile::new(Timestamp(0));
        let mut o = observed("node-x", "sha256:v1", &["p1", "p2"], &["/app"], 10);
        o.set_events_lost(12, Timestamp(11));
        o.attach_replica(ReplicaId::from_pod_uid("p3"), true, Timestamp(12));
        p.merge_observation(&o, Timestamp(20));
        p.merge_observation(&o, Timestamp(30));
        assert_eq!(p.learning.events_lost, 12);
        assert_eq!(p.learning.lossy_nodes, vec!["node-x".to_owned()]);
        assert_eq!(p.learning.late_attach.count(), 1);
        let spec = LearningSpec {
            min_duration: Duration::ZERO,
            stable_for: Duration::ZERO,
            min_replicas: 1,
            auto_promote: true,
        };
        let e = evaluate(Mode::Enforce, &spec, &p.learning, Timestamp(1_000_000));
        assert_eq!(e.phase, Phase::Learning);
        assert_eq!(e.incomplete[0].reason(), cond::REASON_EVENTS_LOST);
    }

    #[test]
    fn limits_set_the_bounded_condition_and_block_completion() {
        let mut p = Profile::new(Timestamp(0));
        p.limits = Limits {
            processes: 2,
            ..Limits::DEFAULT
        };
        let out = p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/a", "/b", "/c", "/d"], 5),
            Timestamp(5),
        );
        assert_eq!(out.report.dropped.processes, 2);
        assert_eq!(p.behavior.processes.len(), 2);
        assert_eq!(p.learning.entries_dropped, 2);
        let c = p.bounds_condition();
        assert_eq!(
            (c.status, c.reason),
            (Status::False, cond::REASON_TOO_MANY_ENTRIES)
        );
        assert!(c.message.contains("processes 2/2"), "{}", c.message);
        p.limits = Limits::DEFAULT;
        assert_eq!(p.bounds_condition().status, Status::True);
    }

    #[test]
    fn applet_entries_sit_beside_an_entry_of_the_same_executable_without_arguments() {
        let mut p = Profile::new(Timestamp(0));
        // Learned before applets were, or written by hand: any arguments.
        let any_arguments = ProcessRule {
            exe: "/bin/busybox".into(),
            argv: None,
            uid: Some(1000),
        };
        p.behavior.processes.merge_entry(
            &crate::behavior::Entry {
                rule: any_arguments.clone(),
                seen: crate::behavior::Seen::once(Timestamp(1), ReplicaId(9)),
            },
            usize::MAX,
        );
        let mut o = Observation::new(key(), "sha256:v1", "n", Timestamp(0));
        for applet in ["sh", "wget"] {
            let argv = vec![applet.to_owned(), "-x".to_owned()];
            let proc = Process {
                exe: "/bin/busybox",
                file_name: None,
                argv: &argv,
                uid: 1000,
                exec_session: false,
                in_image: Some(true),
            };
            o.observe(
                &Event::exec(proc),
                ReplicaId(1),
                Timestamp(5),
                &Limits::DEFAULT,
            );
        }
        let out = p.merge_observation(&o, Timestamp(6));
        let added: Vec<String> = out
            .report
            .added
            .processes
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            added,
            [
                "/bin/busybox [sh **] as uid 1000",
                "/bin/busybox [wget **] as uid 1000"
            ]
        );
        assert_eq!(p.behavior.processes.len(), 3);
        assert!(
            p.behavior.processes.get(&any_arguments).is_some(),
            "learning never removes an entry: the one without arguments still allows every applet"
        );
        assert!(!p.merge_observation(&o, Timestamp(7)).report.changed());

        // And they count against the limit like any entry.
        let mut small = Profile::new(Timestamp(0));
        small.limits = Limits {
            processes: 1,
            ..Limits::DEFAULT
        };
        let out = small.merge_observation(&o, Timestamp(6));
        assert_eq!(
            (small.behavior.processes.len(), out.report.dropped.processes),
            (1, 1)
        );
    }

    #[test]
    fn hand_edits_are_revisions_with_removals() {
        let mut p = Profile::new(Timestamp(0));
        p.merge_observation(
            &observed("n", "sha256:v1", &["p1"], &["/app", "/bin/sh"], 5),
            Timestamp(5),
        );
        let mut edited = p.behavior.clone();
        edited.processes.remove(&ProcessRule {
            exe: "/bin/sh".into(),
            argv: None,
            uid: Some(1000),
        });
        edited.files.merge_entry(
            &crate::behavior::Entry::manual(crate::behavior::FileRule::path("/data", Access::READ)),
            usize::MAX,
        );
        let diff = p.replace_behavior(edited.clone(), Timestamp(50));
        assert_eq!(diff.removed.processes.len(), 1);
        assert_eq!(diff.added.files.len(), 1);
        let last = p.history.last().unwrap();
        assert_eq!((last.revision, last.image_digest.as_ref()), (2, None));
        assert!(p.replace_behavior(edited, Timestamp(60)).is_empty());
        assert_eq!(p.revision, 2);
    }

    #[test]
    fn history_and_images_stay_bounded() {
        let mut p = Profile::new(Timestamp(0));
        for i in 0..100i64 {
            let exe = format!("/bin/e{i}");
            let digest = format!("sha256:{i:04}");
            p.merge_observation(
                &observed("n", &digest, &["p"], &[exe.as_str()], i * 1000),
                Timestamp(i * 1000),
            );
        }
        assert_eq!(p.history.len(), MAX_REVISIONS);
        assert_eq!(p.history.last().unwrap().revision, 100);
        assert_eq!(p.images.len(), MAX_IMAGES);
        assert_eq!(p.images.last().unwrap().digest, "sha256:0099");
    }

    #[test]
    fn size_estimate_errs_large_and_full_profiles_fit() {
        let mut p = Profile::new(Timestamp(0));
        p.limits = Limits::MAX;
        let mut o = Observation::new(key(), "sha256:v1", "n", Timestamp(0));
        let argv = vec![];
        for i in 0..3000u32 {
            let r = ReplicaId((i % 7) as u16);
            let exe = format!("/opt/application/bin/tool-{i:05}");
            let path = format!("/var/lib/application/data/file-{i:05}.db");
            let p = Process {
                exe: &exe,
                file_name: None,
                argv: &argv,
                uid: i,
                exec_session: false,
                in_image: Some(true),
            };
            o.observe(&Event::exec(p), r, Timestamp(1_700_000_000), &Limits::MAX);
            o.observe(
                &Event {
                    process: p,
                    kind: EventKind::File {
                        path: &path,
                        access: Access::READ,
                    },
                },
                r,
                Timestamp(1_700_000_000),
                &Limits::MAX,
            );
            o.observe(
                &Event {
                    process: p,
                    kind: EventKind::Connect {
                        ip: std::net::IpAddr::from([10, (i >> 8) as u8, i as u8, 1]),
                        port: 443,
                        protocol: Protocol::Tcp,
                    },
                },
                r,
                Timestamp(1_700_000_000),
                &Limits::MAX,
            );
        }
        p.merge_observation(&o, Timestamp(1_700_000_000));
        let real = serde_json::to_vec(&p.behavior).unwrap().len();
        let est = p.behavior.estimated_size();
        assert!(
            est >= real,
            "estimate {est} must not be below the real size {real}"
        );
        assert!(
            p.estimated_size() < 1_500_000,
            "a profile at the schema's maxima fits in an object: {}",
            p.estimated_size()
        );
    }
}
