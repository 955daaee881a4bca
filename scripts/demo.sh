#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make demo`: herdwatch's story on a local single-node cluster, told step by step.
#
#   1. builds what is missing (eBPF toolchain, Kubernetes components, images) and starts
#      the cluster (e2e/cluster), then installs the chart with short learning
#      (e2e/demo-values.yaml);
#   2. deploys a web server (2 replicas) and a client sending it normal traffic in the
#      namespace herdwatch-demo, which opts in to learning;
#   3. waits while herdwatch learns the web server and promotes its profile to Enforcing;
#   4. plays an intruder: `kubectl exec <pod> -- sh -c 'wget ...'`; herdwatch records a
#      BehaviorViolation and tags the pod (label, annotation, Event);
#   5. switches the response to Kill and does it again in the other pod: herdwatch evicts
#      it, the Deployment replaces it, and the BehaviorViolation stays as evidence;
#   6. shows the agent's violation metric.
#
# A second run reuses the cluster, images and installation, and replays the story in a
# fresh demo namespace.
#
# Usage: scripts/demo.sh          run the demo
#        scripts/demo.sh down     remove the demo, uninstall herdwatch and stop the cluster
#                                 (HERDWATCH_DEMO_KEEP_CLUSTER=1: leave the cluster running)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../e2e/cluster/lib/common.sh
source "$REPO/e2e/cluster/lib/common.sh"

DEMO_NS="${HERDWATCH_DEMO_NAMESPACE:-herdwatch-demo}"
HW_NS=herdwatch
RELEASE=herdwatch
APP=web
PORT=8080
LEARN_TIMEOUT=${HERDWATCH_DEMO_LEARN_TIMEOUT:-300}
ACT_TIMEOUT=${HERDWATCH_DEMO_ACT_TIMEOUT:-120}
export PATH="$HOME/.cargo/bin:$PATH"

start=$(date +%s)
stepno=0
bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'
[[ -t 1 ]] || { bold="" dim="" off=""; }
step() { stepno=$((stepno + 1)); printf '\n%s[demo %4ss] %d. %s%s\n' "$bold" "$(($(date +%s) - start))" "$stepno" "$*" "$off"; }
info() { printf '[demo %4ss]    %s\n' "$(($(date +%s) - start))" "$*"; }
# show <command...>: prints the command as a user would type it (k is kubectl), then its output.
show() {
  local shown="" a
  for a in "$@"; do
    [[ $a =~ [[:space:]\$\;\{] ]] && a="'$a'"
    shown+="${shown:+ }$a"
  done
  printf '%s    $ %s%s\n' "$dim" "${shown/#k /kubectl }" "$off"
  "$@" 2>&1 | sed 's/^/      /' || true
}
fail() {
  printf '\n[demo] FAILED: %s\n' "$*" >&2
  printf '[demo] what the cluster shows:\n' >&2
  k -n "$DEMO_NS" get pods -o wide >&2 2>&1 || true
  k -n "$DEMO_NS" get bp,bv >&2 2>&1 || true
  k -n "$HW_NS" get pods >&2 2>&1 || true
  printf '[demo] latest warnings of the agent and the operator:\n' >&2
  { k -n "$HW_NS" logs ds/"$RELEASE"-agent --tail=400; k -n "$HW_NS" logs deploy/"$RELEASE"-operator --tail=400; } 2>/dev/null \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' (WARN|ERROR) ' | tail -8 | cut -c1-300 >&2 || true
  printf '[demo] logs: KUBECONFIG=%s kubectl -n %s logs ds/%s-agent; kubectl -n %s logs deploy/%s-operator\n' \
    "$ADMIN_KUBECONFIG" "$HW_NS" "$RELEASE" "$HW_NS" "$RELEASE" >&2
  exit 1
}
k() { "$(cached_bin kubectl)" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# wait_for <timeout-seconds> <description> <command...>: runs the command every 2 s until it
# succeeds; prints its output (the state) every 10 s. Exit status 2 means it never will.
wait_for() {
  local timeout=$1 what=$2 t0 last=0 state rc
  shift 2
  t0=$(date +%s)
  info "waiting for $what (up to ${timeout}s)"
  until state=$("$@" 2>&1); do
    rc=$?
    if ((rc == 2)); then fail "$what: ${state:-gave up}"; fi
    if (($(date +%s) - t0 >= timeout)); then fail "$what: not after ${timeout}s (last: ${state:-nothing})"; fi
    if (($(date +%s) - last >= 10)); then
      last=$(date +%s)
      info "  ... $(($(date +%s) - t0))s: ${state%%$'\n'*}"
    fi
    sleep 2
  done
  state=${state%%$'\n'*}
  info "  done after $(($(date +%s) - t0))s${state:+: $state}"
}

down() {
  if [[ -f $ADMIN_KUBECONFIG ]] && k get ns >/dev/null 2>&1; then
    k delete ns "$DEMO_NS" --ignore-not-found --wait=false
    "$(cached_bin helm)" --kubeconfig "$ADMIN_KUBECONFIG" uninstall "$RELEASE" -n "$HW_NS" --ignore-not-found || true
  fi
  if [[ ${HERDWATCH_DEMO_KEEP_CLUSTER:-0} == 1 ]]; then
    info "the cluster keeps running (HERDWATCH_DEMO_KEEP_CLUSTER=1)"
  else
    bash "$REPO/e2e/cluster/cluster.sh" down
  fi
  info "demo removed"
}

[[ ${1:-} == down ]] && { down; exit 0; }

# ---- 1. what is missing, the cluster, the images, the chart ---------------------------------
step "Building what is missing and starting the cluster (the first run builds Kubernetes from source: 15 to 20 min on 2 cores; later runs take seconds)"
need_root
"$REPO/scripts/install-ebpf-toolchain.sh"
bash "$REPO/e2e/cluster/cluster.sh" build
bash "$REPO/e2e/cluster/cluster.sh" up

step "Building herdwatch's images (agent, operator, test workload) and importing them into the cluster"
"$REPO/scripts/images.sh"

step "Installing herdwatch with Helm (short learning for the demo: e2e/demo-values.yaml)"
"$REPO/scripts/install-chart.sh" "$REPO/e2e/demo-values.yaml"
show k -n "$HW_NS" get pods -o wide

# ---- 2. the workload ---------------------------------------------------------------------
step "Deploying the web server: 2 replicas in namespace $DEMO_NS, which opts in to learning (label herdwatch.dev/learn=enabled)"
if k get ns "$DEMO_NS" >/dev/null 2>&1; then
  info "removing the namespace of an earlier demo run, to tell the story from the start"
  k delete ns "$DEMO_NS" --wait=true --timeout=120s >/dev/null
fi
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $DEMO_NS
  labels:
    herdwatch.dev/learn: enabled
---
apiVersion: v1
kind: Service
metadata: {name: $APP, namespace: $DEMO_NS}
spec:
  selector: {app: $APP}
  ports: [{name: http, port: $PORT, targetPort: $PORT}]
EOF
svc_ip=$(k -n "$DEMO_NS" get svc "$APP" -o jsonpath='{.spec.clusterIP}')
k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $APP, namespace: $DEMO_NS, labels: {app: $APP}}
spec:
  replicas: 2
  selector: {matchLabels: {app: $APP}}
  template:
    metadata: {labels: {app: $APP}}
    spec:
      terminationGracePeriodSeconds: 2
      enableServiceLinks: false
      containers:
        - name: $APP
          image: $WORKLOAD_IMAGE
          imagePullPolicy: Never
          # The image's default command: busybox httpd -f -p $PORT -h /www
          ports: [{name: http, containerPort: $PORT}]
          readinessProbe: {httpGet: {path: /, port: $PORT}, periodSeconds: 2}
---
# Normal traffic: a client fetching the home page every second.
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $DEMO_NS, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: client
      image: $WORKLOAD_IMAGE
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "while true; do timeout 5 wget -q -O /dev/null http://$svc_ip:$PORT/ || echo fetch failed; sleep 1; done"]
EOF
k -n "$DEMO_NS" rollout status deploy/"$APP" --timeout=120s >/dev/null || fail "Deployment $APP did not become Ready"
show k -n "$DEMO_NS" get deploy,pods -o wide

# ---- 3. learning ---------------------------------------------------------------------------
step "herdwatch learns how the web server behaves (profile created by the operator; learning for at least 30s, until nothing new for 15s)"
profile_name() {
  k -n "$DEMO_NS" get bp -o jsonpath="{range .items[?(@.spec.targetRef.name==\"$APP\")]}{.metadata.name}{end}"
}
profile_exists() { local n; n=$(profile_name); [[ -n $n ]] && echo "$n"; }
wait_for 60 "the operator to create the web server's BehaviorProfile" profile_exists
BP=$(profile_name)
learning_state() {
  k -n "$DEMO_NS" get bp "$BP" -o json | jq -r '.status as $s | ($s.phase // "none") as $phase
    | "phase \($phase), \($s.learning.replicas.count // 0) replicas seen, "
      + ([$s.conditions[]? | select(.type == "Bounded") | .message] | join(""))
      + (if $phase == "Learning"
         then "; waiting for: " + ([$s.conditions[]? | select(.type == "Incomplete" and .status == "True") | .message] | join("; "))
         else "" end),
      ($phase != "Learning" and $phase != "none")' | { read -r line; read -r promoted; echo "$line"; [[ $promoted == true ]]; }
}
wait_for "$LEARN_TIMEOUT" "profile $BP to leave Learning for Enforcing" learning_state
show k -n "$DEMO_NS" get bp "$BP" -o wide
info "what herdwatch learned (spec.allowed, abridged):"
k -n "$DEMO_NS" get bp "$BP" -o jsonpath='{range .spec.allowed.processes[*]}{"      process "}{.exe}{" "}{.argv}{" uid "}{.uid}{" (seen in "}{.seenReplicas}{" replicas)\n"}{end}{range .spec.allowed.network.listen[*]}{"      listens on "}{.port}{"/"}{.protocol}{"\n"}{end}{range .spec.allowed.files[*]}{"      file "}{.path}{.prefix}{" "}{.access}{"\n"}{end}{"      syscalls: "}{range .spec.allowed.syscalls[*]}{.name}{" "}{end}{"\n"}' | cut -c1-400

# ---- 4. an intruder; response Tag -----------------------------------------------------------
mapfile -t pods < <(k -n "$DEMO_NS" get pods -l app="$APP" --field-selector=status.phase=Running \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
((${#pods[@]} >= 2)) || fail "expected 2 running web pods, found: ${pods[*]}"
first=${pods[0]} second=${pods[1]}

intrude() {
  local pod=$1
  info "an intruder runs a shell in $pod and fetches something with wget:"
  show k -n "$DEMO_NS" exec "$pod" -c "$APP" -- sh -c "wget -q -O /dev/null http://$svc_ip:$PORT/; echo wget exit \$?"
}
violation_of() { # <pod> [outcome]: name of a BehaviorViolation of the pod (with that outcome)
  k -n "$DEMO_NS" get bv -o json | jq -er --arg pod "$1" --arg outcome "${2:-}" \
    '[.items[] | select(.spec.pod == $pod) | select($outcome == "" or .status.outcome == $outcome)] | first | .metadata.name'
}

step "Playing an intruder in pod $first: kubectl exec ... wget (response: Tag)"
intrude "$first"
wait_for "$ACT_TIMEOUT" "the agent to record a BehaviorViolation of $first" violation_of "$first"
show k -n "$DEMO_NS" get bv

step "The pod is tagged: label, annotation and Event"
tagged() {
  k -n "$DEMO_NS" get pod "$1" -o json | jq -er '.metadata
    | select(.labels["herdwatch.dev/violation"] and .annotations["herdwatch.dev/violation-summary"])
    | "label herdwatch.dev/violation=" + .labels["herdwatch.dev/violation"]'
}
wait_for "$ACT_TIMEOUT" "the operator to tag $first" tagged "$first"
show k -n "$DEMO_NS" get pod "$first" -L herdwatch.dev/violation
info "annotation herdwatch.dev/violation-summary: $(k -n "$DEMO_NS" get pod "$first" -o jsonpath='{.metadata.annotations.herdwatch\.dev/violation-summary}')"
show k -n "$DEMO_NS" get events --field-selector "involvedObject.name=$first" --sort-by=.lastTimestamp

# ---- 5. response Kill -------------------------------------------------------------------------
step "Switching the profile's response to Kill (kubectl patch bp $BP)"
show k -n "$DEMO_NS" patch bp "$BP" --type merge -p '{"spec":{"response":{"action":"Kill"}}}'

step "Playing the intruder again, in pod $second: herdwatch evicts it and the Deployment replaces it"
uid=$(k -n "$DEMO_NS" get pod "$second" -o jsonpath='{.metadata.uid}')
intrude "$second"
gone() { # <pod> <uid>: the pod is gone; exit 2 when herdwatch refused to evict it
  if [[ "$(k -n "$DEMO_NS" get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null)" != "$2" ]]; then
    echo "$1 is gone"
    return 0
  fi
  local refused
  # Once one record evicted the pod, the others of the same intrusion are refused (the
  # owner is already one replica short): only a refusal that no eviction followed within
  # 10 s is final.
  refused=$(k -n "$DEMO_NS" get bv -o json | jq -r --arg pod "$1" '[.items[] | select(.spec.pod == $pod)] as $mine
    | if any($mine[]; .status.outcome == "Evicted") then empty
      else [$mine[] | select(.status.outcome == "Refused" and (now - (.status.decidedAt | fromdateiso8601)) > 10)]
        | first | .status.message // empty end')
  if [[ -n $refused ]]; then echo "herdwatch refused the eviction: $refused"; return 2; fi
  echo "records of $1: $(k -n "$DEMO_NS" get bv -o json | jq -r --arg pod "$1" \
    '[.items[] | select(.spec.pod == $pod) | .status.outcome // "Pending"] | join(", ")')"
  return 1
}
replaced() {
  local ready
  ready=$(k -n "$DEMO_NS" get deploy "$APP" -o jsonpath='{.status.readyReplicas}')
  echo "$ready of 2 replicas Ready"
  [[ $ready == 2 ]] && ! k -n "$DEMO_NS" get pod "$1" >/dev/null 2>&1
}
wait_for "$ACT_TIMEOUT" "the operator to evict $second" gone "$second" "$uid"
wait_for "$ACT_TIMEOUT" "a replacement replica to become Ready" replaced "$second"
show k -n "$DEMO_NS" get pods -o wide

step "The BehaviorViolation outlives the pod: the forensic record"
wait_for "$ACT_TIMEOUT" "the record of $second to show the outcome Evicted" violation_of "$second" Evicted
bv=$(violation_of "$second" Evicted)
show k -n "$DEMO_NS" get bv
info "kubectl -n $DEMO_NS get bv $bv -o yaml (spec and status; each ancestor's argv shortened):"
k -n "$DEMO_NS" get bv "$bv" -o yaml | sed -n '/^spec:/,$p' | awk '
  /^  ancestry:/ { a = 1; print; next }
  a && /^  [^ -]/ { a = 0 }
  a && /^  - / { n = 0 }
  a && /^    - / { n++; if (n == 4) print "    - ..."; if (n >= 4) next }
  { print }' | cut -c1-140 | sed 's/^/      /'

# ---- 6. the metric -------------------------------------------------------------------------
step "The agent's /metrics counts the violations (scraped through the API server's pod proxy)"
node=$(k -n "$DEMO_NS" get pod "$first" -o jsonpath='{.spec.nodeName}')
agent=$(k -n "$HW_NS" get pods -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=agent" \
  --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')
metric() { k get --raw "/api/v1/namespaces/$HW_NS/pods/$1:9090/proxy/metrics" | grep "^herdwatch_agent_violations_total.*namespace=\"$DEMO_NS\""; }
wait_for 60 "herdwatch_agent_violations_total for $DEMO_NS on agent $agent" metric "$agent"
metric "$agent" | sed 's/^/      /'

cat <<EOF

${bold}[demo $(($(date +%s) - start))s] Done.${off} Look around with the cluster's kubectl:

  export KUBECONFIG=$ADMIN_KUBECONFIG
  alias kubectl=$(cached_bin kubectl)
  kubectl get bp,behaviorviolations -A
  kubectl -n $DEMO_NS get bp $BP -o yaml          # the learned profile, its history
  kubectl -n $HW_NS logs ds/$RELEASE-agent         # the agent
  kubectl -n $HW_NS logs deploy/$RELEASE-operator  # the operator

Tear everything down with: make demo-down
EOF
