//! herdwatch operator binary: parses flags, sets up logging, serves `/metrics`, `/healthz` and
//! `/readyz`, takes part in leader election, and runs the controllers while it leads (see the
//! `herdwatch_operator` library for what they do). SIGTERM or SIGINT stops the controllers
//! gracefully, then gives the leader Lease up so another replica takes over at once.

use std::io::IsTerminal;

use anyhow::{anyhow, Context as _};
use clap::Parser;
use herdwatch_operator::args::{Args, LogFormat};
use herdwatch_operator::http;
use herdwatch_operator::lease::{self, Elector, LeaseConfig};
use herdwatch_operator::metrics::Metrics;
use herdwatch_operator::run::{self, Runtime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid log filter", args.log))?;
    // Colours only on a terminal: escape codes in a pod's log make it unreadable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Turns `true` on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = which, "shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate().map_err(|e| anyhow!(e))?;
    init_logging(&args)?;
    let identity = args.identity();
    info!(version = env!("CARGO_PKG_VERSION"), %identity, "herdwatch operator starting");

    let mut config = kube::Config::infer()
        .await
        .context("reading the Kubernetes API configuration (in-cluster or KUBECONFIG)")?;
    // The client would otherwise retry 429 answers itself, for minutes. An eviction refused
    // by a PodDisruptionBudget is a 429 the violation reconciler must see, to record it and
    // retry on its own backoff; every other caller (controllers, watches, leader election)
    // has its own backoff too.
    config.default_retry = false;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = Metrics::new()?;
    let shutdown = shutdown_signal()?;

    let (ready_tx, ready_rx) = watch::channel(!args.leader_election);
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    info!(addr = %args.http_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(http::serve(listener, metrics.clone(), ready_rx));

    let (leading_tx, leading_rx) = watch::channel(!args.leader_election);
    let (release_tx, release_rx) = watch::channel(false);
    // Without leader election the sender stays here, unused, so `leading` stays true.
    let mut _always_leading = None;
    let elector = if args.leader_election {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.pod_namespace.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            renew_interval: args.lease_renew_interval,
        };
        Some(tokio::spawn(lease::run(
            Elector::new(client.clone(), config),
            leading_tx,
            ready_tx,
            release_rx,
        )))
    } else {
        info!("leader election is off: this replica leads");
        _always_leading = Some((leading_tx, ready_tx));
        None
    };

    let runtime = Runtime {
        client,
        settings: args.settings(),
        metrics,
        identity,
        gc_interval: args.observation_gc_interval,
    };
    run::supervise(runtime, leading_rx, shutdown).await;

    let _ = release_tx.send(true);
    if let Some(elector) = elector {
        elector.await.context("leader election task")?;
    }
    server.abort();
    info!("stopped");
    Ok(())
}
