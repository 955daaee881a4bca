//! The metrics the agent and the operator really serve pass `promtool check metrics`
//! (Prometheus' own lint of names, types, units and help), including the series a violation
//! and its answer create, and carry the names the alert rules and the dashboard use.

use std::io::Write;
use std::process::{Command, Stdio};

use herdwatch_api::common::ResponseAction;
use herdwatch_api::violation::Outcome;
use herdwatch_e2e::fixtures::{deploy_with_deny_wget_policy, intrude_until_violation};
use herdwatch_e2e::metrics::{component_pods, parse, scrape_pod, Sample};
use herdwatch_e2e::{step, with_temp_ns, Env};
use kube::ResourceExt;

const INSTALL_HINT: &str =
    "promtool comes with Debian's prometheus package: run scripts/install-prometheus.sh";

/// Runs `promtool check metrics` on `text`; returns promtool's complaints when it has any.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): {INSTALL_HINT}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("writing the metrics to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn names(samples: &[Sample]) -> Vec<&str> {
    samples.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn served_metrics_pass_promtool_check_metrics() {
    // Fail before touching the cluster when the tool is missing.
    promtool_check("").unwrap_or_else(|e| panic!("promtool rejects empty input: {e}"));
    let env = Env::with_herdwatch().await;
    with_temp_ns(&env, "promtool", &[], |env, ns| async move {
        // A violation answered with Tag, so that the labelled series exist on both sides.
        let (pod, policy) =
            deploy_with_deny_wget_policy(&env, &ns, "app", ResponseAction::Tag).await;
        let rule = format!("policy/{}/no-wget", policy.name_any());
        intrude_until_violation(
            &env,
            &ns,
            &pod.name_any(),
            "app",
            "http://127.0.0.1:8080/",
            |v| {
                v.spec.rule == rule
                    && v.status
                        .as_ref()
                        .is_some_and(|s| s.outcome == Outcome::Tagged)
            },
        )
        .await;

        let mut complaints = Vec::new();
        let mut agent_samples = Vec::new();
        let mut operator_samples = Vec::new();
        for (component, port, samples) in [
            ("agent", "metrics", &mut agent_samples),
            ("operator", "http", &mut operator_samples),
        ] {
            let pods = component_pods(&env, component)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!pods.is_empty(), "no {component} pod is running");
            for p in &pods {
                let text = scrape_pod(&env, p, port)
                    .await
                    .unwrap_or_else(|e| panic!("scraping {component} {}: {e}", p.name_any()));
                step(format!(
                    "{component} {}: {} lines of metrics",
                    p.name_any(),
                    text.lines().count()
                ));
                if let Err(e) = promtool_check(&text) {
                    complaints.push(format!("{component} {}: {e}", p.name_any()));
                }
                assert!(
                    !text.contains(&pod.name_any()),
                    "the {component}'s metrics name the pod {}:\n{text}",
                    pod.name_any()
                );
                samples.extend(parse(&text));
            }
        }
        assert!(
            complaints.is_empty(),
            "promtool found problems:\n{}",
            complaints.join("\n")
        );

        // The names the rules in charts/herdwatch/rules and the dashboard query.
        let agent = names(&agent_samples);
        for name in [
            "herdwatch_agent_events_total",
            "herdwatch_agent_events_lost_total",
            "herdwatch_agent_attribution_failures_total",
            "herdwatch_agent_process_kills_total",
            "herdwatch_agent_violations_total",
        ] {
            assert!(agent.contains(&name), "the agent serves no {name}");
        }
        assert!(
            agent_samples
                .iter()
                .any(|s| s.name == "herdwatch_agent_violations_total"
                    && s.has_labels(&[("namespace", &ns), ("rule", &rule), ("mode", "Enforce")])),
            "the agent counts the violation with namespace, rule and mode"
        );
        let operator = names(&operator_samples);
        for name in [
            "herdwatch_operator_leader",
            "herdwatch_operator_profiles",
            "herdwatch_operator_responses_total",
        ] {
            assert!(operator.contains(&name), "no operator serves {name}");
        }
        assert!(
            operator_samples
                .iter()
                .any(|s| s.name == "herdwatch_operator_responses_total"
                    && s.has_labels(&[("namespace", &ns), ("action", "tagged")])),
            "the leading operator counts the Tag response"
        );
    })
    .await;
}
