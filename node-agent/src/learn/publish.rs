//! Publishing observations: the agent's only writes of BehaviorObservations.
//!
//! At start the agent lists the observations it published before (label
//! `herdwatch.dev/node=<node>`) and seeds the [`Learner`] with them; until that succeeds it
//! publishes nothing, since a write from an unseeded learner would replace what an earlier
//! instance published with less. Then, every interval, it applies each dirty observation
//! whole, by server-side apply with the field manager `herdwatch-agent`, at most
//! `max_writes` of them (oldest change first; the rest wait for the next interval). A write
//! that fails, a conflict included, leaves its observation dirty: it is retried next
//! interval, never dropped.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herdwatch_api::observation::{AGENT_FIELD_MANAGER, NODE_LABEL};
use herdwatch_api::BehaviorObservation;
use herdwatch_model::{Observation, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use prometheus::IntCounterVec;
use tracing::{debug, info, instrument, warn};

use super::Learner;
use crate::attribution::pods::{PodMeta, PodStore};
use crate::error::Result;
use crate::evaluate::Scope;

/// Observations listed per page when seeding.
const PAGE: u32 = 500;

/// A poisoned lock still holds a consistent learner (each call leaves it whole).
pub fn lock(learner: &Mutex<Learner>) -> MutexGuard<'_, Learner> {
    learner.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one publishing round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub written: usize,
    pub failed: usize,
    /// Dirty observations left for a later round by the write cap.
    pub waiting: usize,
}

/// Writes a node's observations.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    node: String,
    max_writes: usize,
    /// `herdwatch_agent_api_writes_total{resource, result}`.
    writes: IntCounterVec,
}

impl Publisher {
    pub fn new(client: Client, node: &str, max_writes: usize, writes: IntCounterVec) -> Self {
        Publisher {
            client,
            node: node.to_owned(),
            max_writes: max_writes.max(1),
            writes,
        }
    }

    /// Reads back this node's observations into `learner`; returns how many.
    #[instrument(skip_all, fields(node = %self.node))]
    pub async fn seed(&self, learner: &Mutex<Learner>) -> Result<usize> {
        let api: Api<BehaviorObservation> = Api::all(self.client.clone());
        let mut params = ListParams::default()
            .labels(&format!("{NODE_LABEL}={}", self.node))
            .limit(PAGE);
        let mut found = Vec::new();
        loop {
            let page = api.list(&params).await?;
            for obj in &page.items {
                match Observation::try_from(obj) {
                    Ok(o) => found.push(o),
                    Err(error) => {
                        warn!(%error, name = ?obj.metadata.name, "ignoring an unreadable observation of this node")
                    }
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let n = lock(learner).seed(found);
        Ok(n)
    }

    /// One round: applies up to `max_writes` dirty observations.
    pub async fn publish(&self, learner: &Mutex<Learner>) -> Round {
        let (due, pending) = {
            let l = lock(learner);
            (l.due(self.max_writes), l.stats().pending as usize)
        };
        let mut round = Round {
            waiting: pending.saturating_sub(due.len()),
            ..Round::default()
        };
        let params = PatchParams::apply(AGENT_FIELD_MANAGER).force();
        for d in due {
            let ns = d.key.workload.namespace.clone();
            let name = d.object.metadata.name.clone().unwrap_or_default();
            let api: Api<BehaviorObservation> = Api::namespaced(self.client.clone(), &ns);
            match api.patch(&name, &params, &Patch::Apply(&d.object)).await {
                Ok(_) => {
                    lock(learner).published(&d.key, d.version);
                    round.written += 1;
                    self.writes
                        .with_label_values(&["behaviorobservations", "ok"])
                        .inc();
                }
                Err(error) => {
                    warn!(%error, namespace = %ns, %name, "cannot write the observation; retrying next interval");
                    round.failed += 1;
                    self.writes
                        .with_label_values(&["behaviorobservations", "error"])
                        .inc();
                }
            }
        }
        round
    }

    /// Seeds (retrying until it works), then publishes every `interval` until dropped.
    /// Before each round the learner's replicas are brought up to date with the pods of
    /// `pods` that are in `scope`.
    #[instrument(skip_all, fields(node = %self.node))]
    pub async fn run(
        self,
        learner: Arc<Mutex<Learner>>,
        pods: Arc<PodStore>,
        scope: Scope,
        interval: Duration,
    ) {
        let mut retry = Duration::from_secs(1);
        loop {
            match self.seed(&learner).await {
                Ok(n) => {
                    info!(
                        observations = n,
                        "read back this node's published observations"
                    );
                    break;
                }
                Err(error) => {
                    warn!(%error, "cannot list this node's observations; publishing waits until it can");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(interval.max(Duration::from_secs(1)));
                }
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pods.synced() {
                let current = scoped_pods(&pods, &scope);
                lock(&learner).sync_pods(&current, now());
            }
            let round = self.publish(&learner).await;
            if round != Round::default() {
                debug!(?round, "published observations");
            }
        }
    }
}

/// The pods of this node in `scope`, copied out: the pod store's lock is never held while
/// waiting for the learner's, which the event loop holds while it reads the pod store.
pub fn scoped_pods(pods: &PodStore, scope: &Scope) -> Vec<Arc<PodMeta>> {
    let all: Vec<Arc<PodMeta>> = pods.read(|index| index.pods().cloned().collect());
    all.into_iter()
        .filter(|p| scope.includes(&p.namespace))
        .collect()
}

/// The wall clock as the model's time.
pub fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::tests::{key, pod};
    use herdwatch_model::{Event, Limits, Process};
    use herdwatch_test_support::{mock, verify, Exchange};
    use prometheus::Opts;
    use serde_json::json;

    fn counter() -> IntCounterVec {
        IntCounterVec::new(Opts::new("w", "w"), &["resource", "result"]).unwrap()
    }

    fn learner_with_events(n: usize) -> Mutex<Learner> {
        let mut l = Learner::new("node-1", Timestamp(1000), Limits::DEFAULT, 64);
        l.mark_seeded();
        let p = pod("u1", "c1");
        let id: Arc<str> = "c1".into();
        let exes: Vec<String> = (0..5).map(|i| format!("/bin/p{i}")).collect();
        for i in 0..n {
            let ev = Event::exec(Process::root_in_image(&exes[i % exes.len()], &[]));
            l.observe(
                &id,
                &p,
                &p.containers[0],
                &ev,
                Timestamp(1001 + (i % 30) as i64),
            );
        }
        Mutex::new(l)
    }

    fn obs_path(name: &str) -> String {
        format!("/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorobservations/{name}")
    }

    #[tokio::test]
    async fn many_events_are_one_apply_per_interval() {
        let learner = learner_with_events(10_000);
        let name = lock(&learner).due(1)[0]
            .object
            .metadata
            .name
            .clone()
            .unwrap();
        let (client, verifier) = mock(vec![Exchange::patch(&obs_path(&name))
            .query("fieldManager=herdwatch-agent")
            .query("force=true")
            .check(|body| {
                assert_eq!(body["kind"], "BehaviorObservation");
                assert_eq!(body["metadata"]["labels"]["herdwatch.dev/node"], "node-1");
                assert_eq!(body["spec"]["workload"]["name"], "web");
                assert_eq!(
                    body["spec"]["observed"]["processes"]
                        .as_array()
                        .unwrap()
                        .len(),
                    5
                );
            })
            .echo("1", 1)]);
        let writes = counter();
        let p = Publisher::new(client, "node-1", 10, writes.clone());
        let round = p.publish(&learner).await;
        assert_eq!(
            round,
            Round {
                written: 1,
                failed: 0,
                waiting: 0
            }
        );
        // Nothing changed since: the next interval writes nothing.
        assert_eq!(p.publish(&learner).await, Round::default());
        drop(p);
        verify(verifier).await;
        assert_eq!(
            writes
                .with_label_values(&["behaviorobservations", "ok"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_conflict_is_retried_next_interval() {
        let learner = learner_with_events(3);
        let name = lock(&learner).due(1)[0]
            .object
            .metadata
            .name
            .clone()
            .unwrap();
        let (client, verifier) = mock(vec![
            Exchange::patch(&obs_path(&name)).fail(409, "Conflict"),
            Exchange::patch(&obs_path(&name)).echo("2", 1),
        ]);
        let p = Publisher::new(client, "node-1", 10, counter());
        assert_eq!(p.publish(&learner).await.failed, 1);
        assert_eq!(lock(&learner).stats().pending, 1, "kept, not dropped");
        assert_eq!(p.publish(&learner).await.written, 1);
        assert_eq!(lock(&learner).stats().pending, 0);
        drop(p);
        verify(verifier).await;
    }

    #[tokio::test]
    async fn seeding_lists_this_nodes_observations() {
        let mut first = Learner::new("node-1", Timestamp(1000), Limits::DEFAULT, 64);
        let p = pod("u1", "c1");
        first.sync_pods([&p], Timestamp(1001));
        let published = serde_json::to_value(&first.due(1)[0].object).unwrap();
        let (client, verifier) = mock(vec![Exchange::get(
            "/apis/herdwatch.dev/v1alpha1/behaviorobservations",
        )
        .query("labelSelector=herdwatch.dev/node=node-1")
        .reply(
            200,
            json!({
                "apiVersion": "herdwatch.dev/v1alpha1",
                "kind": "BehaviorObservationList",
                "metadata": {"resourceVersion": "5"},
                "items": [published],
            }),
        )]);
        let learner = Mutex::new(Learner::new("node-1", Timestamp(9000), Limits::DEFAULT, 64));
        let publisher = Publisher::new(client, "node-1", 10, counter());
        assert_eq!(publisher.seed(&learner).await.unwrap(), 1);
        {
            let l = lock(&learner);
            assert!(l.seeded());
            assert_eq!(l.observation(&key()).unwrap().replicas.count(), 1);
            assert!(l.due(10).is_empty());
        }
        drop(publisher);
        verify(verifier).await;
    }

    #[tokio::test]
    async fn the_write_cap_leaves_the_rest_for_later() {
        let mut l = Learner::new("node-1", Timestamp(1000), Limits::DEFAULT, 64);
        l.mark_seeded();
        for i in 0..3 {
            let mut p = (*pod(&format!("u{i}"), &format!("c{i}"))).clone();
            p.workload.name = format!("w{i}");
            l.sync_pods([&Arc::new(p)], Timestamp(1000 + i));
        }
        let names: Vec<String> = l
            .due(3)
            .iter()
            .map(|d| d.object.metadata.name.clone().unwrap())
            .collect();
        let learner = Mutex::new(l);
        let (client, verifier) = mock(vec![
            Exchange::patch(&obs_path(&names[0])).echo("1", 1),
            Exchange::patch(&obs_path(&names[1])).echo("1", 1),
            Exchange::patch(&obs_path(&names[2])).echo("1", 1),
        ]);
        let p = Publisher::new(client, "node-1", 2, counter());
        assert_eq!(
            p.publish(&learner).await,
            Round {
                written: 2,
                failed: 0,
                waiting: 1
            }
        );
        assert_eq!(
            p.publish(&learner).await,
            Round {
                written: 1,
                failed: 0,
                waiting: 0
            }
        );
        drop(p);
        verify(verifier).await;
    }
}
