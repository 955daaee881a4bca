//! A mocked Kubernetes API server for herdwatch's tests that need no cluster: the agent's
//! writers (violations, observations) and the operator's reconcilers both talk to the API
//! server through a `kube::Client`, and both are tested the same way, so the mock lives here
//! once rather than once per crate.
//!
//! A test lists the requests the code must make, in order, as [`Exchange`]s, each with the
//! answer to give. [`mock`] returns a client whose transport is a `tower-test` pair and a
//! verifier that plays the scenario; [`verify`] awaits it. The verifier fails the test on a
//! request out of order, a query that lacks an expected part, a body that fails its check, a
//! missing request, and any request after the last expected one.
//!
//! The remaining functions build the JSON the API server answers with: an error `Status`, an
//! object as stored, a list, a metadata-only object.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

type Check = Box<dyn FnOnce(&Value) + Send>;
type Answer = Box<dyn FnOnce(&Value) -> Value + Send>;

/// How long [`verify`] waits for the scenario to end.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// One expected request and its answer.
pub struct Exchange {
    method: Method,
    path: String,
    query: Vec<String>,
    check: Option<Check>,
    status: u16,
    body: Value,
    /// Builds the answer from the request body; when set, it replaces `body`.
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
        let resource_version = resource_version.to_owned();
        self.answer = Some(Box::new(move |body: &Value| {
            stored(body.clone(), &resource_version, generation)
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

/// `obj` as the API server returns it: with apiVersion and kind (as `obj` serializes), and
/// the given resourceVersion and generation.
pub fn served<K: serde::Serialize>(obj: &K, resource_version: &str, generation: i64) -> Value {
    let value = serde_json::to_value(obj).expect("the object serializes to JSON");
    stored(value, resource_version, generation)
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

/// `object` with the resourceVersion and generation the API server gives what it stores.
fn stored(mut object: Value, resource_version: &str, generation: i64) -> Value {
    object["metadata"]["resourceVersion"] = json!(resource_version);
    object["metadata"]["generation"] = json!(generation);
    object
}

/// A query string as the API server reads it, so expectations can be written unescaped:
/// `%XX` escapes and `+` for a space are decoded, anything else is kept as it is.
fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let escaped = tail
            .get(..2)
            .filter(|_| first == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &tail[2..];
            }
            None => {
                out.push(if first == b'+' { b' ' } else { first });
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client talking to a mock that serves `steps`, and the verifier to await (with
/// [`verify`]) once every clone of the client is dropped. The verifier returns the request
/// bodies seen, in order.
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
            let bytes = req
                .into_body()
                .collect_bytes()
                .await
                .expect("the request body can be read");
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
                .body(Body::from(
                    serde_json::to_vec(&answer).expect("the answer serializes to JSON"),
                ))
                .expect("the answer is a valid HTTP response");
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

/// Waits for the verifier of [`mock`] (after the code under test dropped every client clone)
/// and returns the request bodies it saw; a failed expectation fails the calling test.
pub async fn verify(verifier: JoinHandle<Vec<Value>>) -> Vec<Value> {
    match tokio::time::timeout(VERIFY_TIMEOUT, verifier).await {
        Ok(Ok(bodies)) => bodies,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("verifier failed: {e}"),
        Err(_) => {
            panic!("verifier timed out: a client clone is still alive, or a request is missing")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIGMAPS: &str = "/api/v1/namespaces/shop/configmaps";

    /// Sends `method path?query` with `body` (JSON unless empty) and returns the answer, or
    /// the API error the client made of it.
    async fn send(
        client: &Client,
        method: Method,
        path_and_query: &str,
        body: Value,
    ) -> Result<Value, kube::Error> {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        let request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("content-type", "application/json")
            .body(bytes)
            .unwrap();
        client.request::<Value>(request).await
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            percent_decode("labelSelector=app%3Dweb&fieldManager=a+b"),
            "labelSelector=app=web&fieldManager=a b"
        );
        assert_eq!(percent_decode("bad=%zz&end=%4"), "bad=%zz&end=%4");
        assert_eq!(percent_decode("name=caf%C3%A9"), "name=café");
    }

    #[tokio::test]
    async fn a_scenario_played_in_order_returns_its_answers_and_bodies() {
        let (client, verifier) = mock(vec![
            Exchange::get(CONFIGMAPS)
                .query("labelSelector=app=web")
                .reply(200, list("v1", "ConfigMap", vec![])),
            Exchange::post(CONFIGMAPS)
                .check(|body| assert_eq!(body["metadata"]["name"], "settings"))
                .echo("7", 1),
            Exchange::delete(&format!("{CONFIGMAPS}/settings")).fail(404, "NotFound"),
        ]);
        let listed = send(
            &client,
            Method::GET,
            &format!("{CONFIGMAPS}?labelSelector=app%3Dweb"),
            Value::Null,
        )
        .await
        .unwrap();
        assert_eq!(listed["kind"], "ConfigMapList");
        let created = send(
            &client,
            Method::POST,
            CONFIGMAPS,
            json!({ "metadata": { "name": "settings" } }),
        )
        .await
        .unwrap();
        assert_eq!(
            created["metadata"],
            json!({ "name": "settings", "resourceVersion": "7", "generation": 1 })
        );
        let deleted = send(
            &client,
            Method::DELETE,
            &format!("{CONFIGMAPS}/settings"),
            Value::Null,
        )
        .await;
        match deleted {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
            }
            other => panic!("expected the API error NotFound, got {other:?}"),
        }
        drop(client);
        let bodies = verify(verifier).await;
        assert_eq!(
            bodies,
            vec![
                Value::Null,
                json!({ "metadata": { "name": "settings" } }),
                Value::Null
            ]
        );
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected request")]
    async fn a_request_out_of_order_fails_the_test() {
        let (client, verifier) = mock(vec![Exchange::get(CONFIGMAPS)]);
        let _ = send(&client, Method::POST, CONFIGMAPS, json!({})).await;
        drop(client);
        verify(verifier).await;
    }

    #[tokio::test]
    #[should_panic(expected = "lacks \"labelSelector=app=web\"")]
    async fn a_query_without_an_expected_part_fails_the_test() {
        let (client, verifier) = mock(vec![
            Exchange::get(CONFIGMAPS).query("labelSelector=app=web")
        ]);
        let _ = send(&client, Method::GET, CONFIGMAPS, Value::Null).await;
        drop(client);
        verify(verifier).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the name is checked")]
    async fn a_body_that_fails_its_check_fails_the_test() {
        let (client, verifier) = mock(vec![Exchange::post(CONFIGMAPS).check(|body| {
            assert_eq!(body["metadata"]["name"], "settings", "the name is checked")
        })]);
        let _ = send(
            &client,
            Method::POST,
            CONFIGMAPS,
            json!({ "metadata": { "name": "other" } }),
        )
        .await;
        drop(client);
        verify(verifier).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the client made no more requests")]
    async fn a_missing_request_fails_the_test() {
        let (client, verifier) = mock(vec![Exchange::get(CONFIGMAPS)]);
        drop(client);
        verify(verifier).await;
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected request after the last expected one")]
    async fn a_request_after_the_last_expected_one_fails_the_test() {
        let (client, verifier) = mock(vec![]);
        let _ = send(&client, Method::GET, CONFIGMAPS, Value::Null).await;
        drop(client);
        verify(verifier).await;
    }
}
