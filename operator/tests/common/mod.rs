//! A mocked API server for reconciler tests: a `tower-test` pair stands in for the
//! Kubernetes client's transport, and a scenario lists the requests the reconciler must make,
//! in order, each with the answer to give. The verifier fails the test on a request out of
//! order, on a body that does not pass its check, on a missing request, and on any request
//! after the last expected one.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use std::sync::Arc;
use std::time::Duration;

use herdwatch_api::{BehaviorProfile, BehaviorViolation};
use herdwatch_model::Timestamp;
use herdwatch_operator::args::Settings;
use herdwatch_operator::context::Context;
use herdwatch_operator::metrics::Metrics;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// "Now" in every test: 2025-11-24T16:00:00Z.
pub const NOW: Timestamp = Timestamp(1_764_000_000);

type Check = Box<dyn FnOnce(&Value) + Send>;
type Answer = Box<dyn FnOnce(&Value) -> Value + Send>;

/// One expected request and its answer.
pub struct Exchange {
    method: Method,
    path: String,
    query: Vec<String>,
    check: Option<Check>,
    status: u16,
    body: Value,
    answer: Option<Answer>,
}

impl Exchange {
    fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            query: Vec::new(),
            check: None,
            status: 200,
            body: json!({}),
            answer: None,
        }
    }
    /// Expects a GET of `path`.
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }
    /// Expects a POST to `path`.
    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }
    /// Expects a PUT of `path`.
    pub fn put(path: &str) -> Self {
        Self::new(Method::PUT, path)
    }
    /// Expects a PATCH of `path`.
    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }
    /// Expects a DELETE of `path`.
    pub fn delete(path: &str) -> Self {
        Self::new(Method::DELETE, path)
    }
    /// The query must contain `part` (after percent-decoding).
    pub fn query(mut self, part: &str) -> Self {
        self.query.push(part.to_owned());
        self
    }
    /// Runs `check` on the request body (JSON; `null` when empty).
    pub fn check(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
    /// Answers `status` with `body`.
    pub fn reply(mut self, status: u16, body: Value) -> Self {
        self.status = status;
        self.body = body;
        self
    }
    /// Answers 200 with the request body as the API server would store it: with the given
    /// resourceVersion and generation.
    pub fn echo(mut self, resource_version: &str, generation: i64) -> Self {
        let (rv, g) = (resource_version.to_owned(), generation);
        self.answer = Some(Box::new(move |body: &Value| {
            let mut v = body.clone();
            v["metadata"]["resourceVersion"] = json!(rv);
            v["metadata"]["generation"] = json!(g);
            v
        }));
        self
    }
    /// Answers with an API error `Status` of `code` and `reason`.
    pub fn fail(self, code: u16, reason: &str) -> Self {
        self.reply(code, api_status(code, reason))
    }
}

/// The `Status` object the API server sends with an error.
pub fn api_status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("mock: {reason}"),
        "reason": reason,
        "code": code,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client talking to a mock, and the verifier of `steps` (await it after the reconcile,
/// once every client clone is dropped). Returns the request bodies seen, in order.
pub fn mock(steps: Vec<Exchange>) -> (Client, JoinHandle<Vec<Value>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(async move {
        let mut bodies = Vec::new();
        let total = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let (req, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "step {}/{total}: expected {} {} but the client made no more requests",
                    i + 1,
                    step.method,
                    step.path
                )
            });
            let (method, path, query) = (
                req.method().clone(),
                req.uri().path().to_owned(),
                percent_decode(req.uri().query().unwrap_or_default()),
            );
            assert_eq!(
                (&method, path.as_str()),
                (&step.method, step.path.as_str()),
                "step {}/{total}: unexpected request (query {query:?})",
                i + 1
            );
            for part in &step.query {
                assert!(
                    query.contains(part.as_str()),
                    "step {}/{total}: {method} {path}: query {query:?} lacks {part:?}",
                    i + 1
                );
            }
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            };
            if let Some(check) = step.check {
                check(&body);
            }
            let answer = match step.answer {
                Some(answer) => answer(&body),
                None => step.body,
            };
            bodies.push(body);
            let resp = Response::builder()
                .status(step.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
        if let Some((req, _)) = handle.next_request().await {
            panic!(
                "unexpected request after the last expected one: {} {}?{}",
                req.method(),
                req.uri().path(),
                percent_decode(req.uri().query().unwrap_or_default())
            );
        }
        bodies
    });
    (Client::new(service, "default"), verifier)
}

/// Waits for the verifier (after the reconcile dropped its context).
pub async fn verify(verifier: JoinHandle<Vec<Value>>) -> Vec<Value> {
    match tokio::time::timeout(Duration::from_secs(10), verifier).await {
        Ok(Ok(bodies)) => bodies,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("verifier failed: {e}"),
        Err(_) => {
            panic!("verifier timed out: a client clone is still alive, or a request is missing")
        }
    }
}

/// A ready store holding `objects`.
pub fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// A context on `client` with the given stores and settings, at [`NOW`].
pub fn context(
    client: Client,
    profiles: Vec<BehaviorProfile>,
    violations: Vec<BehaviorViolation>,
    settings: Settings,
) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        store(profiles),
        store(violations),
        settings,
        Metrics::new().unwrap(),
        "herdwatch-operator-0".into(),
        Arc::new(|| NOW),
    ))
}

/// `obj` as the API server returns it: with apiVersion and kind, and the given
/// resourceVersion and generation.
pub fn served<K: serde::Serialize>(obj: &K, resource_version: &str, generation: i64) -> Value {
    let mut v = serde_json::to_value(obj).unwrap();
    v["metadata"]["resourceVersion"] = json!(resource_version);
    v["metadata"]["generation"] = json!(generation);
    v
}

/// A list response of `items`.
pub fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": format!("{kind}List"),
        "metadata": { "resourceVersion": "1" },
        "items": items,
    })
}

/// The metadata-only form of an object, as a metadata GET returns it.
pub fn partial(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
    })
}

/// The conditions of a status body, as `type -> (status, reason)`.
pub fn conditions(status: &Value) -> Vec<(String, String, String)> {
    status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or_default().to_owned(),
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The condition of `type_` in a status body: (status, reason).
pub fn condition(status: &Value, type_: &str) -> (String, String) {
    conditions(status)
        .into_iter()
        .find(|(t, _, _)| t == type_)
        .map(|(_, s, r)| (s, r))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"))
}
