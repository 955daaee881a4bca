//! herdwatch's own tokens are worth no more than their job (the chart's
//! ValidatingAdmissionPolicies): an agent's token, bound to its pod and so to its node,
//! cannot write a record that names another node, and the operator's token cannot change
//! a pod beyond herdwatch's own labels and annotations.

use herdwatch_api::BehaviorViolation;
use herdwatch_e2e::fixtures::{create, node_of, wait_pod_running};
use herdwatch_e2e::{step, with_temp_ns, Env, AGENT, HERDWATCH_NAMESPACE, OPERATOR};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// A token of `service_account` (in herdwatch's namespace), bound to `pod` when given, as
/// the kubelet would project it into that pod.
fn token(env: &Env, service_account: &str, pod: Option<&str>) -> String {
    let mut args = vec![
        "create",
        "token",
        service_account,
        "-n",
        HERDWATCH_NAMESPACE,
        "--duration",
        "10m",
    ];
    if let Some(pod) = pod {
        args.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
    }
    let out = env.kubectl(&args);
    assert!(
        out.status.success(),
        "kubectl create token {service_account}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a token is text")
        .trim()
        .to_owned()
}

/// A client of the same API server that authenticates with `token` only (no client
/// certificate, which would make it the admin).
async fn client_with_token(env: &Env, token: String) -> Client {
    let kc = Kubeconfig::read_from(&env.kubeconfig).expect("reading the kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is valid");
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    Client::try_from(config).expect("building a token client")
}

/// The name of the first Running pod of herdwatch's `component`.
async fn herdwatch_pod(env: &Env, component: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), HERDWATCH_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}")))
        .await
        .expect("listing herdwatch's pods");
    list.items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .unwrap_or_else(|| panic!("no Running {component} pod in {HERDWATCH_NAMESPACE}"))
}

/// A violation record as an agent of `node` would write it, about `pod`.
fn record(ns: &str, name: &str, node: &str, pod: &Pod) -> BehaviorViolation {
    // Now, so that the operator's retention keeps it while the test runs.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    serde_json::from_value(json!({
        "apiVersion": "herdwatch.dev/v1alpha1",
        "kind": "BehaviorViolation",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "source": "Policy",
            "policy": "admission-test",
            "rule": "policy/admission-test/deny-wget",
            "subject": "/bin/wget",
            "node": node,
            "pod": pod.metadata.name.clone().unwrap_or_default(),
            "podUid": pod.metadata.uid.clone().unwrap_or_default(),
            "container": "app",
            "imageDigest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "workload": {"kind": "Pod", "name": pod.metadata.name.clone().unwrap_or_default()},
            "event": {"kind": "exec", "exe": "/bin/wget", "uid": 0},
            "count": 1,
            "firstSeen": now,
            "lastSeen": now,
            "action": "None"
        }
    }))
    .expect("the test's record matches the CRD types")
}

/// What the API server said to a refused request, panicking if it was allowed.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Ok(obj) => panic!("{what} was allowed: {obj:?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what} is Forbidden: {status:?}");
            step(format!("{what}: refused: {}", status.message));
            status.message
        }
        Err(e) => panic!("{what} failed for another reason: {e}"),
    }
}

#[tokio::test]
async fn an_agent_token_writes_only_records_of_its_own_node() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "admission", &[], |env, ns| async move {
        let agent = herdwatch_pod(&env, "agent").await;
        let agent_pod = agent.metadata.name.clone().expect("pods have names");
        let node = node_of(&agent);
        let subject = create(&env, &ns, &sleeper("subject")).await;

        let bound = client_with_token(&env, token(&env, AGENT, Some(&agent_pod))).await;
        let as_agent: Api<BehaviorViolation> = Api::namespaced(bound, &ns);
        let pp = PostParams::default();

        // Another node's record: the forgery a compromised node would try.
        let msg = forbidden(
            as_agent
                .create(&pp, &record(&ns, "forged", "another-node", &subject))
                .await,
            &format!("an agent token bound to node {node} creating a record of another-node"),
        );
        assert!(
            msg.contains(&format!("this token is bound to node {node}"))
                && msg.contains("the record names node another-node"),
            "the refusal names both nodes: {msg}"
        );

        // Its own node's record goes through: the refusal above is about the node.
        as_agent
            .create(&pp, &record(&ns, "own", &node, &subject))
            .await
            .unwrap_or_else(|e| panic!("the agent's own-node record is allowed: {e}"));
        step(format!("a record of the token's own node {node}: created"));

        // Nor can it move its own record to another node afterwards.
        let moved = as_agent
            .patch(
                "own",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"node": "another-node"}})),
            )
            .await;
        match moved {
            Ok(v) => panic!(
                "the agent moved its record to another node: {:?}",
                v.spec.node
            ),
            Err(kube::Error::Api(status)) => {
                assert!(
                    status.code == 403 || status.code == 422,
                    "moving a record is refused: {status:?}"
                );
                step(format!(
                    "moving the record to another node: refused: {}",
                    status.message
                ));
            }
            Err(e) => panic!("patching the record failed for another reason: {e}"),
        }

        // Not even the cluster admin can move evidence: a record's identity is immutable.
        let as_admin: Api<BehaviorViolation> = Api::namespaced(env.client.clone(), &ns);
        match as_admin
            .patch(
                "own",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"pod": "another-pod"}})),
            )
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status.message.contains("is immutable"),
                    "{}",
                    status.message
                );
                step(format!(
                    "the admin renaming the record's pod: refused: {}",
                    status.message
                ));
            }
            other => panic!("changing a record's pod was not refused as invalid: {other:?}"),
        }

        // A token of the agent's account not bound to a pod names no node: refused.
        let unbound = client_with_token(&env, token(&env, AGENT, None)).await;
        let msg = forbidden(
            Api::<BehaviorViolation>::namespaced(unbound, &ns)
                .create(&pp, &record(&ns, "unbound", &node, &subject))
                .await,
            "an agent token bound to no pod creating a record",
        );
        assert!(msg.contains("names no node"), "the refusal says why: {msg}");
    })
    .await;
}

#[tokio::test]
async fn the_operator_token_changes_only_herdwatch_labels_of_pods() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "admission-operator", &[], |env, ns| async move {
        create(&env, &ns, &sleeper("subject")).await;
        wait_pod_running(&env, &ns, "subject").await;
        let operator = herdwatch_pod(&env, "operator").await;
        let operator_pod = operator.metadata.name.clone().expect("pods have names");
        let client = client_with_token(&env, token(&env, OPERATOR, Some(&operator_pod))).await;
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let pp = PatchParams::default();

        // What the operator does when it tags a pod.
        pods.patch(
            "subject",
            &pp,
            &Patch::Merge(json!({"metadata": {
                "labels": {"herdwatch.dev/violation": "admission-test"},
                "annotations": {"herdwatch.dev/violation-summary": "test"}
            }})),
        )
        .await
        .unwrap_or_else(|e| panic!("the operator may tag a pod: {e}"));
        step("the operator's token tags a pod with herdwatch.dev/ labels: allowed");

        let msg = forbidden(
            pods.patch(
                "subject",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"app": "hijacked"}}})),
            )
            .await,
            "the operator's token changing a pod's app label",
        );
        assert!(msg.contains("only herdwatch.dev/ labels"), "{msg}");

        let msg = forbidden(
            pods.patch(
                "subject",
                &pp,
                // Strategic: only the image changes, as an intruder would want.
                &Patch::Strategic(json!({"spec": {"containers": [
                    {"name": "app", "image": "herdwatch-e2e/shop:dev"}
                ]}})),
            )
            .await,
            "the operator's token changing a pod's image",
        );
        assert!(msg.contains("may not change a pod's spec"), "{msg}");
    })
    .await;
}

/// A pod that only sleeps, in the e2e workload image.
fn sleeper(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{
                "name": "app",
                "image": herdwatch_e2e::WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]
            }],
            "terminationGracePeriodSeconds": 1
        }
    }))
    .expect("a valid pod")
}
