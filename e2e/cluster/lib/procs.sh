# shellcheck shell=bash
# The cluster's processes: how each is started, how its health is checked, how it stops.
# Every process runs in its own session (setsid), survives the shell that started it, logs
# to $LOG_DIR/<name>.log and has its pid in $RUN_DIR/<name>.pid.

# shellcheck disable=SC2034
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)
ETCD_METRICS_PORT="$((ETCD_CLIENT_PORT + 2))"

# Fills the array CMD with the command line of a component.
component_cmd() {
  local p=$PKI_DIR
  case $1 in
    etcd) CMD=("$BIN_DIR/etcd" --name herdwatch-e2e --data-dir "$CLUSTER_DIR/etcd"
      --listen-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT"
      --advertise-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT"
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT"
      --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT"
      --initial-cluster "herdwatch-e2e=http://127.0.0.1:$ETCD_PEER_PORT"
      --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT"
      --cert-file "$p/etcd-server.crt" --key-file "$p/etcd-server.key"
      --trusted-ca-file "$p/ca.crt" --client-cert-auth
      --log-level warn) ;;
    # GODEBUG=tlssha1=1: clients that send no signature_algorithms (busybox wget, used by
    # the e2e workloads) are offered SHA-1 signatures in TLS 1.2, as before Go 1.25; clients
    # that do send it (kubectl, the herdwatch binaries) negotiate SHA-256 as always.
    kube-apiserver) CMD=(env GODEBUG=tlssha1=1 "$BIN_DIR/kube-apiserver"
      --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT"
      --etcd-servers "https://127.0.0.1:$ETCD_CLIENT_PORT" --etcd-cafile "$p/ca.crt"
      --etcd-certfile "$p/apiserver-etcd-client.crt" --etcd-keyfile "$p/apiserver-etcd-client.key"
      --client-ca-file "$p/ca.crt"
      --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key"
      --kubelet-client-certificate "$p/apiserver-kubelet-client.crt"
      --kubelet-client-key "$p/apiserver-kubelet-client.key"
      --kubelet-certificate-authority "$p/ca.crt"
      --kubelet-preferred-address-types "InternalIP,Hostname"
      --service-cluster-ip-range "$SERVICE_CIDR"
      --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN"
      --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key"
      --authorization-mode "Node,RBAC" --enable-admission-plugins NodeRestriction
      --allow-privileged=true --profiling=false) ;;
    kube-controller-manager) CMD=("$BIN_DIR/kube-controller-manager"
      --kubeconfig "$CONF_DIR/controller-manager.kubeconfig"
      --authentication-kubeconfig "$CONF_DIR/controller-manager.kubeconfig"
      --authorization-kubeconfig "$CONF_DIR/controller-manager.kubeconfig"
      --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT"
      --leader-elect=false --use-service-account-credentials=true
      --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key"
      --root-ca-file "$p/ca.crt" --service-account-private-key-file "$p/sa.key"
      --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR"
      --allocate-node-cidrs=false --profiling=false) ;;
    kube-scheduler) CMD=("$BIN_DIR/kube-scheduler"
      --kubeconfig "$CONF_DIR/scheduler.kubeconfig"
      --authentication-kubeconfig "$CONF_DIR/scheduler.kubeconfig"
      --authorization-kubeconfig "$CONF_DIR/scheduler.kubeconfig"
      --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT"
      --leader-elect=false --profiling=false) ;;
    # PATH: containerd finds its shim (containerd-shim-runc-v2) in the cluster's bin/.
    containerd) CMD=(env "PATH=$BIN_DIR:$PATH" "$BIN_DIR/containerd" --config "$CONF_DIR/containerd.toml") ;;
    kubelet) CMD=("$BIN_DIR/kubelet" --config "$CONF_DIR/kubelet.yaml"
      --kubeconfig "$CONF_DIR/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT"
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP") ;;
    kube-proxy) CMD=("$BIN_DIR/kube-proxy" --config "$CONF_DIR/kube-proxy.yaml") ;;
    *) die "unknown component $1" ;;
  esac
}

# Seconds a component may take to become healthy after its start.
component_timeout() {
  case $1 in
    kube-apiserver|kubelet) echo 180 ;;
    *) echo 90 ;;
  esac
}

# Fingerprint of what a component runs with: its binary (the versioned file the bin/
# symlink points to), its command line and its config file.
component_spec() {
  local f=""
  component_cmd "$1"
  case $1 in
    containerd) f=$CONF_DIR/containerd.toml ;;
    kubelet) f=$CONF_DIR/kubelet.yaml ;;
    kube-proxy) f=$CONF_DIR/kube-proxy.yaml ;;
  esac
  {
    readlink -f "$BIN_DIR/$1" || true
    printf '%s\n' "${CMD[@]}"
    [[ -z $f ]] || cat "$f"
  } | sha256sum | cut -d' ' -f1
}

_curl() { curl -fsS --max-time 3 "$@" >/dev/null 2>&1; }

component_healthy() {
  case $1 in
    etcd) _curl "http://127.0.0.1:$ETCD_METRICS_PORT/health" ;;
    kube-apiserver) _curl --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
      --key "$PKI_DIR/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" ;;
    kube-controller-manager) _curl -k "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" ;;
    kube-scheduler) _curl -k "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    containerd) [[ -S $CONTAINERD_SOCK ]] && timeout 5 "$BIN_DIR/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 ;;
    kubelet) _curl "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" ;;
    kube-proxy) _curl "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/livez" ;;
  esac
}

# Prints the pid of a running component, or fails. A pid only counts when the process's
# command line names this cluster's directory (pids are reused).
component_pid() {
  local pidfile="$RUN_DIR/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CLUSTER_DIR/" || return 1
  echo "$pid"
}

_fail_component() {
  local name=$1 why=$2 logf="$LOG_DIR/$1.log"
  {
    echo "---- last lines of $logf ----"
    tail -n 20 "$logf" 2>/dev/null | cut -c1-400 || true
    echo "----"
  } >&2
  die "$name $why; log: $logf"
}

# Starts a component unless it is already running and healthy, then waits for its health.
# A process that is found running but exits while we wait (it was shutting down) is
# started anew.
start_component() {
  local name=$1 pid deadline started=0 spec
  spec=$(component_spec "$name")
  if pid=$(component_pid "$name") && component_healthy "$name"; then
    if [[ "$(cat "$RUN_DIR/$name.spec" 2>/dev/null)" == "$spec" ]]; then
      log "$name: already running (pid $pid)"
      return 0
    fi
    log "$name: its command line or configuration changed: restarting it"
    stop_component "$name"
  fi
  while :; do
    if ((started)) || ! pid=$(component_pid "$name"); then
      ((started < 2)) || _fail_component "$name" "exited during start"
      component_cmd "$name"
      mkdir -p "$LOG_DIR" "$RUN_DIR"
      printf '==== herdwatch-cluster: starting %s at %s\n%s\n' "$name" "$(date -Is)" "${CMD[*]}" \
        >>"$LOG_DIR/$name.log"
      # fd 9 is the lock of cluster.sh: the long-lived process must not hold it.
      setsid nohup "${CMD[@]}" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
      pid=$!
      echo "$pid" >"$RUN_DIR/$name.pid"
      echo "$spec" >"$RUN_DIR/$name.spec"
      started=$((started + 1))
      log "$name: started (pid $pid), waiting until healthy"
    else
      log "$name: running (pid $pid) but not healthy yet, waiting"
    fi
    deadline=$(($(date +%s) + $(component_timeout "$name")))
    until component_healthy "$name"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$RUN_DIR/$name.pid"
        # Started by us: a real failure. Found running: it was on its way out; start it.
        ((started)) && _fail_component "$name" "exited during start"
        started=1
        continue 2
      fi
      if (($(date +%s) > deadline)); then
        _fail_component "$name" "is not healthy after $(component_timeout "$name")s (pid $pid)"
      fi
      sleep 1
    done
    log "$name: healthy"
    return 0
  done
}

# Stops a component: SIGTERM, then SIGKILL after a grace period.
stop_component() {
  local name=$1 pid
  if ! pid=$(component_pid "$name"); then
    rm -f "$RUN_DIR/$name.pid"
    return 0
  fi
  stop_process "$name" "$pid" 10
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.spec"
}

# Pids of the containerd shims of our containerd (they name its socket on their command line).
our_shim_pids() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ -r $d/cmdline ]] || continue
    if tr '\0' '\n' <"$d/cmdline" 2>/dev/null | grep -qxF -- "$CONTAINERD_SOCK"; then
      [[ "$(tr '\0' '\n' <"$d/cmdline" | head -n1)" == *containerd-shim* ]] && echo "$pid"
    fi
  done
  return 0
}
