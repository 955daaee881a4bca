//! What the operator's integration tests share: the mocked API server (from
//! `herdwatch-test-support`, re-exported here), a reconciler context on its client at a fixed
//! "now", and readers of the conditions the reconcilers write.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use std::sync::Arc;

use herdwatch_api::{BehaviorProfile, BehaviorViolation};
use herdwatch_model::Timestamp;
use herdwatch_operator::args::Settings;
use herdwatch_operator::context::Context;
use herdwatch_operator::metrics::Metrics;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::Value;

#[allow(
    unused_imports,
    reason = "each test file uses a different part of the mock"
)]
pub use herdwatch_test_support::{api_status, list, mock, partial, served, verify, Exchange};

/// "Now" in every test: 2025-11-24T16:00:00Z.
pub const NOW: Timestamp = Timestamp(1_764_000_000);

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
