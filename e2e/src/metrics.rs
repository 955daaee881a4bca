//! Reading the agent's `/metrics` the way an operator would check it by hand: through the
//! API server's pod proxy (no port-forward, no Prometheus), then the text exposition format.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::{Env, HERDWATCH_NAMESPACE, RELEASE};

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// Whether every `(name, value)` in `want` is one of the sample's labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Parses the Prometheus text format (comments skipped, timestamps ignored). Lines it cannot
/// read are skipped: the caller asserts on the samples it expects.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let end = line.find(char::is_whitespace)?;
            (&line[..end], BTreeMap::new(), &line[end..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",...}` and returns the labels and what follows the closing brace.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
        rest = &rest[end?..];
    }
}

/// Sum of the samples of `name` carrying `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
        .sum()
}

/// The herdwatch pods of `component` (`agent` or `operator`).
pub async fn component_pods(env: &Env, component: &str) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), HERDWATCH_NAMESPACE);
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}");
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .map_err(|e| format!("listing {component} pods: {e}"))
}

/// Scrapes `/metrics` of the agent on `node` through the API server's pod proxy
/// (`/api/v1/namespaces/herdwatch/pods/<agent>:<port>/proxy/metrics`).
pub async fn scrape_agent(env: &Env, node: &str) -> Result<String, String> {
    let pods = component_pods(env, "agent").await?;
    let pod = pods
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .ok_or_else(|| format!("no agent pod on node {node}"))?;
    scrape_pod(env, pod, "metrics").await
}

/// Scrapes `/metrics` of `pod` on its container port named `port_name`, through the API
/// server's pod proxy.
pub async fn scrape_pod(env: &Env, pod: &Pod, port_name: &str) -> Result<String, String> {
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(port_name)))
        .map(|p| p.container_port)
        .ok_or_else(|| format!("pod {} declares no {port_name} port", pod.name_any()))?;
    let path = format!(
        "/api/v1/namespaces/{HERDWATCH_NAMESPACE}/pods/{}:{port}/proxy/metrics",
        pod.name_any()
    );
    let req = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    env.client
        .request_text(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_and_without_labels() {
        let text = "# HELP herdwatch_agent_violations_total Violations.\n\
                    # TYPE herdwatch_agent_violations_total counter\n\
                    herdwatch_agent_violations_total{namespace=\"shop\",rule=\"policy/p/no-wget\",mode=\"Enforce\"} 2\n\
                    herdwatch_agent_violations_total{namespace=\"other\",rule=\"a\\\"b\",mode=\"Monitor\"} 1\n\
                    herdwatch_agent_processes_tracked 250\n\
                    broken{line\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(sum(&s, "herdwatch_agent_violations_total", &[]), 3.0);
        assert_eq!(
            sum(
                &s,
                "herdwatch_agent_violations_total",
                &[("namespace", "shop")]
            ),
            2.0
        );
        assert_eq!(s[1].labels["rule"], "a\"b");
        assert_eq!(sum(&s, "herdwatch_agent_processes_tracked", &[]), 250.0);
        assert_eq!(
            sum(
                &s,
                "herdwatch_agent_violations_total",
                &[("namespace", "none")]
            ),
            0.0
        );
    }
}
