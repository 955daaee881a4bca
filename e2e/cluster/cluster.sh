#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# herdwatch e2e cluster: a single-node Kubernetes built from upstream sources and run as
# local processes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a private
# containerd, kubelet, kube-proxy). See README.md beside this file.
#
# Usage: cluster.sh <command>
#   build         build the pinned components into the cache (skips what exists)
#   up            start whatever is not running (builds what is missing first); idempotent
#   down [--purge] stop everything, remove pods, bridge and iptables rules, reset cluster
#                 data; --purge also removes certificates and imported images
#   status        one line per component, and the node's readiness (exit 3 if not all up)
#   kubeconfig    print the path of the admin kubeconfig
#   smoke         run the smoke test (pods reach the API server and each other)
#   kubectl ARGS  run the cluster's kubectl as admin
#   crictl ARGS   run crictl against the cluster's containerd
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"
# shellcheck source=lib/build.sh
source "$HERE/lib/build.sh"
# shellcheck source=lib/pki.sh
source "$HERE/lib/pki.sh"
# shellcheck source=lib/config.sh
source "$HERE/lib/config.sh"
# shellcheck source=lib/node.sh
source "$HERE/lib/node.sh"
# shellcheck source=lib/procs.sh
source "$HERE/lib/procs.sh"

CONTAINERD_FLAVOUR="${HERDWATCH_CONTAINERD:-debian}"   # debian | source

usage() { sed -n '7,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The cluster's bin/ directory: symlinks to the binaries of the pinned versions.
link_bins() {
  mkdir -p "$BIN_DIR"
  local name target
  for name in etcd "${KUBE_COMPONENTS[@]}" helm crictl containerd ctr containerd-shim-runc-v2; do
    case $name in
      containerd|ctr|containerd-shim-runc-v2)
        if [[ $CONTAINERD_FLAVOUR == source ]]; then target=$(cached_bin "$name")
        else target=$(command -v "$name" || true); fi ;;
      *) target=$(cached_bin "$name") ;;
    esac
    [[ -n $target && -x $target ]] || die "missing binary for $name (${target:-not installed})"
    [[ "$(readlink "$BIN_DIR/$name" 2>/dev/null)" == "$target" ]] || ln -sfn "$target" "$BIN_DIR/$name"
  done
}

prerequisites() {
  ensure_debs runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    /usr/lib/cni/host-local:containernetworking-plugins iptables:iptables conntrack:conntrack \
    /bin/busybox:busybox-static openssl:openssl curl:curl jq:jq gcc:gcc \
    /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev
  if [[ $CONTAINERD_FLAVOUR == debian ]]; then ensure_debs containerd:containerd; fi
  local name absent=0
  for name in etcd "${KUBE_COMPONENTS[@]}" helm crictl; do
    [[ -x $(cached_bin "$name") ]] || absent=1
  done
  if [[ $CONTAINERD_FLAVOUR == source ]]; then
    for name in containerd ctr containerd-shim-runc-v2; do [[ -x $(cached_bin "$name") ]] || absent=1; done
  fi
  if ((absent)); then
    log "some components are not built yet: building them (the first build takes long)"
    cmd_build
  fi
}

wait_cluster_ready() {
  local deadline=$(($(date +%s) + 180)) ready=""
  while :; do
    ready=$(kctl get node "$NODE_NAME" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [[ $ready == True ]] && break
    (($(date +%s) < deadline)) || _fail_component kubelet "registered no Ready node $NODE_NAME within 180s (Ready=${ready:-none})"
    sleep 1
  done
  log "node $NODE_NAME: Ready"
  until kctl -n default get serviceaccount default >/dev/null 2>&1 &&
        kctl -n default get configmap kube-root-ca.crt >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || _fail_component kube-controller-manager "created no default service account within 180s"
    sleep 1
  done
  log "default service account: present"
}

cmd_up() {
  need_root
  local start
  start=$(date +%s)
  prerequisites
  mkdir -p "$LOG_DIR" "$RUN_DIR" "$CONF_DIR"
  link_bins
  ensure_node_network
  ensure_cgroups
  # containerd's store is kept across `down`, but not across a change of containerd:
  # a new one starts with an empty store (images are imported again below).
  local flavour
  flavour="$CONTAINERD_FLAVOUR $("$BIN_DIR/containerd" --version 2>/dev/null | awk '{print $3}')"
  if [[ "$(cat "$CLUSTER_DIR/containerd/flavour" 2>/dev/null)" != "$flavour" ]]; then
    component_pid containerd >/dev/null &&
      die "the cluster runs another containerd than HERDWATCH_CONTAINERD=$CONTAINERD_FLAVOUR asks for: run '$0 down' first"
    if [[ -d $CONTAINERD_ROOT ]]; then
      log "containerd changed to $flavour: starting with an empty store"
      unmount_cluster_dir "$CLUSTER_DIR/containerd"
      rm -rf "$CONTAINERD_ROOT" "$CONTAINERD_STATE"
    fi
    mkdir -p "$CLUSTER_DIR/containerd"
    echo "$flavour" >"$CLUSTER_DIR/containerd/flavour"
  fi
  ensure_pki
  write_configs
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd; do
    start_component "$c"
  done
  # The sandbox image must be there before the kubelet asks for its first pod.
  "$REPO_ROOT/e2e/images/images.sh" import
  for c in kubelet kube-proxy; do
    start_component "$c"
  done
  wait_cluster_ready
  log "up: cluster ready in $(($(date +%s) - start))s; kubeconfig: $ADMIN_KUBECONFIG"
}

cmd_down() {
  need_root
  local purge=0 start pids
  [[ ${1:-} == --purge ]] && purge=1
  start=$(date +%s)
  stop_component kubelet
  if component_pid containerd >/dev/null && [[ -x $BIN_DIR/crictl ]]; then
    # Stop and remove every pod through the CRI, so that CNI releases its addresses and
    # network namespaces are removed.
    timeout 120 "$BIN_DIR/crictl" --config "$CONF_DIR/crictl.yaml" rmp --all --force >/dev/null 2>&1 \
      || log "crictl rmp failed; killing what is left"
  fi
  stop_component containerd
  pids=$(our_shim_pids | tr '\n' ' ')
  if [[ -n ${pids// /} ]]; then
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    log "containerd: killed leftover shims $pids"
  fi
  remove_cgroups
  if component_pid kube-proxy >/dev/null; then
    stop_component kube-proxy
  fi
  if [[ -x $BIN_DIR/kube-proxy ]]; then
    # Removes the KUBE-* iptables chains that kube-proxy installed.
    "$BIN_DIR/kube-proxy" --cleanup --v=0 >>"$LOG_DIR/kube-proxy.log" 2>&1 \
      || log "kube-proxy --cleanup reported errors (see $LOG_DIR/kube-proxy.log)"
  fi
  remove_kubelet_iptables
  # The agent keeps its programs attached across its own restarts by pinning them; a
  # cluster stopped under it (no uninstall) leaves them in the kernel until this.
  if [[ -d /sys/fs/bpf/herdwatch ]]; then
    rm -rf /sys/fs/bpf/herdwatch && log "removed herdwatch's pinned programs (/sys/fs/bpf/herdwatch)"
  fi
  local c
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$c"
  done
  unmount_cluster_dir
  # containerd 1.6 keeps shim sockets and fifos under /run/containerd whatever its state
  # dir; remove those directories when our containerd left them empty.
  rmdir /run/containerd/s /run/containerd/fifo /run/containerd/runc/k8s.io /run/containerd/runc \
    /run/containerd 2>/dev/null || true
  restore_node_network
  # Cluster data goes, so the next `up` starts a fresh cluster. Certificates, configs,
  # logs and containerd's image store (root) stay.
  rm -rf "$CLUSTER_DIR/etcd" "$KUBELET_ROOT" "$CONTAINERD_STATE" "$CLUSTER_DIR/cni/ipam" \
    "$CLUSTER_DIR/pod-logs"
  if ((purge)); then
    rm -rf "$CLUSTER_DIR"
    log "down: purged $CLUSTER_DIR"
  fi
  log "down: done in $(($(date +%s) - start))s"
}

cmd_status() {
  local c pid state all=0 ready
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then
      if component_healthy "$c"; then state=running; else state=unhealthy; all=1; fi
    else
      state=stopped pid=- all=1
    fi
    printf '%-24s %-9s pid %-8s log %s\n' "$c" "$state" "$pid" "$LOG_DIR/$c.log"
  done
  ready=$(kctl get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  case $ready in
    True) printf '%-24s %s\n' "node $NODE_NAME" Ready ;;
    "") printf '%-24s %s\n' "node $NODE_NAME" unknown; all=1 ;;
    *) printf '%-24s %s\n' "node $NODE_NAME" NotReady; all=1 ;;
  esac
  return $((all ? 3 : 0))
}

cmd_kubeconfig() {
  [[ -f $ADMIN_KUBECONFIG ]] || die "no kubeconfig yet: run $0 up"
  echo "$ADMIN_KUBECONFIG"
}

# One `up` or `down` at a time (e.g. `make demo` and a test run started together).
lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/.lock"
  flock -w 900 9 || die "another cluster.sh up/down holds $CLUSTER_DIR/.lock"
}

case "${1:-}" in
  build) cmd_build ;;
  up) need_root; lock; cmd_up ;;
  down) shift; need_root; lock; cmd_down "$@" ;;
  status) cmd_status ;;
  kubeconfig) cmd_kubeconfig ;;
  smoke) "$HERE/smoke.sh" ;;
  kubectl) shift; kctl "$@" ;;
  crictl) shift; "$BIN_DIR/crictl" --config "$CONF_DIR/crictl.yaml" "$@" ;;
  *) usage ;;
esac
