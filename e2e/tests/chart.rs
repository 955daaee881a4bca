//! The chart installs, its components become Ready, and its rendered manifests are accepted
//! by the API server as they are (`helm template | kubectl apply -f -`).

use std::time::Duration;

use herdwatch_e2e::{step, with_temp_ns, Env, HERDWATCH_NAMESPACE, OPERATOR, RELEASE};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

const CRDS: [&str; 4] = [
    "behaviorprofiles.herdwatch.dev",
    "clusterbehaviorpolicies.herdwatch.dev",
    "behaviorviolations.herdwatch.dev",
    "behaviorobservations.herdwatch.dev",
];

#[tokio::test]
async fn chart_installs_and_agent_and_operator_become_ready() {
    // Installs the chart when it is missing, then waits for every agent and both operator
    // replicas to be Ready (and panics with a dump otherwise).
    let env = Env::with_herdwatch().await;

    let status = env.helm(&["status", RELEASE, "-n", HERDWATCH_NAMESPACE]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("STATUS: deployed"),
        "helm reports release {RELEASE} deployed: {text}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for name in CRDS {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} is installed: {e}"));
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "CRD {name} is Established");
    }
    step("the four CRDs are Established");

    // Leader election: one of the two operator replicas holds the Lease. Pods of a
    // previous rollout may still be terminating after an upgrade: they do not count.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), HERDWATCH_NAMESPACE);
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator");
    let operators: Vec<String> = herdwatch_e2e::wait_until(
        "exactly two operator replicas (old rollouts gone)",
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            async move {
                let names: Vec<String> = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| format!("listing operator pods: {e}"))?
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| p.name_any())
                    .collect();
                if names.len() == 2 {
                    Ok(names)
                } else {
                    Err(format!("operator pods: {names:?}"))
                }
            }
        },
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), HERDWATCH_NAMESPACE);
    let holder = herdwatch_e2e::wait_until(
        "an operator replica to hold the leader Lease",
        Duration::from_secs(60),
        || {
            let leases = leases.clone();
            let operators = operators.clone();
            async move {
                let lease = leases.get(OPERATOR).await.map_err(|e| e.to_string())?;
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                if operators.contains(&holder) {
                    Ok(holder)
                } else {
                    Err(format!("holder {holder:?}, operator pods {operators:?}"))
                }
            }
        },
    )
    .await;
    step(format!("leader: {holder}"));
}

#[tokio::test]
async fn helm_template_piped_to_kubectl_apply_is_accepted_by_the_api_server() {
    let env = Env::connect().await;
    with_temp_ns(&env, "template", &[], |env, ns| async move {
        // Another release name in another namespace: what a user without Helm on the
        // cluster would apply. The server validates and admits every object without
        // storing it (--dry-run=server), so the installed release is not disturbed.
        let release = "tmpl";
        let rendered = env.helm(&[
            "template",
            release,
            "charts/herdwatch",
            "-n",
            &ns,
            "--include-crds",
        ]);
        assert!(
            rendered.status.success(),
            "helm template renders: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        step(format!(
            "helm template {release}: {} bytes of manifests",
            rendered.stdout.len()
        ));
        let applied = env.run_tool(
            "kubectl",
            &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
            Some(&rendered.stdout),
        );
        let out = String::from_utf8_lossy(&applied.stdout).into_owned();
        let err = String::from_utf8_lossy(&applied.stderr).into_owned();
        step(format!("kubectl apply --dry-run=server:\n{out}{err}"));
        assert!(
            applied.status.success(),
            "kubectl apply of the rendered chart succeeds: {err}"
        );
        for object in [
            format!("daemonset.apps/{release}-agent created (server dry run)"),
            format!("deployment.apps/{release}-operator created (server dry run)"),
            format!(
                "clusterrole.rbac.authorization.k8s.io/{release}-agent created (server dry run)"
            ),
            format!("service/{release}-agent-metrics created (server dry run)"),
        ] {
            assert!(
                out.contains(&object),
                "the server admitted {object}:\n{out}"
            );
        }
        for crd in CRDS {
            assert!(
                out.contains(&format!(
                    "customresourcedefinition.apiextensions.k8s.io/{crd}"
                )),
                "the rendered chart carries CRD {crd}:\n{out}"
            );
        }
    })
    .await;
}
