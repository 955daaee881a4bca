//! A real violation reaches a person's pager: a real Prometheus (e2e/prometheus) scrapes the
//! agent and the operator through the cluster, evaluates the chart's alerting rules, and
//! the violation alert fires with the namespace of the intrusion and reaches Alertmanager.

use std::time::Duration;

use herdwatch_api::common::ResponseAction;
use herdwatch_e2e::fixtures::{deploy_with_deny_wget_policy, intrude_until_violation};
use herdwatch_e2e::prometheus::{
    describe_labels, Alertmanager, Prometheus, AGENT_JOB, OPERATOR_JOB, RULES_FILE, START_HINT,
};
use herdwatch_e2e::{step, wait_until, wait_until_soft, with_temp_ns, Env};
use kube::ResourceExt;

/// The alerts the chart's rules file defines.
const CHART_ALERTS: &[&str] = &[
    VIOLATION_ENFORCE,
    VIOLATION_MONITOR,
    "HerdwatchPodKilled",
    "HerdwatchKillRefused",
    "HerdwatchAgentEventsLost",
    "HerdwatchAgentGap",
    "HerdwatchAttributionFailing",
    "HerdwatchAgentDown",
    "HerdwatchOperatorDown",
    "HerdwatchProfileIncomplete",
];
const VIOLATION_ENFORCE: &str = "HerdwatchViolationEnforce";
const VIOLATION_MONITOR: &str = "HerdwatchViolationMonitor";
const VIOLATIONS_METRIC: &str = "herdwatch_agent_violations_total";
/// A scrape (5 s), rule evaluations (5 s) and any `for:` the rule has, with room for a
/// loaded machine.
const ALERT_TIMEOUT: Duration = Duration::from_secs(180);
/// Prometheus sends at each evaluation, Alertmanager's group_wait is 1 s.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn violation_alert_fires_in_prometheus_and_reaches_alertmanager() {
    let env = Env::with_herdwatch().await;
    let prometheus = Prometheus::from_env();
    let alertmanager = Alertmanager::from_env();
    if let Err(e) = prometheus.targets().await {
        panic!(
            "the e2e Prometheus at {} does not answer ({e:#}): {START_HINT}",
            prometheus.url()
        );
    }
    if let Err(e) = alertmanager.alerts().await {
        panic!(
            "the e2e Alertmanager at {} does not answer ({e:#}): {START_HINT}",
            alertmanager.url()
        );
    }
    rules_are_loaded_and_healthy(&prometheus).await;
    both_jobs_are_up(&prometheus).await;

    with_temp_ns(&env, "alerts", &[], |env, ns| async move {
        let (pod, policy) =
            deploy_with_deny_wget_policy(&env, &ns, "app", ResponseAction::Tag).await;
        let rule = format!("policy/{}/no-wget", policy.name_any());
        // One intrusion: `wget` is repeated only until the agent has the new policy and
        // records the violation, then never again, so the alert has to come from that one.
        let record = intrude_until_violation(
            &env,
            &ns,
            &pod.name_any(),
            "app",
            "http://127.0.0.1:8080/",
            |v| v.spec.rule == rule,
        )
        .await;
        step(format!(
            "violation {} recorded (count {}); now Prometheus has to alert",
            record.name_any(),
            record.spec.count
        ));

        let fired = wait_until_soft(
            &format!("{VIOLATION_ENFORCE} or {VIOLATION_MONITOR} firing for namespace {ns}"),
            ALERT_TIMEOUT,
            || {
                let (prometheus, ns) = (prometheus.clone(), ns.clone());
                async move {
                    let alerts = prometheus.alerts().await.map_err(|e| format!("{e:#}"))?;
                    let ours: Vec<_> = alerts
                        .iter()
                        .filter(|a| is_violation_alert(a.name()))
                        .filter(|a| a.labels.get("namespace") == Some(&ns))
                        .collect();
                    match ours.iter().find(|a| a.state == "firing") {
                        Some(a) => Ok((*a).clone()),
                        None => Err(format!(
                            "violation alerts of the namespace: {:?}",
                            ours.iter()
                                .map(|a| format!("{} {}", a.state, describe_labels(&a.labels)))
                                .collect::<Vec<_>>()
                        )),
                    }
                }
            },
        )
        .await;
        let alert = match fired {
            Ok(alert) => alert,
            Err(state) => {
                print_prometheus_state(&prometheus, &ns).await;
                panic!(
                    "no violation alert fired for namespace {ns} within {ALERT_TIMEOUT:?} after \
                     the violation was recorded; last state: {state}"
                );
            }
        };
        step(format!(
            "Prometheus: {} {} (active since {})",
            alert.state,
            describe_labels(&alert.labels),
            alert.active_at.as_deref().unwrap_or("?")
        ));
        if let Some(r) = alert.labels.get("rule") {
            assert_eq!(r, &rule, "the alert names the rule broken");
        }
        for (key, value) in &alert.labels {
            assert!(
                !value.contains(&pod.name_any()),
                "alert labels never name pods: {key}={value}"
            );
        }

        let alertname = alert.name().to_owned();
        let received = wait_until(
            &format!("Alertmanager to hold {alertname} for namespace {ns}"),
            NOTIFY_TIMEOUT,
            || {
                let (alertmanager, ns, alertname) =
                    (alertmanager.clone(), ns.clone(), alertname.clone());
                async move {
                    let alerts = alertmanager.alerts().await.map_err(|e| format!("{e:#}"))?;
                    alerts
                        .iter()
                        .find(|a| {
                            a.name() == alertname
                                && a.labels.get("namespace") == Some(&ns)
                                && a.status.state == "active"
                        })
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "Alertmanager holds: {:?}",
                                alerts
                                    .iter()
                                    .map(|a| format!(
                                        "{} {}",
                                        a.status.state,
                                        describe_labels(&a.labels)
                                    ))
                                    .collect::<Vec<_>>()
                            )
                        })
                }
            },
        )
        .await;
        step(format!(
            "Alertmanager: {} {} since {}",
            received.status.state,
            describe_labels(&received.labels),
            received.starts_at
        ));
    })
    .await;
}

fn is_violation_alert(name: &str) -> bool {
    name == VIOLATION_ENFORCE || name == VIOLATION_MONITOR
}

/// Every alert of the contract is loaded from the chart's rules file, and no rule fails to
/// evaluate.
async fn rules_are_loaded_and_healthy(prometheus: &Prometheus) {
    let groups = wait_until(
        "Prometheus to have evaluated the chart's rules",
        Duration::from_secs(30),
        || {
            let prometheus = prometheus.clone();
            async move {
                let groups = prometheus.rules().await.map_err(|e| format!("{e:#}"))?;
                let loaded: Vec<&str> = groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .filter(|r| r.kind == "alerting")
                    .map(|r| r.name.as_str())
                    .collect();
                let missing: Vec<&&str> = CHART_ALERTS
                    .iter()
                    .filter(|a| !loaded.contains(*a))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!(
                        "alerts missing: {missing:?}; loaded: {loaded:?} from {:?}. Prometheus \
                         loads {RULES_FILE} (or HERDWATCH_PROMETHEUS_RULES) when \
                         `make prometheus-up` starts or reloads it",
                        groups.iter().map(|g| g.file.as_str()).collect::<Vec<_>>()
                    ));
                }
                if groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .any(|r| r.health == "unknown")
                {
                    return Err("some rules are not evaluated yet".into());
                }
                Ok(groups)
            }
        },
    )
    .await;
    let failing: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter(|r| r.health != "ok")
        .map(|r| format!("{} ({}): {}", r.name, r.query, r.last_error))
        .collect();
    assert!(
        failing.is_empty(),
        "rules that fail to evaluate: {failing:#?}"
    );
    step(format!(
        "Prometheus evaluates {} rules from {:?}",
        groups.iter().map(|g| g.rules.len()).sum::<usize>(),
        groups.iter().map(|g| g.file.as_str()).collect::<Vec<_>>()
    ));
}

/// Prometheus scrapes the agent and the operator: each job has a target and all are up.
async fn both_jobs_are_up(prometheus: &Prometheus) {
    wait_until(
        &format!("scrape jobs {AGENT_JOB} and {OPERATOR_JOB} up"),
        Duration::from_secs(60),
        || {
            let prometheus = prometheus.clone();
            async move {
                let targets = prometheus.targets().await.map_err(|e| format!("{e:#}"))?;
                let state: Vec<String> = targets
                    .iter()
                    .map(|t| {
                        format!(
                            "{} {} {} {}",
                            t.scrape_pool, t.scrape_url, t.health, t.last_error
                        )
                    })
                    .collect();
                for job in [AGENT_JOB, OPERATOR_JOB] {
                    let of_job: Vec<_> = targets.iter().filter(|t| t.scrape_pool == job).collect();
                    if of_job.is_empty() || of_job.iter().any(|t| t.health != "up") {
                        return Err(format!("job {job} not all up; targets: {state:?}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
}

/// What Prometheus has, for a failure: targets, the violation series, rule errors, alerts.
async fn print_prometheus_state(prometheus: &Prometheus, ns: &str) {
    match prometheus.targets().await {
        Ok(targets) => {
            eprintln!("----- Prometheus targets");
            for t in targets {
                eprintln!(
                    "{} {} {} {}",
                    t.scrape_pool, t.scrape_url, t.health, t.last_error
                );
            }
        }
        Err(e) => eprintln!("----- Prometheus targets: {e:#}"),
    }
    // Any metric named like a violation counter, in case its name is not the contract's.
    let expr = format!("{{__name__=~\"herdwatch_.*violations.*\",namespace=\"{ns}\"}}");
    match prometheus.query(&expr).await {
        Ok(samples) => {
            eprintln!(
                "----- {expr} (the rules read {VIOLATIONS_METRIC}): {} series",
                samples.len()
            );
            for s in samples {
                eprintln!("{} {}", describe_labels(&s.metric), s.value.1);
            }
        }
        Err(e) => eprintln!("----- {expr}: {e:#}"),
    }
    match prometheus.rules().await {
        Ok(groups) => {
            eprintln!("----- Prometheus rules");
            for g in groups {
                for r in g.rules {
                    eprintln!(
                        "{}/{} [{}] {}: {} {}",
                        g.name, r.name, r.kind, r.health, r.query, r.last_error
                    );
                }
            }
        }
        Err(e) => eprintln!("----- Prometheus rules: {e:#}"),
    }
    match prometheus.alerts().await {
        Ok(alerts) => {
            eprintln!("----- Prometheus alerts");
            for a in alerts {
                eprintln!("{} {}", a.state, describe_labels(&a.labels));
            }
        }
        Err(e) => eprintln!("----- Prometheus alerts: {e:#}"),
    }
}
