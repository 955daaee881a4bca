//! The attack suite's workload: a small web shop (image `herdwatch-e2e/shop`, built by
//! e2e/images/images.sh from e2e/images/shop/) run as uid 1000 by busybox httpd, with a
//! status page and a stock lookup whose command injection lets a request run anything as
//! the web server. Normal traffic comes from a client pod; attacks come through the
//! lookup, so they run from the workload's own processes, as a real intrusion would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use herdwatch_api::common::ResponseAction;
use herdwatch_api::BehaviorProfile;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::fixtures::{web_profile, WEB_PORT};
use crate::WORKLOAD_IMAGE;

/// The shop's image, and the same files under another digest.
pub const SHOP_IMAGE: &str = "herdwatch-e2e/shop:dev";
pub const SHOP_IMAGE_V2: &str = "herdwatch-e2e/shop:v2";
/// The uid the shop runs as.
pub const SHOP_UID: u32 = 1000;

/// The shop's Deployment: `replicas` pods of [`SHOP_IMAGE`] in a container named like the
/// Deployment, with a liveness probe of each kind the kubelet has (exec, HTTP, TCP), since
/// probes are part of a workload's normal life.
pub fn shop_deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    // busybox httpd as pid 1 ignores SIGTERM: do not wait 30 s for it.
                    "terminationGracePeriodSeconds": 2,
                    "enableServiceLinks": false,
                    "securityContext": {"runAsUser": SHOP_UID, "runAsGroup": SHOP_UID},
                    "containers": [{
                        "name": name,
                        "image": SHOP_IMAGE,
                        "imagePullPolicy": "Never",
                        "ports": [{"name": "http", "containerPort": WEB_PORT}],
                        "readinessProbe": {
                            "httpGet": {"path": "/index.html", "port": WEB_PORT},
                            "periodSeconds": 2
                        },
                        "livenessProbe": {
                            "exec": {"command": ["cat", "/www/index.html"]},
                            "periodSeconds": 5
                        },
                        "startupProbe": {
                            "tcpSocket": {"port": WEB_PORT},
                            "periodSeconds": 1,
                            "failureThreshold": 30
                        }
                    }]
                }
            }
        }
    }))
    .expect("the shop Deployment is valid")
}

/// A client pod that uses the shop at `target` as its customers do, every second: the
/// status page, and a stock lookup of a real item.
pub fn shop_client(name: &str, target: &str) -> Pod {
    let base = format!("http://{target}:{WEB_PORT}");
    let script = format!(
        "while true; do \
           timeout 5 wget -q -O /dev/null {base}/cgi-bin/status || echo status failed; \
           timeout 5 wget -q -O /dev/null --post-data apple {base}/cgi-bin/lookup || echo lookup failed; \
           sleep 1; \
         done"
    );
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": name,
                "image": WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script]
            }]
        }
    }))
    .expect("the shop client pod is valid")
}

/// The shop's profile: learned for the test's short window from two replicas, then
/// enforcing, answering violations with a tag so that every attack leaves its record and
/// the pod stays for the next one.
pub fn shop_profile(name: &str) -> BehaviorProfile {
    web_profile(name, name, name, ResponseAction::Tag)
}

/// Sends `command` through the lookup's command injection to the shop pod at `pod_ip`;
/// it runs as the web server's CGI shell. Returns what the shop answered (or why not).
pub fn inject(pod_ip: &str, command: &str) -> String {
    // The lookup runs `grep -i -- <item> /www/data/stock.txt`: close it with a real item,
    // run the command, and comment out the rest of the line.
    let body = format!("apple /www/data/stock.txt; {command} #\n");
    let request = format!(
        "POST /cgi-bin/lookup HTTP/1.0\r\nHost: shop\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let addr: SocketAddr = match format!("{pod_ip}:{WEB_PORT}").parse() {
        Ok(a) => a,
        Err(e) => return format!("bad pod address {pod_ip}: {e}"),
    };
    let mut answer = String::new();
    let result = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(request.as_bytes())?;
        s.read_to_string(&mut answer)
    });
    match result {
        Ok(_) => answer,
        Err(e) => format!("{answer}(request failed: {e})"),
    }
}
