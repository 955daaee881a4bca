#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Installs (or upgrades) the herdwatch chart into the local e2e cluster and waits until the
# agent and both operator replicas are Ready, running the images `make images` imported.
#
# Usage: scripts/install-chart.sh [values.yaml]   (default: e2e/values.yaml)
# HERDWATCH_READY_TIMEOUT: seconds to wait for the pods to be Ready (default 180).
#
# Two things `helm upgrade --install` alone does not do:
# - Helm never updates the CRDs in a chart's crds/ once they exist, so they are applied
#   first (server-side) and a changed schema reaches the API server.
# - The image tag stays `dev` while `make images` replaces what it points to; pods whose
#   image is not the imported one are restarted.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../e2e/cluster/lib/common.sh
source "$REPO/e2e/cluster/lib/common.sh"

VALUES="${1:-$REPO/e2e/values.yaml}"
RELEASE="${HERDWATCH_RELEASE:-herdwatch}"
NS="${HERDWATCH_NAMESPACE:-herdwatch}"
IMAGE_TAG="${HERDWATCH_IMAGE_TAG:-dev}"
t0=$(date +%s)
say() { printf '[install %4ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

[[ -f $ADMIN_KUBECONFIG ]] || die "no cluster: run make cluster-up (bash e2e/cluster/cluster.sh up)"
export KUBECONFIG=$ADMIN_KUBECONFIG
HELM=$(cached_bin helm)
KUBECTL=$(cached_bin kubectl)
[[ -x $HELM && -x $KUBECTL ]] || die "helm or kubectl is not built: run bash e2e/cluster/cluster.sh build"

failed() {
  say "FAILED: $*"
  "$KUBECTL" -n "$NS" get pods -o wide >&2 || true
  "$KUBECTL" -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
  local pod
  for pod in $("$KUBECTL" -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE" -o name 2>/dev/null); do
    echo "----- last log lines of $pod" >&2
    "$KUBECTL" -n "$NS" logs "$pod" --tail=30 >&2 2>&1 || true
  done
  exit 1
}

say "CRDs: kubectl apply --server-side -f charts/herdwatch/crds/"
"$KUBECTL" apply --server-side --force-conflicts --field-manager=herdwatch-install \
  -f "$REPO/charts/herdwatch/crds/" >/dev/null || failed "applying the CRDs"

say "helm upgrade --install $RELEASE charts/herdwatch -n $NS -f ${VALUES#"$REPO"/}"
"$HELM" upgrade --install "$RELEASE" "$REPO/charts/herdwatch" -n "$NS" --create-namespace \
  -f "$VALUES" --set "image.tag=$IMAGE_TAG" --wait --timeout 180s >/dev/null \
  || failed "helm upgrade --install (agent DaemonSet $RELEASE-agent, operator Deployment $RELEASE-operator)"

# Restart the component whose pods do not run the imported image.
restart_if_stale() {
  local kind=$1 name=$2 component=$3 archive=$4 digest ids
  [[ -f $archive.digest ]] || { say "$name: no image archive $archive (run make images)"; return; }
  # Pods report the image's id (the digest of its config; with a registry, the manifest's).
  digest=$(tar -xOf "$archive" "blobs/sha256/$(cut -d: -f2 "$archive.digest")" | jq -r .config.digest)
  ids=$("$KUBECTL" -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=$component" \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].imageID}{"\n"}{end}')
  if [[ -z $ids ]] || grep -qvF "$digest" <<<"$ids"; then
    say "$name: pods do not all run $digest: rollout restart"
    "$KUBECTL" -n "$NS" rollout restart "$kind/$name" >/dev/null
    "$KUBECTL" -n "$NS" rollout status "$kind/$name" --timeout 180s >/dev/null \
      || failed "$kind/$name did not become Ready after the restart"
  fi
}
restart_if_stale daemonset "$RELEASE-agent" agent "$HERDWATCH_CACHE/images/herdwatch_agent_$IMAGE_TAG.oci.tar"
restart_if_stale deployment "$RELEASE-operator" operator "$HERDWATCH_CACHE/images/herdwatch_operator_$IMAGE_TAG.oci.tar"

# helm --wait is not the pods' word: it does not wait for a DaemonSet whose maxUnavailable
# covers all of its nodes (one node), and a pod counted once may be crash-looping. So look
# at the controllers' status for the current generation and at every pod, and fail at once
# with the pods' logs when one cannot start.
pods_state() {
  "$KUBECTL" -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{range .items[*]}{.metadata.name}{" ready="}{.status.conditions[?(@.type=="Ready")].status}{" restarts="}{.status.containerStatuses[*].restartCount}{" waiting="}{.status.containerStatuses[*].state.waiting.reason}{" terminated="}{.status.containerStatuses[*].state.terminated.reason}{"\n"}{end}'
}
controllers_ready() {
  local ds dep
  ds=$("$KUBECTL" -n "$NS" get daemonset "$RELEASE-agent" -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.desiredNumberScheduled} {.status.numberReady} {.status.updatedNumberScheduled} {.status.numberUnavailable}')
  dep=$("$KUBECTL" -n "$NS" get deployment "$RELEASE-operator" -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.readyReplicas} {.status.updatedReplicas}')
  read -r g og want ready updated unavailable <<<"$ds"
  [[ $g == "$og" && $want -gt 0 && $ready == "$want" && $updated == "$want" && ${unavailable:-0} == 0 ]] || return 1
  read -r g og want ready updated <<<"$dep"
  [[ $g == "$og" && $ready == "$want" && $updated == "$want" ]]
}
ready_deadline=$(($(date +%s) + ${HERDWATCH_READY_TIMEOUT:-180}))
confirmed=""
while :; do
  state=$(pods_state)
  if grep -Eq 'waiting=.*(CrashLoopBackOff|ErrImageNeverPull|ImagePullBackOff|CreateContainerConfigError|CreateContainerError|RunContainerError)' <<<"$state"; then
    echo "$state" >&2
    failed "a herdwatch pod cannot start (see its state and logs above)"
  fi
  if controllers_ready && ! grep -q 'ready=False' <<<"$state"; then
    # The same restart counts a few seconds later: ready, not between two crashes.
    [[ $confirmed == "$state" ]] && break
    confirmed=$state
    sleep 3
    continue
  fi
  confirmed=""
  (($(date +%s) < ready_deadline)) || { echo "$state" >&2; failed "herdwatch's pods did not all become Ready within ${HERDWATCH_READY_TIMEOUT:-180}s"; }
  sleep 2
done
say "herdwatch is Ready (every pod checked): $("$KUBECTL" -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE" --no-headers | awk '{printf "%s %s %s; ", $1, $2, $3}')"
