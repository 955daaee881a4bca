#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Prometheus and Alertmanager for the end-to-end suite, run as local processes next to the
# e2e cluster (e2e/cluster). herdwatch-pod-targets (e2e/src/bin) discovers herdwatch's pods
# through the API server; Prometheus scrapes them through the API server's pod proxy, loads
# the chart's alerting rules and notifies the Alertmanager. Data lives under
# $CLUSTER_DIR/prometheus and $CLUSTER_DIR/alertmanager, logs in $CLUSTER_DIR/logs, pid
# files in $CLUSTER_DIR/run.
#
# Usage: prometheus.sh <command>
#   up       install the Debian packages when missing, build the discovery, start what is
#            not running; a changed configuration or rules file is reloaded; idempotent
#   down     stop all three (the data stays)
#   status   one line per component (exit 3 if not all up)
#   urls     print the Prometheus and Alertmanager URLs
#
# Environment: HERDWATCH_PROMETHEUS_PORT (19090), HERDWATCH_ALERTMANAGER_PORT (19093),
# HERDWATCH_PROMETHEUS_RULES (the chart's charts/herdwatch/rules/herdwatch.rules.yaml).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../cluster/lib/common.sh
source "$REPO_ROOT/e2e/cluster/lib/common.sh"

log() { printf '[herdwatch-prometheus %4ss] %s\n' "$(($(date +%s) - _t0))" "$*" >&2; }
die() { printf '[herdwatch-prometheus] ERROR: %s\n' "$*" >&2; exit 1; }

# Not the packages' default ports, which a Prometheus of the machine may hold.
PROMETHEUS_PORT="${HERDWATCH_PROMETHEUS_PORT:-19090}"
ALERTMANAGER_PORT="${HERDWATCH_ALERTMANAGER_PORT:-19093}"
RULES_FILE="${HERDWATCH_PROMETHEUS_RULES:-$REPO_ROOT/charts/herdwatch/rules/herdwatch.rules.yaml}"
PROMETHEUS_DIR="$CLUSTER_DIR/prometheus"
ALERTMANAGER_DIR="$CLUSTER_DIR/alertmanager"
PROMETHEUS_CONFIG="$PROMETHEUS_DIR/prometheus.yml"
ALERTMANAGER_CONFIG="$ALERTMANAGER_DIR/alertmanager.yml"
POD_TARGETS_FILE="$PROMETHEUS_DIR/targets/herdwatch-pods.json"
PROMETHEUS_BIN=/usr/bin/prometheus
ALERTMANAGER_BIN=/usr/bin/prometheus-alertmanager
POD_TARGETS_BIN=""   # set by build_pod_targets
START_TIMEOUT=60
COMPONENTS=(pod-targets alertmanager prometheus)
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERDWATCH_CACHE/target}"

# Fills the array CMD with the command line of a component. Prometheus and Alertmanager
# listen on loopback only.
component_cmd() {
  case $1 in
    prometheus) CMD=("$PROMETHEUS_BIN" "--config.file=$PROMETHEUS_CONFIG"
      "--storage.tsdb.path=$PROMETHEUS_DIR/data" --storage.tsdb.retention.time=2d
      "--web.listen-address=127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle
      "--web.external-url=http://127.0.0.1:$PROMETHEUS_PORT/") ;;
    # No cluster listener: a single Alertmanager needs no peers.
    alertmanager) CMD=("$ALERTMANAGER_BIN" "--config.file=$ALERTMANAGER_CONFIG"
      "--storage.path=$ALERTMANAGER_DIR/data" --data.retention=48h
      "--web.listen-address=127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address=
      "--web.external-url=http://127.0.0.1:$ALERTMANAGER_PORT/") ;;
    pod-targets) CMD=("$POD_TARGETS_BIN" --kubeconfig "$ADMIN_KUBECONFIG"
      --output "$POD_TARGETS_FILE") ;;
    *) die "unknown component $1" ;;
  esac
}

component_url() {
  case $1 in
    prometheus) echo "http://127.0.0.1:$PROMETHEUS_PORT" ;;
    alertmanager) echo "http://127.0.0.1:$ALERTMANAGER_PORT" ;;
    pod-targets) echo "$POD_TARGETS_FILE" ;;
  esac
}

component_config() {
  case $1 in
    prometheus) echo "$PROMETHEUS_CONFIG" ;;
    alertmanager) echo "$ALERTMANAGER_CONFIG" ;;
    pod-targets) echo /dev/null ;;
  esac
}

component_healthy() {
  case $1 in
    # Ready once it has listed the pods and written the file.
    pod-targets) component_pid "$1" >/dev/null && [[ -s $POD_TARGETS_FILE ]] ;;
    # Endpoints only the component itself has, so that another process on its port
    # (e.g. the other one, with a port setting mixed up) does not pass for it.
    prometheus) curl -fsS --max-time 3 "$(component_url "$1")/api/v1/status/buildinfo" >/dev/null 2>&1 ;;
    alertmanager) curl -fsS --max-time 3 "$(component_url "$1")/api/v2/status" >/dev/null 2>&1 ;;
  esac
}

# Builds herdwatch-pod-targets (the test profile's build, which the e2e tests share) and
# sets POD_TARGETS_BIN to it.
build_pod_targets() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust (rustup) as the README says"
  local out
  if ! out=$(cd "$REPO_ROOT" && cargo build -q -p herdwatch-e2e --bin herdwatch-pod-targets \
      --message-format=json 2>&1); then
    printf '%s\n' "$out" | grep -v '^{' >&2 || true
    die "building herdwatch-pod-targets failed (see above)"
  fi
  POD_TARGETS_BIN=$(printf '%s\n' "$out" | grep '^{' |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "herdwatch-pod-targets") | .executable' |
    tail -n1)
  [[ -x $POD_TARGETS_BIN ]] || die "cargo built no herdwatch-pod-targets executable"
}

# The pid of a running component, or failure. A pid only counts when the process's
# command line names this cluster's directory (pids are reused).
component_pid() {
  local pidfile="$RUN_DIR/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CLUSTER_DIR/" || return 1
  echo "$pid"
}

fail_component() {
  local name=$1 why=$2 logf="$LOG_DIR/$1.log"
  {
    echo "---- last lines of $logf ----"
    tail -n 20 "$logf" 2>/dev/null | cut -c1-400 || true
    echo "----"
  } >&2
  die "$name $why; log: $logf"
}

# Writes the configurations from the files beside this script, checked by promtool and
# amtool (a broken file fails here, not at start).
write_configs() {
  mkdir -p "$PROMETHEUS_DIR/data" "$PROMETHEUS_DIR/targets" "$ALERTMANAGER_DIR/data" \
    "$LOG_DIR" "$RUN_DIR"
  sed -e "s|@RULES_FILE@|$RULES_FILE|g" \
      -e "s|@POD_TARGETS_FILE@|$POD_TARGETS_FILE|g" \
      -e "s|@ALERTMANAGER_PORT@|$ALERTMANAGER_PORT|g" \
      -e "s|@PKI_DIR@|$PKI_DIR|g" \
      -e "s|@APISERVER_PORT@|$APISERVER_PORT|g" \
      "$HERE/prometheus.yml.in" >"$PROMETHEUS_CONFIG.new"
  cp "$HERE/alertmanager.yml" "$ALERTMANAGER_CONFIG.new"
  local out
  if ! out=$(promtool check config "$PROMETHEUS_CONFIG.new" 2>&1); then
    printf '%s\n' "$out" >&2
    die "the Prometheus configuration from $HERE/prometheus.yml.in is invalid (see above)"
  fi
  if ! out=$(amtool check-config "$ALERTMANAGER_CONFIG.new" 2>&1); then
    printf '%s\n' "$out" >&2
    die "the Alertmanager configuration $HERE/alertmanager.yml is invalid (see above)"
  fi
  mv "$PROMETHEUS_CONFIG.new" "$PROMETHEUS_CONFIG"
  mv "$ALERTMANAGER_CONFIG.new" "$ALERTMANAGER_CONFIG"
  if [[ -f $RULES_FILE ]]; then
    log "rules: $RULES_FILE ($(promtool check rules "$RULES_FILE" 2>&1 | grep -o 'SUCCESS: [0-9]* rules found' || echo unchecked))"
  else
    log "WARNING: no rules file at $RULES_FILE: Prometheus runs without herdwatch's alerts"
  fi
}

# Fingerprints: of the command line (a change restarts the process), and of what a reload
# reads (the configuration and, for Prometheus, the rules file).
# The discovery's binary changes with a rebuild, hence its modification time.
cmd_spec() {
  component_cmd "$1"
  { readlink -f "${CMD[0]}"; stat -c %Y "${CMD[0]}"; printf '%s\n' "${CMD[@]}"; } |
    sha256sum | cut -d' ' -f1
}
config_spec() {
  { cat "$(component_config "$1")"; [[ $1 != prometheus ]] || cat "$RULES_FILE" 2>/dev/null || true; } |
    sha256sum | cut -d' ' -f1
}

stop_component() {
  local name=$1 pid
  if ! pid=$(component_pid "$name"); then
    rm -f "$RUN_DIR/$name.pid"
    return 0
  fi
  stop_process "$name" "$pid" 15
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.spec" "$RUN_DIR/$name.config"
}

# Starts a component unless it runs healthy with the same command line; reloads it when
# only its configuration changed; then waits until it is ready.
start_component() {
  local name=$1 pid spec config answer deadline
  spec=$(cmd_spec "$name")
  config=$(config_spec "$name")
  if pid=$(component_pid "$name") && component_healthy "$name"; then
    if [[ "$(cat "$RUN_DIR/$name.spec" 2>/dev/null)" == "$spec" ]]; then
      if [[ "$(cat "$RUN_DIR/$name.config" 2>/dev/null)" == "$config" || $name == pod-targets ]]; then
        log "$name: already running (pid $pid)"
        return 0
      fi
      if answer=$(curl -sS --max-time 30 -X POST "$(component_url "$name")/-/reload" 2>&1) &&
         [[ -z $answer ]]; then
        echo "$config" >"$RUN_DIR/$name.config"
        log "$name: configuration or rules changed: reloaded (pid $pid)"
        return 0
      fi
      fail_component "$name" "refused the changed configuration or rules: ${answer:-no answer}"
    fi
    log "$name: its command line changed: restarting it"
    stop_component "$name"
  elif pid=$(component_pid "$name"); then
    log "$name: running (pid $pid) but not ready: restarting it"
    stop_component "$name"
  fi
  [[ $name != pod-targets ]] || rm -f "$POD_TARGETS_FILE"
  component_cmd "$name"
  printf '==== herdwatch-prometheus: starting %s at %s\n%s\n' "$name" "$(date -Is)" "${CMD[*]}" \
    >>"$LOG_DIR/$name.log"
  # fd 8 is this script's lock, fd 9 may be one of the caller's: the daemon keeps neither.
  setsid nohup "${CMD[@]}" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$RUN_DIR/$name.pid"
  echo "$spec" >"$RUN_DIR/$name.spec"
  echo "$config" >"$RUN_DIR/$name.config"
  log "$name: started (pid $pid), waiting until ready"
  deadline=$(($(date +%s) + START_TIMEOUT))
  until component_healthy "$name"; do
    kill -0 "$pid" 2>/dev/null || { rm -f "$RUN_DIR/$name.pid"; fail_component "$name" "exited during start"; }
    (($(date +%s) <= deadline)) || fail_component "$name" "is not ready after ${START_TIMEOUT}s (pid $pid)"
    sleep 1
  done
  kill -0 "$pid" 2>/dev/null || { rm -f "$RUN_DIR/$name.pid"; fail_component "$name" "exited during start"; }
  log "$name: ready at $(component_url "$name")"
}

cmd_up() {
  "$REPO_ROOT/scripts/install-prometheus.sh"
  [[ -f $ADMIN_KUBECONFIG && -f $PKI_DIR/admin.crt ]] ||
    die "no e2e cluster at $CLUSTER_DIR: run make cluster-up (bash e2e/cluster/cluster.sh up) first"
  build_pod_targets
  write_configs
  local c
  for c in "${COMPONENTS[@]}"; do
    start_component "$c"
  done
}

cmd_down() {
  stop_component prometheus
  stop_component alertmanager
  stop_component pod-targets
}

cmd_status() {
  local c pid state all=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then
      if component_healthy "$c"; then state=running; else state=unhealthy; all=1; fi
    else
      state=stopped pid=- all=1
    fi
    printf '%-13s %-9s pid %-8s %-50s log %s\n' "$c" "$state" "$pid" "$(component_url "$c")" "$LOG_DIR/$c.log"
  done
  return $((all ? 3 : 0))
}

# One up or down at a time.
lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 8>"$CLUSTER_DIR/.prometheus.lock"
  flock -w 300 8 || die "another prometheus.sh up/down holds $CLUSTER_DIR/.prometheus.lock"
}

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  urls) printf 'prometheus %s\nalertmanager %s\n' "$(component_url prometheus)" "$(component_url alertmanager)" ;;
  *) sed -n '10,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
