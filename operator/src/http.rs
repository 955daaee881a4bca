//! The operator's small HTTP server: `/metrics` (Prometheus text format), `/healthz` (the
//! process serves requests) and `/readyz` (the last leader election round reached the API
//! server; without leader election, always). Built on hyper, which the Kubernetes client
//! already brings in; HTTP/1.1 only, one task per connection.

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// What a request gets: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// Answers one request.
pub fn route(method: &Method, path: &str, metrics: &Metrics, ready: bool) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/metrics" => match metrics.encode() {
            Ok(body) => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body,
            },
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server was not reached in the last leader election round\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let reply = route(req.method(), req.uri().path(), metrics, ready);
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(reply.content_type),
    );
    resp
}

/// Serves requests on `listener` until the task is dropped. `ready` is the readiness the
/// leader election reports.
pub async fn serve(listener: TcpListener, metrics: Metrics, ready: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                warn!(%error, "http server cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = respond(&req, &metrics, *ready.borrow());
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "http connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn routes() {
        let m = Metrics::new().unwrap();
        m.set_leader(true);
        let r = route(&Method::GET, "/metrics", &m, true);
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.contains("herdwatch_operator_leader 1"), "{}", r.body);
        assert_eq!(route(&Method::GET, "/healthz", &m, false).status, 200);
        assert_eq!(route(&Method::GET, "/readyz", &m, true).status, 200);
        assert_eq!(route(&Method::GET, "/readyz", &m, false).status, 503);
        assert_eq!(route(&Method::GET, "/nope", &m, true).status, 404);
        assert_eq!(route(&Method::POST, "/metrics", &m, true).status, 405);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(true);
        let server = tokio::spawn(serve(listener, Metrics::new().unwrap(), rx));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("ok\n"), "{out}");
        server.abort();
    }
}
