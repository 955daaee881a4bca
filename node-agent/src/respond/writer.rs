//! The task that writes BehaviorViolation records, off the event loop.
//!
//! Records arrive whole over a bounded channel and are applied by server-side apply with the
//! field manager `herdwatch-agent`. The operator writes only their status, so the agent owns
//! every spec field; the apply is forced so that a record an earlier agent instance wrote
//! under another manager name is still taken over.
//!
//! An agent that restarts starts counting from zero, so the first time this instance writes
//! a record it reads it first: a record that already exists for the same pod keeps its count
//! (this instance's sightings are added to it), its first time, its first event and ancestry,
//! and a kill it recorded. A write that fails is kept (the latest content per record) and
//! retried every retry interval, unless the API server refused it for good: the record's
//! namespace is gone or being deleted, or the record itself is invalid. Retrying those would
//! repeat the same refusal forever, so they are dropped and counted as `rejected`.

use std::collections::HashMap;
use std::time::Duration;

use herdwatch_api::observation::AGENT_FIELD_MANAGER;
use herdwatch_api::violation::BehaviorViolationSpec;
use herdwatch_api::BehaviorViolation;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tracing::{debug, instrument, warn};

use crate::error::{Error, Result};

/// Records whose pre-existing state is remembered; cleared when full.
const MAX_BASES: usize = 16_384;
/// Failed writes kept for retrying; the oldest are dropped beyond this (counted).
const MAX_FAILED: usize = 4_096;

/// The state of a record before this agent instance first wrote it.
pub type Base = Option<BehaviorViolationSpec>;

/// What to apply: `ours` (this instance's record) on top of what the record held before
/// this instance wrote it. A record of another pod with the same name (a StatefulSet pod
/// recreated) is not continued.
pub fn on_top_of(base: &Base, mut ours: BehaviorViolation) -> BehaviorViolation {
    let Some(b) = base else { return ours };
    if b.pod_uid != ours.spec.pod_uid {
        return ours;
    }
    let s = &mut ours.spec;
    s.count = s.count.saturating_add(b.count);
    if b.first_seen.0 < s.first_seen.0 {
        s.first_seen = b.first_seen.clone();
        s.event = b.event.clone();
        s.ancestry = b.ancestry.clone();
    }
    if b.last_seen.0 > s.last_seen.0 {
        s.last_seen = b.last_seen.clone();
    }
    s.process_killed |= b.process_killed;
    if s.process_killed_by.is_none() {
        // This instance has not killed yet: the kill the record holds is the latest.
        s.process_killed_by = b.process_killed_by;
    }
    if s.process_kill_error.is_none() {
        s.process_kill_error = b.process_kill_error.clone();
    }
    ours
}

/// Whether a failed write would fail the same way however often it is retried: the
/// namespace does not exist (404 on an apply, which creates), is being deleted (403 with
/// the `NamespaceTerminating` cause), or the record fails validation (422, 400).
fn refused_for_good(error: &Error) -> bool {
    let Error::Kube(kube::Error::Api(status)) = error else {
        return false;
    };
    let terminating = status
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
        || status.message.contains("because it is being terminated");
    matches!(status.code, 400 | 404 | 422) || (status.code == 403 && terminating)
}

/// Writes records.
pub struct ViolationWriter {
    client: Client,
    /// (namespace, name) → what the record held before this instance wrote it.
    bases: HashMap<(String, String), Base>,
    /// (namespace, name) → the latest content whose write failed.
    failed: HashMap<(String, String), BehaviorViolation>,
    /// `herdwatch_agent_api_writes_total{resource, result}`.
    writes: IntCounterVec,
}

fn id(v: &BehaviorViolation) -> (String, String) {
    (
        v.metadata.namespace.clone().unwrap_or_default(),
        v.metadata.name.clone().unwrap_or_default(),
    )
}

impl ViolationWriter {
    pub fn new(client: Client, writes: IntCounterVec) -> Self {
        ViolationWriter {
            client,
            bases: HashMap::new(),
            failed: HashMap::new(),
            writes,
        }
    }

    /// Records waiting for a retry.
    pub fn failed(&self) -> usize {
        self.failed.len()
    }

    /// Applies one record.
    pub async fn write(&mut self, v: &BehaviorViolation) -> Result<()> {
        let (ns, name) = id(v);
        let api: Api<BehaviorViolation> = Api::namespaced(self.client.clone(), &ns);
        let key = (ns, name);
        if !self.bases.contains_key(&key) {
            let existing = api.get_opt(&key.1).await?;
            if self.bases.len() >= MAX_BASES {
                self.bases.clear();
            }
            self.bases.insert(key.clone(), existing.map(|e| e.spec));
        }
        let body = on_top_of(self.bases.get(&key).unwrap_or(&None), v.clone());
        let result = api
            .patch(
                &key.1,
                &PatchParams::apply(AGENT_FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.writes
            .with_label_values(&["behaviorviolations", label])
            .inc();
        result?;
        Ok(())
    }

    async fn write_or_keep(&mut self, v: BehaviorViolation) {
        let key = id(&v);
        self.failed.remove(&key);
        if let Err(error) = self.write(&v).await {
            if refused_for_good(&error) {
                warn!(%error, namespace = %key.0, name = %key.1, "the API server refused the violation record for good; dropping it");
                self.writes
                    .with_label_values(&["behaviorviolations", "rejected"])
                    .inc();
                self.bases.remove(&key);
                return;
            }
            warn!(%error, namespace = %key.0, name = %key.1, "cannot write the violation record; retrying");
            if self.failed.len() >= MAX_FAILED {
                if let Some(k) = self.failed.keys().next().cloned() {
                    self.failed.remove(&k);
                }
            }
            self.failed.insert(key, v);
        }
    }

    /// Retries every failed write once.
    pub async fn retry(&mut self) {
        let pending: Vec<BehaviorViolation> = self.failed.drain().map(|(_, v)| v).collect();
        for v in pending {
            self.write_or_keep(v).await;
        }
    }

    /// Writes what arrives on `rx`, retrying failures every `retry_interval`, until the
    /// channel closes.
    #[instrument(skip_all)]
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<BehaviorViolation>,
        retry_interval: Duration,
    ) {
        let mut tick = tokio::time::interval(retry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                v = rx.recv() => match v {
                    Some(v) => self.write_or_keep(v).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if !self.failed.is_empty() {
                        debug!(records = self.failed.len(), "retrying violation writes");
                        self.retry().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdwatch_api::convert::to_time;
    use herdwatch_model::Timestamp;
    use herdwatch_test_support::{mock, verify, Exchange};
    use prometheus::Opts;

    fn record(count: u64, first: i64, last: i64) -> BehaviorViolation {
        let mut v = herdwatch_api::examples::violation();
        v.status = None;
        v.metadata.name = Some("web-1-00000000000000aa".into());
        v.spec.count = count;
        v.spec.first_seen = to_time(Timestamp(first));
        v.spec.last_seen = to_time(Timestamp(last));
        v.spec.process_killed = false;
        v
    }

    fn path() -> String {
        "/apis/herdwatch.dev/v1alpha1/namespaces/shop/behaviorviolations/web-1-00000000000000aa"
            .into()
    }

    fn writes() -> IntCounterVec {
        IntCounterVec::new(Opts::new("w", "w"), &["resource", "result"]).unwrap()
    }

    #[test]
    fn a_restart_continues_the_record_of_the_same_pod() {
        use herdwatch_api::violation::KilledBy;

        let mut before = record(40, 100, 500).spec;
        before.process_killed = true;
        before.process_killed_by = Some(KilledBy::Kernel);
        before.event.exe = "/first".into();
        let mut ours = record(3, 900, 950);
        ours.spec.process_killed_by = None;
        let v = on_top_of(&Some(before.clone()), ours.clone());
        assert_eq!(v.spec.count, 43);
        assert_eq!(v.spec.first_seen, to_time(Timestamp(100)));
        assert_eq!(v.spec.last_seen, to_time(Timestamp(950)));
        assert_eq!(
            v.spec.event.exe, "/first",
            "the first event stays the first"
        );
        assert!(v.spec.process_killed);
        assert_eq!(
            v.spec.process_killed_by,
            Some(KilledBy::Kernel),
            "who killed is kept until this instance kills"
        );
        let mut killed_now = ours.clone();
        killed_now.spec.process_killed = true;
        killed_now.spec.process_killed_by = Some(KilledBy::Agent);
        assert_eq!(
            on_top_of(&Some(before.clone()), killed_now)
                .spec
                .process_killed_by,
            Some(KilledBy::Agent),
            "the latest kill wins"
        );

        let mut other_pod = before;
        other_pod.pod_uid = "another".into();
        assert_eq!(on_top_of(&Some(other_pod), ours.clone()).spec.count, 3);
        assert_eq!(on_top_of(&None, ours).spec.count, 3);
    }

    #[tokio::test]
    async fn the_first_write_reads_the_record_then_applies() {
        let (client, verifier) = mock(vec![
            Exchange::get(&path()).fail(404, "NotFound"),
            Exchange::patch(&path())
                .query("fieldManager=herdwatch-agent")
                .query("force=true")
                .check(|body| {
                    assert_eq!(body["kind"], "BehaviorViolation");
                    assert_eq!(body["spec"]["count"], 1);
                    assert!(body.get("status").is_none(), "the status is the operator's");
                })
                .echo("1", 1),
            // The second write of the same record does not read again.
            Exchange::patch(&path())
                .check(|body| assert_eq!(body["spec"]["count"], 5))
                .echo("2", 1),
        ]);
        let w = writes();
        let mut writer = ViolationWriter::new(client, w.clone());
        writer.write(&record(1, 100, 100)).await.unwrap();
        writer.write(&record(5, 100, 130)).await.unwrap();
        drop(writer);
        verify(verifier).await;
        assert_eq!(w.with_label_values(&["behaviorviolations", "ok"]).get(), 2);
    }

    #[tokio::test]
    async fn an_existing_record_is_continued_and_failures_are_retried() {
        let existing = serde_json::to_value(record(7, 50, 60)).unwrap();
        let (client, verifier) = mock(vec![
            Exchange::get(&path()).reply(200, existing),
            Exchange::patch(&path()).fail(500, "InternalError"),
            Exchange::patch(&path())
                .check(|body| {
                    assert_eq!(body["spec"]["count"], 9);
                    assert_eq!(body["spec"]["firstSeen"], "1970-01-01T00:00:50Z");
                })
                .echo("3", 1),
        ]);
        let mut writer = ViolationWriter::new(client, writes());
        writer.write_or_keep(record(2, 100, 110)).await;
        assert_eq!(writer.failed(), 1, "kept, not dropped");
        writer.retry().await;
        assert_eq!(writer.failed(), 0);
        drop(writer);
        verify(verifier).await;
    }

    #[tokio::test]
    async fn records_refused_for_good_are_dropped_not_retried() {
        let terminating = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "behaviorviolations.herdwatch.dev \"web-1\" is forbidden: unable to create new content in namespace shop because it is being terminated",
            "reason": "Forbidden", "code": 403,
            "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]},
        });
        let (client, verifier) = mock(vec![
            Exchange::get(&path()).fail(404, "NotFound"),
            Exchange::patch(&path()).reply(403, terminating),
            // The namespace is gone: the next record's apply is refused with 404.
            Exchange::patch(&path()).fail(404, "NotFound"),
            // A plain permission problem may be fixed by an administrator: kept.
            Exchange::patch(&path()).fail(403, "Forbidden"),
        ]);
        let w = writes();
        let mut writer = ViolationWriter::new(client, w.clone());
        writer.write_or_keep(record(1, 100, 100)).await;
        assert_eq!(writer.failed(), 0, "a terminating namespace is not retried");
        // The dropped record's base went with it, so the next write would read first; give
        // it an empty base so that the API sees only the applies under test.
        writer.bases.insert(id(&record(1, 1, 1)), None);
        writer.write_or_keep(record(2, 100, 110)).await;
        assert_eq!(writer.failed(), 0, "a missing namespace is not retried");
        writer.bases.insert(id(&record(1, 1, 1)), None);
        writer.write_or_keep(record(3, 100, 120)).await;
        assert_eq!(writer.failed(), 1, "a permission error is retried");
        drop(writer);
        verify(verifier).await;
        assert_eq!(
            w.with_label_values(&["behaviorviolations", "rejected"])
                .get(),
            2
        );
        assert_eq!(
            w.with_label_values(&["behaviorviolations", "error"]).get(),
            3
        );
    }

    #[tokio::test]
    async fn the_task_writes_what_the_channel_brings() {
        let (client, verifier) = mock(vec![
            Exchange::get(&path()).fail(404, "NotFound"),
            Exchange::patch(&path()).echo("1", 1),
        ]);
        let (tx, rx) = mpsc::channel(4);
        let task =
            tokio::spawn(ViolationWriter::new(client, writes()).run(rx, Duration::from_secs(60)));
        tx.send(record(1, 1, 1)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        verify(verifier).await;
    }
}
