//! The agent's /metrics counts violations, with bounded labels, as Prometheus would scrape it.

use std::time::Duration;

use herdwatch_api::common::ResponseAction;
use herdwatch_e2e::fixtures::{deploy_with_deny_wget_policy, intrude_until_violation, node_of};
use herdwatch_e2e::metrics::{parse, scrape_agent, sum};
use herdwatch_e2e::{step, wait_until, with_temp_ns, Env};
use kube::ResourceExt;

const VIOLATIONS: &str = "herdwatch_agent_violations_total";

#[tokio::test]
async fn agent_metrics_count_the_violation() {
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "metrics", &[], |env, ns| async move {
        let (pod, policy) =
            deploy_with_deny_wget_policy(&env, &ns, "app", ResponseAction::None).await;
        let node = node_of(&pod);
        let before = scrape_agent(&env, &node)
            .await
            .expect("scraping the agent's /metrics");
        let samples = parse(&before);
        assert!(
            samples
                .iter()
                .any(|s| s.name.starts_with("herdwatch_agent_")),
            "the agent serves its metrics:\n{before}"
        );
        let base = sum(&samples, VIOLATIONS, &[("namespace", &ns)]);
        assert_eq!(
            base, 0.0,
            "a new namespace starts with no violation counted"
        );

        let rule = format!("policy/{}/no-wget", policy.name_any());
        intrude_until_violation(
            &env,
            &ns,
            &pod.name_any(),
            "app",
            "http://127.0.0.1:8080/",
            |v| v.spec.rule == rule,
        )
        .await;

        let lines = wait_until(
            &format!("{VIOLATIONS}{{namespace=\"{ns}\"}} on the agent of node {node}"),
            Duration::from_secs(30),
            || {
                let env = env.clone();
                let (node, ns, rule) = (node.clone(), ns.clone(), rule.clone());
                async move {
                    let text = scrape_agent(&env, &node).await?;
                    let samples = parse(&text);
                    let matching: Vec<String> = text
                        .lines()
                        .filter(|l| {
                            l.starts_with(VIOLATIONS) && l.contains(&format!("namespace=\"{ns}\""))
                        })
                        .map(str::to_owned)
                        .collect();
                    // The policy is no dry run, so it judged the event in Enforce mode.
                    let labels = [
                        ("namespace", ns.as_str()),
                        ("rule", &rule),
                        ("mode", "Enforce"),
                    ];
                    if sum(&samples, VIOLATIONS, &labels) >= 1.0 {
                        Ok(matching)
                    } else {
                        Err(format!(
                            "lines for the namespace: {matching:?}; all {VIOLATIONS} lines: {:?}",
                            text.lines()
                                .filter(|l| l.starts_with(VIOLATIONS))
                                .collect::<Vec<_>>()
                        ))
                    }
                }
            },
        )
        .await;
        for l in &lines {
            step(format!("  {l}"));
        }
        assert!(
            lines.iter().all(|l| !l.contains(&pod.name_any())),
            "metric labels never name pods"
        );
    })
    .await;
}
