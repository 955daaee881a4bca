//! The headline story on a real cluster: a Deployment of two replicas in an opted-in
//! namespace is learned and promoted by itself; normal traffic is no violation; an intruder's
//! `kubectl exec ... wget` is, and is answered by tagging the pod or by evicting it, leaving a
//! BehaviorViolation that outlives the pod.

use std::time::Duration;

use herdwatch_api::common::{Phase, ResponseAction};
use herdwatch_api::violation::{Outcome, RuleSource};
use herdwatch_api::{BehaviorProfile, BehaviorViolation};
use herdwatch_e2e::fixtures::{
    image_digest, node_of, ready_pods, wait_violation, LearnedApp, WEB, WEB_PORT,
};
use herdwatch_e2e::{
    describe_violations, step, violations, wait_until, with_temp_ns, Env, LEARN_LABEL,
    REPORTING_CONTROLLER, VIOLATION_ANNOTATION, VIOLATION_LABEL,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

const OPTED_IN: &[(&str, &str)] = &[(LEARN_LABEL, "enabled")];

/// How long normal traffic runs against the promoted profile before the test looks for
/// violations.
const QUIET: Duration = Duration::from_secs(20);

#[tokio::test]
async fn deployment_is_learned_promoted_and_normal_traffic_raises_no_violation() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "learn", OPTED_IN, |env, ns| async move {
        LearnedApp::deploy(&env, &ns, ResponseAction::Tag).await;
        let profile = Api::<BehaviorProfile>::namespaced(env.client.clone(), &ns)
            .get(WEB)
            .await
            .expect("reading the profile");
        let status = profile.status.clone().expect("a promoted profile has a status");
        assert_eq!(status.phase, Some(Phase::Enforcing));
        assert!(
            status.learning.replicas.count >= 2,
            "learning saw both replicas: {:?}",
            status.learning
        );
        let allowed = &profile.spec.allowed;
        // The agent records the program as executed: the httpd applet's path, or busybox
        // itself where the exec resolved the link.
        assert!(
            allowed
                .processes
                .iter()
                .any(|p| p.exe.ends_with("/httpd") || p.exe.ends_with("/busybox")),
            "the web server's executable (busybox httpd) was learned: {:?}",
            allowed.processes
        );
        assert!(
            allowed.network.listen.iter().any(|l| l.port == WEB_PORT),
            "its listening port {WEB_PORT} was learned: {:?}",
            allowed.network.listen
        );

        step(format!(
            "normal traffic (client fetching every second, kubelet probes) for {}s against the Enforcing profile",
            QUIET.as_secs()
        ));
        tokio::time::sleep(QUIET).await;
        let vs = violations(&env, &ns).await.expect("listing violations");
        assert!(vs.is_empty(), "normal traffic raised violations: {}", describe_violations(&vs));
        let profile = Api::<BehaviorProfile>::namespaced(env.client.clone(), &ns)
            .get(WEB)
            .await
            .expect("reading the profile");
        let counted = profile.status.map(|s| s.violations.total).unwrap_or(0);
        assert_eq!(counted, 0, "the profile counts no violation");
        let pods = ready_pods(&Api::namespaced(env.client.clone(), &ns), WEB)
            .await
            .expect("listing pods");
        for pod in &pods {
            assert!(
                !pod.labels().contains_key(VIOLATION_LABEL),
                "pod {} is not tagged",
                pod.name_any()
            );
        }
        step("no violation, no tag");
    })
    .await;
}

#[tokio::test]
async fn exec_wget_is_a_violation_and_tag_labels_annotates_and_posts_an_event() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "tag", OPTED_IN, |env, ns| async move {
        let app = LearnedApp::deploy(&env, &ns, ResponseAction::Tag).await;
        let target = app.pods[0].name_any();
        let bystander = app.pods[1].name_any();
        app.intrude(&env, &target);

        let v = wait_violation(
            &env,
            &ns,
            &target,
            &format!("a BehaviorViolation of pod {target}"),
            |_| true,
        )
        .await;
        step(format!(
            "violation: {}",
            describe_violations(std::slice::from_ref(&v))
        ));
        assert_eq!(v.spec.source, RuleSource::Profile);
        assert_eq!(v.spec.profile.as_deref(), Some(WEB));
        assert_eq!(v.spec.container, WEB);
        assert_eq!(v.spec.action, ResponseAction::Tag);

        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
        let tagged = wait_until(
            &format!(
                "pod {target} labelled {VIOLATION_LABEL} and annotated {VIOLATION_ANNOTATION}"
            ),
            Duration::from_secs(60),
            || {
                let pods = pods.clone();
                let target = target.clone();
                async move {
                    let p = pods.get(&target).await.map_err(|e| e.to_string())?;
                    let label = p.labels().get(VIOLATION_LABEL).cloned();
                    let note = p.annotations().get(VIOLATION_ANNOTATION).cloned();
                    match (&label, &note) {
                        (Some(_), Some(_)) => Ok(p),
                        _ => Err(format!("label {label:?}, annotation {note:?}")),
                    }
                }
            },
        )
        .await;
        step(format!(
            "pod {target}: {VIOLATION_LABEL}={}, {VIOLATION_ANNOTATION}={:?}",
            tagged.labels()[VIOLATION_LABEL],
            tagged.annotations()[VIOLATION_ANNOTATION]
        ));

        let events: Api<Event> = Api::namespaced(env.client.clone(), &ns);
        let event = wait_until(
            &format!("an Event from {REPORTING_CONTROLLER} on pod {target}"),
            Duration::from_secs(60),
            || {
                let events = events.clone();
                let target = target.clone();
                async move {
                    let list = events
                        .list(
                            &ListParams::default().fields(&format!("involvedObject.name={target}")),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let seen: Vec<String> = list
                        .items
                        .iter()
                        .map(|e| format!("{:?}/{:?}", e.reporting_component, e.reason))
                        .collect();
                    list.items
                        .into_iter()
                        .find(|e| e.reporting_component.as_deref() == Some(REPORTING_CONTROLLER))
                        .ok_or_else(|| format!("events on the pod: {seen:?}"))
                }
            },
        )
        .await;
        step(format!(
            "Event on {target}: {} {}: {}",
            event.type_.as_deref().unwrap_or(""),
            event.reason.as_deref().unwrap_or(""),
            event.message.as_deref().unwrap_or("")
        ));

        let v = wait_violation(&env, &ns, &target, "the violation's outcome Tagged", |v| {
            v.status
                .as_ref()
                .is_some_and(|s| s.outcome == Outcome::Tagged)
        })
        .await;
        step(format!("outcome: {:?}", v.status.map(|s| s.outcome)));

        // Tagging is not eviction, and only the pod that misbehaved is tagged.
        let p = pods
            .get(&target)
            .await
            .expect("the tagged pod is still there");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "the tagged pod is not being deleted"
        );
        let b = pods
            .get(&bystander)
            .await
            .expect("reading the other replica");
        assert!(
            !b.labels().contains_key(VIOLATION_LABEL),
            "the other replica {bystander} is not tagged"
        );
    })
    .await;
}

#[tokio::test]
async fn exec_wget_with_kill_evicts_the_pod_and_the_record_outlives_it() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "kill", OPTED_IN, |env, ns| async move {
        let app = LearnedApp::deploy(&env, &ns, ResponseAction::Kill).await;
        let victim = app.pods[0].clone();
        let target = victim.name_any();
        let uid = victim.uid().expect("pods have a uid");
        let digest = image_digest(&victim);
        let node = node_of(&victim);
        app.intrude(&env, &target);

        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
        wait_until(
            &format!("pod {target} evicted and gone"),
            Duration::from_secs(120),
            || {
                let pods = pods.clone();
                let (target, uid) = (target.clone(), uid.clone());
                async move {
                    match pods.get_opt(&target).await.map_err(|e| e.to_string())? {
                        None => Ok(()),
                        Some(p) if p.uid().as_deref() != Some(uid.as_str()) => Ok(()),
                        Some(p) => Err(format!(
                            "still there (phase {:?}, deleting: {})",
                            p.status.and_then(|s| s.phase),
                            p.metadata.deletion_timestamp.is_some()
                        )),
                    }
                }
            },
        )
        .await;

        let replicas = wait_until(
            "a replacement replica Ready (2 Ready again)",
            Duration::from_secs(120),
            || {
                let pods = pods.clone();
                let target = target.clone();
                async move {
                    let ready = ready_pods(&pods, WEB).await?;
                    let names: Vec<String> = ready.iter().map(|p| p.name_any()).collect();
                    if ready.len() == 2 && !names.contains(&target) {
                        Ok(names)
                    } else {
                        Err(format!("ready: {names:?}"))
                    }
                }
            },
        )
        .await;
        step(format!("replicas now: {replicas:?}"));

        let v = wait_violation(&env, &ns, &target, "the violation's outcome Evicted", |v| {
            v.status
                .as_ref()
                .is_some_and(|s| s.outcome == Outcome::Evicted)
        })
        .await;

        // The record is read again now that the pod is gone: it is the forensic evidence.
        let v: BehaviorViolation = Api::namespaced(env.client.clone(), &ns)
            .get(&v.name_any())
            .await
            .unwrap_or_else(|e| panic!("the BehaviorViolation outlives pod {target}: {e}"));
        step(format!(
            "BehaviorViolation {} after the pod is gone:\n{}",
            v.name_any(),
            serde_json::to_string_pretty(&v.spec).expect("serialising the spec")
        ));
        assert_eq!(v.spec.pod, target);
        assert_eq!(v.spec.pod_uid, uid, "it names the evicted pod by uid");
        assert_eq!(v.spec.node, node);
        assert_eq!(v.spec.container, WEB);
        assert_eq!(
            v.spec.image_digest, digest,
            "it keeps the image digest the pod ran"
        );
        assert!(
            !v.spec.event.exe.is_empty(),
            "it keeps the offending executable"
        );
        assert!(
            !v.spec.ancestry.is_empty(),
            "it keeps the process ancestry of the offending process"
        );
        let owners = v.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners.iter().all(|o| o.kind != "Pod"),
            "the record is not owned by the pod (it would be garbage-collected with it): {owners:?}"
        );
        let all = violations(&env, &ns).await.expect("listing violations");
        step(format!("violations in {ns}: {}", describe_violations(&all)));
    })
    .await;
}
