//! Example objects of every resource, valid against their schemas. The tests use them, and
//! they show what each resource looks like filled in.

use std::collections::BTreeMap;

use herdwatch_model::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::common::*;
use crate::conditions;
use crate::convert::to_time;
use crate::observation::{BehaviorObservation, BehaviorObservationSpec, ObservedWorkload};
use crate::policy::{
    ClusterBehaviorPolicy, ClusterBehaviorPolicySpec, DenyKind, PolicyRule, RuleExceptions,
};
use crate::profile::*;
use crate::violation::*;

const T0: i64 = 1_764_000_000;

fn seen(first: i64, last: i64, replicas: u32, sketch: &str) -> Seen {
    Seen {
        first_seen: Some(to_time(Timestamp(first))),
        last_seen: Some(to_time(Timestamp(last))),
        seen_replicas: Some(replicas),
        replica_sketch: Some(sketch.to_owned()),
    }
}

/// A web server's behaviour: nginx as root (master) and uid 101 (workers), DNS and a
/// database, port 80, its config and logs.
pub fn behavior() -> Behavior {
    Behavior {
        processes: vec![
            ProcessEntry {
                exe: "/usr/sbin/nginx".into(),
                argv: None,
                uid: Some(0),
                seen: seen(T0, T0 + 3600, 2, "01a2f00d"),
            },
            ProcessEntry {
                exe: "/usr/sbin/nginx".into(),
                argv: None,
                uid: Some(101),
                seen: seen(T0, T0 + 3600, 2, "01a2f00d"),
            },
            ProcessEntry {
                exe: "/usr/bin/python3*".into(),
                argv: Some(vec!["python3".into(), "-m".into(), "*".into()]),
                uid: None,
                seen: Seen::default(),
            },
        ],
        syscalls: ["accept4", "epoll_wait", "openat", "read", "write"]
            .into_iter()
            .map(|n| SyscallEntry {
                name: n.into(),
                seen: seen(T0, T0 + 60, 2, "01a2f00d"),
            })
            .collect(),
        network: NetworkBehavior {
            egress: vec![
                EgressEntry {
                    peer: "10.96.0.10".into(),
                    port: Some(53),
                    protocol: Protocol::Udp,
                    seen: seen(T0, T0 + 60, 2, "01a2f00d"),
                },
                EgressEntry {
                    peer: "10.20.0.0/16".into(),
                    port: Some(5432),
                    protocol: Protocol::Tcp,
                    seen: Seen::default(),
                },
            ],
            listen: vec![ListenEntry {
                port: 80,
                protocol: Protocol::Tcp,
                seen: seen(T0, T0 + 60, 2, "01a2f00d"),
            }],
        },
        files: vec![
            FileEntry {
                prefix: Some("/etc/nginx".into()),
                path: None,
                access: vec![FileAccess::Read],
                seen: seen(T0, T0 + 60, 2, "01a2f00d"),
            },
            FileEntry {
                prefix: Some("/var/log/nginx".into()),
                path: None,
                access: vec![FileAccess::Write, FileAccess::Create],
                seen: seen(T0, T0 + 60, 1, "01a2"),
            },
        ],
    }
}

/// A profile of the `web` Deployment's `nginx` container, enforcing, with status.
pub fn profile() -> BehaviorProfile {
    let mut p = BehaviorProfile::new(
        "web-nginx",
        BehaviorProfileSpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: "web".into(),
            },
            container: "nginx".into(),
            mode: Mode::Enforce,
            learning: LearningConfig {
                min_duration: "24h".into(),
                stable_for: "4h".into(),
                min_replicas: 2,
                auto_promote: true,
            },
            response: ResponseConfig {
                action: ResponseAction::Kill,
                kill_process: true,
                kill_container_init: false,
                dry_run: false,
                allow_unowned: false,
                limits: ResponseLimits {
                    max_kills_per_hour: 3,
                    min_ready_replicas: 1,
                },
            },
            limits: EntryLimits::default(),
            allowed: behavior(),
        },
    );
    p.metadata.namespace = Some("shop".into());
    p.metadata.creation_timestamp = Some(to_time(Timestamp(T0)));
    let now = to_time(Timestamp(T0 + 90_000));
    p.status = Some(BehaviorProfileStatus {
        phase: Some(Phase::Enforcing),
        observed_generation: Some(1),
        conditions: vec![
            conditions::condition(
                conditions::LEARNING,
                conditions::Status::False,
                conditions::REASON_PROMOTED,
                "learning complete; promoted to Enforcing",
                Some(1),
                &now,
            ),
            conditions::condition(
                conditions::COMPLETE,
                conditions::Status::True,
                conditions::REASON_LEARNING_COMPLETE,
                "2 replicas observed, stable, nothing lost",
                Some(1),
                &now,
            ),
            conditions::target_found("Deployment", "web", Some(1), &now),
        ],
        revision: 2,
        revisions: vec![RevisionStatus {
            revision: 2,
            time: Some(to_time(Timestamp(T0 + 3600))),
            image_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            added: BehaviorChanges {
                syscalls: vec!["epoll_wait".into()],
                ..Default::default()
            },
            removed: BehaviorChanges::default(),
        }],
        images: vec![ImageSectionStatus {
            digest: format!("sha256:{}", "ab".repeat(32)),
            first_seen: Some(to_time(Timestamp(T0))),
            last_seen: Some(to_time(Timestamp(T0 + 3600))),
            seeded_from: None,
            base_revision: 0,
            added: BehaviorChanges::default(),
        }],
        learning: LearningStatus {
            started_at: Some(to_time(Timestamp(T0))),
            last_change_at: Some(to_time(Timestamp(T0 + 3600))),
            replicas: ReplicaSummary {
                count: 2,
                sketch: "01a2f00d".into(),
            },
            promoted_at: Some(now.clone()),
            ..Default::default()
        },
        violations: ViolationSummary {
            total: 1,
            evicted: 1,
            last: Some(LastViolation {
                time: Some(now.clone()),
                pod: "web-7d9f8-abcde".into(),
                rule: "profile/processes".into(),
                subject: "/bin/sh as uid 101".into(),
                record: "web-7d9f8-abcde-0123456789abcdef".into(),
            }),
            recent_evictions: vec![now],
            ..Default::default()
        },
    });
    p
}

/// A baseline policy for namespaces labelled `herdwatch.dev/baseline`.
pub fn policy() -> ClusterBehaviorPolicy {
    let rule = |name: &str, deny| PolicyRule {
        name: name.into(),
        deny,
        ..Default::default()
    };
    ClusterBehaviorPolicy::new(
        "baseline",
        ClusterBehaviorPolicySpec {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "herdwatch.dev/baseline".into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
                match_labels: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("tier".into(), "web".into())])),
                match_expressions: None,
            }),
            rules: vec![
                PolicyRule {
                    action: ResponseAction::Kill,
                    kill_process: true,
                    ..rule("no-shells", DenyKind::Shells)
                },
                PolicyRule {
                    binaries: Some(vec!["curl".into(), "wget".into(), "nc".into()]),
                    ..rule("no-fetchers", DenyKind::Binaries)
                },
                rule("no-drift", DenyKind::Drift),
                PolicyRule {
                    exceptions: RuleExceptions {
                        executables: vec!["/usr/sbin/nginx".into()],
                        containers: vec!["init".into()],
                    },
                    ..rule("no-root", DenyKind::Root)
                },
                PolicyRule {
                    cidrs: Some(vec!["10.0.0.0/8".into(), "192.0.2.1".into()]),
                    ..rule("egress", DenyKind::EgressOutside)
                },
                PolicyRule {
                    action: ResponseAction::None,
                    ..rule("no-exec", DenyKind::ExecSessions)
                },
            ],
            dry_run: false,
            allow_unowned: false,
            limits: ResponseLimits::default(),
        },
    )
}

/// The record of a shell started in a web pod.
pub fn violation() -> BehaviorViolation {
    let mut v = BehaviorViolation::new(
        "web-7d9f8-abcde-0123456789abcdef",
        BehaviorViolationSpec {
            source: RuleSource::Profile,
            profile: Some("web-nginx".into()),
            policy: None,
            rule: "profile/processes".into(),
            subject: "/bin/sh as uid 101".into(),
            node: "node-1".into(),
            pod: "web-7d9f8-abcde".into(),
            pod_uid: "4c1e6a2b-7f00-4d2a-9d8e-0a1b2c3d4e5f".into(),
            container: "nginx".into(),
            image_digest: format!("sha256:{}", "ab".repeat(32)),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: "web".into(),
            },
            event: ViolationEvent {
                kind: EventKind::Exec,
                exe: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), "id".into()],
                uid: 101,
                pid: Some(4242),
                in_image: Some(true),
                ..Default::default()
            },
            ancestry: vec![Ancestor {
                pid: 7,
                exe: "/usr/sbin/nginx".into(),
                argv: vec!["nginx: worker process".into()],
                uid: 101,
            }],
            count: 3,
            first_seen: to_time(Timestamp(T0 + 90_000)),
            last_seen: to_time(Timestamp(T0 + 90_060)),
            action: ResponseAction::Kill,
            process_killed: true,
            process_killed_by: Some(KilledBy::Kernel),
            process_kill_error: None,
        },
    );
    v.metadata.namespace = Some("shop".into());
    v.status = Some(BehaviorViolationStatus {
        outcome: Outcome::Evicted,
        reason: Some("Evicted".into()),
        message: Some("evicted through the Eviction API; the Deployment replaces the pod".into()),
        decided_at: Some(to_time(Timestamp(T0 + 90_001))),
    });
    v
}

/// What the agent on node-1 saw of the web pods.
pub fn observation() -> BehaviorObservation {
    let mut o = BehaviorObservation::new(
        "web-node-1-0123456789abcdef",
        BehaviorObservationSpec {
            workload: ObservedWorkload {
                kind: "Deployment".into(),
                name: "web".into(),
                container: "nginx".into(),
            },
            image_digest: format!("sha256:{}", "ab".repeat(32)),
            node: "node-1".into(),
            agent_started_at: to_time(Timestamp(T0 - 60)),
            updated_at: to_time(Timestamp(T0 + 3600)),
            observed: behavior(),
            replicas: ReplicaSummary {
                count: 2,
                sketch: "01a2f00d".into(),
            },
            late_attach: ReplicaSummary::default(),
            events_lost: 0,
            dropped: 0,
            unrecognised_runtimes: vec![],
        },
    );
    o.metadata.namespace = Some("shop".into());
    o
}
