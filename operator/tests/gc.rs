//! Observation garbage collection against a mocked API server.

mod common;

use common::*;
use herdwatch_api::convert::to_time;
use herdwatch_api::{examples, BehaviorObservation};
use herdwatch_model::Timestamp;
use herdwatch_operator::args::Settings;
use herdwatch_operator::gc;
use serde_json::{json, Value};

fn obs(name: &str, node: &str, updated_ago: i64) -> Value {
    let mut o: BehaviorObservation = examples::observation();
    o.metadata.name = Some(name.into());
    o.spec.node = node.into();
    o.spec.updated_at = to_time(Timestamp(NOW.0 - updated_ago));
    serde_json::to_value(o).unwrap()
}

#[tokio::test]
async fn stale_observations_and_those_of_vanished_nodes_are_deleted() {
    let nodes = json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": {},
        "items": [{ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": { "name": "node-a" } }],
    });
    let mut first = list(
        "herdwatch.dev/v1alpha1",
        "BehaviorObservation",
        vec![
            obs("fresh", "node-a", 60),
            obs("stale", "node-a", 8 * 86_400),
        ],
    );
    first["metadata"]["continue"] = json!("page-2");
    let second = list(
        "herdwatch.dev/v1alpha1",
        "BehaviorObservation",
        vec![
            obs("gone-node", "node-z", 7200),
            obs("just-gone", "node-z", 60),
        ],
    );
    let observations = "/apis/herdwatch.dev/v1alpha1/behaviorobservations";
    let ns = "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorobservations";
    let (client, verifier) = mock(vec![
        Exchange::get("/api/v1/nodes").reply(200, nodes),
        Exchange::get(observations)
            .query("limit=200")
            .reply(200, first),
        Exchange::delete(&format!("{ns}/stale")).reply(200, api_status(200, "Success")),
        Exchange::get(observations)
            .query("continue=page-2")
            .reply(200, second),
        Exchange::delete(&format!("{ns}/gone-node")).reply(200, api_status(200, "Success")),
    ]);
    let ctx = context(client, vec![], vec![], Settings::default());
    assert_eq!(gc::collect(&ctx).await.unwrap(), 2);
    drop(ctx);
    verify(verifier).await;
}
