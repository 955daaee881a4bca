//! Wiring: runs the controllers while this replica leads, and stops them when it stops
//! leading or shuts down.
//!
//! Each leadership term starts from nothing: new watches, new stores, a new [`Context`]. All
//! state that matters lives in the API (profile status, violation status), so a term (or a
//! replica) that ends loses nothing, and the next one rebuilds its view from the API server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herdwatch_api::{BehaviorObservation, BehaviorProfile, BehaviorViolation};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::{self, Controller};
use kube::runtime::{predicates, reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::args::Settings;
use crate::context::{system_clock, Context};
use crate::metrics::Metrics;
use crate::workload::{self, Workload};
use crate::{gc, profile, violation, Error};

/// How often the profiles-by-phase gauge is recomputed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);
/// How long in-flight reconciles may take to finish when this replica shuts down (it still
/// holds and renews the Lease meanwhile).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long they may take when leadership was lost: less than the time between this
/// replica's last renewal and another replica's takeover.
pub const LOST_LEADERSHIP_GRACE: Duration = Duration::from_secs(3);
/// Observations arriving this close together are merged in one reconcile.
const PROFILE_DEBOUNCE: Duration = Duration::from_secs(1);
/// Profile reconciles running at once. Each one reads a workload's observations and writes
/// its profile; unbounded, a burst of observations (every agent publishing at once after a
/// rollout) turns into as many concurrent lists and writes, which overload the API server
/// and the operator's memory alike. Queued reconciles are not lost: the debounce merges the
/// triggers that arrive while they wait.
const PROFILE_CONCURRENCY: u16 = 8;

/// What every term needs.
#[derive(Clone)]
pub struct Runtime {
    /// API client.
    pub client: Client,
    /// Settings from the flags.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// This replica's identity (Events' reporting instance).
    pub identity: String,
    /// How often observations are collected.
    pub gc_interval: Duration,
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Consumes a controller's output. Failed reconciles are logged by the error policies; a
/// failing watch (RBAC, a missing CRD) is logged here, since nothing else would say it.
async fn drain<S, T>(name: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, controller::Error<Error, watcher::Error>>>,
    T: std::fmt::Debug,
{
    stream
        .for_each(|r| async move {
            match r {
                Ok(o) => debug!(controller = name, object = ?o, "reconciled"),
                Err(controller::Error::QueueError(error)) => {
                    warn!(controller = name, %error, "watch failed; retrying with backoff");
                }
                Err(error) => debug!(controller = name, %error, "reconcile did not complete"),
            }
        })
        .await;
}

fn workload_controller<W: Workload>(
    client: &Client,
    ctx: Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let c = Controller::new(Api::<W>::all(client.clone()), watcher::Config::default());
    let store = c.store();
    let stream = c
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default().labels(&workload::learn_selector()),
            move |ns| workload::workloads_in(&store, &ns),
        )
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(workload::reconcile::<W>, workload::error_policy::<W>, ctx);
    drain(workload::controller_name::<W>(), stream)
}

/// Runs every controller until `stop` turns true, then lets in-flight reconciles finish.
pub async fn lead(rt: Runtime, stop: watch::Receiver<bool>) {
    let client = rt.client.clone();

    // Profiles: the controller reacts to spec changes (generation) only, so that its own
    // status writes do not trigger it again; observations and requeues do the rest. The
    // store keeps no managedFields: nothing reads them, and on a profile written by server-
    // side apply they list every field again, a large share of the store's memory.
    let (profiles, writer) = reflector::store::<BehaviorProfile>();
    let profile_stream = watcher(
        Api::<BehaviorProfile>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|p| p.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let profile_controller = Controller::for_stream(profile_stream, profiles.clone()).with_config(
        controller::Config::default()
            .debounce(PROFILE_DEBOUNCE)
            .concurrency(PROFILE_CONCURRENCY),
    );

    let violation_controller = Controller::new(
        Api::<BehaviorViolation>::all(client.clone()),
        watcher::Config::default(),
    );
    let violations = violation_controller.store();

    let ctx = Arc::new(Context::new(
        client.clone(),
        profiles.clone(),
        violations,
        rt.settings.clone(),
        rt.metrics.clone(),
        rt.identity.clone(),
        system_clock(),
    ));

    let profiles_run = {
        let store = profiles.clone();
        let seen = ctx.observations_seen.clone();
        profile_controller
            .watches(
                Api::<BehaviorObservation>::all(client.clone()),
                watcher::Config::default(),
                move |o| {
                    // Before the reconcile is queued, so that its list includes `o`.
                    seen.saw(o.metadata.resource_version.as_deref());
                    profile::profiles_for_observation(&store, &o)
                },
            )
            .graceful_shutdown_on(stopped(stop.clone()))
            .run(profile::reconcile, profile::error_policy, ctx.clone())
    };
    let violations_run = violation_controller
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(violation::reconcile, violation::error_policy, ctx.clone());

    let gauge = {
        let metrics = rt.metrics.clone();
        let mut stop = stop.clone();
        async move {
            loop {
                if profiles.wait_until_ready().await.is_ok() {
                    metrics.set_profiles(profiles.state().iter().map(|p| p.as_ref()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            metrics.clear_profiles();
        }
    };

    info!("leading: controllers started");
    tokio::join!(
        drain(profile::CONTROLLER, profiles_run),
        drain(violation::CONTROLLER, violations_run),
        workload_controller::<Deployment>(&client, ctx.clone(), &stop),
        workload_controller::<StatefulSet>(&client, ctx.clone(), &stop),
        workload_controller::<DaemonSet>(&client, ctx.clone(), &stop),
        gc::run(ctx.clone(), rt.gc_interval, stop.clone()),
        gauge,
    );
    info!("controllers stopped");
}

/// Runs the controllers whenever `leading` is true, until `shutdown` turns true.
pub async fn supervise(
    rt: Runtime,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if *shutdown.borrow() {
            break;
        }
        rt.metrics.set_leader(true);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut term = tokio::spawn(lead(rt.clone(), stop_rx));
        let lost = tokio::select! {
            _ = leading.wait_for(|l| !*l) => true,
            _ = shutdown.wait_for(|s| *s) => false,
            _ = &mut term => {
                warn!("the controllers stopped by themselves; starting them again");
                false
            }
        };
        let _ = stop_tx.send(true);
        let grace = if lost {
            LOST_LEADERSHIP_GRACE
        } else {
            SHUTDOWN_GRACE
        };
        if !term.is_finished() && tokio::time::timeout(grace, &mut term).await.is_err() {
            warn!(
                ?grace,
                "reconciles still running after the grace period; aborting them"
            );
            term.abort();
        }
        rt.metrics.set_leader(false);
        rt.metrics.clear_profiles();
        if *shutdown.borrow() {
            break;
        }
    }
}
