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
use herdwatch_operator::violation;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

const POD: &str = "web-7d9f8-abcde";
const POD_UID: &str = "4c1e6a2b-7f00-4d2a-9d8e-0a1b2c3d4e5f";
const PROFILE: &str = "web-nginx";

fn paths(ns: &str) -> Paths {
    let hw = format!("/apis/herdwatch.dev/v1alpha1/namespaces/{ns}");
    Paths {
        pod: format!("/api/v1/namespaces/{ns}/pods/{POD}"),
        eviction: format!("/api/v1/namespaces/{ns}/pods/{POD}/eviction"),
        events: format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        deployment: format!("/apis/apps/v1/namespaces/{ns}/deployments/web"),
        violations: format!("{hw}/behaviorviolations"),
        profile: format!("{hw}/behaviorprofiles/{PROFILE}"),
    }
}

struct Paths {
    pod: String,
    eviction: String,
    events: String,
    deployment: String,
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
    let p = Pod {
        metadata: ObjectMeta {
            name: Some(POD.into()),
            namespace: Some(ns.into()),
            uid: Some(uid.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-7d9f8".into(),
                uid: "rs-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    let mut v = serde_json::to_value(p).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Pod");
    v
}

fn deployment(ns: &str, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "selector": {}, "template": {} },
        "status": { "replicas": 3, "readyReplicas": ready },
    })
}

fn success() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 })
}

fn tag_steps(p: &Paths, ns: &str, action: &'static str) -> Vec<Exchange> {
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
                assert_eq!(body["regarding"]["name"], POD);
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

#[tokio::test]
async fn tag_labels_annotates_posts_an_event_and_records_the_outcome() {
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![Exchange::get(&p.pod).reply(200, pod("shop", POD_UID))];
    steps.extend(tag_steps(&p, "shop", "Tag"));
    steps.push(outcome_step(&p, "web-shell", "Tagged", None));
    steps.extend(count_steps(&p, "shop", |c| {
        assert_eq!(
            (c["total"].as_u64(), c["tagged"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(c["last"]["record"], "web-shell");
    }));
    let (client, verifier) = mock(steps);
    // The profile now asks only for Tag: the milder action wins over the record's Kill.
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Tag)],
        vec![v.clone()],
        Settings::default(),
    );
    let action = violation::reconcile(v.into(), ctx.clone()).await.unwrap();
    let metrics = ctx.metrics.encode().unwrap();
    drop(ctx);
    verify(verifier).await;
    assert!(metrics.contains(r#"herdwatch_violations_total{action="tagged",namespace="shop",rule="profile/processes",workload="Deployment/web"} 1"#), "{metrics}");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(86_400)),
        "looked at again when it expires, or after a day at most"
    );
}

#[tokio::test]
async fn kill_evicts_a_pod_with_an_owner_through_the_eviction_api() {
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 3)),
    ];
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
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    verify(verifier).await;
}

#[tokio::test]
async fn kill_in_a_protected_namespace_is_refused_and_the_pod_only_tagged() {
    // "herdwatch" is the operator's own namespace in the default settings.
    let ns = "herdwatch";
    let p = paths(ns);
    let v = record(ns, "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod(ns, POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment(ns, 3)),
    ];
    steps.extend(tag_steps(&p, ns, "Tag"));
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Refused",
        Some("ProtectedNamespace"),
    ));
    steps.extend(count_steps(&p, ns, |c| assert_eq!(c["refused"], 1)));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile(ns, Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    // The verifier fails on any request beyond these: there is no eviction.
    verify(verifier).await;
}

#[tokio::test]
async fn a_disruption_budget_refusal_is_retried_with_backoff() {
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 3)),
    ];
    steps.extend(tag_steps(&p, "shop", "Evict"));
    steps.push(Exchange::post(&p.eviction).fail(429, "TooManyRequests"));
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Refused",
        Some(violation::REASON_DISRUPTION_BUDGET),
    ));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    let action = violation::reconcile(v.into(), ctx.clone()).await.unwrap();
    // The reserved eviction was released: another violation may still use the budget.
    let counted = ctx
        .evictions
        .decide("profile/shop/web-nginx", "x", "y", &[], NOW, |c| {
            (c.last_hour, false)
        });
    drop(ctx);
    verify(verifier).await;
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
        let v = answered(
            record("shop", "web-shell", "uid-1", ResponseAction::Kill),
            outcome,
            Timestamp(NOW.0 - 30),
        );
        let (client, verifier) = mock(vec![]);
        let ctx = context(
            client,
            vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
            vec![v.clone()],
            Settings::default(),
        );
        violation::reconcile(v.into(), ctx).await.unwrap();
        verify(verifier).await;
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
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    store.push(v.clone());
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 3)),
    ];
    steps.extend(tag_steps(&p, "shop", "Tag"));
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Refused",
        Some("KillLimitReached"),
    ));
    steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["refused"], 1)));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        store,
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    verify(verifier).await;
}

#[tokio::test]
async fn evicting_would_leave_too_few_ready_replicas() {
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 1)),
    ];
    steps.extend(tag_steps(&p, "shop", "Tag"));
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Refused",
        Some("BelowMinReadyReplicas"),
    ));
    steps.extend(count_steps(&p, "shop", |_| {}));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    verify(verifier).await;
}

#[tokio::test]
async fn a_replaced_pod_is_not_touched() {
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    // A StatefulSet-style replacement: same name, another UID.
    let mut steps = vec![Exchange::get(&p.pod).reply(200, pod("shop", "another-uid"))];
    steps.push(outcome_step(
        &p,
        "web-shell",
        "Recorded",
        Some(violation::REASON_POD_GONE),
    ));
    steps.extend(count_steps(&p, "shop", |c| assert_eq!(c["total"], 1)));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    verify(verifier).await;
}

#[tokio::test]
async fn dry_runs_and_learning_profiles_change_no_pod() {
    // The operator-wide dry run.
    let p = paths("shop");
    let v = record("shop", "web-shell", "uid-1", ResponseAction::Kill);
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 3)),
        outcome_step(
            &p,
            "web-shell",
            "DryRun",
            Some(violation::REASON_WOULD_EVICT),
        ),
    ];
    steps.extend(count_steps(&p, "shop", |_| {}));
    let (client, verifier) = mock(steps);
    let settings = Settings {
        dry_run: true,
        ..Settings::default()
    };
    let ctx = context(
        client,
        vec![profile("shop", Phase::Enforcing, ResponseAction::Kill)],
        vec![v.clone()],
        settings,
    );
    violation::reconcile(v.clone().into(), ctx).await.unwrap();
    verify(verifier).await;

    // A profile still learning (mode Enforce, not yet promoted) never evicts.
    let mut steps = vec![
        Exchange::get(&p.pod).reply(200, pod("shop", POD_UID)),
        Exchange::get(&p.deployment).reply(200, deployment("shop", 3)),
        outcome_step(
            &p,
            "web-shell",
            "DryRun",
            Some(violation::REASON_WOULD_EVICT),
        ),
    ];
    steps.extend(count_steps(&p, "shop", |_| {}));
    let (client, verifier) = mock(steps);
    let ctx = context(
        client,
        vec![profile("shop", Phase::Learning, ResponseAction::Kill)],
        vec![v.clone()],
        Settings::default(),
    );
    violation::reconcile(v.into(), ctx).await.unwrap();
    verify(verifier).await;
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
    let (client, verifier) = mock(vec![
        Exchange::delete(&format!("{}/b", p.violations)).reply(200, api_status(200, "Success"))
    ]);
    let settings = Settings {
        retention: herdwatch_model::response::Retention {
            max_count: 2,
            max_age: Duration::from_secs(86_400),
        },
        ..Settings::default()
    };
    let ctx = context(client, vec![], store.clone(), settings.clone());
    violation::reconcile(store[0].clone().into(), ctx)
        .await
        .unwrap();
    verify(verifier).await;

    // A record older than the age limit deletes itself.
    let mut old = store[0].clone();
    old.spec.last_seen = to_time(Timestamp(NOW.0 - 2 * 86_400));
    let (client, verifier) = mock(vec![
        Exchange::delete(&format!("{}/a", p.violations)).reply(200, api_status(200, "Success"))
    ]);
    let ctx = context(client, vec![], vec![old.clone()], settings);
    let action = violation::reconcile(old.into(), ctx).await.unwrap();
    verify(verifier).await;
    assert_eq!(action, Action::await_change());
}
