# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for the herdwatch e2e cluster scripts.
# Sourced by cluster.sh and the e2e/images scripts; never run directly.

# ---- pinned versions (change here, and only here) -------------------------------------
KUBE_VERSION="${HERDWATCH_KUBE_VERSION:-v1.35.4}"
ETCD_VERSION="${HERDWATCH_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HERDWATCH_HELM_VERSION:-v3.22.0}"
# crictl: to inspect and tear down the node's pods through the CRI (debugging, `down`).
CRICTL_VERSION="${HERDWATCH_CRICTL_VERSION:-v1.34.0}"
# Only built when the kubelet refuses the distribution's containerd (see README.md).
CONTAINERD_VERSION="${HERDWATCH_CONTAINERD_VERSION:-v2.4.2}"

# ---- locations ---------------------------------------------------------------------------
HERDWATCH_CACHE="${HERDWATCH_CACHE:-$HOME/.cache/herdwatch}"
CACHE_BIN="$HERDWATCH_CACHE/bin"
CACHE_SRC="$HERDWATCH_CACHE/src"
CLUSTER_DIR="${HERDWATCH_CLUSTER_DIR:-/var/lib/herdwatch-cluster}"
LOG_DIR="$CLUSTER_DIR/logs"
RUN_DIR="$CLUSTER_DIR/run"       # pid files
PKI_DIR="$CLUSTER_DIR/pki"
CONF_DIR="$CLUSTER_DIR/config"
BIN_DIR="$CLUSTER_DIR/bin"       # symlinks to the cached binaries of the pinned versions
ADMIN_KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"

# containerd of the cluster: private instance, never the machine's own.
CONTAINERD_ROOT="$CLUSTER_DIR/containerd/root"
CONTAINERD_STATE="$CLUSTER_DIR/containerd/state"
CONTAINERD_SOCK="$CLUSTER_DIR/containerd/containerd.sock"
CONTAINERD_NS="k8s.io"
KUBELET_ROOT="$CLUSTER_DIR/kubelet"
CNI_CONF_DIR="$CLUSTER_DIR/cni/net.d"
CNI_BIN_DIR="/usr/lib/cni"

# ---- network -----------------------------------------------------------------------------
NODE_NAME="${HERDWATCH_NODE_NAME:-herdwatch-node}"
POD_CIDR="10.88.0.0/16"
SERVICE_CIDR="10.96.0.0/12"
KUBERNETES_SVC_IP="10.96.0.1"
CLUSTER_DOMAIN="cluster.local"
# The node's address lives on the cluster's own bridge, so the cluster does not depend on
# the machine's network: the API server advertises it and pods reach it through it.
CNI_BRIDGE="herdwatch0"
NODE_IP="10.88.0.1"
APISERVER_PORT="${HERDWATCH_APISERVER_PORT:-6443}"
ETCD_CLIENT_PORT="${HERDWATCH_ETCD_PORT:-2379}"
ETCD_PEER_PORT="$((ETCD_CLIENT_PORT + 1))"
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
KUBE_PROXY_HEALTHZ_PORT=10256
KUBE_PROXY_METRICS_PORT=10249
CONTROLLER_MANAGER_PORT=10257
SCHEDULER_PORT=10259

# Images built locally (e2e/images) and imported into the cluster's containerd.
PAUSE_IMAGE="herdwatch-e2e/pause:dev"
WORKLOAD_IMAGE="herdwatch-e2e/workload:dev"
# The attack suite's web shop (e2e/images/shop), and the same files under another digest
# (a rolling update that changes nothing).
SHOP_IMAGE="herdwatch-e2e/shop:dev"
SHOP_IMAGE_V2="herdwatch-e2e/shop:v2"

export PATH="/usr/local/go/bin:$PATH"

# ---- helpers -----------------------------------------------------------------------------
_t0="${_t0:-$(date +%s)}"
log() { printf '[herdwatch-cluster %4ss] %s\n' "$(($(date +%s) - _t0))" "$*" >&2; }
die() { printf '[herdwatch-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# stop_process <name> <pid> <grace-seconds>: SIGTERM, then SIGKILL when the process is still
# there after the grace period; logs which of the two ended it.
stop_process() {
  local name=$1 pid=$2 grace=$3
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 4))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    log "$name: killed (pid $pid)"
  else
    log "$name: stopped (pid $pid)"
  fi
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "this needs root (containerd, kubelet, iptables); run it as root"
}

# Path of the cached binary of a component at its pinned version.
cached_bin() {
  local name=$1
  case "$name" in
    etcd) echo "$CACHE_BIN/etcd-$ETCD_VERSION" ;;
    helm) echo "$CACHE_BIN/helm-$HELM_VERSION" ;;
    crictl) echo "$CACHE_BIN/crictl-$CRICTL_VERSION" ;;
    containerd|containerd-shim-runc-v2|ctr) echo "$CACHE_BIN/$name-$CONTAINERD_VERSION" ;;
    *) echo "$CACHE_BIN/$name-$KUBE_VERSION" ;;
  esac
}

# The kubectl of this cluster (never the machine's own), talking to it as admin.
kctl() { "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# Apt-get install the packages whose commands are missing; idempotent.
# Arguments: pairs "command-or-path:package".
ensure_debs() {
  local pair cmd pkg missing=()
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue
    else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    # Several commands can come from one package: name it once.
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  need_root
  log "installing missing Debian packages: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || die "could not install ${missing[*]}: run 'apt-get update && apt-get install -y ${missing[*]}'"
  fi
}
