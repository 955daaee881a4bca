//! `herdwatch-agent run`: the DaemonSet. Wiring only: the capture feeds the pipeline and
//! the [`Engine`] (learning, evaluation, response); the pod watch feeds the pod store; the
//! profile, policy and namespace watches feed the evaluation snapshot; the publisher writes
//! observations and the writer violation records, both off the event loop; the metrics
//! server reads the counters. Once per metrics interval the kernel's copy of what it kills
//! at exec is brought up to date from the engine ([`KernelEnforcer`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use herdwatch_abi::AgentState;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::Api;

use herdwatch_model::response::{Dedup, TokenBucket};
use herdwatch_model::Limits;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::args::RunArgs;
use crate::attribution::pods::watch::watch_pods;
use crate::attribution::pods::PodStore;
use crate::capture::pins::{AgentGap, GapKernel};
use crate::capture::Capture;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::evaluate::drift::DriftProbe;
use crate::evaluate::kernel::{protected_namespaces, KernelEnforcer};
use crate::evaluate::watch::{watch_namespaces, watch_policies, watch_profiles};
use crate::evaluate::{EvalStore, Evaluator, Scope};
use crate::learn::publish::{lock, now, scoped_pods, Publisher};
use crate::learn::Learner;
use crate::metrics::{self, CaptureStats, Health, Metrics};
use crate::observe::{host_pipeline, load_capture};
use crate::respond::kill::{PidfdKiller, ProcessKiller};
use crate::respond::writer::ViolationWriter;
use crate::respond::{Responder, ResponderConfig, ResponseMetrics};
use herdwatch_model::files::SensitivePaths;

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<()> {
    let node_name = args
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(Error::NoNodeName)?;
    // Before any profile is compiled: every index judges sensitive paths by this list.
    if !args.sensitive_paths.is_empty() {
        SensitivePaths::new(&args.sensitive_paths).install();
    }
    info!(sensitive_paths = %SensitivePaths::shared_default(), "file entries never cover these paths unless they name them");
    if args.stall_timeout <= args.metrics_interval {
        return Err(Error::StallTimeout {
            stall: args.stall_timeout,
            interval: args.metrics_interval,
        });
    }
    let started = now();
    let store = Arc::new(PodStore::default());
    let health = Arc::new(Health::new(Some(store.clone()), args.stall_timeout));
    let mut metrics = Metrics::new()?;

    // Serve health first, so the kubelet sees a live (not yet ready) agent while it loads.
    let listener = metrics::bind(args.metrics_addr).await?;
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(
        metrics::serve(listener, metrics.registry(), health.clone())
            .instrument(info_span!("metrics")),
    );

    let client = kube::Client::try_default().await?;
    tokio::spawn(watch_pods(client.clone(), node_name.clone(), store.clone()));

    // Evaluation: profiles, policies and namespace labels, compiled as they change.
    let counters = metrics.agent().clone();
    let eval = Arc::new(EvalStore::default());
    tokio::spawn(watch_profiles(
        client.clone(),
        eval.clone(),
        counters.watch_errors.clone(),
        counters.invalid_objects.clone(),
    ));
    tokio::spawn(watch_policies(
        client.clone(),
        eval.clone(),
        counters.watch_errors.clone(),
        counters.invalid_objects.clone(),
    ));
    tokio::spawn(watch_namespaces(
        client.clone(),
        eval.clone(),
        counters.watch_errors.clone(),
    ));

    // Learning: the publisher reads back what this node published, then writes changes.
    let learner = Arc::new(Mutex::new(Learner::new(
        &node_name,
        started,
        Limits::DEFAULT,
        args.max_observations,
    )));
    let publisher = Publisher::new(
        client.clone(),
        &node_name,
        args.publish_max_writes,
        counters.api_writes.clone(),
    );
    let scope = Scope::new(args.namespace_selector.clone(), eval.clone());
    let eval_synced = eval.clone();

    // Response: records leave through a bounded queue to their writer.
    let (tx, rx) = mpsc::channel(args.violation_queue.max(1));
    let writing = tokio::spawn(
        ViolationWriter::new(client.clone(), counters.api_writes.clone())
            .run(rx, args.publish_interval),
    );
    let refill = Duration::from_secs(60) / args.violation_writes_per_minute.max(1);
    let dedup = Dedup::new(
        args.violation_records,
        args.violation_update_interval,
        TokenBucket::new(args.violation_write_burst.max(1), refill, started),
    );
    // The operator never evicts in kube-system, its own namespace (the chart installs the
    // agent there too) or the namespaces it is told to protect (the chart passes the same
    // list to both); the agent never kills processes there, in the kernel or not.
    let protected = protected_namespaces(client.default_namespace(), &args.protected_namespaces);
    let killer: Option<Box<dyn ProcessKiller>> = args
        .kill_processes
        .then(|| Box::new(PidfdKiller::new(&args.capture.proc_root)) as Box<dyn ProcessKiller>);
    let responder = Responder::new(
        &node_name,
        dedup,
        ResponderConfig {
            capacity: args.violation_records,
            protected_namespaces: protected.clone(),
            process_kills_per_minute: args.process_kills_per_minute,
        },
        tx,
        killer,
        ResponseMetrics {
            violations: counters.violations.clone(),
            dropped: counters.violation_writes_dropped.clone(),
            kills: counters.process_kills.clone(),
        },
    );
    let drift = (!args.host_root.as_os_str().is_empty())
        .then(|| DriftProbe::new(&args.capture.proc_root, &args.host_root));
    let mut engine = Engine::new(
        Evaluator::new(eval.clone(), args.namespace_selector.clone()),
        responder,
        drift,
        store.clone(),
    );

    let mut pipeline = host_pipeline(&args.capture, Some(store.clone()))?;
    let pin_root = (!args.pin_root.is_empty()).then_some(std::path::Path::new(&args.pin_root));
    let mut capture = load_capture(&args.capture, pin_root)?;
    let attached_ns = unix_ns(SystemTime::now());
    // With the programs adopted, the kernel judged and counted all along: start from the
    // rules and the losses the earlier agent left.
    let mut enforcer = KernelEnforcer::new();
    let mut lost_seen: u64 = 0;
    let gap = match capture.pinned() {
        Some(pinned) if pinned.adopted => {
            enforcer.adopt(capture.enforcement()?, capture.exe_rule_keys()?);
            lost_seen = capture.agent_state(AgentState::LostAccounted)?;
            lock(&learner).watched_throughout();
            AgentGap::since(
                capture.agent_state(AgentState::Heartbeat)?,
                capture.agent_state(AgentState::Stopped)?,
                attached_ns,
                GapKernel::Adopted,
            )
        }
        Some(pinned) => pinned
            .earlier
            .iter()
            .filter_map(Capture::pinned_agent_times)
            .max()
            .and_then(|(beat, stop)| AgentGap::since(beat, stop, attached_ns, GapKernel::Earlier)),
        None => None,
    };
    if let Some(gap) = gap {
        record_gap(&client, &args, &node_name, &counters, gap);
    }
    // Only now: whether the kernel watched all along decides how the observations read
    // back from the earlier agent are taken in.
    let publishing = tokio::spawn(publisher.clone().run(
        learner.clone(),
        store.clone(),
        scope.clone(),
        args.publish_interval,
    ));
    let seed = pipeline.seed_from_proc(Instant::now())?;
    // Containers already running now started before the agent could see them.
    let running: Vec<Arc<str>> = pipeline
        .processes()
        .iter()
        .filter_map(|p| p.container.clone())
        .collect();
    lock(&learner).running_before_attach(running);
    engine.prime_drift(pipeline.processes());
    info!(
        processes = seed.processes,
        vanished = seed.vanished,
        "process table seeded from /proc"
    );
    health.set_attached();
    info!(?protected, in_kernel = args.kill_processes, "process kills");
    // The kernel's rules are written once every watch has listed everything: rules from a
    // partial view would take away an adopted container's rules until the view is whole.
    let mut rules_written = false;

    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| Error::io("handle", "SIGTERM".as_ref(), source))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| Error::io("handle", "SIGINT".as_ref(), source))?;
    let mut tick = tokio::time::interval(args.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Vec::with_capacity(4096);
    loop {
        health.beat();
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            result = capture.next_batch(&mut batch) => {
                result?;
                let instant = Instant::now();
                let now = now();
                let mut l = lock(&learner);
                for event in batch.drain(..) {
                    engine.handle(&mut l, &mut pipeline, &event, instant, now);
                }
            }
            _ = tick.tick() => {
                let now = now();
                engine.replay(&mut lock(&learner), pipeline.processes(), Instant::now());
                engine.responder_mut().flush(now);
                if store.synced() && eval_synced.synced() {
                    // With kills turned off, the kernel kills nothing either (and an
                    // adopted rule of an agent that killed is taken out).
                    let wanted = if args.kill_processes {
                        engine.kernel_rules(&mut pipeline, &protected)
                    } else {
                        BTreeMap::new()
                    };
                    enforcer.sync(&mut capture, &wanted);
                    if !rules_written {
                        rules_written = true;
                        // This agent's rules are in place: an earlier build's programs,
                        // which kept killing until now, can go.
                        match capture.retire_earlier() {
                            Ok(0) => {}
                            Ok(sets) => info!(sets, "the earlier agent's pinned programs are detached: this agent's rules are in force"),
                            Err(error) => warn!(%error, "cannot remove the earlier agent's pinned programs"),
                        }
                    }
                }
                for cgroup_id in engine.cgroups_to_forget(&mut pipeline, now, args.report_delay) {
                    match capture.forget_cgroup(cgroup_id) {
                        Ok(entries) => debug!(cgroup_id, entries, "the kernel forgot what a newly judged container reported while learning"),
                        Err(error) => warn!(cgroup_id, %error, "cannot make the kernel forget a newly judged container's first sightings"),
                    }
                }
                metrics.update(&pipeline.stats(), Some(&store));
                match (capture.lost_counts(), capture.emitted_counts()) {
                    (Ok(lost), Ok(emitted)) => {
                        let total: u64 = lost.iter().sum();
                        if total > lost_seen {
                            warn!(lost = total - lost_seen, "the kernel lost events; marking the observations of this node's workloads");
                            let pods = scoped_pods(&store, &scope);
                            lock(&learner).note_lost(total - lost_seen, &pods, now);
                        }
                        lost_seen = lost_seen.max(total);
                        // Kept with the maps, for the agent that adopts them next.
                        let beat = capture
                            .set_agent_state(AgentState::Heartbeat, unix_ns(SystemTime::now()))
                            .and_then(|()| capture.set_agent_state(AgentState::LostAccounted, lost_seen));
                        if let Err(error) = beat {
                            warn!(%error, "cannot write the agent's heartbeat into the kernel");
                        }
                        metrics.update_capture(&CaptureStats {
                            lost,
                            emitted,
                            decode_errors: capture.decode_errors(),
                            map_memory_bytes: capture.map_memory_bytes(),
                        });
                    }
                    // Skipped, not zeroed: the next reading carries the totals.
                    (Err(error), _) | (_, Err(error)) => warn!(%error, "cannot read the kernel's event counters"),
                }
                let learn = lock(&learner).stats();
                let judging = engine.evaluator().counts();
                let records = engine.responder_mut().tracked();
                metrics.agent().update(&learn, &engine.stats(), judging, records);
            }
        }
    }
    // Write what is pending, within bounds: the kubelet's grace period is short.
    info!("shutting down: writing pending observations and violation records");
    publishing.abort();
    let seeded = lock(&learner).seeded();
    if seeded {
        match tokio::time::timeout(SHUTDOWN_WRITES, publisher.publish(&learner)).await {
            Ok(round) => info!(?round, "published the last observations"),
            Err(_) => warn!("publishing the last observations took too long; they are lost"),
        }
    }
    engine.responder_mut().flush_all();
    drop(engine);
    if capture.pinned().is_some() {
        if let Err(error) = capture.set_agent_state(AgentState::Stopped, unix_ns(SystemTime::now()))
        {
            warn!(%error, "cannot write the agent's stop time into the kernel");
        }
        if daemonset_stays(&client, &args.daemonset).await {
            info!("the programs stay pinned: the kernel goes on capturing and killing at exec until the next agent adopts them");
        } else {
            match capture.unpin() {
                Ok(()) => info!("herdwatch is leaving this node: its programs are unpinned and detach as the agent exits"),
                Err(error) => warn!(%error, "cannot remove the pins; run `herdwatch-agent unpin` on the node"),
            }
        }
    }
    if tokio::time::timeout(SHUTDOWN_WRITES, writing)
        .await
        .is_err()
    {
        warn!("writing the last violation records took too long; some are lost");
    }
    info!("shut down");
    Ok(())
}

/// How long each kind of pending write may take at shutdown.
const SHUTDOWN_WRITES: Duration = Duration::from_secs(5);

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Counts and logs a time the node went without an agent, and posts it as an Event on the
/// agent's DaemonSet (`kubectl get events -n <herdwatch namespace>`).
fn record_gap(
    client: &kube::Client,
    args: &RunArgs,
    node_name: &str,
    counters: &crate::metrics::AgentCounters,
    gap: AgentGap,
) {
    let kernel = gap.kernel.label();
    let seconds = gap.seconds();
    counters.agent_gaps.with_label_values(&[kernel]).inc();
    counters
        .agent_gap_seconds
        .with_label_values(&[kernel])
        .inc_by(seconds.round() as u64);
    let meanwhile = match gap.kernel {
        GapKernel::Adopted => "the kernel went on capturing and killing at exec, and this agent adopted its programs",
        GapKernel::Earlier => "the earlier build's programs went on killing at exec; what they captured is lost, and the replicas running now are marked as not watched from their start",
        GapKernel::None => "nothing ran",
    };
    warn!(
        seconds,
        kernel, "this node went without an agent: {meanwhile}"
    );
    if args.daemonset.is_empty() {
        return;
    }
    let note = format!(
        "node {node_name} went without a herdwatch agent for {seconds:.1} s (until {}): {meanwhile}",
        herdwatch_api::convert::to_time(herdwatch_model::Timestamp(
            i64::try_from(gap.to_ns / 1_000_000_000).unwrap_or(i64::MAX)
        ))
        .0
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "herdwatch-agent".into(),
            instance: Some(node_name.to_owned()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("DaemonSet".into()),
        name: Some(args.daemonset.clone()),
        namespace: Some(client.default_namespace().to_owned()),
        ..ObjectReference::default()
    };
    tokio::spawn(async move {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "AgentGap".into(),
            note: Some(note),
            action: "Restarted".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &regarding).await {
            warn!(%error, "cannot post the agent gap as an Event");
        }
    });
}

/// Whether this agent's DaemonSet is there and not being deleted: then the pins stay for
/// the next agent. When it is gone (herdwatch is being uninstalled) or cannot be named, the
/// pins go. When the API cannot be asked, they stay: a node shutting down loses them anyway,
/// and a node that comes back is guarded at once.
async fn daemonset_stays(client: &kube::Client, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let api: Api<DaemonSet> = Api::default_namespaced(client.clone());
    match tokio::time::timeout(SHUTDOWN_WRITES, api.get_opt(name)).await {
        Ok(Ok(Some(ds))) => ds.metadata.deletion_timestamp.is_none(),
        Ok(Ok(None)) => false,
        // The agent's own permissions gone: herdwatch is being uninstalled too.
        Ok(Err(kube::Error::Api(status))) if status.code == 403 || status.code == 404 => false,
        Ok(Err(error)) => {
            warn!(%error, "cannot tell whether herdwatch is being uninstalled; the programs stay pinned");
            true
        }
        Err(_) => {
            warn!("the API did not answer in time; the programs stay pinned");
            true
        }
    }
}
