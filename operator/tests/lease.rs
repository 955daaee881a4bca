//! Leader election against a mocked API server: creating, renewing, following, losing a race,
//! and releasing the Lease.

mod common;

use std::time::Duration;

use common::*;
use herdwatch_operator::lease::{self, Elector, LeaseConfig};
use serde_json::{json, Value};
use tokio::sync::watch;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/herdwatch/leases/herdwatch-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/herdwatch/leases";

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "herdwatch-operator".into(),
        namespace: "herdwatch".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        renew_interval: Duration::from_secs(5),
    }
}

fn lease(holder: Option<&str>, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "herdwatch-operator", "namespace": "herdwatch", "resourceVersion": rv },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "leaseTransitions": 4,
            "renewTime": "2025-11-24T16:00:00.000000Z",
        },
    })
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (client, verifier) = mock(vec![
        Exchange::get(LEASE).fail(404, "NotFound"),
        Exchange::post(LEASES)
            .check(|b| {
                assert_eq!(b["spec"]["holderIdentity"], "op-a");
                assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                assert_eq!(b["spec"]["leaseTransitions"], 0);
                assert!(b["spec"]["renewTime"].is_string());
            })
            .echo("1", 1),
    ]);
    let mut e = Elector::new(client, config("op-a"));
    assert!(e.try_lead().await.unwrap());
    assert!(e.is_leading(std::time::Instant::now()));
    drop(e);
    verify(verifier).await;
}

#[tokio::test]
async fn a_live_holder_is_followed_and_a_lost_race_is_not_leading() {
    let (client, verifier) = mock(vec![
        Exchange::get(LEASE).reply(200, lease(Some("op-b"), "5")),
        // The lease is gone and another replica creates it first.
        Exchange::get(LEASE).fail(404, "NotFound"),
        Exchange::post(LEASES).fail(409, "AlreadyExists"),
    ]);
    let mut e = Elector::new(client, config("op-a"));
    assert!(!e.try_lead().await.unwrap(), "op-b renewed recently");
    assert!(!e.try_lead().await.unwrap(), "op-b created it first");
    assert!(!e.is_leading(std::time::Instant::now()));
    drop(e);
    verify(verifier).await;
}

#[tokio::test]
async fn the_holder_renews_with_the_resource_version_it_read() {
    let (client, verifier) = mock(vec![
        Exchange::get(LEASE).reply(200, lease(Some("op-a"), "5")),
        Exchange::put(LEASE)
            .check(|b| {
                assert_eq!(b["metadata"]["resourceVersion"], "5");
                assert_eq!(b["spec"]["holderIdentity"], "op-a");
                assert_eq!(
                    b["spec"]["leaseTransitions"], 4,
                    "a renewal is no transition"
                );
                assert_ne!(b["spec"]["renewTime"], "2025-11-24T16:00:00.000000Z");
            })
            .echo("6", 1),
        // Someone else wrote in between: the renewal conflicts and this replica stops leading.
        Exchange::get(LEASE).reply(200, lease(Some("op-a"), "6")),
        Exchange::put(LEASE).fail(409, "Conflict"),
    ]);
    let mut e = Elector::new(client, config("op-a"));
    assert!(e.try_lead().await.unwrap());
    assert!(!e.try_lead().await.unwrap());
    assert!(!e.is_leading(std::time::Instant::now()));
    drop(e);
    verify(verifier).await;
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let (client, verifier) = mock(vec![
        Exchange::get(LEASE).reply(200, lease(None, "9")),
        Exchange::put(LEASE)
            .check(|b| {
                assert_eq!(b["metadata"]["resourceVersion"], "9");
                assert_eq!(b["spec"]["holderIdentity"], "op-a");
                assert_eq!(b["spec"]["leaseTransitions"], 5);
                assert!(b["spec"]["acquireTime"].is_string());
            })
            .echo("10", 1),
    ]);
    let mut e = Elector::new(client, config("op-a"));
    assert!(e.try_lead().await.unwrap());
    drop(e);
    verify(verifier).await;
}

#[tokio::test]
async fn the_election_loop_publishes_leadership_and_releases_on_shutdown() {
    let (client, verifier) = mock(vec![
        Exchange::get(LEASE).fail(404, "NotFound"),
        Exchange::post(LEASES).echo("1", 1),
        Exchange::get(LEASE).reply(200, lease(Some("op-a"), "1")),
        Exchange::put(LEASE)
            .check(|b| {
                assert!(b["spec"].get("holderIdentity").is_none_or(Value::is_null));
                assert_eq!(b["spec"]["leaseDurationSeconds"], 1);
            })
            .echo("2", 1),
    ]);
    let (leading_tx, mut leading) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    let task = tokio::spawn(lease::run(
        Elector::new(client, config("op-a")),
        leading_tx,
        ready_tx,
        release_rx,
    ));
    tokio::time::timeout(Duration::from_secs(5), leading.wait_for(|l| *l))
        .await
        .expect("leads within a round")
        .unwrap();
    assert!(*ready.borrow(), "the API server was reached");
    release_tx.send(true).unwrap();
    task.await.unwrap();
    assert!(!*leading.borrow(), "no longer leading after release");
    verify(verifier).await;
}
