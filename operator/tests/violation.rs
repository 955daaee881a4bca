//! The violation reconciler against a mocked API server: tagging, evicting, refusals, the
//! disruption budget, idempotence, the kill limit across restarts, retention, dry runs.

mod common;

use std::time::Duration;

use common::*;
use herdwatch_api::common::{Mode, Phase, ResponseAction};
use herdwatch_api::convert::to_time;
use herdwatch_api::profile::{ResponseConfig, TargetKind, TargetRef};
use herdwatch_api::violation::{BehaviorViolationStatus, Outcome};
use herdwatch_api::BehaviorViolation;
use herdwatch_api::{examples, BehaviorProfile, BehaviorProfileSpec, BehaviorProfileStatus};
use herdwatch_model::Timestamp;
use herdwatch_operator::args::Settings;
use herdwatch_operator::context::Context;
use herdwatch_operator::violation;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

const POD: &str = "web-7d9f8-abcde";
const POD_UID: &str = "4c1e6a2b-7f00-4d2a-9d8e-0a1b2c3d4e5f";
const PROFILE: &str = "web-nginx";

fn paths(ns: &str) -> Paths {
    paths_of(ns, POD)
}

/// The paths of a violation of the pod `pod` in `ns`.
fn paths_of(ns: &str, pod: &str) -> Paths {
    let hw = format!("/apis/herdwatch.dev/v1alpha1/namespaces/{ns}");
    Paths {
        pod: format!("/api/v1/namespaces/{ns}/pods/{pod}"),
        pods: format!("/api/v1/namespaces/{ns}/pods"),
        eviction: format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
        events: format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        deployment: format!("/apis/apps/v1/namespaces/{ns}/deployments/web"),
        replicasets: format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
        violations: format!("{hw}/behaviorviolations"),
        profile: format!("{hw}/behaviorprofiles/{PROFILE}"),
    }
}

struct Paths {
    pod: String,
    pods: String,
    eviction: String,
    events: String,
    deployment: String,
    replicasets: String,
    violations: String,
    profile: String,
}

/// The profile of web/nginx in `phase`, answering with `action`.
fn profile(ns: &str, phase: Phase, action: ResponseAction) -> BehaviorProfile {
    let mut p = BehaviorProfile::new(
        PROFILE,
        BehaviorProfileSpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: "web".into(),
            },
            container: "nginx".into(),
            mode: Mode::Enforce,
            response: ResponseConfig {
                action,
                ..ResponseConfig::default()
            },
            ..BehaviorProfileSpec::default()
        },
    );
    p.metadata.namespace = Some(ns.into());
    p.metadata.resource_version = Some("300".into());
    p.status = Some(BehaviorProfileStatus {
        phase: Some(phase),
        ..BehaviorProfileStatus::default()
    });
    p
}

/// A new (unanswered) record of a shell in the web pod, asking for `action`.
fn record(ns: &str, name: &str, uid: &str, action: ResponseAction) -> BehaviorViolation {
    let mut v = examples::violation();
    v.metadata.name = Some(name.into());
    v.metadata.namespace = Some(ns.into());
    v.metadata.uid = Some(uid.into());
    v.metadata.resource_version = Some("7".into());
    v.spec.profile = Some(PROFILE.into());
    v.spec.action = action;
    v.spec.first_seen = to_time(Timestamp(NOW.0 - 120));
    v.spec.last_seen = to_time(Timestamp(NOW.0 - 60));
    v.status = None;
    v
}

fn answered(mut v: BehaviorViolation, outcome: Outcome, at: Timestamp) -> BehaviorViolation {
    v.status = Some(BehaviorViolationStatus {
        outcome,
        reason: None,
        message: Some("done".into()),
        decided_at: Some(to_time(at)),
    });
    v
}

fn pod(ns: &str, uid: &str) -> Value {
    pod_of(ns, POD, uid, RS_UID, PodState::Ready)
}

/// UIDs of the Deployment `web` and of its ReplicaSet `web-7d9f8`.
const DEPLOYMENT_UID: &str = "d0e1f2a3-0000-4000-8000-00000000000d";
const RS_UID: &str = "rs-uid";

/// What a pod of the owner is doing.
#[derive(Clone, Copy)]
enum PodState {
    /// Running and Ready.
    Ready,
    /// Running, not Ready yet (a replacement starting).
    NotReady,
    /// Ready, but being deleted (an evicted pod shutting down).
    Terminating,
    /// Ready, and the answer was read before its eviction reached the API server.
    StillReady,
    /// Ran to completion.
    Succeeded,
}

/// The pod `name` controlled by the ReplicaSet `rs_uid`, as the API server returns it.
fn pod_of(ns: &str, name: &str, uid: &str, rs_uid: &str, state: PodState) -> Value {
    let ready = match state {
        PodState::NotReady => "False",
        _ => "True",
    };
    let phase = match state {
        PodState::Succeeded => "Succeeded",
        _ => "Running",
    };
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": { "app": "web" },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9f8",
                "uid": rs_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "nginx" }] },
        "status": {
            "phase": phase,
            "conditions": [{ "type": "Ready", "status": ready }],
        },
    });
    if matches!(state, PodState::Terminating) {
        v["metadata"]["deletionTimestamp"] = json!(to_time(Timestamp(NOW.0 - 5)));
    }
    v
}

/// The Deployment `web` with the given UID (a re-created one has another).
fn deployment(ns: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": ns, "uid": uid },
        "spec": { "selector": { "matchLabels": { "app": "web" } }, "template": {} },
        // A status that lags: it still counts every replica ready. The decision must not
        // rely on it.
        "status": { "replicas": 3, "readyReplicas": 3 },
    })
}

/// A ReplicaSet `name` controlled by the Deployment `deployment_uid`.
fn replicaset(ns: &str, name: &str, uid: &str, deployment_uid: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": { "app": "web" },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "web",
                "uid": deployment_uid,
                "controller": true,
            }],
        },
        "spec": { "selector": { "matchLabels": { "app": "web" } } },
    })
}

/// The read of the violating pod's ReplicaSet `web-7d9f8`, by which the operator finds the
/// pod's real workload (the Deployment `web`) rather than trusting the record's.
fn rs_read(ns: &str) -> Exchange {
    Exchange::get(&format!(
        "/apis/apps/v1/namespaces/{ns}/replicasets/web-7d9f8"
    ))
    .reply(200, replicaset(ns, "web-7d9f8", RS_UID, DEPLOYMENT_UID))
}

/// The reads that count the ready replicas of the Deployment `web` (UID `deployment_uid`):
/// the Deployment, its ReplicaSets and its pods, listed by its selector.
fn owner_steps(
    p: &Paths,
    ns: &str,
    deployment_uid: &str,
    replicasets: Vec<Value>,
    pods: Vec<Value>,
) -> Vec<Exchange> {
    vec![
        Exchange::get(&p.deployment).reply(200, deployment(ns, deployment_uid)),
        Exchange::get(&p.replicasets)
            .query("labelSelector=app=web")
            .reply(200, list("apps/v1", "ReplicaSet", replicasets)),
        Exchange::get(&p.pods)
            .query("labelSelector=app=web")
            .reply(200, list("v1", "Pod", pods)),
    ]
}

/// `owner_steps` of a Deployment with `ready` ready pods, the violating pod among them.
fn ready_owner(p: &Paths, ns: &str, ready: usize) -> Vec<Exchange> {
    let mut pods = vec![pod(ns, POD_UID)];
    for i in 1..ready {
        pods.push(pod_of(
            ns,
            &format!("web-7d9f8-other{i}"),
            &format!("other-uid-{i}"),
            RS_UID,
            PodState::Ready,
        ));
    }
    web_owner(p, ns, pods)
}

/// `owner_steps` of the Deployment `web` with its one ReplicaSet `web-7d9f8` and `pods`.
fn web_owner(p: &Paths, ns: &str, pods: Vec<Value>) -> Vec<Exchange> {
    owner_steps(
        p,
        ns,
        DEPLOYMENT_UID,
        vec![replicaset(ns, "web-7d9f8", RS_UID, DEPLOYMENT_UID)],
        pods,
    )
}

fn success() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 })
}

fn tag_steps(p: &Paths, ns: &str, action: &'static str) -> Vec<Exchange> {
    tag_steps_of(p, ns, action, POD)
}

/// Tagging the pod `pod_name`: label and annotation, then an Event.
fn tag_steps_of(
    p: &Paths,
    ns: &str,
    action: &'static str,
    pod_name: &'static str,
) -> Vec<Exchange> {
    vec![
        Exchange::patch(&p.pod)
            .check(|body| {
                let m = &body["metadata"];
                assert_eq!(m["labels"]["herdwatch.dev/violation"], "profile.processes");
                let summary = m["annotations"]["herdwatch.dev/violation-summary"]
                    .as_str()
                    .unwrap();
                assert!(
                    summary.starts_with("profile/processes: /bin/sh as uid 101"),
                    "{summary}"
                );
            })
            .reply(200, pod(ns, POD_UID)),
        Exchange::post(&p.events)
            .check(move |body| {
                assert_eq!(body["reportingController"], "herdwatch.dev/operator");
                assert_eq!(body["reportingInstance"], "herdwatch-operator-0");
                assert_eq!(body["regarding"]["kind"], "Pod");
                assert_eq!(body["regarding"]["name"], pod_name);
                assert_eq!(body["type"], "Warning");
                assert_eq!(body["reason"], "BehaviorViolation");
                assert_eq!(body["action"], action);
            })
            .echo("1", 1),
    ]
}

fn outcome_step(
    p: &Paths,
    name: &str,
    outcome: &'static str,
    reason: Option<&'static str>,
) -> Exchange {
    let v = record("shop", name, "x", ResponseAction::Tag);
    Exchange::patch(&format!("{}/{name}/status", p.violations))
        .query("fieldManager=herdwatch-operator")
        .check(move |body| {
            let s = &body["status"];
            assert_eq!(s["outcome"], outcome, "{s:#}");
            assert_eq!(s["reason"].as_str(), reason, "{s:#}");
            assert_eq!(s["decidedAt"], json!(to_time(NOW)));
        })
        .reply(200, served(&v, "8", 1))
}

fn count_steps(p: &Paths, ns: &str, check: impl FnOnce(&Value) + Send + 'static) -> Vec<Exchange> {
    let prof = profile(ns, Phase::Enforcing, ResponseAction::Kill);
    vec![
        Exchange::get(&p.profile).reply(200, served(&prof, "301", 1)),
        Exchange::patch(&format!("{}/status", p.profile))
            .check(move |body| {
                assert_eq!(body["metadata"]["resourceVersion"], "301");
                assert_eq!(
                    body["status"]["phase"], "Enforcing",
                    "the rest of the status is kept"
                );
                check(&body["status"]["violations"]);
            })
            .reply(200, served(&prof, "302", 1)),
    ]
}

/// The record most tests answer: a shell in the web pod of `ns`, asking for Kill.
fn shell(ns: &str) -> BehaviorViolation {
    record(ns, "web-shell", "uid-1", ResponseAction::Kill)
}

/// The reads before a decision: the violating pod, then its Deployment with three ready pods.
fn reads(p: &Paths, ns: &str) -> Vec<Exchange> {
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod(ns, POD_UID)),
        rs_read(ns),
    ];
    steps.extend(ready_owner(p, ns, 3));
    steps
}

/// A refused eviction of the web pod: the pod is only tagged, the record says `reason`, and
/// the profile counts the refusal.
fn refusal_steps(p: &Paths, ns: &str, reason: &'static str) -> Vec<Exchange> {
    let mut steps = tag_steps(p, ns, "Tag");
    steps.push(outcome_step(p, "web-shell", "Refused", Some(reason)));
    steps.extend(count_steps(p, ns, |c| assert_eq!(c["refused"], 1)));
    steps
}

/// What the operator answers with: its stores and its settings.
struct World {
    profiles: Vec<BehaviorProfile>,
    records: Vec<BehaviorViolation>,
    settings: Settings,
}

impl World {
    /// The profile of web/nginx in `ns` enforcing Kill, `records` stored, default settings.
    fn enforcing_kill(ns: &str, records: Vec<BehaviorViolation>) -> Self {
        World {
            profiles: vec![profile(ns, Phase::Enforcing, ResponseAction::Kill)],
            records,
            settings: Settings::default(),
        }
    }

    /// Answers `records` in order with one context (one leader) on a mock serving `steps`,
    /// then checks that every step was taken and no other. Returns the last action, and what
    /// `inspect` read from the context after the last answer.
    async fn answer_then<T>(
        self,
        steps: Vec<Exchange>,
        records: Vec<BehaviorViolation>,
        inspect: impl FnOnce(&Context) -> T,
    ) -> (Action, T) {
        let (client, verifier) = mock(steps);
        let ctx = context(client, self.profiles, self.records, self.settings);
        let mut last = None;
        for v in records {
            last = Some(violation::reconcile(v.into(), ctx.clone()).await.unwrap());
        }
        let seen = inspect(&ctx);
        drop(ctx);
        verify(verifier).await;
        (last.expect("a record to answer"), seen)
    }

    /// Answers `v` on a mock serving `steps`, then checks that every step was taken and no
    /// other.
    async fn answer(self, steps: Vec<Exchange>, v: BehaviorViolation) -> Action {
        self.answer_then(steps, vec![v], |_| ()).await.0
    }
}

/// Answers `v`, the only record stored, with the profile of web/nginx in its namespace
/// enforcing Kill, through `steps`.
async fn answer_alone(steps: Vec<Exchange>, v: BehaviorViolation) -> Action {
    let ns = v.metadata.namespace.clone().expect("a namespaced record");
    World::enforcing_kill(&ns, vec![v.clone()])
        .answer(steps, v)
        .await
}

#[tokio::test]
async fn tag_labels_annotates_posts_an_event_and_records_the_outcome() {
    let p = paths("shop");
    let v = shell("shop");
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        rs_read("shop"),
    ];
    steps.extend(tag_steps(&p, "shop", "Tag"));
    steps.push(outcome_step(&p, "web-shell", "Tagged", None));
    steps.extend(count_steps(&p, "shop", |c| {
        assert_eq!(
            (c["total"].as_u64(), c["tagged"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(c["last"]["record"], "web-shell");
    }));
    // The profile now asks only for Tag: the milder action wins over the record's Kill.
    let world = World {
        profiles: vec![profile("shop", Phase::Enforcing, ResponseAction::Tag)],
        ..World::enforcing_kill("shop", vec![v.clone()])
    };
    let (action, metrics) = world
        .answer_then(steps, vec![v], |ctx| ctx.metrics.encode().unwrap())
        .await;
    assert!(metrics.contains(r#"herdwatch_operator_responses_total{action="tagged",namespace="shop",workload="Deployment/web"} 1"#), "{metrics}");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(86_400)),
        "looked at again when it expires, or after a day at most"
    );
}

#[tokio::test]
async fn kill_evicts_a_pod_with_an_owner_through_the_eviction_api() {
    let p = paths("shop");
    let v = shell("shop");
    let mut steps = reads(&p, "shop");
    steps.extend(tag_steps(&p, "shop", "Evict"));
    steps.push(
        Exchange::post(&p.eviction)
            .check(|body| {
                assert_eq!(body["kind"], "Eviction");
                assert_eq!(body["apiVersion"], "policy/v1");
                assert_eq!(body["metadata"]["name"], POD);
                assert_eq!(
                    body["deleteOptions"]["preconditions"]["uid"], POD_UID,
                    "never the replacement of the pod"
                );
            })
            .reply(201, success()),
    );
    steps.push(outcome_step(&p, "web-shell", "Evicted", None));
    steps.extend(count_steps(&p, "shop", |c| {
        assert_eq!(c["evicted"], 1);
        assert_eq!(c["recentEvictions"], json!([to_time(NOW)]));
    }));
    answer_alone(steps, v).await;
}

#[tokio::test]
async fn kill_in_a_protected_namespace_is_refused_and_the_pod_only_tagged() {
    // "herdwatch" is the operator's own namespace in the default settings.
    let ns = "herdwatch";
    let p = paths(ns);
    let v = shell(ns);
    let mut steps = reads(&p, ns);
    steps.extend(refusal_steps(&p, ns, "ProtectedNamespace"));
    // The mock fails on any request beyond these: there is no eviction.
    answer_alone(steps, v).await;
}

#[tokio::test]
async fn a_disruption_budget_refusal_is_retried_with_backoff() {
    let p = paths("shop");
    let v = shell("shop");
    let mut steps = reads(&p, "shop");
    steps.extend(tag_steps(&p, "shop", "Evict"));
    steps.push(Exchange::post(&p.eviction).fail(429, "TooManyRequests"));
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Refused",
        Some(violation::REASON_DISRUPTION_BUDGET),
    ));
    // The reserved eviction was released: another violation may still use the budget.
    let (action, counted) = World::enforcing_kill("shop", vec![v.clone()])
        .answer_then(steps, vec![v], |ctx| {
            ctx.evictions
                .decide("profile/shop/web-nginx", "x", "y", &[], NOW, |c| {
                    (c.last_hour, false)
                })
        })
        .await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(2)),
        "first backoff step"
    );
    assert_eq!(counted, 0);
}

#[tokio::test]
async fn an_answered_violation_is_never_acted_on_again() {
    for outcome in [
        Outcome::Tagged,
        Outcome::Evicted,
        Outcome::Refused,
        Outcome::DryRun,
    ] {
        let v = answered(shell("shop"), outcome, Timestamp(NOW.0 - 30));
        answer_alone(vec![], v).await;
    }
}

#[tokio::test]
async fn the_kill_limit_counts_evictions_recorded_before_a_restart() {
    let p = paths("shop");
    // Three evictions in the last hour, by an earlier leader; one more two hours ago.
    let mut store = vec![];
    for (i, ago) in [(1, 300), (2, 1200), (3, 3000), (4, 7200)] {
        store.push(answered(
            record(
                "shop",
                &format!("old-{i}"),
                &format!("old-uid-{i}"),
                ResponseAction::Kill,
            ),
            Outcome::Evicted,
            Timestamp(NOW.0 - ago),
        ));
    }
    let v = shell("shop");
    store.push(v.clone());
    let mut steps = reads(&p, "shop");
    steps.extend(refusal_steps(&p, "shop", "KillLimitReached"));
    World::enforcing_kill("shop", store).answer(steps, v).await;
}

#[tokio::test]
async fn evicting_would_leave_too_few_ready_replicas() {
    let p = paths("shop");
    let v = shell("shop");
    // One ready pod (the violating one) is all the owner has: the others are starting,
    // shutting down or done, and the Ready pod of a ReplicaSet the Deployment does not
    // control is not its replica, whatever its labels. The Deployment's status, which says
    // 3, is not what counts.
    let mut pods = vec![pod("shop", POD_UID)];
    for (i, (rs, state)) in [
        (RS_UID, PodState::NotReady),
        (RS_UID, PodState::Terminating),
        (RS_UID, PodState::Succeeded),
        ("stray-rs-uid", PodState::Ready),
    ]
    .into_iter()
    .enumerate()
    {
        pods.push(pod_of(
            "shop",
            &format!("web-{i}"),
            &format!("uid-{i}"),
            rs,
            state,
        ));
    }
    let replicasets = vec![
        replicaset("shop", "web-7d9f8", RS_UID, DEPLOYMENT_UID),
        replicaset("shop", "stray", "stray-rs-uid", "someone-else"),
    ];
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        rs_read("shop"),
    ];
    steps.extend(owner_steps(&p, "shop", DEPLOYMENT_UID, replicasets, pods));
    steps.extend(refusal_steps(&p, "shop", "BelowMinReadyReplicas"));
    answer_alone(steps, v).await;
}

#[tokio::test]
async fn a_replaced_pod_is_not_touched() {
    let p = paths("shop");
    let v = shell("shop");
    // A StatefulSet-style replacement: same name, another UID.
    let mut steps = vec![Exchange::get(&p.pod).reply(200, pod("shop", "another-uid"))];
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Recorded",
        Some(violation::REASON_POD_GONE),
    ));
    steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["total"], 1)));
    answer_alone(steps, v).await;
}

/// A record forged by another node's agent (or with a leaked agent token): it names a pod
/// that runs on node-1 but says node-2. The operator reads the pod and its owner, rejects
/// the record, and sends no patch and no eviction (the mock fails on any request not
/// listed).
#[tokio::test]
async fn a_record_naming_another_node_is_rejected_and_nothing_is_done() {
    let mut v = shell("shop");
    v.spec.node = "node-2".into();
    answer_rejected(v, "NodeMismatch").await;
}

/// Answers `v`, expecting the reads of its pod and the pod's owner, then the outcome
/// Rejected with `reason`, and nothing done to the pod.
async fn answer_rejected(v: BehaviorViolation, reason: &'static str) {
    let p = paths("shop");
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        rs_read("shop"),
    ];
    steps.push(outcome_step(&p, "web-shell", "Rejected", Some(reason)));
    steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["total"], 1)));
    answer_alone(steps, v).await;
}

/// A record that names another workload than the pod's own (to judge minReadyReplicas on
/// a workload of the attacker's choosing, or to aim a profile's Kill at another
/// workload's pod) is rejected.
#[tokio::test]
async fn a_record_naming_another_workload_is_rejected_and_nothing_is_done() {
    let mut v = shell("shop");
    v.spec.workload.name = "payments".into();
    answer_rejected(v, "WorkloadMismatch").await;
}

#[tokio::test]
async fn dry_runs_and_learning_profiles_change_no_pod() {
    let p = paths("shop");
    let v = shell("shop");
    let dry_run = Settings {
        dry_run: true,
        ..Settings::default()
    };
    // The operator-wide dry run; and a profile still learning (mode Enforce, not yet
    // promoted), which never evicts.
    for (phase, settings) in [
        (Phase::Enforcing, dry_run),
        (Phase::Learning, Settings::default()),
    ] {
        let mut steps = reads(&p, "shop");
        steps.push(outcome_step(
            &p,
            "web-shell",
            "DryRun",
            Some(violation::REASON_WOULD_EVICT),
        ));
        steps.extend(count_steps(&p, "shop", |_| {}));
        let world = World {
            profiles: vec![profile("shop", phase, ResponseAction::Kill)],
            records: vec![v.clone()],
            settings,
        };
        world.answer(steps, v.clone()).await;
    }
}

#[tokio::test]
async fn retention_deletes_the_oldest_records_of_a_profile() {
    let p = paths("shop");
    let mut store = vec![];
    for (name, ago) in [("a", 100), ("b", 5000), ("c", 200)] {
        let mut r = answered(
            record("shop", name, &format!("uid-{name}"), ResponseAction::Tag),
            Outcome::Tagged,
            Timestamp(NOW.0 - ago),
        );
        r.spec.last_seen = to_time(Timestamp(NOW.0 - ago));
        r.spec.first_seen = r.spec.last_seen.clone();
        store.push(r);
    }
    // A record of a policy in the same namespace is counted separately.
    let mut policy = store[1].clone();
    policy.metadata.name = Some("policy-record".into());
    policy.spec.source = herdwatch_api::violation::RuleSource::Policy;
    policy.spec.policy = Some("baseline".into());
    policy.spec.profile = None;
    store.push(policy);
    let settings = Settings {
        retention: herdwatch_model::response::Retention {
            max_count: 2,
            max_age: Duration::from_secs(86_400),
        },
        ..Settings::default()
    };
    let delete = |name: &str| {
        Exchange::delete(&format!("{}/{name}", p.violations)).reply(200, api_status(200, "Success"))
    };
    let world = World {
        profiles: vec![],
        records: store.clone(),
        settings: settings.clone(),
    };
    world.answer(vec![delete("b")], store[0].clone()).await;

    // A record older than the age limit deletes itself.
    let mut old = store[0].clone();
    old.spec.last_seen = to_time(Timestamp(NOW.0 - 2 * 86_400));
    let world = World {
        profiles: vec![],
        records: vec![old.clone()],
        settings,
    };
    let action = world.answer(vec![delete("a")], old).await;
    assert_eq!(action, Action::await_change());
}

/// Another pod of `web`, its UID, and a record of a shell in it.
const POD_B: &str = "web-7d9f8-bbbbb";
const POD_B_UID: &str = "0b0b0b0b-0000-4000-8000-00000000000b";

/// The profile of web/nginx, enforcing Kill, that keeps at least two replicas ready.
fn keeps_two_ready() -> BehaviorProfile {
    let mut p = profile("shop", Phase::Enforcing, ResponseAction::Kill);
    p.spec.response.limits.min_ready_replicas = 2;
    p
}

/// A new record of a shell in `pod` (uid `pod_uid`).
fn record_of(name: &str, uid: &str, pod: &str, pod_uid: &str) -> BehaviorViolation {
    let mut v = record("shop", name, uid, ResponseAction::Kill);
    v.spec.pod = pod.into();
    v.spec.pod_uid = pod_uid.into();
    v
}

/// The record of a shell in pod B.
fn shell_in_b() -> BehaviorViolation {
    record_of("web-shell-b", "uid-b", POD_B, POD_B_UID)
}

/// The read of the ready pod `pod` (uid `pod_uid`) of the ReplicaSet `rs_uid`, that starts
/// the answer to a violation in it.
fn pod_read(pod: &str, pod_uid: &str, rs_uid: &str) -> Exchange {
    Exchange::get(&paths_of("shop", pod).pod)
        .reply(200, pod_of("shop", pod, pod_uid, rs_uid, PodState::Ready))
}

/// The eviction of `pod` (uid `pod_uid`), after the owner's reads, up to the counts.
fn eviction_steps(
    record_name: &str,
    pod: &'static str,
    pod_uid: &'static str,
    owner: Vec<Exchange>,
) -> Vec<Exchange> {
    let p = paths_of("shop", pod);
    let mut steps = vec![pod_read(pod, pod_uid, RS_UID), rs_read("shop")];
    steps.extend(owner);
    steps.extend(tag_steps_of(&p, "shop", "Evict", pod));
    steps.push(
        Exchange::post(&p.eviction)
            .check(move |body| {
                assert_eq!(body["metadata"]["name"], pod);
                assert_eq!(body["deleteOptions"]["preconditions"]["uid"], pod_uid);
            })
            .reply(201, success()),
    );
    steps.push(outcome_step(&p, record_name, "Evicted", None));
    steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["evicted"], 1)));
    steps
}

/// Pods B and C of `web`, both ready.
fn pods_b_and_c() -> [Value; 2] {
    [
        pod_of("shop", POD_B, POD_B_UID, RS_UID, PodState::Ready),
        pod_of(
            "shop",
            "web-7d9f8-ccccc",
            "pod-c-uid",
            RS_UID,
            PodState::Ready,
        ),
    ]
}

/// The first eviction: pod A of three ready pods (A, B, C) of the Deployment `web`.
fn first_eviction() -> Vec<Exchange> {
    let mut pods = vec![pod("shop", POD_UID)];
    pods.extend(pods_b_and_c());
    let owner = web_owner(&paths("shop"), "shop", pods);
    eviction_steps("web-shell", POD, POD_UID, owner)
}

/// The pods of `web` after pod A's eviction: A as `a` says (or gone), B and C ready, and A's
/// replacement as `replacement` says.
fn after_first_eviction(a: Option<PodState>, replacement: PodState) -> Vec<Exchange> {
    let mut pods: Vec<Value> = a
        .map(|state| pod_of("shop", POD, POD_UID, RS_UID, state))
        .into_iter()
        .collect();
    pods.extend(pods_b_and_c());
    pods.push(pod_of(
        "shop",
        "web-7d9f8-zzzzz",
        "replacement-uid",
        RS_UID,
        replacement,
    ));
    web_owner(&paths("shop"), "shop", pods)
}

/// Answers the shell in pod A, then `second`, in order against one context (one leader)
/// whose profile keeps two replicas ready, through `steps`.
async fn answer_a_then(second: BehaviorViolation, steps: Vec<Exchange>) {
    let records = vec![shell("shop"), second];
    let world = World {
        profiles: vec![keeps_two_ready()],
        records: records.clone(),
        settings: Settings::default(),
    };
    world.answer_then(steps, records, |_| ()).await;
}

#[tokio::test]
async fn a_second_kill_is_allowed_once_the_replacement_is_ready() {
    // Right after the first eviction, evicted pod shutting down, or already gone: either way
    // three pods are ready again once the replacement is, so B may go (leaving two).
    for a in [Some(PodState::Terminating), None] {
        let mut steps = first_eviction();
        steps.extend(eviction_steps(
            "web-shell-b",
            POD_B,
            POD_B_UID,
            after_first_eviction(a, PodState::Ready),
        ));
        answer_a_then(shell_in_b(), steps).await;
    }
}

#[tokio::test]
async fn a_second_kill_is_refused_while_the_replacement_is_not_ready() {
    // A still shows Ready in an answer read before its eviction reached the API server (two
    // violations decided at once), or shows it shutting down, or is gone; the replacement is
    // starting. Two pods are ready: evicting B would leave one, below the minimum of two.
    for a in [
        Some(PodState::StillReady),
        Some(PodState::Terminating),
        None,
    ] {
        let p = paths_of("shop", POD_B);
        let mut steps = first_eviction();
        steps.push(pod_read(POD_B, POD_B_UID, RS_UID));
        steps.push(rs_read("shop"));
        steps.extend(after_first_eviction(a, PodState::NotReady));
        steps.extend(tag_steps_of(&p, "shop", "Tag", POD_B));
        steps.push(
            Exchange::patch(&format!("{}/web-shell-b/status", p.violations))
                .check(|body| {
                    let s = &body["status"];
                    assert_eq!(s["outcome"], "Refused", "{s:#}");
                    assert_eq!(s["reason"], "BelowMinReadyReplicas", "{s:#}");
                    let message = s["message"].as_str().unwrap();
                    assert!(message.contains("has 2 ready replicas"), "{message}");
                })
                .reply(200, served(&shell_in_b(), "8", 1)),
        );
        steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["refused"], 1)));
        answer_a_then(shell_in_b(), steps).await;
    }
}

#[tokio::test]
async fn a_workload_recreated_under_the_same_name_starts_with_a_clean_count() {
    // Pod A of `web` is evicted; then `web` is deleted and created again (a new UID, a new
    // ReplicaSet, three new pods, all ready). A shell in one of the new pods may be answered
    // with an eviction at once: nothing of the old workload's eviction carries over.
    const NEW_DEPLOYMENT_UID: &str = "d0e1f2a3-0000-4000-8000-0000000000d2";
    const NEW_RS_UID: &str = "rs-uid-2";
    const POD_X: &str = "web-5c6b7-xxxxx";
    const POD_X_UID: &str = "0c0c0c0c-0000-4000-8000-00000000000c";
    let mut steps = first_eviction();
    let owner = owner_steps(
        &paths("shop"),
        "shop",
        NEW_DEPLOYMENT_UID,
        vec![
            replicaset("shop", "web-5c6b7", NEW_RS_UID, NEW_DEPLOYMENT_UID),
            // The old ReplicaSet, still being collected: not the new workload's.
            replicaset("shop", "web-7d9f8", RS_UID, DEPLOYMENT_UID),
        ],
        vec![
            pod_of("shop", POD_X, POD_X_UID, NEW_RS_UID, PodState::Ready),
            pod_of(
                "shop",
                "web-5c6b7-yyyyy",
                "pod-y-uid",
                NEW_RS_UID,
                PodState::Ready,
            ),
            pod_of(
                "shop",
                "web-5c6b7-zzzzz",
                "pod-z-uid",
                NEW_RS_UID,
                PodState::Ready,
            ),
            pod_of("shop", POD, POD_UID, RS_UID, PodState::Terminating),
        ],
    );
    let mut x = eviction_steps("web-shell-x", POD_X, POD_X_UID, owner);
    // The pod read at the start is the new workload's.
    x[0] = pod_read(POD_X, POD_X_UID, NEW_RS_UID);
    steps.extend(x);
    answer_a_then(record_of("web-shell-x", "uid-x", POD_X, POD_X_UID), steps).await;
}
