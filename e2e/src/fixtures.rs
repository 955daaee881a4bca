//! The objects the scenarios deploy, and the longer steps several of them share: a web
//! server Deployment learned by a hand-written BehaviorProfile, a client that sends it normal
//! traffic, and the `kubectl exec ... wget` that an intruder would type.

use std::time::Duration;

use herdwatch_api::common::{Mode, Phase, ResponseAction, ResponseLimits};
use herdwatch_api::policy::{ClusterBehaviorPolicySpec, DenyKind, PolicyRule};
use herdwatch_api::profile::{LearningConfig, ResponseConfig, TargetKind, TargetRef};
use herdwatch_api::{
    BehaviorProfile, BehaviorProfileSpec, BehaviorViolation, ClusterBehaviorPolicy,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{
    describe_violations, step, violations, wait_until, Env, OWNER_NS_LABEL, WORKLOAD_IMAGE,
};

/// Name of the learned Deployment, its Service, its container and its profile.
pub const WEB: &str = "web";
/// Port the workload's httpd listens on.
pub const WEB_PORT: u16 = 8080;
/// Name of the pod that sends normal traffic.
pub const CLIENT: &str = "client";
/// Learning settings short enough for a test: 20 s at least, nothing new for 10 s, both
/// replicas seen.
pub const MIN_DURATION: &str = "20s";
/// See [`MIN_DURATION`].
pub const STABLE_FOR: &str = "10s";
/// How long learning and promotion may take, including the agents' publishing interval
/// and the operator's merge.
pub const LEARN_TIMEOUT: Duration = Duration::from_secs(240);
/// How long an agent may take to record a violation and the operator to answer it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(90);

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("fixture matches its Kubernetes type")
}

/// A Service in front of the pods labelled `app=<name>`.
pub fn service(name: &str) -> Service {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": WEB_PORT, "targetPort": WEB_PORT}]
        }
    }))
}

/// A Deployment of the workload image's web server (`httpd -f -p 8080 -h /www`) in a
/// container named like the Deployment. The readiness probe is an HTTP GET by the kubelet:
/// an exec probe would run a process in the container that is not the workload's own.
pub fn web_deployment(name: &str, replicas: i32) -> Deployment {
    from_json(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    // busybox httpd as pid 1 ignores SIGTERM: do not wait 30 s for it.
                    "terminationGracePeriodSeconds": 2,
                    "enableServiceLinks": false,
                    "containers": [{
                        "name": name,
                        "image": WORKLOAD_IMAGE,
                        "imagePullPolicy": "Never",
                        "ports": [{"name": "http", "containerPort": WEB_PORT}],
                        "readinessProbe": {
                            "httpGet": {"path": "/", "port": WEB_PORT},
                            "periodSeconds": 2
                        }
                    }]
                }
            }
        }
    }))
}

/// A bare pod that fetches `http://<target>:8080/` every second: the workload's normal
/// traffic, from outside it.
pub fn client_pod(name: &str, target: &str) -> Pod {
    let script = format!(
        "while true; do timeout 5 wget -q -O /dev/null http://{target}:{WEB_PORT}/ || echo fetch failed; sleep 1; done"
    );
    from_json(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": name,
                "image": WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script]
            }]
        }
    }))
}

/// A hand-written profile of the `container` of Deployment `target`: enforcing after short
/// learning, answering violations with `action`.
pub fn web_profile(
    name: &str,
    target: &str,
    container: &str,
    action: ResponseAction,
) -> BehaviorProfile {
    BehaviorProfile::new(
        name,
        BehaviorProfileSpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: target.into(),
            },
            container: container.into(),
            mode: Mode::Enforce,
            learning: LearningConfig {
                min_duration: MIN_DURATION.into(),
                stable_for: STABLE_FOR.into(),
                min_replicas: 2,
                auto_promote: true,
            },
            response: ResponseConfig {
                action,
                kill_process: false,
                kill_container_init: false,
                dry_run: false,
                allow_unowned: false,
                limits: ResponseLimits {
                    max_kills_per_hour: 3,
                    min_ready_replicas: 1,
                },
            },
            ..BehaviorProfileSpec::default()
        },
    )
}

/// A ClusterBehaviorPolicy that denies `wget` in namespace `ns` only (selected by the
/// `kubernetes.io/metadata.name` label the API server puts on every namespace), answered
/// with `action`. Labelled so that the test's cleanup deletes it.
pub fn deny_wget_policy(ns: &str, action: ResponseAction) -> ClusterBehaviorPolicy {
    let mut p = ClusterBehaviorPolicy::new(
        &format!("e2e-{ns}"),
        ClusterBehaviorPolicySpec {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(
                    [("kubernetes.io/metadata.name".to_owned(), ns.to_owned())].into(),
                ),
                ..LabelSelector::default()
            }),
            rules: vec![PolicyRule {
                name: "no-wget".into(),
                deny: DenyKind::Binaries,
                binaries: Some(vec!["wget".into()]),
                action,
                ..PolicyRule::default()
            }],
            ..ClusterBehaviorPolicySpec::default()
        },
    );
    p.metadata.labels = Some([(OWNER_NS_LABEL.to_owned(), ns.to_owned())].into());
    p
}

/// Creates `obj` in `ns`, panicking with the API server's answer when refused.
pub async fn create<K>(env: &Env, ns: &str, obj: &K) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(env.client.clone(), ns);
    api.create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating {} {ns}/{}: {e}",
                K::kind(&K::DynamicType::default()),
                obj.name_any()
            )
        })
}

/// The ClusterIP of Service `name`.
pub async fn cluster_ip(env: &Env, ns: &str, name: &str) -> String {
    let svc = Api::<Service>::namespaced(env.client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading Service {ns}/{name}: {e}"));
    svc.spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .unwrap_or_else(|| panic!("Service {ns}/{name} has no ClusterIP"))
}

/// Waits until Deployment `name` has `replicas` Ready, up-to-date pods, and returns them
/// sorted by name (Running, not being deleted).
pub async fn wait_deployment_ready(env: &Env, ns: &str, name: &str, replicas: i32) -> Vec<Pod> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        &format!("Deployment {name}: {replicas} pods Ready"),
        Duration::from_secs(120),
        || {
            let (deployments, pods) = (deployments.clone(), pods.clone());
            async move {
                let d = deployments.get(name).await.map_err(|e| e.to_string())?;
                let s = d.status.unwrap_or_default();
                let ready = ready_pods(&pods, name).await?;
                let state = format!(
                    "{} ready, {} updated, {} ready pods listed",
                    s.ready_replicas.unwrap_or(0),
                    s.updated_replicas.unwrap_or(0),
                    ready.len()
                );
                if s.ready_replicas == Some(replicas)
                    && s.updated_replicas == Some(replicas)
                    && ready.len() == replicas as usize
                {
                    Ok(ready)
                } else {
                    Err(state)
                }
            }
        },
    )
    .await
}

/// The Ready pods labelled `app=<app>` that are not being deleted, sorted by name.
pub async fn ready_pods(pods: &Api<Pod>, app: &str) -> Result<Vec<Pod>, String> {
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .collect();
    list.sort_by_key(|p| p.name_any());
    Ok(list)
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until pod `name` runs.
pub async fn wait_pod_running(env: &Env, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        &format!("pod {name} Running"),
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get(name).await.map_err(|e| e.to_string())?;
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                if phase == "Running" {
                    Ok(())
                } else {
                    Err(format!("phase {phase}"))
                }
            }
        },
    )
    .await
}

/// The image digest (`sha256:...`) the pod's first container runs, from its `imageID`.
pub fn image_digest(pod: &Pod) -> String {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.image_id.clone())
        .unwrap_or_default();
    match id.rfind("sha256:") {
        Some(i) => id[i..].to_owned(),
        None => panic!(
            "pod {} reports no image digest (imageID {id:?})",
            pod.name_any()
        ),
    }
}

/// The node a pod runs on.
pub fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| panic!("pod {} is not scheduled", pod.name_any()))
}

/// One line about a profile's learning, for progress output.
pub fn describe_profile(p: &BehaviorProfile) -> String {
    let Some(s) = &p.status else {
        return "no status yet".into();
    };
    let conditions = s
        .conditions
        .iter()
        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(", ");
    let a = &p.spec.allowed;
    format!(
        "phase {:?}, revision {}, {} replicas seen, {} lost events, allowed: {} processes, {} syscalls, {} egress, {} listen, {} files; {conditions}",
        s.phase,
        s.revision,
        s.learning.replicas.count,
        s.learning.events_lost,
        a.processes.len(),
        a.syscalls.len(),
        a.network.egress.len(),
        a.network.listen.len(),
        a.files.len(),
    )
}

/// A web server Deployment of two replicas, learned and promoted to Enforcing.
pub struct LearnedApp {
    /// Its namespace.
    pub ns: String,
    /// The Service's ClusterIP (where the client sends traffic, and the intruder too).
    pub service_ip: String,
    /// The Ready replicas once the profile is Enforcing, sorted by name.
    pub pods: Vec<Pod>,
}

impl LearnedApp {
    /// Deploys [`WEB`] (profile first, so that learning sees the replicas start), sends it
    /// normal traffic from [`CLIENT`], and waits until its profile is Enforcing.
    pub async fn deploy(env: &Env, ns: &str, action: ResponseAction) -> LearnedApp {
        create(env, ns, &service(WEB)).await;
        let service_ip = cluster_ip(env, ns, WEB).await;
        create(env, ns, &web_profile(WEB, WEB, WEB, action)).await;
        step(format!(
            "BehaviorProfile {WEB}: Enforce after learning {MIN_DURATION} (stable {STABLE_FOR}, 2 replicas), response {action:?}"
        ));
        create(env, ns, &web_deployment(WEB, 2)).await;
        create(env, ns, &client_pod(CLIENT, &service_ip)).await;
        step(format!(
            "Deployment {WEB} (2 replicas of {WORKLOAD_IMAGE}) and client pod {CLIENT} (wget http://{service_ip}:{WEB_PORT}/ every second) created"
        ));
        wait_deployment_ready(env, ns, WEB, 2).await;
        wait_pod_running(env, ns, CLIENT).await;
        wait_enforcing(env, ns, WEB).await;
        let pods = ready_pods(&Api::namespaced(env.client.clone(), ns), WEB)
            .await
            .expect("listing the web pods");
        assert_eq!(pods.len(), 2, "both replicas are Ready after learning");
        LearnedApp {
            ns: ns.to_owned(),
            service_ip,
            pods,
        }
    }

    /// What an intruder types: `kubectl exec <pod> -- sh -c 'wget ...'`, fetching from the
    /// Service (the web server itself never connects anywhere).
    pub fn intrude(&self, env: &Env, pod: &str) -> String {
        intrude(
            env,
            &self.ns,
            pod,
            WEB,
            &format!("http://{}:{WEB_PORT}/", self.service_ip),
        )
    }
}

/// `kubectl exec` of a shell running `wget <url>` in a pod; returns the output.
pub fn intrude(env: &Env, ns: &str, pod: &str, container: &str, url: &str) -> String {
    let script = format!("timeout 5 wget -q -O /dev/null {url}; echo wget exit $?");
    let (code, out) = env.exec(ns, pod, container, &script);
    step(format!(
        "kubectl exec -n {ns} {pod} -c {container} -- sh -c '{script}': exit {code}: {}",
        out.trim()
    ));
    out
}

/// Waits until profile `name` is Enforcing, printing its learning progress.
pub async fn wait_enforcing(env: &Env, ns: &str, name: &str) -> BehaviorProfile {
    let api: Api<BehaviorProfile> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        &format!("BehaviorProfile {name} learned and promoted to Enforcing"),
        LEARN_TIMEOUT,
        || {
            let api = api.clone();
            async move {
                let p = api.get(name).await.map_err(|e| e.to_string())?;
                match p.status.as_ref().and_then(|s| s.phase) {
                    Some(Phase::Enforcing) => {
                        step(format!("  {name}: {}", describe_profile(&p)));
                        Ok(p)
                    }
                    _ => Err(describe_profile(&p)),
                }
            }
        },
    )
    .await
}

/// Waits for a BehaviorViolation of pod `pod` for which `done` holds (e.g. an outcome).
pub async fn wait_violation(
    env: &Env,
    ns: &str,
    pod: &str,
    what: &str,
    done: impl Fn(&BehaviorViolation) -> bool,
) -> BehaviorViolation {
    wait_until(what, RESPONSE_TIMEOUT, || {
        violation_where(env, ns, pod, &done)
    })
    .await
}

/// The first BehaviorViolation of pod `pod` for which `done` holds; otherwise what the
/// namespace's records say, for the wait's progress line.
async fn violation_where(
    env: &Env,
    ns: &str,
    pod: &str,
    done: &impl Fn(&BehaviorViolation) -> bool,
) -> Result<BehaviorViolation, String> {
    let vs = violations(env, ns).await?;
    vs.iter()
        .find(|v| v.spec.pod == pod && done(v))
        .cloned()
        .ok_or_else(|| describe_violations(&vs))
}

/// Runs [`intrude`] in `pod` every 5 seconds until a BehaviorViolation of the pod for which
/// `done` holds appears. Repeating covers the time the agents take to see a policy that was
/// just created (nothing in the API says when every agent has it).
pub async fn intrude_until_violation(
    env: &Env,
    ns: &str,
    pod: &str,
    container: &str,
    url: &str,
    done: impl Fn(&BehaviorViolation) -> bool,
) -> BehaviorViolation {
    let started = std::time::Instant::now();
    let mut last_try: Option<std::time::Instant> = None;
    wait_until(
        &format!("a BehaviorViolation of pod {pod} (wget again every 5s)"),
        RESPONSE_TIMEOUT,
        || {
            if last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                last_try = Some(std::time::Instant::now());
                step(format!("  attempt at {}s", started.elapsed().as_secs()));
                intrude(env, ns, pod, container, url);
            }
            violation_where(env, ns, pod, &done)
        },
    )
    .await
}

/// Deploys [`web_deployment`] `name` with one replica and a policy denying `wget` in `ns`;
/// returns the Ready pod.
pub async fn deploy_with_deny_wget_policy(
    env: &Env,
    ns: &str,
    name: &str,
    action: ResponseAction,
) -> (Pod, ClusterBehaviorPolicy) {
    let policy = deny_wget_policy(ns, action);
    let created = Api::<ClusterBehaviorPolicy>::all(env.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("creating ClusterBehaviorPolicy {}: {e}", policy.name_any()));
    step(format!(
        "ClusterBehaviorPolicy {}: deny Binaries [wget] in namespace {ns}, action {action:?}",
        created.name_any()
    ));
    create(env, ns, &web_deployment(name, 1)).await;
    let pods = wait_deployment_ready(env, ns, name, 1).await;
    (pods[0].clone(), created)
}

/// [`deny_wget_policy`] whose rule also kills the `wget` process (`killProcess`), which
/// the agent does in the kernel at the exec.
pub fn deny_wget_policy_killing(ns: &str, action: ResponseAction) -> ClusterBehaviorPolicy {
    let mut p = deny_wget_policy(ns, action);
    for rule in &mut p.spec.rules {
        rule.kill_process = true;
    }
    p
}

/// Creates `policy`, then deploys [`web_deployment`] `name` with one replica in `ns`;
/// returns the Ready pod and the policy as created.
pub async fn deploy_with_policy(
    env: &Env,
    ns: &str,
    name: &str,
    policy: &ClusterBehaviorPolicy,
) -> (Pod, ClusterBehaviorPolicy) {
    let created = Api::<ClusterBehaviorPolicy>::all(env.client.clone())
        .create(&PostParams::default(), policy)
        .await
        .unwrap_or_else(|e| panic!("creating ClusterBehaviorPolicy {}: {e}", policy.name_any()));
    let rules = created
        .spec
        .rules
        .iter()
        .map(|r| {
            format!(
                "{} (deny {:?} {:?}, action {:?}, killProcess {})",
                r.name,
                r.deny,
                r.binaries.as_deref().unwrap_or_default(),
                r.action,
                r.kill_process
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    step(format!(
        "ClusterBehaviorPolicy {} in namespace {ns}: {rules}",
        created.name_any()
    ));
    create(env, ns, &web_deployment(name, 1)).await;
    let pods = wait_deployment_ready(env, ns, name, 1).await;
    (pods[0].clone(), created)
}
