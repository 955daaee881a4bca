//! A mocked API server for the agent's writers: a `tower-test` pair stands in for the
//! client's transport, and a scenario lists the requests the code must make, in order, each
//! with its answer. The verifier fails the test on a request out of order, a body that fails
//! its check, a missing request, and any request after the last expected one.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

type Check = Box<dyn FnOnce(&Value) + Send>;

/// One expected request and its answer.
pub struct Exchange {
    method: Method,
    path: String,
    query: Vec<String>,
    check: Option<Check>,
    status: u16,
    body: Value,
    /// Answer with the request body at this resourceVersion and generation.
    echo: Option<(String, i64)>,
}

impl Exchange {
    fn new(method: Method, path: &str) -> Self {
        Exchange {
            method,
            path: path.to_owned(),
            query: Vec::new(),
            check: None,
            status: 200,
            body: json!({}),
            echo: None,
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// The query must contain `part` (percent-decoded).
    pub fn query(mut self, part: &str) -> Self {
        self.query.push(part.to_owned());
        self
    }

    /// Runs `check` on the JSON request body (`null` when empty).
    pub fn check(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    pub fn reply(mut self, status: u16, body: Value) -> Self {
        self.status = status;
        self.body = body;
        self
    }

    /// Answers 200 with the request body as stored, at `resource_version`.
    pub fn echo(mut self, resource_version: &str, generation: i64) -> Self {
        self.echo = Some((resource_version.to_owned(), generation));
        self
    }

    /// Answers with an API error `Status`.
    pub fn fail(self, code: u16, reason: &str) -> Self {
        self.reply(
            code,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("mock: {reason}"),
                "reason": reason,
                "code": code,
            }),
        )
    }
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

/// A client talking to a mock serving `steps`, and the verifier to await once every clone
/// of the client is dropped. The verifier returns the request bodies, in order.
pub fn mock(steps: Vec<Exchange>) -> (Client, JoinHandle<Vec<Value>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(async move {
        let mut bodies = Vec::new();
        let total = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let (req, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "step {}/{total}: expected {} {} but no request came",
                    i + 1,
                    step.method,
                    step.path
                )
            });
            let query = percent_decode(req.uri().query().unwrap_or_default());
            assert_eq!(
                (req.method(), req.uri().path()),
                (&step.method, step.path.as_str()),
                "step {}/{total}: unexpected request (query {query:?})",
                i + 1
            );
            for part in &step.query {
                assert!(
                    query.contains(part.as_str()),
                    "step {}/{total}: query {query:?} lacks {part:?}",
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
            let answer = match step.echo {
                Some((rv, generation)) => {
                    let mut v = body.clone();
                    v["metadata"]["resourceVersion"] = json!(rv);
                    v["metadata"]["generation"] = json!(generation);
                    v
                }
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

/// Waits for the verifier.
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
