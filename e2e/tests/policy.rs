//! A ClusterBehaviorPolicy applies with or without a learned profile: one that denies `wget`
//! catches it in a namespace that never opted in to learning.

use herdwatch_api::common::ResponseAction;
use herdwatch_api::violation::{Outcome, RuleSource};
use herdwatch_e2e::fixtures::{
    deploy_with_deny_wget_policy, intrude_until_violation, wait_violation,
};
use herdwatch_e2e::{profiles, step, with_temp_ns, Env, VIOLATION_LABEL};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

#[tokio::test]
async fn cluster_policy_denying_wget_catches_it_without_a_learned_profile() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "policy", &[], |env, ns| async move {
        let (pod, policy) =
            deploy_with_deny_wget_policy(&env, &ns, "app", ResponseAction::Tag).await;
        let pod = pod.name_any();
        let policy = policy.name_any();
        let rule = format!("policy/{policy}/no-wget");

        let v = intrude_until_violation(&env, &ns, &pod, "app", "http://127.0.0.1:8080/", |v| {
            v.spec.rule == rule
        })
        .await;
        step(format!(
            "violation {}: rule {}, subject {}, argv {:?}",
            v.name_any(),
            v.spec.rule,
            v.spec.subject,
            v.spec.event.argv
        ));
        assert_eq!(v.spec.source, RuleSource::Policy);
        assert_eq!(v.spec.policy.as_deref(), Some(policy.as_str()));
        let named_wget = v.spec.subject.contains("wget")
            || v.spec.event.exe.ends_with("/wget")
            || v.spec
                .event
                .argv
                .first()
                .is_some_and(|a| a.rsplit('/').next() == Some("wget"));
        assert!(named_wget, "the record shows that wget ran: {:?}", v.spec);

        let ps = profiles(&env, &ns).await.expect("listing profiles");
        assert!(
            ps.is_empty(),
            "the namespace has no profile (it did not opt in): {:?}",
            ps.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        );

        wait_violation(
            &env,
            &ns,
            &pod,
            "the policy violation's outcome Tagged",
            |v| {
                v.spec.rule == rule
                    && v.status
                        .as_ref()
                        .is_some_and(|s| s.outcome == Outcome::Tagged)
            },
        )
        .await;
        let p = Api::<Pod>::namespaced(env.client.clone(), &ns)
            .get(&pod)
            .await
            .expect("reading the pod");
        assert!(
            p.labels().contains_key(VIOLATION_LABEL),
            "pod {pod} is tagged: {:?}",
            p.labels()
        );
    })
    .await;
}
