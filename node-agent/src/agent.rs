//! `herdwatch-agent run`: the DaemonSet. Wiring only: the capture feeds the pipeline and
//! the [`Engine`] (learning, evaluation, response); the pod watch feeds the pod store; the
//! profile, policy and namespace watches feed the evaluation snapshot; the publisher writes
//! observations and the writer violation records, both off the event loop; the metrics
//! server reads the counters. Once per metrics interval the kernel's copy of what it kills
//! at exec is brought up to date from the engine ([`KernelEnforcer`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdwatch_model::response::{Dedup, TokenBucket};
use herdwatch_model::Limits;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::args::RunArgs;
use crate::drift::DriftProbe;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::evaluate::kernel::{protected_namespaces, KernelEnforcer};
use crate::evaluate::watch::{watch_namespaces, watch_policies, watch_profiles};
use crate::evaluate::{EvalStore, Evaluator, Scope};
use crate::learn::publish::{lock, now, scoped_pods, Publisher};
use crate::learn::Learner;
use crate::metrics::{self, CaptureStats, Health, Metrics};
use crate::observe::{host_pipeline, load_capture};
use crate::pods::watch::watch_pods;
use crate::pods::PodStore;
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
    let publishing = tokio::spawn(publisher.clone().run(
        learner.clone(),
        store.clone(),
        scope.clone(),
        args.publish_interval,
    ));

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
        Evaluator::new(eval, args.namespace_selector.clone()),
        responder,
        drift,
        store.clone(),
    );

    let mut pipeline = host_pipeline(&args.capture, Some(store.clone()))?;
    let mut capture = load_capture(&args.capture)?;
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
    // With kills turned off, the kernel kills nothing either.
    let mut enforcer = args.kill_processes.then(KernelEnforcer::new);
    info!(?protected, in_kernel = enforcer.is_some(), "process kills");

    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| Error::io("handle", "SIGTERM".as_ref(), source))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| Error::io("handle", "SIGINT".as_ref(), source))?;
    let mut tick = tokio::time::interval(args.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Vec::with_capacity(4096);
    let mut lost_seen: u64 = 0;
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
                if let Some(enforcer) = &mut enforcer {
                    let wanted = engine.kernel_rules(&mut pipeline, &protected);
                    enforcer.sync(&mut capture, &wanted);
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
