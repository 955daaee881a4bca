//! The e2e suite's Prometheus and Alertmanager (`e2e/prometheus/prometheus.sh`), read through
//! their HTTP APIs the way a person checks them: instant and range queries, active alerts,
//! scrape targets, rule health, and the alerts Alertmanager received.
//!
//! Debian's Prometheus is built without Kubernetes service discovery, so the suite finds
//! herdwatch's pods with its own small discovery ([`pod_target_groups`], run by the
//! `herdwatch-pod-targets` binary): it watches pods through the API server and writes them
//! for Prometheus's `file_sd_configs` under the meta label names Kubernetes discovery uses,
//! so that the scrape configuration relabels them as it would relabel Kubernetes discovery.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where `prometheus.sh` serves Prometheus unless `HERDWATCH_PROMETHEUS_URL` says otherwise.
pub const DEFAULT_PROMETHEUS_URL: &str = "http://127.0.0.1:19090";
/// Where `prometheus.sh` serves Alertmanager unless `HERDWATCH_ALERTMANAGER_URL` says otherwise.
pub const DEFAULT_ALERTMANAGER_URL: &str = "http://127.0.0.1:19093";
/// Scrape job of the agents (the chart's rules select `up{job="herdwatch-agent"}`).
pub const AGENT_JOB: &str = "herdwatch-agent";
/// Scrape job of the operator replicas.
pub const OPERATOR_JOB: &str = "herdwatch-operator";
/// The chart's alerting rules, which the suite's Prometheus loads.
pub const RULES_FILE: &str = "charts/herdwatch/rules/herdwatch.rules.yaml";
/// How to start both, for failure messages.
pub const START_HINT: &str = "start them with `make prometheus-up` \
(or `bash e2e/prometheus/prometheus.sh up`; `bash e2e/prometheus/prometheus.sh status` shows \
their state and log files)";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A plain-HTTP JSON client of one base URL.
#[derive(Clone, Debug)]
struct JsonApi {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl JsonApi {
    fn new(base: &str) -> JsonApi {
        JsonApi {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GETs `path` (with its query string) and decodes the JSON answer of any status, as
    /// the Prometheus API reports its errors in a JSON body.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let request = http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("building GET {url}"))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| anyhow!("GET {url}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer of GET {url}"))?
            .to_bytes();
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "GET {url}: HTTP {status}, not the expected JSON: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            )
        })
    }
}

/// The envelope of every Prometheus API answer.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

impl<T> Envelope<T> {
    fn into_data(self, what: &str) -> Result<T> {
        match (self.status.as_str(), self.data) {
            ("success", Some(data)) => Ok(data),
            _ => bail!(
                "{what}: Prometheus answered {} ({}): {}",
                self.status,
                self.error_type.unwrap_or_default(),
                self.error.unwrap_or_default()
            ),
        }
    }
}

/// One series of an instant query: its labels and value.
#[derive(Clone, Debug, Deserialize)]
pub struct InstantSample {
    /// Labels, `__name__` included when the expression kept it.
    pub metric: BTreeMap<String, String>,
    /// Evaluation time (Unix seconds) and value as Prometheus formats it.
    pub value: (f64, String),
}

impl InstantSample {
    /// The value as a number (`NaN` when Prometheus wrote something else).
    pub fn number(&self) -> f64 {
        self.value.1.parse().unwrap_or(f64::NAN)
    }
}

/// One series of a range query.
#[derive(Clone, Debug, Deserialize)]
pub struct RangeSeries {
    /// Labels of the series.
    pub metric: BTreeMap<String, String>,
    /// `(Unix seconds, value)` pairs, oldest first.
    pub values: Vec<(f64, String)>,
}

impl RangeSeries {
    /// The points as numbers; values Prometheus did not write as numbers are left out.
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.values
            .iter()
            .filter_map(|(t, v)| v.parse::<f64>().ok().map(|v| (*t, v)))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
struct QueryData<T> {
    result: T,
}

/// An alert as Prometheus's rule evaluation sees it (`/api/v1/alerts`).
#[derive(Clone, Debug, Deserialize)]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Annotations (summary, description, ...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    /// When the expression first held.
    #[serde(rename = "activeAt", default)]
    pub active_at: Option<String>,
}

impl Alert {
    /// The alert's name.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

/// A scrape target (`/api/v1/targets`).
#[derive(Clone, Debug, Deserialize)]
pub struct Target {
    /// Target labels after relabelling (`job`, `instance`, ...).
    pub labels: BTreeMap<String, String>,
    /// The scrape job.
    #[serde(rename = "scrapePool")]
    pub scrape_pool: String,
    /// The URL Prometheus scrapes.
    #[serde(rename = "scrapeUrl")]
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed.
    #[serde(rename = "lastError", default)]
    pub last_error: String,
}

#[derive(Debug, Deserialize)]
struct TargetsData {
    #[serde(rename = "activeTargets")]
    active_targets: Vec<Target>,
}

/// A group of rules as loaded from a rule file (`/api/v1/rules`).
#[derive(Clone, Debug, Deserialize)]
pub struct RuleGroup {
    /// Group name.
    pub name: String,
    /// The rule file it came from.
    pub file: String,
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// One alerting or recording rule and its last evaluation.
#[derive(Clone, Debug, Deserialize)]
pub struct Rule {
    /// Alert or record name.
    pub name: String,
    /// The PromQL expression.
    pub query: String,
    /// `alerting` or `recording`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    /// Why the last evaluation failed.
    #[serde(rename = "lastError", default)]
    pub last_error: String,
}

#[derive(Debug, Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

/// The suite's Prometheus.
#[derive(Clone, Debug)]
pub struct Prometheus {
    api: JsonApi,
}

impl Prometheus {
    /// The Prometheus at `base` (e.g. `http://127.0.0.1:19090`).
    pub fn new(base: &str) -> Prometheus {
        Prometheus {
            api: JsonApi::new(base),
        }
    }

    /// The Prometheus named by `HERDWATCH_PROMETHEUS_URL`, by default the one
    /// `prometheus.sh` starts.
    pub fn from_env() -> Prometheus {
        Prometheus::new(
            &std::env::var("HERDWATCH_PROMETHEUS_URL")
                .unwrap_or_else(|_| DEFAULT_PROMETHEUS_URL.to_owned()),
        )
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.api.base
    }

    /// Evaluates `expr` now.
    pub async fn query(&self, expr: &str) -> Result<Vec<InstantSample>> {
        let path = format!("/api/v1/query?{}", query_string(&[("query", expr)]));
        self.api
            .get::<Envelope<QueryData<Vec<InstantSample>>>>(&path)
            .await?
            .into_data(&format!("query {expr}"))
            .map(|d| d.result)
    }

    /// Evaluates `expr` from `start` to `end` (Unix seconds) every `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>> {
        let (start, end, step) = (start.to_string(), end.to_string(), step.to_string());
        let path = format!(
            "/api/v1/query_range?{}",
            query_string(&[
                ("query", expr),
                ("start", &start),
                ("end", &end),
                ("step", &step)
            ])
        );
        self.api
            .get::<Envelope<QueryData<Vec<RangeSeries>>>>(&path)
            .await?
            .into_data(&format!("range query {expr}"))
            .map(|d| d.result)
    }

    /// Alerts pending or firing.
    pub async fn alerts(&self) -> Result<Vec<Alert>> {
        self.api
            .get::<Envelope<AlertsData>>("/api/v1/alerts")
            .await?
            .into_data("alerts")
            .map(|d| d.alerts)
    }

    /// The active scrape targets.
    pub async fn targets(&self) -> Result<Vec<Target>> {
        self.api
            .get::<Envelope<TargetsData>>("/api/v1/targets?state=active")
            .await?
            .into_data("targets")
            .map(|d| d.active_targets)
    }

    /// The loaded rule groups with each rule's last evaluation.
    pub async fn rules(&self) -> Result<Vec<RuleGroup>> {
        self.api
            .get::<Envelope<RulesData>>("/api/v1/rules")
            .await?
            .into_data("rules")
            .map(|d| d.groups)
    }
}

/// An alert as Alertmanager received it (`/api/v2/alerts`).
#[derive(Clone, Debug, Deserialize)]
pub struct ReceivedAlert {
    /// Labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// `active`, `suppressed` or `unprocessed`.
    pub status: ReceivedAlertStatus,
}

/// Alertmanager's state of a received alert.
#[derive(Clone, Debug, Deserialize)]
pub struct ReceivedAlertStatus {
    /// `active`, `suppressed` or `unprocessed`.
    pub state: String,
}

impl ReceivedAlert {
    /// The alert's name.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// The suite's Alertmanager.
#[derive(Clone, Debug)]
pub struct Alertmanager {
    api: JsonApi,
}

impl Alertmanager {
    /// The Alertmanager at `base`.
    pub fn new(base: &str) -> Alertmanager {
        Alertmanager {
            api: JsonApi::new(base),
        }
    }

    /// The Alertmanager named by `HERDWATCH_ALERTMANAGER_URL`, by default the one
    /// `prometheus.sh` starts.
    pub fn from_env() -> Alertmanager {
        Alertmanager::new(
            &std::env::var("HERDWATCH_ALERTMANAGER_URL")
                .unwrap_or_else(|_| DEFAULT_ALERTMANAGER_URL.to_owned()),
        )
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.api.base
    }

    /// The alerts it holds (received and not yet resolved).
    pub async fn alerts(&self) -> Result<Vec<ReceivedAlert>> {
        self.api.get("/api/v2/alerts").await
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// One labels line per series, for progress and failure messages.
pub fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    let inner = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{}{{{inner}}}",
        labels.get("__name__").map_or("", String::as_str)
    )
}

/// One entry of a `file_sd_configs` file: where to scrape and the labels to relabel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetGroup {
    /// `host:port` addresses; here the pod's IP and its scrape port.
    pub targets: Vec<String>,
    /// Meta labels, named as Kubernetes discovery (role `pod`) names them.
    pub labels: BTreeMap<String, String>,
}

/// A label name made of the characters Prometheus allows, as Kubernetes discovery writes
/// pod label and annotation names (`app.kubernetes.io/name` → `app_kubernetes_io_name`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The target groups of `pods` for `file_sd_configs`: one per pod that has an IP, with the
/// meta labels of Kubernetes discovery's `pod` role that a scrape configuration relabels
/// (namespace, name, uid, node, phase, ready, IP, labels and annotations). The address is
/// the pod IP with the `prometheus.io/port` annotation's port, else the first declared
/// container port.
pub fn pod_target_groups(pods: &[Pod]) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = pods.iter().filter_map(pod_target_group).collect();
    groups.sort_by(|a, b| a.labels.cmp(&b.labels));
    groups
}

fn pod_target_group(pod: &Pod) -> Option<TargetGroup> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let meta = &pod.metadata;
    let annotations = meta.annotations.clone().unwrap_or_default();
    let declared_port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find_map(|c| c.ports.as_ref()?.first()))
        .map(|p| p.container_port.to_string());
    let port = annotations
        .get("prometheus.io/port")
        .cloned()
        .or(declared_port);
    let address = match port {
        Some(port) => format!("{ip}:{port}"),
        None => ip.to_owned(),
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        labels.insert(format!("__meta_kubernetes_{k}"), v.to_owned());
    };
    put("namespace", meta.namespace.as_deref().unwrap_or_default());
    put("pod_name", meta.name.as_deref().unwrap_or_default());
    put("pod_uid", meta.uid.as_deref().unwrap_or_default());
    put("pod_ip", ip);
    put("pod_ready", if ready { "true" } else { "false" });
    put("pod_phase", status.phase.as_deref().unwrap_or_default());
    put(
        "pod_node_name",
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default(),
    );
    for (k, v) in meta.labels.iter().flatten() {
        let name = sanitize_label_name(k);
        put(&format!("pod_label_{name}"), v);
        put(&format!("pod_labelpresent_{name}"), "true");
    }
    for (k, v) in &annotations {
        let name = sanitize_label_name(k);
        put(&format!("pod_annotation_{name}"), v);
        put(&format!("pod_annotationpresent_{name}"), "true");
    }
    Some(TargetGroup {
        targets: vec![address],
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a valid Pod")
    }

    #[test]
    fn pods_become_target_groups_with_kubernetes_discovery_meta_labels() {
        let agent = pod(serde_json::json!({
            "metadata": {
                "name": "herdwatch-agent-x1", "namespace": "herdwatch", "uid": "u-1",
                "labels": {"app.kubernetes.io/name": "herdwatch", "app.kubernetes.io/component": "agent"},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "agent", "ports": [{"containerPort": 7000}]}]},
            "status": {"phase": "Running", "podIP": "10.88.0.5",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let unscheduled = pod(serde_json::json!({
            "metadata": {"name": "pending", "namespace": "herdwatch"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending"}
        }));
        let groups = pod_target_groups(&[unscheduled, agent]);
        assert_eq!(
            groups.len(),
            1,
            "a pod without an IP has no target: {groups:?}"
        );
        let g = &groups[0];
        assert_eq!(g.targets, vec!["10.88.0.5:9090".to_owned()]);
        let l = |k: &str| g.labels.get(k).map(String::as_str);
        assert_eq!(l("__meta_kubernetes_namespace"), Some("herdwatch"));
        assert_eq!(l("__meta_kubernetes_pod_name"), Some("herdwatch-agent-x1"));
        assert_eq!(l("__meta_kubernetes_pod_node_name"), Some("n1"));
        assert_eq!(l("__meta_kubernetes_pod_phase"), Some("Running"));
        assert_eq!(l("__meta_kubernetes_pod_ready"), Some("true"));
        assert_eq!(
            l("__meta_kubernetes_pod_label_app_kubernetes_io_component"),
            Some("agent")
        );
        assert_eq!(
            l("__meta_kubernetes_pod_annotation_prometheus_io_port"),
            Some("9090")
        );
        assert_eq!(
            l("__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape"),
            Some("true")
        );
    }

    #[test]
    fn without_a_port_annotation_the_first_declared_port_is_the_address() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "op", "namespace": "hw"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.88.0.9"}
        }));
        let groups = pod_target_groups(&[p]);
        assert_eq!(groups[0].targets, vec!["10.88.0.9:8080".to_owned()]);
        assert_eq!(
            groups[0].labels["__meta_kubernetes_pod_ready"], "false",
            "no Ready condition"
        );
    }

    #[test]
    fn api_answers_decode_and_errors_say_what_prometheus_said() {
        let ok: Envelope<QueryData<Vec<InstantSample>>> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"__name__":"up","job":"herdwatch-agent"},"value":[1700000000.5,"1"]}]}}"#,
        )
        .expect("decodes");
        let samples = ok.into_data("q").expect("success").result;
        assert_eq!(samples[0].number(), 1.0);
        assert_eq!(
            describe_labels(&samples[0].metric),
            r#"up{job="herdwatch-agent"}"#
        );

        let err: Envelope<QueryData<Vec<InstantSample>>> = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#,
        )
        .expect("decodes");
        let msg = err.into_data("query up{").unwrap_err().to_string();
        assert!(
            msg.contains("bad_data") && msg.contains("parse error"),
            "{msg}"
        );
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(
            query_string(&[("query", r#"up{job="a b"}"#)]),
            "query=up%7Bjob%3D%22a+b%22%7D"
        );
    }
}
