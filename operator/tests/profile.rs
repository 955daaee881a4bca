//! The profile reconciler against a mocked API server: merging observations from several
//! nodes, promotion, a conflicting hand edit, a missing target, lost events, orphans.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use herdwatch_api::common::{FileAccess, FileEntry, Mode, Seen};
use herdwatch_api::conditions;
use herdwatch_api::convert::to_time;
use herdwatch_api::profile::{LearningConfig, TargetKind, TargetRef};
use herdwatch_api::{
    BehaviorObservation, BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus,
};
use herdwatch_model::behavior::Limits;
use herdwatch_model::event::{Event, Process};
use herdwatch_model::sketch::ReplicaId;
use herdwatch_model::{Observation, Timestamp, WorkloadKey};
use herdwatch_operator::args::Settings;
use herdwatch_operator::profile::{self, RESYNC};
use herdwatch_operator::{CREATED_BY_LABEL, CREATED_BY_OPERATOR};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{json, Value};

const NS: &str = "shop";
const NAME: &str = "deployment-web-nginx";
const PROFILE: &str =
    "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorprofiles/deployment-web-nginx";
const PROFILE_STATUS: &str =
    "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorprofiles/deployment-web-nginx/status";
const OBSERVATIONS: &str = "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorobservations";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/web";

fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

fn ago(secs: i64) -> Timestamp {
    Timestamp(NOW.0 - secs)
}

/// What the agent on `node` saw `pod` run.
fn observation(node: &str, pod: &str, exes: &[&str], lost: u64) -> BehaviorObservation {
    let key = WorkloadKey {
        namespace: NS.into(),
        owner_kind: "Deployment".into(),
        owner_name: "web".into(),
        container: "nginx".into(),
    };
    let mut o = Observation::new(key, &digest(), node, ago(3600));
    let replica = ReplicaId::from_pod_uid(pod);
    o.attach_replica(replica, false, ago(3000));
    let argv = Vec::new();
    for exe in exes {
        let p = Process {
            exe,
            file_name: None,
            argv: &argv,
            uid: 101,
            exec_session: false,
            in_image: Some(true),
        };
        o.observe(&Event::exec(p), replica, ago(3000), &Limits::DEFAULT);
    }
    o.set_events_lost(lost, ago(2900));
    BehaviorObservation::from(&o)
}

/// A profile of web/nginx created two hours ago: learn for 1h, stable for 30m, 2 replicas.
fn profile() -> BehaviorProfile {
    let mut p = BehaviorProfile::new(
        NAME,
        BehaviorProfileSpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: "web".into(),
            },
            container: "nginx".into(),
            mode: Mode::Enforce,
            learning: LearningConfig {
                min_duration: "1h".into(),
                stable_for: "30m".into(),
                min_replicas: 2,
                auto_promote: true,
            },
            ..BehaviorProfileSpec::default()
        },
    );
    p.metadata.namespace = Some(NS.into());
    p.metadata.creation_timestamp = Some(to_time(ago(7200)));
    p.metadata.resource_version = Some("100".into());
    p.metadata.generation = Some(1);
    p
}

fn exes(allowed: &Value) -> Vec<(String, u64)> {
    allowed["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["exe"].as_str().unwrap().to_owned(),
                e["seenReplicas"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// What most tests observe: nginx run in one pod on node-a, no event lost.
fn nginx_on_node_a() -> BehaviorObservation {
    observation("node-a", "pod-1", &["/usr/sbin/nginx"], 0)
}

/// The profile of [`profile`] as stored at `resource_version` and `generation`.
fn stored_profile(resource_version: &str, generation: i64) -> Value {
    served(&profile(), resource_version, generation)
}

/// Reconciles `p` once on a mock serving `steps`, checks that every step was taken and no
/// other, and returns the action.
async fn reconcile(p: BehaviorProfile, steps: Vec<Exchange>) -> Action {
    let (client, verifier) = mock(steps);
    let ctx = context(client, vec![], vec![], Settings::default());
    let action = profile::reconcile(p.into(), ctx).await.unwrap();
    verify(verifier).await;
    action
}

/// A merge of `observations` whose spec write goes through (at resourceVersion 101,
/// generation 2), then the status write, whose status `check_status` checks.
fn merged(
    observations: &[BehaviorObservation],
    check_status: impl FnOnce(&Value) + Send + 'static,
) -> Vec<Exchange> {
    vec![
        deployment_found(),
        list_observations(observations),
        Exchange::put(PROFILE).echo("101", 2),
        Exchange::patch(PROFILE_STATUS)
            .check(move |body| check_status(&body["status"]))
            .reply(200, stored_profile("102", 2)),
    ]
}

fn deployment_found() -> Exchange {
    Exchange::get(DEPLOYMENT).reply(200, partial("web", Some(NS), json!({})))
}

fn list_observations(items: &[BehaviorObservation]) -> Exchange {
    Exchange::get(OBSERVATIONS)
        .query("fieldSelector=spec.workload.kind=Deployment,spec.workload.name=web,spec.workload.container=nginx")
        .reply(
            200,
            list(
                "herdwatch.dev/v1alpha1",
                "BehaviorObservation",
                items.iter().map(|o| serde_json::to_value(o).unwrap()).collect(),
            ),
        )
}

#[tokio::test]
async fn observations_from_two_nodes_merge_and_a_complete_profile_is_promoted() {
    let a = nginx_on_node_a();
    let b = observation("node-b", "pod-2", &["/usr/sbin/nginx", "/app/worker"], 0);
    let steps = vec![
        deployment_found(),
        list_observations(&[a, b]),
        Exchange::put(PROFILE)
            .check(|body| {
                assert_eq!(
                    body["metadata"]["resourceVersion"], "100",
                    "the spec is written with the resourceVersion it was read at"
                );
                let mut got = exes(&body["spec"]["allowed"]);
                got.sort();
                assert_eq!(
                    got,
                    vec![("/app/worker".into(), 1), ("/usr/sbin/nginx".into(), 2)]
                );
                assert_eq!(
                    body["spec"]["mode"], "Enforce",
                    "the rest of the spec is kept"
                );
                assert!(body.get("status").is_none());
            })
            .echo("101", 2),
        Exchange::patch(PROFILE_STATUS)
            .query("fieldManager=herdwatch-operator")
            .query("force=true")
            .check(|body| {
                assert_eq!(body["metadata"]["resourceVersion"], "101");
                let s = &body["status"];
                assert_eq!(s["phase"], "Enforcing");
                assert_eq!(s["observedGeneration"], 2);
                assert_eq!(
                    condition(s, conditions::LEARNING),
                    ("False".into(), conditions::REASON_PROMOTED.into())
                );
                assert_eq!(condition(s, conditions::COMPLETE).0, "True");
                assert_eq!(condition(s, conditions::INCOMPLETE).0, "False");
                assert_eq!(condition(s, conditions::BOUNDED).0, "True");
                assert_eq!(
                    condition(s, conditions::TARGET_FOUND),
                    ("True".into(), conditions::REASON_FOUND.into())
                );
                assert_eq!(s["learning"]["replicas"]["count"], 2);
                assert_eq!(s["revision"], 1);
                assert_eq!(s["revisions"].as_array().unwrap().len(), 1);
                assert_eq!(s["images"][0]["digest"], json!(digest()));
                assert!(s["learning"]["promotedAt"].is_string());
            })
            .reply(200, stored_profile("102", 2)),
    ];
    let action = reconcile(profile(), steps).await;
    assert_eq!(action, Action::requeue(RESYNC), "nothing left to wait for");
}

#[tokio::test]
async fn a_conflicting_hand_edit_is_kept_and_the_merge_retried() {
    let a = nginx_on_node_a();
    // Between the read and the write, a user added a file rule by hand.
    let mut edited = profile();
    edited.spec.allowed.files.push(FileEntry {
        prefix: Some("/data".into()),
        path: None,
        access: vec![FileAccess::Read],
        seen: Seen::default(),
    });
    edited.metadata.resource_version = Some("105".into());
    edited.metadata.generation = Some(2);
    let edited_json = serde_json::to_value(&edited).unwrap();
    let steps = vec![
        deployment_found(),
        list_observations(std::slice::from_ref(&a)),
        Exchange::put(PROFILE).fail(409, "Conflict"),
        Exchange::get(PROFILE).reply(200, edited_json),
        deployment_found(),
        list_observations(std::slice::from_ref(&a)),
        Exchange::put(PROFILE)
            .check(|body| {
                assert_eq!(body["metadata"]["resourceVersion"], "105");
                let allowed = &body["spec"]["allowed"];
                assert_eq!(
                    allowed["files"][0]["prefix"], "/data",
                    "the hand edit stays"
                );
                assert_eq!(exes(allowed), vec![("/usr/sbin/nginx".into(), 1)]);
            })
            .echo("106", 3),
        Exchange::patch(PROFILE_STATUS)
            .check(|body| {
                assert_eq!(body["metadata"]["resourceVersion"], "106");
                let s = &body["status"];
                assert_eq!(s["observedGeneration"], 3);
                assert_eq!(s["phase"], "Learning", "one replica of two");
                assert_eq!(
                    condition(s, conditions::INCOMPLETE),
                    ("True".into(), conditions::REASON_TOO_FEW_REPLICAS.into())
                );
            })
            .reply(200, stored_profile("107", 3)),
    ];
    reconcile(profile(), steps).await;
}

#[tokio::test]
async fn a_write_that_keeps_conflicting_fails_the_reconcile_for_a_retry() {
    let mut steps = Vec::new();
    for attempt in 0..profile::WRITE_ATTEMPTS {
        steps.push(deployment_found());
        steps.push(list_observations(&[nginx_on_node_a()]));
        steps.push(Exchange::put(PROFILE).fail(409, "Conflict"));
        if attempt + 1 < profile::WRITE_ATTEMPTS {
            steps.push(Exchange::get(PROFILE).reply(200, stored_profile("100", 1)));
        }
    }
    let (client, verifier) = mock(steps);
    let ctx = context(client, vec![], vec![], Settings::default());
    let err = profile::reconcile(profile().into(), ctx.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, herdwatch_operator::Error::Conflict { attempts: 5, .. }),
        "{err}"
    );
    // The error policy backs off (and counts the failure).
    let first = profile::error_policy(profile().into(), &err, ctx.clone());
    let second = profile::error_policy(profile().into(), &err, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(2)));
    assert_eq!(second, Action::requeue(Duration::from_secs(4)));
    assert!(ctx
        .metrics
        .encode()
        .unwrap()
        .contains(r#"herdwatch_operator_reconcile_errors_total{controller="profile",reason="conflict_retries"} 2"#));
    drop(ctx);
    verify(verifier).await;
}

#[tokio::test]
async fn an_old_crd_without_selectable_fields_still_merges_only_this_workload() {
    let mine = nginx_on_node_a();
    let mut other = observation("node-a", "pod-9", &["/bin/other"], 0);
    other.spec.workload.name = "api".into();
    let all = list(
        "herdwatch.dev/v1alpha1",
        "BehaviorObservation",
        vec![
            serde_json::to_value(&mine).unwrap(),
            serde_json::to_value(&other).unwrap(),
        ],
    );
    let steps = vec![
        deployment_found(),
        Exchange::get(OBSERVATIONS)
            .query("fieldSelector=")
            .fail(400, "BadRequest"),
        Exchange::get(OBSERVATIONS).reply(200, all),
        Exchange::put(PROFILE)
            .check(|body| {
                assert_eq!(
                    exes(&body["spec"]["allowed"]),
                    vec![("/usr/sbin/nginx".into(), 1)],
                    "another workload's observation is not merged"
                );
            })
            .echo("101", 2),
        Exchange::patch(PROFILE_STATUS).reply(200, stored_profile("102", 2)),
    ];
    reconcile(profile(), steps).await;
}

#[tokio::test]
async fn a_profile_whose_target_does_not_exist_says_so() {
    let steps = vec![
        Exchange::get(DEPLOYMENT).fail(404, "NotFound"),
        list_observations(&[]),
        Exchange::patch(PROFILE_STATUS)
            .check(|body| {
                let s = &body["status"];
                assert_eq!(
                    condition(s, conditions::TARGET_FOUND),
                    ("False".into(), conditions::REASON_TARGET_NOT_FOUND.into())
                );
                assert_eq!(s["phase"], "Learning");
            })
            .reply(200, stored_profile("101", 1)),
    ];
    let action = reconcile(profile(), steps).await;
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_profile_learned_while_events_were_lost_stays_incomplete() {
    let a = nginx_on_node_a();
    let b = observation("node-b", "pod-2", &["/usr/sbin/nginx"], 17);
    let steps = merged(&[a, b], |s| {
        assert_eq!(s["phase"], "Learning", "never promoted with lost events");
        assert_eq!(
            condition(s, conditions::INCOMPLETE),
            ("True".into(), conditions::REASON_EVENTS_LOST.into())
        );
        assert_eq!(s["learning"]["eventsLost"], 17);
        assert_eq!(s["learning"]["lossyNodes"], json!(["node-b"]));
    });
    let action = reconcile(profile(), steps).await;
    assert_eq!(
        action,
        Action::requeue(RESYNC),
        "waiting does not help, so no early check"
    );
}

#[tokio::test]
async fn learning_that_waits_on_time_is_checked_again_when_due() {
    let mut young = profile();
    young.metadata.creation_timestamp = Some(to_time(ago(3300)));
    let a = nginx_on_node_a();
    let b = observation("node-b", "pod-2", &["/usr/sbin/nginx"], 0);
    let steps = merged(&[a, b], |s| {
        assert_eq!(
            condition(s, conditions::INCOMPLETE),
            ("True".into(), conditions::REASON_MIN_DURATION.into())
        );
    });
    let action = reconcile(young, steps).await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300)),
        "minDuration (1h) ends 5 minutes from now"
    );
}

#[tokio::test]
async fn an_unchanged_profile_is_not_written() {
    // The status the first reconcile would write, already in place.
    let a = nginx_on_node_a();
    let mut p = profile();
    let mut model = p.to_model(NOW).unwrap();
    model.merge_observation(&(&a).try_into().unwrap(), NOW);
    p.spec.allowed = (&model.behavior).into();
    let learning = (&p.spec.learning).try_into().unwrap();
    let eval = herdwatch_model::evaluate(
        herdwatch_model::Mode::Enforce,
        &learning,
        &model.learning,
        NOW,
    );
    let mut status = BehaviorProfileStatus::default();
    status.apply_model(&model, Some(&eval));
    status.observed_generation = Some(1);
    let t = to_time(NOW);
    status.conditions = eval
        .conditions
        .iter()
        .chain(std::iter::once(&model.bounds_condition()))
        .map(|c| conditions::from_model(c, Some(1), &t))
        .chain([conditions::target_found("Deployment", "web", Some(1), &t)])
        .collect();
    p.status = Some(status);
    reconcile(p, vec![deployment_found(), list_observations(&[a])]).await;
}

#[tokio::test]
async fn a_created_profile_is_deleted_once_its_workload_has_been_gone_long_enough() {
    let mut orphan = profile();
    orphan.metadata.labels = Some(BTreeMap::from([(
        CREATED_BY_LABEL.to_owned(),
        CREATED_BY_OPERATOR.to_owned(),
    )]));
    let gone_since = to_time(ago(8 * 86_400));
    orphan.status = Some(BehaviorProfileStatus {
        conditions: vec![conditions::target_not_found(
            "Deployment",
            "web",
            Some(1),
            &gone_since,
        )],
        ..BehaviorProfileStatus::default()
    });
    let steps = vec![
        Exchange::get(DEPLOYMENT).fail(404, "NotFound"),
        Exchange::delete(PROFILE).reply(200, api_status(200, "Success")),
    ];
    let action = reconcile(orphan.clone(), steps).await;
    assert_eq!(action, Action::await_change());

    // A hand-written profile in the same state is kept.
    orphan.metadata.labels = None;
    let steps = vec![
        Exchange::get(DEPLOYMENT).fail(404, "NotFound"),
        list_observations(&[]),
        Exchange::patch(PROFILE_STATUS).reply(200, stored_profile("101", 1)),
    ];
    reconcile(orphan, steps).await;
}

#[test]
fn observations_map_to_the_profiles_of_their_workload_container() {
    let mut other_container = profile();
    other_container.metadata.name = Some("deployment-web-sidecar".into());
    other_container.spec.container = "sidecar".into();
    let mut other_ns = profile();
    other_ns.metadata.namespace = Some("elsewhere".into());
    let mut hand_written = profile();
    hand_written.metadata.name = Some("web-by-hand".into());
    let store = store(vec![profile(), other_container, other_ns, hand_written]);
    let mut refs = profile::profiles_for_observation(&store, &nginx_on_node_a());
    refs.sort_by_key(|r| r.name.clone());
    assert_eq!(
        refs,
        vec![
            ObjectRef::new(NAME).within(NS),
            ObjectRef::new("web-by-hand").within(NS)
        ]
    );
    assert_eq!(
        profile::phase_counts(&store)[0],
        (herdwatch_api::common::Phase::Learning, 4)
    );
}

#[tokio::test]
async fn observations_are_read_at_least_as_new_as_the_watch_delivered_them() {
    // The watch delivered an observation at resourceVersion 4242: the list asks the API
    // server's watch cache for data not older than that, rather than a consistent read from
    // etcd, and so still includes the observation that triggered the reconcile.
    let a = nginx_on_node_a();
    let (client, verifier) = mock(vec![
        deployment_found(),
        list_observations(std::slice::from_ref(&a))
            .query("resourceVersion=4242")
            .query("resourceVersionMatch=NotOlderThan"),
        Exchange::put(PROFILE).echo("101", 2),
        Exchange::patch(PROFILE_STATUS).reply(200, stored_profile("102", 2)),
    ]);
    let ctx = context(client, vec![], vec![], Settings::default());
    ctx.observations_seen.saw(Some("4242"));
    ctx.observations_seen.saw(Some("17"));
    profile::reconcile(profile().into(), ctx).await.unwrap();
    verify(verifier).await;
}
