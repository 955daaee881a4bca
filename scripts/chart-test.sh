#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Lints the herdwatch chart and checks what it renders, without a cluster:
#   - helm lint --strict with the default, e2e and demo values;
#   - the default render: the agent is not privileged and has hostPID, nothing grants
#     access to secrets, the operator runs 2 replicas with leader election, and the CRDs
#     in the chart are the generated ones (crds/);
#   - switching the agent to privileged does render `privileged: true` (so the check above
#     can fail), and the optional Prometheus objects render when enabled, with the job
#     labels herdwatch-agent and herdwatch-operator the alerts select on (the rules
#     themselves are checked by scripts/rules-test.sh).
# Usage: scripts/chart-test.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../e2e/cluster/lib/common.sh
source "$REPO/e2e/cluster/lib/common.sh"
CHART="$REPO/charts/herdwatch"
HELM=$(cached_bin helm)
[[ -x $HELM ]] || die "helm is not built ($HELM): run bash e2e/cluster/cluster.sh build"

failures=0
pass() { printf '[chart-test] ok   %s\n' "$*"; }
fail() { printf '[chart-test] FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
# has <extended-regex> <text>, lacks <extended-regex> <text>
has() { grep -Eq -- "$1" <<<"$2"; }
lacks() { ! grep -Eiq -- "$1" <<<"$2"; }

for values in "" "$REPO/e2e/values.yaml" "$REPO/e2e/demo-values.yaml"; do
  args=(lint --strict "$CHART")
  [[ -n $values ]] && args+=(-f "$values")
  if out=$("$HELM" "${args[@]}" 2>&1); then pass "helm lint --strict ${values:+-f ${values#"$REPO"/}}"
  else fail "helm lint --strict ${values:+-f ${values#"$REPO"/}}:"; echo "$out" >&2; fi
done

render() { "$HELM" template herdwatch "$CHART" -n herdwatch "$@"; }
# The rendered YAML without comments (templates explain themselves in comments, which
# would match the words looked for below).
default=$(render | grep -v '^[[:space:]]*#')

# The agent's pod spec: from "kind: DaemonSet" to the next document.
agent=$(awk '/^kind: DaemonSet/{d=1} d && /^---/{exit} d{print}' <<<"$default")
check "the agent DaemonSet renders" has 'name: herdwatch-agent' "$agent"
# The agent's own container: from "containers:" on (the init container comes before).
agent_container=$(awk '/^      containers:/{d=1} d{print}' <<<"$agent")
check "the agent is not privileged by default" lacks 'privileged: true' "$agent_container"
# The one privileged step: the init container that mounts the BPF filesystem the agent
# pins its programs in, which does nothing else.
init=$(awk '/^      initContainers:/{d=1} /^      containers:/{d=0} d{print}' <<<"$agent")
check "only the init container is privileged, and it only mounts the BPF filesystem"   test "$(grep -c 'privileged: true' <<<"$default")" = 1 -a "$(grep -c 'privileged: true' <<<"$init")" = 1
check "the init container mounts the BPF filesystem in the host's mount namespace" \
  has 'args: \["mount-bpffs", "--mount-namespace", "parent", "/sys/fs/bpf"\]' "$init"
check "nothing needs mount propagation (hosts with a private /sys refuse it)" lacks 'mountPropagation' "$agent"
check "the agent pins its programs by default" \
  has 'value: "/host/sys/fs/bpf/herdwatch"' "$(grep -A1 HERDWATCH_PIN_ROOT <<<"$agent")"
check "agent.pinPrograms=false: no init container, nothing pinned, nothing privileged" \
  lacks 'initContainers|privileged: true|bpffs' "$(render --set agent.pinPrograms=false | grep -v '^[[:space:]]*#' | grep -v 'value: ""')"
check "the agent knows its DaemonSet, to unpin when it is gone" \
  has 'value: "herdwatch-agent"' "$(grep -A1 HERDWATCH_DAEMONSET <<<"$agent")"
check "the agent shares the host pid namespace" has 'hostPID: true' "$agent"
check "the agent drops all capabilities before adding its own" has 'drop: \["ALL"\]' "$agent"
check "the agent adds no CAP_SYS_ADMIN" lacks 'SYS_ADMIN' "$agent"
check "the agent needs no tracefs from the host" lacks 'tracing|debugfs' "$agent"
check "nothing references secrets (RBAC, volumes, env)" lacks 'secret' "$default"
check "the operator runs 2 replicas" has 'replicas: 2' "$default"
check "the operator elects a leader" \
  has 'value: "true"' "$(grep -A1 'name: HERDWATCH_LEADER_ELECTION' <<<"$default")"
check "the operator runs as a non-root user" has 'runAsNonRoot: true' "$default"
# Helm reads numbers as floats: 4194304 must not reach a flag as "4.194304e+06".
check "numeric settings render as integers" \
  lacks 'value: "[0-9.]+e[+-]?[0-9]+"' "$(render --set agent.ringBufferBytes=8388608 --set agent.maxProcesses=1000000)"
# The operator's --default-mode takes learn, monitor or enforce; values say Monitor.
for mode in Learn Monitor Enforce; do
  check "operator.defaults.mode=$mode reaches the operator as a mode it accepts" \
    has 'value: "(learn|monitor|enforce)"' \
    "$(render --set "operator.defaults.mode=$mode" | grep -A2 'name: HERDWATCH_DEFAULT_MODE')"
done

crds_ok=1
for f in "$REPO"/crds/*.yaml; do
  cmp -s "$f" "$CHART/crds/$(basename "$f")" || { crds_ok=0; echo "  differs: charts/herdwatch/crds/$(basename "$f")" >&2; }
done
check "the chart's CRDs are the generated ones in crds/" test "$crds_ok" = 1

privileged=$(render --set agent.privileged=true)
check "agent.privileged=true renders privileged: true" has 'privileged: true' "$privileged"
protected=$(render --set 'operator.protectedNamespaces={payments,vault}' | grep -v '^[[:space:]]*#')
agent_protected=$(awk '/^kind: DaemonSet/,/^---/' <<<"$protected")
check "operator.protectedNamespaces reaches the agent too (it never kills there either)" \
  has 'value: "?payments,vault"?' "$agent_protected"

# Process kills: on by default, off with agent.killProcesses=false, and off whenever the
# operator runs dry (a dry run must carry out nothing, in the kernel neither).
kill_env() { render "$@" | grep -A1 'name: HERDWATCH_KILL_PROCESSES' | tail -1; }
check "the agent kills processes by default" has 'value: "true"' "$(kill_env)"
check "agent.killProcesses=false reaches the agent" has 'value: "false"' "$(kill_env --set agent.killProcesses=false)"
check "operator.dryRun=true stops the agents' process kills too" has 'value: "false"' "$(kill_env --set operator.dryRun=true)"
check "each rule's process kills are limited by default" \
  has 'value: "30"' "$(render | grep -A1 HERDWATCH_PROCESS_KILLS_PER_MINUTE)"
check "agent.processKillsPerMinute reaches the agent" \
  has 'value: "5"' "$(render --set agent.processKillsPerMinute=5 | grep -A1 HERDWATCH_PROCESS_KILLS_PER_MINUTE)"
check "agent.sensitivePaths reaches the agent" \
  has 'value: "/etc/shadow,/srv/keys/\*\*"' "$(render --set 'agent.sensitivePaths={/etc/shadow,/srv/keys/**}' | grep -A1 HERDWATCH_SENSITIVE_PATHS)"
check "the agent runs as system-node-critical by default" has 'priorityClassName: system-node-critical' "$agent"

# Node trust: the admission policies render by default and name the release's own
# service accounts; they can be turned off.
policies=$(render --show-only templates/admission-policies.yaml)
check "the agent's writes are pinned to its node by default" \
  has "username == .system:serviceaccount:herdwatch:herdwatch-agent." "$policies"
check "the node check reads the node the token is bound to" \
  has "authentication.kubernetes.io/node-name" "$policies"
check "the operator's pod changes are limited to herdwatch.dev/ labels" \
  has "username == .system:serviceaccount:herdwatch:herdwatch-operator." "$policies"
check "both policies are bound with Deny" test "$(grep -c 'validationActions: \[Deny\]' <<<"$policies")" = 2
check "admissionPolicies.enabled=false renders no policy" \
  lacks '^kind: ValidatingAdmissionPolicy' "$(render --set admissionPolicies.enabled=false)"

monitoring=$(render --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
  --set metrics.prometheusRule.enabled=true)
check "ServiceMonitor renders when enabled" has '^kind: ServiceMonitor' "$monitoring"
check "PodMonitor renders when enabled" has '^kind: PodMonitor' "$monitoring"
check "PrometheusRule renders when enabled" has '^kind: PrometheusRule' "$monitoring"
check "no Prometheus Operator object renders by default" \
  lacks '^kind: (ServiceMonitor|PodMonitor|PrometheusRule)' "$default"
# The alerts select the jobs herdwatch-agent and herdwatch-operator, whatever the release.
for kind in ServiceMonitor PodMonitor; do
  monitor=$("$HELM" template other "$CHART" -n herdwatch --set "metrics.${kind,}.enabled=true" \
    --show-only "templates/${kind,,}.yaml")
  for job in herdwatch-agent herdwatch-operator; do
    check "the $kind gives its targets job=$job" has "targetLabel: job, replacement: $job\}" "$monitor"
  done
  # Else the workload's `namespace` label of the violation metrics becomes exported_namespace.
  check "the $kind honors the metrics' own labels" \
    test "$(grep -c 'honorLabels: true' <<<"$monitor")" = 2
done
# Plain Prometheus finds the pods by their scrape annotations.
for component in DaemonSet Deployment; do
  check "the $component's pods carry prometheus.io scrape annotations" \
    has 'prometheus.io/scrape: "true"' "$(awk "/^kind: $component/{d=1} d && /^---/{exit} d{print}" <<<"$default")"
done

registry=$(render --set image.registry=registry.example.com/platform/ --set image.tag=1.2.3)
check "image.registry prefixes the images" \
  has 'image: "?registry.example.com/platform/herdwatch/agent:1.2.3' "$registry"

if ((failures)); then
  echo "[chart-test] $failures check(s) failed" >&2
  exit 1
fi
echo "[chart-test] all checks passed"
