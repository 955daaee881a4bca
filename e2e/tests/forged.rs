//! A BehaviorViolation is not believed: the operator takes the pod, its node and its owner
//! from the API server, so a record that names a real pod but another node (what a
//! compromised node's agent, or its leaked token, could write) evicts nothing and tags
//! nothing. (That a record's identity cannot be rewritten is in `admission.rs`.)

use herdwatch_api::common::ResponseAction;
use herdwatch_api::violation::{
    BehaviorViolationSpec, EventKind, Outcome, RuleSource, ViolationEvent, WorkloadRef,
};
use herdwatch_api::BehaviorViolation;
use herdwatch_e2e::fixtures::{
    create, deploy_with_deny_wget_policy, image_digest, node_of, wait_violation,
};
use herdwatch_e2e::{step, with_temp_ns, Env, VIOLATION_LABEL};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};

/// The node a forged record names; no node of the cluster is called that.
const FORGED_NODE: &str = "forged-node";

/// A record of `wget` run in `pod` (a pod of Deployment `app`, container `app`), breaking the
/// rule `no-wget` of `policy`, asking for Kill, and naming `node`.
fn record(name: &str, pod: &Pod, policy: &str, node: &str) -> BehaviorViolation {
    let now = Time(Timestamp::now());
    BehaviorViolation::new(
        name,
        BehaviorViolationSpec {
            source: RuleSource::Policy,
            profile: None,
            policy: Some(policy.into()),
            rule: format!("policy/{policy}/no-wget"),
            subject: "wget".into(),
            node: node.into(),
            pod: pod.name_any(),
            pod_uid: pod.uid().expect("a pod read from the API has a UID"),
            container: "app".into(),
            image_digest: image_digest(pod),
            workload: WorkloadRef {
                kind: "Deployment".into(),
                name: "app".into(),
            },
            event: ViolationEvent {
                kind: EventKind::Exec,
                exe: "/bin/wget".into(),
                argv: vec!["wget".into(), "http://127.0.0.1:8080/".into()],
                uid: 0,
                ..ViolationEvent::default()
            },
            ancestry: vec![],
            count: 1,
            first_seen: now.clone(),
            last_seen: now,
            action: ResponseAction::Kill,
            process_killed: false,
            process_killed_by: None,
            process_kill_error: None,
        },
    )
}

#[tokio::test]
async fn forged_record_evicts_nothing() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "forged", &[], |env, ns| async move {
        // A real pod of a real Deployment, under a policy that answers with Kill.
        let (pod, policy) =
            deploy_with_deny_wget_policy(&env, &ns, "app", ResponseAction::Kill).await;
        let (name, uid) = (pod.name_any(), pod.uid().expect("a UID"));
        step(format!(
            "pod {name} (uid {uid}) runs on node {}",
            node_of(&pod)
        ));

        // Written as cluster admin, as a node's agent would write it, but naming a node the
        // pod does not run on.
        let forged = record("forged", &pod, &policy.name_any(), FORGED_NODE);
        create(&env, &ns, &forged).await;
        step(format!(
            "BehaviorViolation forged: pod {name}, node {FORGED_NODE}, action Kill"
        ));

        let v = wait_violation(&env, &ns, &name, "the forged record Rejected", |v| {
            v.status
                .as_ref()
                .is_some_and(|s| s.outcome != Outcome::Pending)
        })
        .await;
        let status = v.status.clone().unwrap_or_default();
        step(format!(
            "outcome {:?}, reason {:?}: {}",
            status.outcome,
            status.reason,
            status.message.as_deref().unwrap_or_default()
        ));
        assert_eq!(status.outcome, Outcome::Rejected, "{status:?}");
        assert_eq!(status.reason.as_deref(), Some("NodeMismatch"), "{status:?}");
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains(FORGED_NODE) && message.contains(&node_of(&pod)),
            "the message names both nodes: {message}"
        );

        let now = Api::<Pod>::namespaced(env.client.clone(), &ns)
            .get_opt(&name)
            .await
            .unwrap_or_else(|e| panic!("reading pod {name}: {e}"))
            .unwrap_or_else(|| panic!("pod {name} is gone: the forged record evicted it"));
        assert_eq!(now.uid().as_deref(), Some(uid.as_str()), "the same pod");
        assert!(
            now.metadata.deletion_timestamp.is_none(),
            "pod {name} is not being deleted"
        );
        assert!(
            !now.labels().contains_key(VIOLATION_LABEL),
            "pod {name} carries no herdwatch tag: {:?}",
            now.labels()
        );
    })
    .await;
}
