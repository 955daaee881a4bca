//! Pod discovery for the e2e suite's Prometheus, which Debian builds without Kubernetes
//! service discovery: watches the pods that match a label selector through the API server
//! and keeps a `file_sd_configs` file of them, with the meta labels Kubernetes discovery
//! would give (see `herdwatch_e2e::prometheus::pod_target_groups`). The file is replaced
//! atomically whenever the set changes; Prometheus notices the rename by itself.
//! Started and stopped by `e2e/prometheus/prometheus.sh`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config};

use herdwatch_e2e::prometheus::pod_target_groups;

/// Keeps a Prometheus file_sd file of the cluster's pods that match a selector.
#[derive(Debug, Parser)]
struct Args {
    /// Kubeconfig of the cluster to watch.
    #[arg(long, env = "HERDWATCH_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Label selector of the pods to list (all namespaces).
    #[arg(
        long,
        env = "HERDWATCH_POD_TARGETS_SELECTOR",
        default_value = "app.kubernetes.io/name=herdwatch"
    )]
    selector: String,
    /// The file_sd file to keep (JSON).
    #[arg(long, env = "HERDWATCH_POD_TARGETS_FILE")]
    output: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", args.kubeconfig.display()))?;
    let client = Client::try_from(config).context("building the kube client")?;
    let pods: Api<Pod> = Api::all(client);

    let (store, writer) = reflector::store();
    let events = reflector(
        writer,
        watcher(pods, watcher::Config::default().labels(&args.selector)),
    )
    .default_backoff();
    futures::pin_mut!(events);
    let mut listed = false;
    let mut written = String::new();
    eprintln!(
        "herdwatch-pod-targets: watching pods matching {} into {}",
        args.selector,
        args.output.display()
    );
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
            // The backoff retries; the file keeps the last known set meanwhile.
            Err(e) => {
                eprintln!("herdwatch-pod-targets: watch error: {e}");
                continue;
            }
        }
        if !listed {
            continue;
        }
        let pods: Vec<Pod> = store.state().iter().map(|p| (**p).clone()).collect();
        let text = serde_json::to_string_pretty(&pod_target_groups(&pods))?;
        if text != written {
            replace(&args.output, &text)?;
            eprintln!(
                "herdwatch-pod-targets: {} pods written to {}",
                pods.len(),
                args.output.display()
            );
            written = text;
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// Writes `text` next to `path` and renames it over `path`, so that Prometheus never
/// reads a half-written file.
fn replace(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
