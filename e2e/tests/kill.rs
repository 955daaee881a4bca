//! `killProcess` on a real node: a ClusterBehaviorPolicy that denies `wget` and kills it.
//! The agent writes the policy's names into the kernel, and the exec tracepoint kills
//! busybox's `wget` (run as `/proc/self/exe` named `wget`) before it runs: the shell sees
//! SIGKILL (137), nothing is fetched, the record says the kernel did it, and the agent
//! counts the kill as `killed_in_kernel`.

use std::time::{Duration, Instant};

use herdwatch_api::common::ResponseAction;
use herdwatch_api::violation::{KilledBy, RuleSource};
use herdwatch_e2e::fixtures::{
    deny_wget_policy_killing, deploy_with_policy, node_of, wait_violation, RESPONSE_TIMEOUT,
};
use herdwatch_e2e::metrics::{parse, scrape_agent, sum};
use herdwatch_e2e::{step, wait_until_soft, with_temp_ns, Env};
use kube::ResourceExt;

const KILLS: &str = "herdwatch_agent_process_kills_total";

/// Runs wget into a file: a wget killed before it ran leaves no file behind.
const FETCH: &str = "rm -f /tmp/fetched; wget -q -O /tmp/fetched http://127.0.0.1:8080/; \
                     echo wget exit $?; if [ -e /tmp/fetched ]; then echo fetched; fi";

/// `herdwatch_agent_process_kills_total{result="killed_in_kernel"}` of the agent on `node`.
async fn kills_in_kernel(env: &Env, node: &str) -> Result<f64, String> {
    let text = scrape_agent(env, node).await?;
    Ok(sum(&parse(&text), KILLS, &[("result", "killed_in_kernel")]))
}

#[tokio::test]
async fn a_denied_wget_is_killed_in_the_kernel_before_it_runs() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "kill", &[], |env, ns| async move {
        let (pod, policy) = deploy_with_policy(
            &env,
            &ns,
            "app",
            &deny_wget_policy_killing(&ns, ResponseAction::Tag),
        )
        .await;
        let (pod, node) = (pod.name_any(), node_of(&pod));
        let rule = format!("policy/{}/no-wget", policy.name_any());

        // Nothing in the API says when the agent has written the policy into the kernel:
        // try every 5 seconds until an attempt is killed there.
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let killed = loop {
            let before = kills_in_kernel(&env, &node)
                .await
                .unwrap_or_else(|e| panic!("scraping the agent on node {node}: {e}"));
            let (code, out) = env.exec(&ns, &pod, "app", FETCH);
            step(format!(
                "kubectl exec -n {ns} {pod} -- sh -c '{FETCH}': exit {code}: {}",
                out.trim()
            ));
            if out.contains("wget exit 137") {
                let counted = wait_until_soft(
                    &format!("{KILLS}{{result=\"killed_in_kernel\"}} above {before} on node {node}"),
                    Duration::from_secs(15),
                    || {
                        let (env, node) = (env.clone(), node.clone());
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
                    break out;
                }
                step("  killed, but not in the kernel (the agent killed it from user space)");
            }
            assert!(
                Instant::now() < deadline,
                "no attempt was killed in the kernel within {RESPONSE_TIMEOUT:?}; last output: {out}"
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
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
