//! Property tests of the conversions between herdwatch's resources and its model
//! (`herdwatch_api::convert`).
//!
//! Profiles and observations live in tenants' namespaces, so their contents are whatever a
//! tenant (or a compromised agent) writes: converting them must never panic, may fail only
//! where the conversions say they fail, and what the operator writes back from the model
//! must read back as the same model.

use std::net::IpAddr;
use std::sync::OnceLock;

use herdwatch_api::common::{
    Behavior, BehaviorChanges, EgressEntry, EgressRef, FileAccess, FileEntry, FileRef, ListenEntry,
    ListenRef, NetworkBehavior, ProcessEntry, ProcessRef, Protocol, ReplicaSummary, Seen,
    SyscallEntry,
};
use herdwatch_api::examples;
use herdwatch_api::policy::{ClusterBehaviorPolicy, DenyKind};
use herdwatch_api::profile::{
    BehaviorProfile, BehaviorProfileStatus, ImageSectionStatus, LearningStatus, RevisionStatus,
};
use herdwatch_api::{BehaviorObservation, Error};
use herdwatch_model as model;
use herdwatch_model::behavior::{
    Access, EgressRule, Entry, FileRule, ListenRule, ProcessRule, Rules, SyscallRule,
};
use herdwatch_model::net::Cidr;
use herdwatch_model::pattern::ArgvPattern;
use herdwatch_model::sketch::{ReplicaId, ReplicaSketch};
use herdwatch_model::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, Time,
};
use k8s_openapi::jiff;
use kube::core::cel::{compile_schema, CompiledSchema, Validator};
use kube::CustomResourceExt;
use proptest::option;
use proptest::prelude::*;

// ---- Resource contents, as a tenant may write them ----

/// Text of any kind, mostly printable.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[ -~]{0,16}", 1 => any::<String>()]
}

/// An API time: any second the API can express.
fn api_time() -> impl Strategy<Value = Time> {
    timestamp().prop_map(|t| Time(jiff::Timestamp::from_second(t.as_secs()).unwrap()))
}

/// A replica sketch as herdwatch writes it (four hex digits per replica, possibly more
/// replicas than a sketch keeps), or text that only resembles one.
fn sketch_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u16>(), 0..80)
            .prop_map(|ids| ids.iter().map(|id| format!("{id:04x}")).collect()),
        "[0-9a-fA-F+-]{0,20}",
        text(),
    ]
}

fn seen() -> impl Strategy<Value = Seen> {
    (
        option::of(api_time()),
        option::of(api_time()),
        option::of(any::<u32>()),
        option::of(sketch_text()),
    )
        .prop_map(
            |(first_seen, last_seen, seen_replicas, replica_sketch)| Seen {
                first_seen,
                last_seen,
                seen_replicas,
                replica_sketch,
            },
        )
}

/// An egress peer: an address, a network (prefix possibly too long, host bits possibly
/// set), or text that is neither.
fn peer() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<IpAddr>().prop_map(|ip| ip.to_string()),
        3 => (any::<IpAddr>(), any::<u8>()).prop_map(|(ip, prefix)| {
            let max = if ip.is_ipv4() { 33 } else { 129 };
            format!("{ip}/{}", prefix % max)
        }),
        1 => (any::<IpAddr>(), 0..140u8).prop_map(|(ip, prefix)| format!("{ip}/{prefix}")),
        1 => any::<std::net::Ipv4Addr>().prop_map(|ip| format!("::ffff:{ip}")),
        1 => "[0-9a-f.:/%]{0,20}",
        1 => text(),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)]
}

fn file_access() -> impl Strategy<Value = Vec<FileAccess>> {
    prop::collection::vec(
        prop_oneof![
            Just(FileAccess::Read),
            Just(FileAccess::Write),
            Just(FileAccess::Create),
            Just(FileAccess::Truncate),
        ],
        0..5,
    )
}

/// Whether `path` passes the CEL rule on a file entry's `path`.
fn admitted_file_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && !path.contains("/../")
        && !path.ends_with("/..")
        && !path.contains("/./")
}

/// A file path: absolute and made of components as the CRD asks, or any text.
fn file_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            prop_oneof![
                "[a-z0-9_-]{1,6}",
                Just("*".to_owned()),
                Just("**".to_owned())
            ],
            0..5,
        )
        .prop_map(|cs| format!("/{}", cs.join("/"))),
        "[a-z/.*]{0,12}",
        text(),
    ]
}

fn file_entry() -> impl Strategy<Value = FileEntry> {
    (
        option::of(file_path()),
        option::of(file_path()),
        file_access(),
        seen(),
    )
        .prop_map(|(path, prefix, access, seen)| FileEntry {
            path,
            prefix,
            access,
            seen,
        })
}

fn behavior() -> impl Strategy<Value = Behavior> {
    let process = (
        text(),
        option::of(prop::collection::vec(text(), 0..4)),
        option::of(any::<u32>()),
        seen(),
    )
        .prop_map(|(exe, argv, uid, seen)| ProcessEntry {
            exe,
            argv,
            uid,
            seen,
        });
    let syscall = (prop_oneof!["[a-z0-9_]{1,12}", text()], seen())
        .prop_map(|(name, seen)| SyscallEntry { name, seen });
    let egress = (peer(), option::of(any::<u16>()), protocol(), seen()).prop_map(
        |(peer, port, protocol, seen)| EgressEntry {
            peer,
            port,
            protocol,
            seen,
        },
    );
    let listen =
        (any::<u16>(), protocol(), seen()).prop_map(|(port, protocol, seen)| ListenEntry {
            port,
            protocol,
            seen,
        });
    (
        prop::collection::vec(process, 0..4),
        prop::collection::vec(syscall, 0..4),
        prop::collection::vec(egress, 0..4),
        prop::collection::vec(listen, 0..4),
        prop::collection::vec(file_entry(), 0..4),
    )
        .prop_map(|(processes, syscalls, egress, listen, files)| Behavior {
            processes,
            syscalls,
            network: NetworkBehavior { egress, listen },
            files,
        })
}

fn behavior_changes() -> impl Strategy<Value = BehaviorChanges> {
    let process = (
        text(),
        option::of(prop::collection::vec(text(), 0..3)),
        option::of(any::<u32>()),
    )
        .prop_map(|(exe, argv, uid)| ProcessRef { exe, argv, uid });
    let egress =
        (peer(), option::of(any::<u16>()), protocol()).prop_map(|(peer, port, protocol)| {
            EgressRef {
                peer,
                port,
                protocol,
            }
        });
    let listen =
        (any::<u16>(), protocol()).prop_map(|(port, protocol)| ListenRef { port, protocol });
    let file = (file_path(), file_access()).prop_map(|(prefix, access)| FileRef { prefix, access });
    (
        prop::collection::vec(process, 0..3),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(egress, 0..3),
        prop::collection::vec(listen, 0..3),
        prop::collection::vec(file, 0..3),
        // Not near u64::MAX: see `a_truncated_count_at_its_limit_stays_there`.
        0..1_000_000u64,
    )
        .prop_map(
            |(processes, syscalls, egress, listen, files, truncated)| BehaviorChanges {
                processes,
                syscalls,
                egress,
                listen,
                files,
                truncated,
            },
        )
}

fn replica_summary() -> impl Strategy<Value = ReplicaSummary> {
    (any::<u32>(), sketch_text()).prop_map(|(count, sketch)| ReplicaSummary { count, sketch })
}

fn profile_status() -> impl Strategy<Value = BehaviorProfileStatus> {
    let revision = (
        any::<u64>(),
        option::of(api_time()),
        option::of(text()),
        behavior_changes(),
        behavior_changes(),
    )
        .prop_map(
            |(revision, time, image_digest, added, removed)| RevisionStatus {
                revision,
                time,
                image_digest,
                added,
                removed,
            },
        );
    let image = (
        text(),
        option::of(api_time()),
        option::of(api_time()),
        option::of(text()),
        any::<u64>(),
        behavior_changes(),
    )
        .prop_map(
            |(digest, first_seen, last_seen, seeded_from, base_revision, added)| {
                ImageSectionStatus {
                    digest,
                    first_seen,
                    last_seen,
                    seeded_from,
                    base_revision,
                    added,
                }
            },
        );
    let learning = (
        (
            option::of(api_time()),
            option::of(api_time()),
            option::of(api_time()),
        ),
        replica_summary(),
        replica_summary(),
        any::<(u64, u64)>(),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(
                (started_at, last_change_at, promoted_at),
                replicas,
                late_attach,
                (events_lost, entries_dropped),
                lossy_nodes,
                unrecognised_runtimes,
            )| LearningStatus {
                started_at,
                last_change_at,
                replicas,
                late_attach,
                events_lost,
                lossy_nodes,
                unrecognised_runtimes,
                entries_dropped,
                promoted_at,
                next_check_at: None,
            },
        );
    (
        option::of(prop_oneof![
            Just(herdwatch_api::common::Phase::Learning),
            Just(herdwatch_api::common::Phase::Monitoring),
            Just(herdwatch_api::common::Phase::Enforcing),
        ]),
        any::<u64>(),
        prop::collection::vec(revision, 0..3),
        prop::collection::vec(image, 0..2),
        learning,
    )
        .prop_map(
            |(phase, revision, revisions, images, learning)| BehaviorProfileStatus {
                phase,
                revision,
                revisions,
                images,
                learning,
                ..BehaviorProfileStatus::default()
            },
        )
}

/// A duration as a tenant may write it: in the CRD's syntax, in it but longer than the
/// model can count, or not in it.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "([0-9]{1,6}[hms]){1,3}",
        1 => "[0-9]{20,24}[hms]",
        1 => "[0-9hms d.-]{0,8}",
    ]
}

fn profile() -> impl Strategy<Value = BehaviorProfile> {
    (
        behavior(),
        option::of(profile_status()),
        duration_text(),
        duration_text(),
    )
        .prop_map(|(allowed, status, min_duration, stable_for)| {
            let mut bp = examples::profile();
            bp.spec.allowed = allowed;
            bp.status = status;
            bp.spec.learning.min_duration = min_duration;
            bp.spec.learning.stable_for = stable_for;
            bp
        })
}

/// `bp` with what the CRD's CEL rules check made to pass them, except its egress peers and
/// learning durations: the values whose parsing the model repeats.
fn admissible(mut bp: BehaviorProfile) -> BehaviorProfile {
    let allowed = &mut bp.spec.allowed;
    for p in &mut allowed.processes {
        if !p.exe.starts_with('/') {
            p.exe.insert(0, '/');
        }
    }
    for f in &mut allowed.files {
        match (&f.path, &f.prefix) {
            (Some(path), _) if admitted_file_path(path) => f.prefix = None,
            (_, Some(prefix)) if prefix.starts_with('/') => f.path = None,
            _ => (f.path, f.prefix) = (Some("/".to_owned()), None),
        }
        if f.access.is_empty() {
            f.access.push(FileAccess::Read);
        }
    }
    bp
}

/// A file entry's path as the CRD admits it, or none: a path the API server refuses never
/// reaches the model.
fn without_refused_paths(mut bp: BehaviorProfile) -> BehaviorProfile {
    for f in &mut bp.spec.allowed.files {
        f.path.take_if(|p| !admitted_file_path(p));
    }
    bp
}

/// A label selector, with operators and values as the CRD's schema lets anyone write them.
fn label_selector() -> impl Strategy<Value = LabelSelector> {
    let requirement = (
        "[a-z./]{1,8}",
        prop_oneof![
            Just("In".to_owned()),
            Just("NotIn".to_owned()),
            Just("Exists".to_owned()),
            Just("DoesNotExist".to_owned()),
            "[A-Za-z]{0,6}",
        ],
        option::of(prop::collection::vec("[a-z]{0,4}", 0..3)),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key,
            operator,
            values,
        });
    (
        option::of(prop::collection::btree_map(
            "[a-z]{1,4}",
            "[a-z]{0,4}",
            0..3,
        )),
        option::of(prop::collection::vec(requirement, 0..3)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

/// The CRD's validation rules, compiled once: validating an object then costs only the
/// evaluation.
fn profile_schema() -> &'static CompiledSchema {
    static SCHEMA: OnceLock<CompiledSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = BehaviorProfile::crd();
        let schema = crd.spec.versions[0].schema.as_ref().unwrap();
        compile_schema(&serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap())
    })
}

/// Whether the API server's CEL rules admit `bp` (evaluated client-side).
fn admitted(bp: &BehaviorProfile) -> bool {
    let object = serde_json::to_value(bp).unwrap();
    Validator::new()
        .validate_compiled(profile_schema(), &object, None)
        .is_ok()
}

// ---- Model values, as herdwatch makes them ----

/// A time the API can express (the model's range is wider; `to_time` clamps).
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second()).prop_map(Timestamp)
}

fn model_seen() -> impl Strategy<Value = model::Seen> {
    (
        option::of(timestamp()),
        option::of(timestamp()),
        prop::collection::vec(any::<u16>(), 0..12),
    )
        .prop_map(|(first_seen, last_seen, ids)| model::Seen {
            first_seen,
            last_seen,
            replicas: ReplicaSketch::from_ids(ids.into_iter().map(ReplicaId)),
        })
}

fn access() -> impl Strategy<Value = Access> {
    (0..16u8).prop_map(|bits| {
        [
            Access::READ,
            Access::WRITE,
            Access::CREATE,
            Access::TRUNCATE,
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(Access::NONE, |acc, (_, a)| acc | a)
    })
}

fn cidr() -> impl Strategy<Value = Cidr> {
    (any::<IpAddr>(), any::<u8>()).prop_map(|(ip, prefix)| {
        let max = if ip.is_ipv4() { 33 } else { 129 };
        Cidr::new(ip, prefix % max).unwrap()
    })
}

/// A path as learning records it (resolved, no empty components), or a subtree rule.
fn file_rule() -> impl Strategy<Value = FileRule> {
    (
        prop::collection::vec(
            prop_oneof![
                "[a-z0-9._-]{1,6}",
                Just("*".to_owned()),
                Just("**".to_owned())
            ],
            0..5,
        ),
        any::<bool>(),
        access(),
    )
        .prop_map(|(components, subtree, access)| {
            let path = format!("/{}", components.join("/"));
            if subtree {
                FileRule::below(&path, access)
            } else {
                FileRule::path(&path, access)
            }
        })
}

fn model_behavior() -> impl Strategy<Value = model::BehaviorSet> {
    fn entries<R: model::behavior::Rule + std::fmt::Debug>(
        rule: impl Strategy<Value = R>,
    ) -> impl Strategy<Value = Rules<R>> {
        prop::collection::vec((rule, model_seen()), 0..4).prop_map(|entries| {
            Rules::from_entries(entries.into_iter().map(|(rule, seen)| Entry { rule, seen }))
        })
    }
    let process = (
        text(),
        option::of(prop::collection::vec(text(), 0..4)),
        option::of(any::<u32>()),
    )
        .prop_map(|(exe, argv, uid)| ProcessRule {
            exe,
            argv: argv.map(ArgvPattern),
            uid,
        });
    let syscall = "[a-z0-9_]{1,12}".prop_map(|name| SyscallRule { name });
    let egress =
        (cidr(), option::of(any::<u16>()), protocol()).prop_map(|(peer, port, protocol)| {
            EgressRule {
                peer,
                port,
                protocol: protocol.into(),
            }
        });
    let listen = (any::<u16>(), protocol()).prop_map(|(port, protocol)| ListenRule {
        port,
        protocol: protocol.into(),
    });
    (
        entries(process),
        entries(syscall),
        entries(egress),
        entries(listen),
        entries(file_rule()),
    )
        .prop_map(
            |(processes, syscalls, egress, listen, files)| model::BehaviorSet {
                processes,
                syscalls,
                egress,
                listen,
                files,
            },
        )
}

fn model_changes() -> impl Strategy<Value = model::Changes> {
    (model_behavior(), any::<u64>()).prop_map(|(b, truncated)| model::Changes {
        processes: b
            .processes
            .entries()
            .iter()
            .map(|e| e.rule.clone())
            .collect(),
        syscalls: b
            .syscalls
            .entries()
            .iter()
            .map(|e| e.rule.clone())
            .collect(),
        egress: b.egress.entries().iter().map(|e| e.rule.clone()).collect(),
        listen: b.listen.entries().iter().map(|e| e.rule.clone()).collect(),
        // Changes name paths, never subtrees: `FileRef` has no form for one.
        files: b
            .files
            .entries()
            .iter()
            .filter(|e| e.rule.subtree().is_none())
            .map(|e| e.rule.clone())
            .collect(),
        truncated,
    })
}

fn model_observation() -> impl Strategy<Value = model::Observation> {
    (
        (text(), text(), text(), text()),
        (text(), text()),
        (timestamp(), timestamp()),
        model_behavior(),
        (
            prop::collection::vec(any::<u16>(), 0..80),
            prop::collection::vec(any::<u16>(), 0..8),
        ),
        any::<(u64, u64)>(),
        prop::collection::btree_set(text(), 0..=model::observation::MAX_UNRECOGNISED_RUNTIMES),
    )
        .prop_map(
            |(
                (namespace, owner_kind, owner_name, container),
                (image_digest, node),
                (agent_started, updated),
                behavior,
                (replicas, late_attach),
                (events_lost, dropped),
                runtimes,
            )| model::Observation {
                workload: model::WorkloadKey {
                    namespace,
                    owner_kind,
                    owner_name,
                    container,
                },
                image_digest,
                node,
                agent_started,
                updated,
                behavior,
                replicas: ReplicaSketch::from_ids(replicas.into_iter().map(ReplicaId)),
                late_attach: ReplicaSketch::from_ids(late_attach.into_iter().map(ReplicaId)),
                events_lost,
                dropped,
                // Sorted, as the model keeps them.
                unrecognised_runtimes: runtimes.into_iter().collect(),
            },
        )
}

/// The field an invalid-value error names.
fn invalid_field(err: &Error) -> Option<&str> {
    match err {
        Error::Invalid { field, .. } => Some(field),
        Error::Missing(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Reading a behaviour fails on an egress peer that is no address or network, and on
    /// nothing else; the error names the first such peer. What it reads is bounded: no
    /// more entries than were written, no more replicas per entry than a sketch keeps.
    #[test]
    fn behaviour_fails_only_on_a_peer_and_names_it(b in behavior()) {
        let first_bad = b
            .network
            .egress
            .iter()
            .position(|e| e.peer.parse::<Cidr>().is_err());
        match (model::BehaviorSet::try_from(&b), first_bad) {
            (Ok(set), None) => {
                prop_assert!(set.processes.len() <= b.processes.len());
                prop_assert!(set.syscalls.len() <= b.syscalls.len());
                prop_assert!(set.egress.len() <= b.network.egress.len());
                prop_assert!(set.listen.len() <= b.network.listen.len());
                prop_assert!(set.files.len() <= b.files.len());
                let sightings = set.processes.entries().iter().map(|e| &e.seen)
                    .chain(set.files.entries().iter().map(|e| &e.seen))
                    .chain(set.egress.entries().iter().map(|e| &e.seen));
                for seen in sightings {
                    prop_assert!(seen.replicas.ids().len() <= 8);
                }
            }
            (Err(err), Some(i)) => {
                let want = format!("network.egress[{i}].peer");
                prop_assert_eq!(invalid_field(&err), Some(want.as_str()));
            }
            (got, want) => prop_assert!(false, "{:?} for the first bad peer at {:?}", got, want),
        }
    }

    /// Model → resource → model gives back the same behaviour: the operator writes a
    /// profile's spec from the model and reads it back on its next reconcile.
    #[test]
    fn model_behaviour_round_trips_through_the_resource(set in model_behavior()) {
        let resource = Behavior::from(&set);
        prop_assert_eq!(model::BehaviorSet::try_from(&resource).unwrap(), set);
    }

    /// The same for the changes a revision records.
    #[test]
    fn model_changes_round_trip_through_the_resource(changes in model_changes()) {
        let resource = BehaviorChanges::from(&changes);
        prop_assert_eq!(model::Changes::from(&resource), changes);
    }

    /// Changes read from a status drop the peers that do not parse and count them as
    /// left out, rather than failing the whole status.
    #[test]
    fn unreadable_changes_are_counted_not_fatal(c in behavior_changes()) {
        let bad = c.egress.iter().filter(|e| e.peer.parse::<Cidr>().is_err()).count();
        let m = model::Changes::from(&c);
        prop_assert_eq!(m.egress.len(), c.egress.len() - bad);
        prop_assert_eq!(m.truncated, c.truncated + bad as u64);
        prop_assert_eq!(m.processes.len(), c.processes.len());
        prop_assert_eq!(m.files.len(), c.files.len());
    }

    /// A profile the operator has written back from its model reads as that model again:
    /// reading is stable after one round, whatever the tenant wrote first.
    #[test]
    fn a_profile_written_back_from_its_model_reads_the_same(
        bp in profile().prop_map(without_refused_paths),
    ) {
        let now = Timestamp(1_764_100_000);
        let Ok(first) = bp.to_model(now) else {
            // Refused: covered by `behaviour_fails_only_on_a_peer_and_names_it`.
            return Ok(());
        };
        let mut written = bp.clone();
        written.spec.allowed = Behavior::from(&first.behavior);
        written
            .status
            .get_or_insert_with(BehaviorProfileStatus::default)
            .apply_model(&first, None);
        let second = written.to_model(now).unwrap();
        prop_assert_eq!(second, first);
    }

    /// The conversions fail only on what the API server refuses: a profile that passes the
    /// CRD's CEL rules reads into the model, learning settings included. (Durations too
    /// long for the model are refused by it but admitted by the CRD; see
    /// `an_admitted_duration_too_long_for_the_model`.)
    #[test]
    fn a_profile_the_api_server_admits_reads_into_the_model(bp in profile().prop_map(admissible)) {
        if admitted(&bp) {
            prop_assert!(bp.to_model(Timestamp(0)).is_ok(), "{:?}", bp.spec.allowed.network.egress);
            let learning = model::LearningSpec::try_from(&bp.spec.learning);
            let fits = |d: &str| d.split(['h', 'm', 's']).all(|n| n.len() < 15);
            if fits(&bp.spec.learning.min_duration) && fits(&bp.spec.learning.stable_for) {
                prop_assert!(learning.is_ok(), "{:?}", bp.spec.learning);
            }
        }
    }

    /// Observations are what agents write and the operator merges: model → resource →
    /// model gives back the same observation.
    #[test]
    fn observations_round_trip_through_the_resource(o in model_observation()) {
        let resource = BehaviorObservation::from(&o);
        prop_assert_eq!(model::Observation::try_from(&resource).unwrap(), o);
    }

    /// An observation written by hand reads with at most the runtimes the model keeps.
    #[test]
    fn an_observation_reads_bounded(
        observed in behavior(),
        runtimes in prop::collection::vec(text(), 0..12),
        replicas in replica_summary(),
        namespace in option::of(text()),
    ) {
        let mut obj = examples::observation();
        obj.spec.observed = observed;
        obj.spec.unrecognised_runtimes = runtimes;
        obj.spec.replicas = replicas;
        obj.metadata.namespace = namespace;
        if let Ok(o) = model::Observation::try_from(&obj) {
            let most = model::observation::MAX_UNRECOGNISED_RUNTIMES;
            prop_assert!(o.unrecognised_runtimes.len() <= most);
            prop_assert!(o.replicas.ids().len() <= 64);
        }
    }

    /// A policy reads into the model exactly when its networks parse and its selectors'
    /// requirements use a known operator with values where it needs them.
    #[test]
    fn a_policy_fails_only_on_bad_networks_or_selectors(
        cidrs in prop::collection::vec(option::of(prop::collection::vec(peer(), 0..3)), 6),
        namespace_selector in option::of(label_selector()),
        pod_selector in option::of(label_selector()),
    ) {
        let mut policy: ClusterBehaviorPolicy = examples::policy();
        for (rule, cidrs) in policy.spec.rules.iter_mut().zip(cidrs) {
            if rule.deny == DenyKind::EgressOutside {
                rule.cidrs = cidrs;
            }
        }
        policy.spec.namespace_selector = namespace_selector;
        policy.spec.pod_selector = pod_selector;

        let networks_parse = policy
            .spec
            .rules
            .iter()
            .filter(|r| r.deny == DenyKind::EgressOutside)
            .flat_map(|r| r.cidrs.iter().flatten())
            .all(|c| c.parse::<Cidr>().is_ok());
        let selector_ok = |s: &Option<LabelSelector>| {
            s.iter().flat_map(|s| s.match_expressions.iter().flatten()).all(|r| {
                let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
                match r.operator.as_str() {
                    "In" | "NotIn" => has_values,
                    "Exists" | "DoesNotExist" => !has_values,
                    _ => false,
                }
            })
        };
        let valid = networks_parse
            && selector_ok(&policy.spec.namespace_selector)
            && selector_ok(&policy.spec.pod_selector);
        match model::policy::ClusterPolicy::try_from(&policy) {
            Ok(p) => {
                prop_assert!(valid);
                prop_assert_eq!(p.rules.len(), policy.spec.rules.len());
            }
            Err(err) => {
                prop_assert!(!valid, "{}", err);
                let field = invalid_field(&err);
                prop_assert!(field.is_some_and(|f| f.starts_with("spec.")), "{}", err);
            }
        }
    }
}

/// The CRD admits any number of digits before a unit, the model counts seconds in a u64:
/// a tenant's `minDuration: 99999999999999999999h` passes admission, and reads as the
/// longest duration the model holds rather than failing every read of the profile.
#[test]
fn an_admitted_duration_too_long_for_the_model() {
    let mut bp = examples::profile();
    bp.spec.learning.min_duration = "99999999999999999999h".into();
    assert!(admitted(&bp));
    let spec = model::LearningSpec::try_from(&bp.spec.learning).unwrap();
    assert_eq!(spec.min_duration.as_secs(), model::time::MAX_DURATION_SECS);
}

/// Changes read from a status add their unreadable peers to `truncated`: at the top of the
/// range the count stays there (the status is herdwatch's own record, but whoever may patch
/// the status subresource can write it).
#[test]
fn a_truncated_count_at_its_limit_stays_there() {
    let changes = BehaviorChanges {
        egress: vec![EgressRef {
            peer: "nowhere".into(),
            port: None,
            protocol: Protocol::Tcp,
        }],
        truncated: u64::MAX,
        ..BehaviorChanges::default()
    };
    assert_eq!(model::Changes::from(&changes).truncated, u64::MAX);
}
