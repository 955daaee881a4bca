//! Profile creation against a mocked API server: opted-in namespaces only, one profile per
//! container, existing (hand-written) profiles respected, names that collide.

mod common;

use std::collections::BTreeMap;

use common::*;
use herdwatch_api::profile::{TargetKind, TargetRef};
use herdwatch_api::{BehaviorProfile, BehaviorProfileSpec};
use herdwatch_operator::args::Settings;
use herdwatch_operator::names::hashed_profile_name;
use herdwatch_operator::workload;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use serde_json::json;

const NAMESPACE: &str = "/api/v1/namespaces/shop";
const PROFILES: &str = "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorprofiles";

fn deployment(replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    containers: ["nginx", "log-shipper"]
                        .into_iter()
                        .map(|n| Container {
                            name: n.into(),
                            ..Container::default()
                        })
                        .collect(),
                    ..PodSpec::default()
                }),
                ..PodTemplateSpec::default()
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn opted_in() -> Exchange {
    Exchange::get(NAMESPACE).reply(
        200,
        partial("shop", None, json!({ "herdwatch.dev/learn": "enabled" })),
    )
}

fn hand_written(name: &str, workload: &str, container: &str) -> BehaviorProfile {
    let mut p = BehaviorProfile::new(
        name,
        BehaviorProfileSpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: workload.into(),
            },
            container: container.into(),
            ..BehaviorProfileSpec::default()
        },
    );
    p.metadata.namespace = Some("shop".into());
    p
}

fn created(name: &str, container: &'static str, min_replicas: u32) -> Exchange {
    let name = name.to_owned();
    Exchange::post(PROFILES)
        .query("fieldManager=herdwatch-operator")
        .check(move |body| {
            assert_eq!(body["metadata"]["name"], json!(name));
            assert_eq!(body["metadata"]["namespace"], "shop");
            assert_eq!(
                body["metadata"]["labels"],
                json!({ "herdwatch.dev/created-by": "operator" })
            );
            assert!(
                body["metadata"].get("ownerReferences").is_none(),
                "profiles outlive their workload (see workload.rs)"
            );
            let s = &body["spec"];
            assert_eq!(
                s["targetRef"],
                json!({ "kind": "Deployment", "name": "web" })
            );
            assert_eq!(s["container"], container);
            assert_eq!(s["mode"], "Monitor");
            assert_eq!(s["learning"]["minReplicas"], min_replicas);
            assert_eq!(s["learning"]["minDuration"], "24h");
            assert_eq!(s["response"]["action"], "Tag");
        })
        .echo("1", 1)
}

#[tokio::test]
async fn every_container_of_a_workload_in_an_opted_in_namespace_gets_a_profile() {
    let (client, verifier) = mock(vec![
        opted_in(),
        created("deployment-web-nginx", "nginx", 2),
        created("deployment-web-log-shipper", "log-shipper", 2),
    ]);
    let ctx = context(client, vec![], vec![], Settings::default());
    let action = workload::reconcile(deployment(3).into(), ctx)
        .await
        .unwrap();
    verify(verifier).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn namespaces_that_did_not_opt_in_get_nothing() {
    for labels in [json!({}), json!({ "herdwatch.dev/learn": "disabled" })] {
        let (client, verifier) = mock(vec![
            Exchange::get(NAMESPACE).reply(200, partial("shop", None, labels))
        ]);
        let ctx = context(client, vec![], vec![], Settings::default());
        workload::reconcile(deployment(3).into(), ctx)
            .await
            .unwrap();
        verify(verifier).await;
    }
}

#[tokio::test]
async fn an_existing_profile_of_a_container_is_left_alone() {
    // A hand-written profile of nginx, under a name of the user's choosing.
    let (client, verifier) = mock(vec![
        opted_in(),
        created("deployment-web-log-shipper", "log-shipper", 1),
    ]);
    let ctx = context(
        client,
        vec![hand_written("my-nginx-policy", "web", "nginx")],
        vec![],
        Settings::default(),
    );
    workload::reconcile(deployment(1).into(), ctx)
        .await
        .unwrap();
    verify(verifier).await;
}

#[tokio::test]
async fn a_readable_name_taken_by_another_workload_falls_back_to_a_hashed_one() {
    // `web-log` + `shipper` reads like `web` + `log-shipper`.
    let hashed = hashed_profile_name(TargetKind::Deployment, "web", "log-shipper");
    let (client, verifier) = mock(vec![
        opted_in(),
        // nginx: created meanwhile by an earlier reconcile not yet in the store.
        Exchange::post(PROFILES).fail(409, "AlreadyExists"),
        Exchange::get(&format!("{PROFILES}/deployment-web-nginx")).reply(
            200,
            served(
                &hand_written("deployment-web-nginx", "web", "nginx"),
                "3",
                1,
            ),
        ),
        created(&hashed, "log-shipper", 2),
    ]);
    let ctx = context(
        client,
        vec![hand_written(
            "deployment-web-log-shipper",
            "web-log",
            "shipper",
        )],
        vec![],
        Settings::default(),
    );
    workload::reconcile(deployment(2).into(), ctx)
        .await
        .unwrap();
    verify(verifier).await;
}

#[test]
fn a_labelled_namespace_maps_to_its_workloads() {
    let mut other = deployment(1);
    other.metadata.namespace = Some("elsewhere".into());
    let store = store(vec![deployment(1), other]);
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some("shop".into()),
            labels: Some(BTreeMap::from([(
                "herdwatch.dev/learn".to_owned(),
                "enabled".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    let refs = workload::workloads_in(&store, &ns);
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].namespace.as_deref(), Some("shop"));
    assert_eq!(workload::learn_selector(), "herdwatch.dev/learn=enabled");
}
