//! herdwatch's end-to-end harness: the pieces every scenario under `tests/` shares.
//!
//! Data enters from the local cluster (`e2e/cluster`) through the kube client, configured
//! from the kubeconfig named by `HERDWATCH_KUBECONFIG` (the Makefile sets it from
//! `cluster.sh kubeconfig`), and from the cluster's own `kubectl` and `helm` binaries for
//! what a user does with them (`kubectl exec`, `helm template`). It leaves as objects the
//! tests create in labelled temporary namespaces ([`with_temp_ns`]), as progress lines on
//! stderr, and, when a scenario fails, as a dump of what a person would look at first: pod
//! states, events, herdwatch's resources, and the agent's and operator's logs.
//!
//! Nothing here skips: without a cluster, every test fails with the commands that start one.

pub mod fixtures;
pub mod metrics;
pub mod prometheus;
pub mod shop;

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};

use herdwatch_api::{BehaviorProfile, BehaviorViolation, ClusterBehaviorPolicy};

/// Namespace the chart is installed in.
pub const HERDWATCH_NAMESPACE: &str = "herdwatch";
/// Helm release name; object names derive from it (`herdwatch-agent`, ...).
pub const RELEASE: &str = "herdwatch";
/// The agent DaemonSet.
pub const AGENT: &str = "herdwatch-agent";
/// The operator Deployment (and its leader Lease).
pub const OPERATOR: &str = "herdwatch-operator";
/// The test workload image: busybox with `sh`, `httpd` and `wget` (e2e/images/images.sh).
pub const WORKLOAD_IMAGE: &str = "herdwatch-e2e/workload:dev";
/// Label on every namespace a test creates, naming the test.
pub const TEST_LABEL: &str = "herdwatch-e2e/test";
/// Label on cluster-scoped objects a test creates, naming its namespace, so that they are
/// removed with it.
pub const OWNER_NS_LABEL: &str = "herdwatch-e2e/namespace";
/// Namespace label that opts a namespace in to learning (value `enabled`).
pub const LEARN_LABEL: &str = "herdwatch.dev/learn";
/// Pod label a Tag response sets, naming the rule broken.
pub const VIOLATION_LABEL: &str = "herdwatch.dev/violation";
/// Pod annotation a Tag response sets, with a one-line summary.
pub const VIOLATION_ANNOTATION: &str = "herdwatch.dev/violation-summary";
/// `reportingController` of the Events herdwatch posts on pods.
pub const REPORTING_CONTROLLER: &str = "herdwatch.dev/operator";

const START_HINT: &str = "start the cluster and install herdwatch with `make e2e-test` (or: \
`make cluster-up images`, then `export HERDWATCH_KUBECONFIG=$(bash e2e/cluster/cluster.sh kubeconfig)` \
and `cargo test -p herdwatch-e2e --no-fail-fast -- --test-threads=1 --nocapture`)";

/// A connection to the e2e cluster.
#[derive(Clone)]
pub struct Env {
    /// Client with the admin kubeconfig.
    pub client: Client,
    /// Path of that kubeconfig, for `kubectl` and `helm`.
    pub kubeconfig: PathBuf,
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Prints one progress line with the seconds since the test binary started.
pub fn step(msg: impl Display) {
    eprintln!("[e2e {:6.1}s] {msg}", started().elapsed().as_secs_f64());
}

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    // Cargo sets it for the test process too; the run-time value wins, since a test binary
    // may be reused from a shared target directory built from another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The cluster's directory (`e2e/cluster/lib/common.sh` decides it).
fn cluster_dir() -> PathBuf {
    std::env::var_os("HERDWATCH_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/herdwatch-cluster"))
}

/// A binary of the cluster's pinned versions: `$HERDWATCH_<NAME>` if set, else the
/// cluster's `bin/` (symlinks into the build cache), else the one on PATH.
fn tool(name: &str) -> PathBuf {
    let var = format!("HERDWATCH_{}", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let in_cluster = cluster_dir().join("bin").join(name);
    if in_cluster.exists() {
        return in_cluster;
    }
    PathBuf::from(name)
}

impl Env {
    /// Connects to the cluster named by `HERDWATCH_KUBECONFIG`. Panics, saying how to start
    /// the cluster, when it is not set or the API server does not answer.
    pub async fn connect() -> Env {
        started();
        let kubeconfig = match std::env::var_os("HERDWATCH_KUBECONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => panic!("HERDWATCH_KUBECONFIG is not set, so there is no cluster to test against: {START_HINT}"),
        };
        let kc = Kubeconfig::read_from(&kubeconfig).unwrap_or_else(|e| {
            panic!(
                "cannot read the kubeconfig {} ({e}): {START_HINT}",
                kubeconfig.display()
            )
        });
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
        let client = Client::try_from(config).expect("building the kube client");
        if let Err(e) = client.apiserver_version().await {
            panic!(
                "the API server of {} does not answer ({e}); is the cluster up? `bash e2e/cluster/cluster.sh status` tells. {START_HINT}",
                kubeconfig.display()
            );
        }
        Env { client, kubeconfig }
    }

    /// Connects, and checks that herdwatch is installed and Ready (installing the chart
    /// first when it is not there at all).
    pub async fn with_herdwatch() -> Env {
        let env = Env::connect().await;
        env.ensure_installed().await;
        env
    }

    /// Runs the cluster's kubectl with this kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.run_tool("kubectl", args, None)
    }

    /// Runs the cluster's helm with this kubeconfig.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.run_tool("helm", args, None)
    }

    /// Runs `name` with `args`, feeding `stdin` when given.
    pub fn run_tool(&self, name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let bin = tool(name);
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); set HERDWATCH_{} or run `bash e2e/cluster/cluster.sh build`",
                bin.display(),
                name.to_ascii_uppercase()
            )
        });
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input).expect("writing to the child's stdin");
        }
        child.wait_with_output().expect("waiting for the child")
    }

    /// `kubectl exec` of `sh -c script` in a pod's container, as an operator would type it.
    /// Returns the exit code and the combined output; never panics on a non-zero exit.
    pub fn exec(&self, ns: &str, pod: &str, container: &str, script: &str) -> (i32, String) {
        let out = self.kubectl(&[
            "exec", "-n", ns, pod, "-c", container, "--", "sh", "-c", script,
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    async fn ensure_installed(&self) {
        let ds_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), HERDWATCH_NAMESPACE);
        if ds_api.get_opt(AGENT).await.ok().flatten().is_none() {
            step("herdwatch is not installed: helm upgrade --install with e2e/values.yaml");
            let values = repo_root().join("e2e/values.yaml");
            let out = self.helm(&[
                "upgrade",
                "--install",
                RELEASE,
                "charts/herdwatch",
                "-n",
                HERDWATCH_NAMESPACE,
                "--create-namespace",
                "-f",
                values.to_str().expect("utf-8 path"),
                "--wait",
                "--timeout",
                "180s",
            ]);
            if !out.status.success() {
                dump_herdwatch(self).await;
                panic!(
                    "helm install failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.wait_herdwatch_ready(Duration::from_secs(120)).await;
    }

    /// Waits until every agent pod and both operator replicas are Ready.
    pub async fn wait_herdwatch_ready(&self, timeout: Duration) {
        let ds_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), HERDWATCH_NAMESPACE);
        let dep_api: Api<Deployment> = Api::namespaced(self.client.clone(), HERDWATCH_NAMESPACE);
        let result = wait_until_soft("herdwatch agent and operator Ready", timeout, || {
            let (ds_api, dep_api) = (ds_api.clone(), dep_api.clone());
            async move {
                let ds = ds_api.get(AGENT).await.map_err(|e| e.to_string())?;
                let dep = dep_api.get(OPERATOR).await.map_err(|e| e.to_string())?;
                let s = ds.status.unwrap_or_default();
                let want = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = dep
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let state = format!(
                    "agent {}/{} ready, operator {ready}/{want} ready",
                    s.number_ready, s.desired_number_scheduled
                );
                // The status must describe the current spec (an upgrade bumps the generation
                // before the controller has looked at it), and count Ready pods, not helm's
                // idea of done, which skips a DaemonSet on one node.
                let current = |generation: Option<i64>, observed: Option<i64>| {
                    generation.is_some() && generation == observed
                };
                if current(ds.metadata.generation, s.observed_generation)
                    && current(
                        dep.metadata.generation,
                        dep.status.as_ref().and_then(|s| s.observed_generation),
                    )
                    && s.desired_number_scheduled > 0
                    && s.number_ready == s.desired_number_scheduled
                    && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                    && ready == want
                {
                    Ok(state)
                } else {
                    Err(state)
                }
            }
        })
        .await;
        if let Err(state) = result {
            dump_herdwatch(self).await;
            panic!("herdwatch did not become Ready within {timeout:?}: {state}");
        }
    }
}

/// Polls `poll` every second until it returns `Ok`, printing progress every 10 s; panics
/// with the last state `poll` reported when `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match wait_until_soft(what, timeout, poll).await {
        Ok(v) => v,
        Err(state) => {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {state}")
        }
    }
}

/// [`wait_until`], returning the last state instead of panicking at the timeout.
pub async fn wait_until_soft<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut poll: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last_report = Instant::now();
    step(format!("waiting for {what} (up to {}s)", timeout.as_secs()));
    loop {
        match poll().await {
            Ok(v) => {
                step(format!(
                    "  {what}: done after {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(v);
            }
            Err(state) => {
                if start.elapsed() >= timeout {
                    return Err(state);
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    step(format!(
                        "  still waiting for {what} ({}s): {state}",
                        start.elapsed().as_secs()
                    ));
                    last_report = Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A short name no earlier run used: `<prefix>-<5 base-36 digits>`.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
        ^ u128::from(std::process::id()) << 64;
    let mut n = (nanos % 36u128.pow(5)) as u32;
    let mut suffix = String::new();
    for _ in 0..5 {
        let d = n % 36;
        suffix.push(char::from_digit(d, 36).expect("digit below 36"));
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

/// Runs `body` in a fresh namespace `hw-e2e-<test>-<random>` labelled with [`TEST_LABEL`]
/// and `labels`. When `body` panics, dumps what a person would look at (pods, events,
/// herdwatch's resources, agent and operator logs) before failing the test. The namespace,
/// and the cluster-scoped objects labelled [`OWNER_NS_LABEL`]`=<namespace>`, are deleted
/// afterwards unless `HERDWATCH_E2E_KEEP=1`.
pub async fn with_temp_ns<F, Fut>(env: &Env, test: &str, labels: &[(&str, &str)], body: F)
where
    F: FnOnce(Env, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = unique(&format!("hw-e2e-{test}"));
    let mut all_labels: std::collections::BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all_labels.insert(TEST_LABEL.into(), test.into());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(all_labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(env.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    step(format!("namespace {name} created"));

    // The body runs as its own task so that its panic is caught here, after which the
    // namespace is dumped and removed, and the panic goes on to fail the test.
    let failure = match tokio::spawn(body(env.clone(), name.clone())).await {
        Ok(()) => None,
        Err(join) if join.is_panic() => Some(join.into_panic()),
        Err(join) => Some(Box::new(format!("test task: {join}")) as Box<_>),
    };
    if failure.is_some() {
        step(format!(
            "FAILED in namespace {name}; what the cluster shows:"
        ));
        dump(env, &name).await;
    }
    if std::env::var("HERDWATCH_E2E_KEEP").as_deref() == Ok("1") {
        step(format!(
            "HERDWATCH_E2E_KEEP=1: keeping namespace {name} and its cluster-scoped objects"
        ));
    } else {
        cleanup(env, &name).await;
    }
    if let Some(p) = failure {
        std::panic::resume_unwind(p);
    }
}

async fn cleanup(env: &Env, ns: &str) {
    let lp = ListParams::default().labels(&format!("{OWNER_NS_LABEL}={ns}"));
    let policies: Api<ClusterBehaviorPolicy> = Api::all(env.client.clone());
    if let Err(e) = policies
        .delete_collection(&DeleteParams::default(), &lp)
        .await
    {
        step(format!("cleanup: deleting policies of {ns}: {e}"));
    }
    // Not waited for: the namespace's finalization runs on while the next test starts.
    if let Err(e) = Api::<Namespace>::all(env.client.clone())
        .delete(ns, &DeleteParams::background())
        .await
    {
        step(format!("cleanup: deleting namespace {ns}: {e}"));
    }
}

fn print_tool(env: &Env, title: &str, args: &[&str]) {
    let out = env.kubectl(args);
    eprintln!(
        "----- {title}: kubectl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), which text-format logs carry.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints the state of a test namespace and of herdwatch.
pub async fn dump(env: &Env, ns: &str) {
    print_tool(
        env,
        "pods",
        &["get", "pods", "-n", ns, "-o", "wide", "--show-labels"],
    );
    print_tool(
        env,
        "pod states",
        &[
            "get", "pods", "-n", ns, "-o",
            "custom-columns=POD:.metadata.name,PHASE:.status.phase,READY:.status.containerStatuses[*].ready,RESTARTS:.status.containerStatuses[*].restartCount,STATE:.status.containerStatuses[*].state,DELETING:.metadata.deletionTimestamp",
        ],
    );
    print_tool(
        env,
        "events",
        &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
    );
    print_tool(
        env,
        "herdwatch resources",
        &[
            "get",
            "behaviorprofiles,behaviorviolations,behaviorobservations",
            "-n",
            ns,
            "-o",
            "yaml",
        ],
    );
    print_tool(
        env,
        "policies",
        &["get", "clusterbehaviorpolicies", "-o", "wide"],
    );
    dump_herdwatch(env).await;
}

/// Prints herdwatch's own pods, events and logs.
pub async fn dump_herdwatch(env: &Env) {
    print_tool(
        env,
        "herdwatch pods",
        &["get", "pods", "-n", HERDWATCH_NAMESPACE, "-o", "wide"],
    );
    print_tool(
        env,
        "herdwatch events",
        &[
            "get",
            "events",
            "-n",
            HERDWATCH_NAMESPACE,
            "--sort-by=.lastTimestamp",
        ],
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), HERDWATCH_NAMESPACE);
    let list = match pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("----- herdwatch logs: cannot list pods: {e}");
            return;
        }
    };
    for pod in list {
        let name = pod.name_any();
        let lp = LogParams {
            tail_lines: Some(150),
            ..LogParams::default()
        };
        match pods.logs(&name, &lp).await {
            Ok(text) => eprintln!(
                "----- logs of {HERDWATCH_NAMESPACE}/{name} (last 150 lines)\n{}",
                strip_ansi(&text)
            ),
            Err(e) => eprintln!("----- logs of {HERDWATCH_NAMESPACE}/{name}: {e}"),
        }
        let restarted = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0));
        if restarted {
            let lp = LogParams {
                previous: true,
                tail_lines: Some(60),
                ..LogParams::default()
            };
            if let Ok(text) = pods.logs(&name, &lp).await {
                eprintln!(
                    "----- logs of the previous container of {HERDWATCH_NAMESPACE}/{name}\n{}",
                    strip_ansi(&text)
                );
            }
        }
    }
}

/// The BehaviorViolations in `ns`.
pub async fn violations(env: &Env, ns: &str) -> Result<Vec<BehaviorViolation>, String> {
    Api::<BehaviorViolation>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing BehaviorViolations: {e}"))
}

/// One line per violation, for progress and failure messages.
pub fn describe_violations(vs: &[BehaviorViolation]) -> String {
    if vs.is_empty() {
        return "no BehaviorViolation".into();
    }
    vs.iter()
        .map(|v| {
            format!(
                "{} (pod {}, rule {}, subject {}, count {}, outcome {:?})",
                v.name_any(),
                v.spec.pod,
                v.spec.rule,
                v.spec.subject,
                v.spec.count,
                v.status.as_ref().map(|s| s.outcome)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The BehaviorProfiles in `ns`.
pub async fn profiles(env: &Env, ns: &str) -> Result<Vec<BehaviorProfile>, String> {
    Api::<BehaviorProfile>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing BehaviorProfiles: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_sequences_only() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m started [x]"),
            "2026  INFO started [x]"
        );
    }

    #[test]
    fn unique_names_are_valid_namespace_names() {
        let n = unique("hw-e2e-learn");
        assert!(
            n.starts_with("hw-e2e-learn-") && n.len() == "hw-e2e-learn-".len() + 5,
            "{n}"
        );
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
