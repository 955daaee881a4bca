#!/usr/bin/env bash
# The operator benchmark: the herdwatch operator (release build, leader election on) holding
# 1,000 BehaviorProfiles and merging the observations of 100 simulated nodes. Prints, per
# phase, the operator's memory (VmRSS sampled every second, VmHWM), its CPU time, and the
# observations merged into profiles per second (see operator/examples/simulate_nodes.rs).
#
# It runs against a private etcd and kube-apiserver of its own (own ports, data directory
# and certificates, in a temporary directory removed afterwards), never the local e2e
# cluster. The Kubernetes binaries come from the cache that `e2e/cluster/cluster.sh build`
# fills (built first when missing). Nothing needs root.
#
# Extra arguments go to the simulator (see its --help), e.g. bench/operator.sh --phase 30s.
# Exits non-zero when the run is invalid (profiles never all created, merges that never
# arrive, the operator exiting).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herdwatch/target}"
export PATH="$HOME/.cargo/bin:$PATH"

work=$(mktemp -d /tmp/herdwatch-bench-operator.XXXXXX)

# A free local TCP port at or above $1 (and the two after it, for etcd's peer and metrics).
free_port() {
  local p=$1
  while ss -Hltn "( sport = :$p or sport = :$((p + 1)) or sport = :$((p + 2)) )" | grep -q .; do
    p=$((p + 3))
  done
  echo "$p"
}
base=$((21000 + RANDOM % 20000))
etcd_port=$(free_port "$base")
apiserver_port=$(free_port $((etcd_port + 3)))
metrics_port=$(free_port $((apiserver_port + 3)))

# The e2e cluster's settings and certificate functions, pointed at this run's directory and
# ports (they read these variables when sourced).
export HERDWATCH_CLUSTER_DIR="$work" HERDWATCH_APISERVER_PORT="$apiserver_port" \
  HERDWATCH_ETCD_PORT="$etcd_port"
# shellcheck source=e2e/cluster/lib/common.sh
source e2e/cluster/lib/common.sh
# shellcheck source=e2e/cluster/lib/pki.sh
source e2e/cluster/lib/pki.sh
_t0=$(date +%s)
log() { printf '[bench/operator %4ss] %s\n' "$(($(date +%s) - _t0))" "$*" >&2; }
die() { printf '[bench/operator] ERROR: %s\n' "$*" >&2; exit 1; }

pids=()
cleanup() {
  local status=$?
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if ((status == 0)); then
    rm -rf "$work"
  else
    echo "bench/operator.sh failed (status $status); logs kept in $work" >&2
    local f
    for f in "$work"/*.log; do
      [[ -f $f ]] || continue
      echo "---- last lines of $f ----" >&2
      tail -n 15 "$f" | cut -c1-300 >&2
    done
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

etcd_bin=$(cached_bin etcd)
apiserver_bin=$(cached_bin kube-apiserver)
kubectl_bin=$(cached_bin kubectl)
if [[ ! -x $etcd_bin || ! -x $apiserver_bin || ! -x $kubectl_bin ]]; then
  log "the pinned etcd, kube-apiserver or kubectl is not cached yet: building them"
  bash e2e/cluster/cluster.sh build
fi

log "building the operator (release) and the node simulator"
cargo build -q --release -p herdwatch-operator --bin herdwatch-operator --example simulate_nodes
operator_bin="$CARGO_TARGET_DIR/release/herdwatch-operator"
simulator_bin="$CARGO_TARGET_DIR/release/examples/simulate_nodes"

log "certificates in $work/pki"
ensure_pki
kubeconfig=$ADMIN_KUBECONFIG
k() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

log "etcd on 127.0.0.1:$etcd_port"
"$etcd_bin" --name bench --data-dir "$work/etcd" \
  --listen-client-urls "https://127.0.0.1:$etcd_port" \
  --advertise-client-urls "https://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "bench=http://127.0.0.1:$((etcd_port + 1))" \
  --listen-metrics-urls "http://127.0.0.1:$((etcd_port + 2))" \
  --cert-file "$PKI_DIR/etcd-server.crt" --key-file "$PKI_DIR/etcd-server.key" \
  --trusted-ca-file "$PKI_DIR/ca.crt" --client-cert-auth --log-level warn \
  >"$work/etcd.log" 2>&1 &
pids+=($!)

log "kube-apiserver on 127.0.0.1:$apiserver_port"
# No endpoint reconciler: it would publish the loopback address as the `kubernetes`
# Service's endpoint, which the API refuses; nothing here needs that Service.
"$apiserver_bin" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --secure-port "$apiserver_port" --endpoint-reconciler-type none \
  --etcd-servers "https://127.0.0.1:$etcd_port" --etcd-cafile "$PKI_DIR/ca.crt" \
  --etcd-certfile "$PKI_DIR/apiserver-etcd-client.crt" \
  --etcd-keyfile "$PKI_DIR/apiserver-etcd-client.key" \
  --client-ca-file "$PKI_DIR/ca.crt" \
  --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --service-account-issuer "https://kubernetes.default.svc" \
  --service-account-key-file "$PKI_DIR/sa.pub" \
  --service-account-signing-key-file "$PKI_DIR/sa.key" \
  --authorization-mode RBAC --profiling=false \
  >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)

# wait_for <what> <seconds> <pid to watch> <command...>
wait_for() {
  local what=$1 seconds=$2 pid=$3
  shift 3
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "$what exited while starting"
    (($(date +%s) < deadline)) || die "$what not ready after ${seconds}s"
    sleep 1
  done
}
wait_for "kube-apiserver" 180 "${pids[1]}" curl -fsS --max-time 3 --cacert "$PKI_DIR/ca.crt" \
  --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
  "https://127.0.0.1:$apiserver_port/readyz"

log "CRDs from crds/, and the operator's namespace"
k apply --server-side -f crds/ >/dev/null
k wait --for condition=Established --timeout 60s crd --all >/dev/null
k create namespace herdwatch >/dev/null

log "operator (leader election on), /metrics on 127.0.0.1:$metrics_port"
KUBECONFIG=$kubeconfig "$operator_bin" --http-addr "127.0.0.1:$metrics_port" \
  --leader-election true --pod-name herdwatch-operator-bench --pod-namespace herdwatch \
  --log warn >"$work/operator.log" 2>&1 &
operator_pid=$!
pids+=("$operator_pid")
# /readyz answers 200 once this replica holds the Lease and runs the controllers.
wait_for "the operator" 60 "$operator_pid" curl -fsS --max-time 3 \
  "http://127.0.0.1:$metrics_port/readyz"
start_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$operator_pid/status")

log "simulating the nodes"
KUBECONFIG=$kubeconfig "$simulator_bin" --operator-pid "$operator_pid" \
  --operator-metrics "127.0.0.1:$metrics_port" "$@" 2> >(tee "$work/simulator.log" >&2)
kill -0 "$operator_pid" 2>/dev/null || die "the operator exited during the run"
awk -v rss="$start_rss" -v cpus="$(nproc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
  printf "Operator RSS once leading, before any workload: %.1f MB. Goal: at most 100 MB holding 1,000 profiles.\n", rss * 1024 / 1e6
  printf "%s CPUs; load average at the end: %s (other work on the machine shares the CPUs).\n", cpus, load
}'
