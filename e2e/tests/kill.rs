//! `killProcess` on a real node: a ClusterBehaviorPolicy that denies `wget` and kills it.
//! The agent writes the policy's names into the kernel, and the exec tracepoint kills
//! busybox's `wget` (run as `/proc/self/exe` named `wget`) before it runs: the shell sees
//! SIGKILL (137), nothing is fetched, the record says the kernel did it, and the agent
//! counts the kill as `killed_in_kernel`.

use std::process::Command;
use std::time::{Duration, Instant};

use herdwatch_api::common::ResponseAction;
use herdwatch_api::violation::{KilledBy, RuleSource};
use herdwatch_e2e::fixtures::{
    deny_wget_policy_killing, deploy_with_policy, node_of, wait_violation, RESPONSE_TIMEOUT,
};
use herdwatch_e2e::metrics::{component_pods, parse, scrape_agent, sum};
use herdwatch_e2e::{
    repo_root, step, wait_until, wait_until_soft, with_temp_ns, Env, AGENT, HERDWATCH_NAMESPACE,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

const KILLS: &str = "herdwatch_agent_process_kills_total";

/// Runs wget into a file: a wget killed before it ran leaves no file behind.
const FETCH: &str = "rm -f /tmp/fetched; wget -q -O /tmp/fetched http://127.0.0.1:8080/; \
                     echo wget exit $?; if [ -e /tmp/fetched ]; then echo fetched; fi";

/// `herdwatch_agent_process_kills_total{result="killed_in_kernel"}` of the agent on `node`.
async fn kills_in_kernel(env: &Env, node: &str) -> Result<f64, String> {
    let text = scrape_agent(env, node).await?;
    Ok(sum(&parse(&text), KILLS, &[("result", "killed_in_kernel")]))
}

/// The web app `app` in `ns` under a policy that denies and kills wget: (pod, its node,
/// the policy's name).
async fn app_denying_wget(env: &Env, ns: &str) -> (String, String, String) {
    let (pod, policy) = deploy_with_policy(
        env,
        ns,
        "app",
        &deny_wget_policy_killing(ns, ResponseAction::Tag),
    )
    .await;
    (pod.name_any(), node_of(&pod), policy.name_any())
}

/// Runs [`FETCH`] in `pod` until an attempt is killed in the kernel (counted so by the agent
/// on `node`); returns that attempt's output. Nothing in the API says when the agent has
/// written the policy into the kernel: this tries every 5 seconds.
async fn first_kill_in_kernel(env: &Env, ns: &str, pod: &str, node: &str) -> String {
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    loop {
        let before = kills_in_kernel(env, node)
            .await
            .unwrap_or_else(|e| panic!("scraping the agent on node {node}: {e}"));
        let (code, out) = env.exec(ns, pod, "app", FETCH);
        step(format!(
            "kubectl exec -n {ns} {pod} -- sh -c '{FETCH}': exit {code}: {}",
            out.trim()
        ));
        if out.contains("wget exit 137") {
            let counted = wait_until_soft(
                &format!("{KILLS}{{result=\"killed_in_kernel\"}} above {before} on node {node}"),
                Duration::from_secs(15),
                || {
                    let (env, node) = (env.clone(), node.to_owned());
                    async move {
                        let now = kills_in_kernel(&env, &node).await?;
                        if now > before {
                            Ok(now)
                        } else {
                            Err(format!("{now}"))
                        }
                    }
                },
            )
            .await;
            if let Ok(total) = counted {
                step(format!("  {KILLS}{{result=\"killed_in_kernel\"}} {total}"));
                return out;
            }
            step("  killed, but not in the kernel (the agent killed it from user space)");
        }
        assert!(
            Instant::now() < deadline,
            "no attempt was killed in the kernel within {RESPONSE_TIMEOUT:?}; last output: {out}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_denied_wget_is_killed_in_the_kernel_before_it_runs() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "kill", &[], |env, ns| async move {
        let (pod, node, policy) = app_denying_wget(&env, &ns).await;
        let rule = format!("policy/{policy}/no-wget");

        let killed = first_kill_in_kernel(&env, &ns, &pod, &node).await;
        assert!(
            !killed.contains("fetched"),
            "wget died by SIGKILL before it ran, so it fetched nothing: {killed}"
        );

        let v = wait_violation(
            &env,
            &ns,
            &pod,
            "the violation record of the kill, processKilledBy Kernel",
            |v| v.spec.rule == rule && v.spec.process_killed_by == Some(KilledBy::Kernel),
        )
        .await;
        step(format!(
            "violation {}: subject {}, exe {}, argv {:?}, processKilled {}, processKilledBy {:?}, count {}",
            v.name_any(),
            v.spec.subject,
            v.spec.event.exe,
            v.spec.event.argv,
            v.spec.process_killed,
            v.spec.process_killed_by,
            v.spec.count
        ));
        assert_eq!(v.spec.source, RuleSource::Policy);
        assert!(v.spec.process_killed, "{:?}", v.spec);
        assert_eq!(v.spec.process_kill_error, None);
        let named_wget = v.spec.event.exe.ends_with("/wget")
            || v.spec
                .event
                .argv
                .first()
                .is_some_and(|a| a.rsplit('/').next() == Some("wget"));
        assert!(named_wget, "the record shows that wget was run: {:?}", v.spec.event);
    })
    .await;
}

/// Keeps every agent pod off the nodes (a nodeSelector no node has) while it lives, as a
/// crash loop, an OOM kill or a slow upgrade would; puts the DaemonSet back when dropped,
/// even when the test fails.
struct NoAgent {
    env: Env,
}

impl NoAgent {
    async fn new(env: &Env) -> NoAgent {
        let away = NoAgent { env: env.clone() };
        let selector = r#"{"herdwatch.dev/e2e-no-agent":"true"}"#;
        if let Err(error) = away.patch_node_selector(selector) {
            panic!("patching the agent DaemonSet away: {error}");
        }
        wait_until(
            "no agent pod on any node",
            Duration::from_secs(120),
            || async {
                let pods = component_pods(env, "agent").await?;
                if pods.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} agent pod(s) left", pods.len()))
                }
            },
        )
        .await;
        away
    }

    /// Sets the agent pods' nodeSelector (JSON; `null` removes it).
    fn patch_node_selector(&self, selector: &str) -> Result<(), String> {
        let patch =
            format!(r#"{{"spec":{{"template":{{"spec":{{"nodeSelector":{selector}}}}}}}}}"#);
        let out = self.env.kubectl(&[
            "-n",
            HERDWATCH_NAMESPACE,
            "patch",
            "daemonset",
            AGENT,
            "--type=merge",
            "-p",
            &patch,
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for NoAgent {
    fn drop(&mut self) {
        if let Err(error) = self.patch_node_selector("null") {
            eprintln!("putting the agent DaemonSet back failed: {error}");
        }
    }
}

/// The agent goes away (a crash, an OOM kill, an upgrade that has not started its new pod
/// yet) and no agent runs on the node: the programs it pinned go on killing a denied exec,
/// a container restarted meanwhile is judged by its pod's rules from its first exec, and
/// the next agent adopts the programs and records the gap.
#[tokio::test]
async fn a_denied_wget_is_killed_while_no_agent_runs() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "kill-gap", &[], |env, ns| async move {
        let (pod, node, _) = app_denying_wget(&env, &ns).await;
        first_kill_in_kernel(&env, &ns, &pod, &node).await;

        let away = NoAgent::new(&env).await;
        step("no agent runs on any node now");
        killed_with_no_agent(
            &env,
            &ns,
            &pod,
            "the pinned programs kill wget before it runs",
        )
        .await;

        // The container restarts while no agent runs: the new one has a cgroup no agent
        // ever wrote an entry for, and its pod's entry judges it from its first exec.
        let restarts = restart_container(&env, &ns, &pod).await;
        step(format!("container app restarted ({restarts} restarts)"));
        killed_with_no_agent(
            &env,
            &ns,
            &pod,
            "a container created while no agent runs is judged by its pod's rules",
        )
        .await;

        drop(away);
        env.wait_herdwatch_ready(Duration::from_secs(120)).await;

        // The new agent adopted the programs, and counted the gap as one the kernel covered.
        let gaps = wait_until(
            "the new agent counting the gap as covered by adopted programs",
            Duration::from_secs(60),
            || {
                let (env, node) = (env.clone(), node.clone());
                async move {
                    let text = scrape_agent(&env, &node).await?;
                    let gaps = sum(
                        &parse(&text),
                        "herdwatch_agent_gaps_total",
                        &[("kernel", "adopted")],
                    );
                    if gaps >= 1.0 {
                        Ok(gaps)
                    } else {
                        Err(format!(
                            "herdwatch_agent_gaps_total{{kernel=\"adopted\"}} {gaps}"
                        ))
                    }
                }
            },
        )
        .await;
        step(format!(
            "herdwatch_agent_gaps_total{{kernel=\"adopted\"}} {gaps}"
        ));
        // It reads on from where the ring buffer stood: what the pod does now arrives.
        let execs_seen = |env: Env, node: String| async move {
            let text = scrape_agent(&env, &node).await?;
            Ok::<f64, String>(sum(
                &parse(&text),
                "herdwatch_agent_events_total",
                &[("kind", "exec")],
            ))
        };
        let before = execs_seen(env.clone(), node.clone())
            .await
            .unwrap_or_else(|e| panic!("scraping the agent on node {node}: {e}"));
        let (code, out) = env.exec(&ns, &pod, "app", "true; echo ran");
        assert!(
            out.contains("ran"),
            "an ordinary exec still runs: exit {code}: {out}"
        );
        let after = wait_until(
            "the adopting agent receiving the pod's new execs",
            Duration::from_secs(30),
            || {
                let (env, node) = (env.clone(), node.clone());
                async move {
                    let now = execs_seen(env, node).await?;
                    if now > before {
                        Ok(now)
                    } else {
                        Err(format!(
                            "herdwatch_agent_events_total{{kind=\"exec\"}} still {now}"
                        ))
                    }
                }
            },
        )
        .await;
        step(format!(
            "herdwatch_agent_events_total{{kind=\"exec\"}} {before} -> {after}"
        ));
        let events = env.kubectl(&[
            "-n",
            HERDWATCH_NAMESPACE,
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "reason=AgentGap",
            "-o",
            "jsonpath={range .items[*]}{.note}{\"\\n\"}{end}",
        ]);
        let notes = String::from_utf8_lossy(&events.stdout).to_string();
        step(format!("AgentGap events: {}", notes.trim()));
        assert!(
            notes.contains(&format!("node {node} went without a herdwatch agent")),
            "the gap is posted as an Event on the agent's DaemonSet: {notes:?} {}",
            String::from_utf8_lossy(&events.stderr)
        );
    })
    .await;
}

/// Runs [`FETCH`] in `pod` while no agent runs, and asserts that wget died by SIGKILL
/// before it ran (`why` says what kills it), and that no agent came back meanwhile.
async fn killed_with_no_agent(env: &Env, ns: &str, pod: &str, why: &str) {
    let (code, out) = env.exec(ns, pod, "app", FETCH);
    step(format!(
        "kubectl exec -n {ns} {pod} -- sh -c '{FETCH}': exit {code}: {}",
        out.trim()
    ));
    let agents = component_pods(env, "agent")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agents.is_empty(),
        "an agent came back during the attempt: the test proves nothing"
    );
    assert!(
        out.contains("wget exit 137") && !out.contains("fetched"),
        "with no agent running, {why}: {out}"
    );
}

/// Stops the container `app` of `pod` through the container runtime, as a crash would, and
/// waits until the kubelet has started a new one; returns its restart count.
async fn restart_container(env: &Env, ns: &str, pod: &str) -> i32 {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let status = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|s| s.iter().find(|c| c.name == "app").cloned())
    };
    let before = pods
        .get(pod)
        .await
        .map(|p| status(&p))
        .unwrap_or_else(|e| panic!("{e}"));
    let before = before.unwrap_or_else(|| panic!("pod {pod} has no status of container app"));
    let id = before
        .container_id
        .as_deref()
        .and_then(|id| id.split_once("://"))
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("container app of {pod} has no id: {before:?}"));
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/cluster/cluster.sh"))
        .args(["crictl", "stop", "--timeout", "0", &id])
        .output()
        .expect("running cluster.sh crictl");
    assert!(
        out.status.success(),
        "crictl stop {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    step(format!(
        "crictl stop {id}: the container of {pod} ends as in a crash"
    ));
    wait_until(
        "a new container of app running",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let before = before.restart_count;
            async move {
                let p = pods.get(pod).await.map_err(|e| e.to_string())?;
                match status(&p) {
                    Some(c)
                        if c.restart_count > before
                            && c.state.as_ref().is_some_and(|s| s.running.is_some()) =>
                    {
                        Ok(c.restart_count)
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
}
