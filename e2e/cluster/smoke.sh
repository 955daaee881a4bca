#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Smoke test of the e2e cluster: a web server pod and a client pod from the local workload
# image; the client reaches the API server through the `kubernetes` Service (kube-proxy),
# the server by pod IP and through a Service of its own. Cleans up after itself.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
source "$HERE/lib/common.sh"

NS=herdwatch-smoke
[[ -f $ADMIN_KUBECONFIG ]] || die "no cluster: run $HERE/cluster.sh up"
start=$(date +%s)

cleanup() { kctl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT
dump() {
  kctl -n "$NS" get pods -o wide >&2 || true
  kctl -n "$NS" get events --sort-by=.lastTimestamp >&2 || true
  kctl -n "$NS" logs smoke-client >&2 || true
}

if kctl get namespace "$NS" >/dev/null 2>&1; then
  kctl delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
kctl create namespace "$NS" >/dev/null
until kctl -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke-web
  labels: {app: smoke-web}
spec:
  containers:
  - name: web
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: smoke-web
spec:
  selector: {app: smoke-web}
  ports: [{port: 80, targetPort: 8080}]
EOF
log "smoke: waiting for the web server pod"
if ! kctl -n "$NS" wait pod/smoke-web --for=condition=Ready --timeout=120s >/dev/null; then
  dump; die "smoke: the web server pod did not become Ready"
fi
web_ip=$(kctl -n "$NS" get pod smoke-web -o jsonpath='{.status.podIP}')
svc_ip=$(kctl -n "$NS" get service smoke-web -o jsonpath='{.spec.clusterIP}')

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke-client
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      set -e
      echo "api: https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/version"
      timeout 15 wget -q -O - --no-check-certificate "https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/version"
      echo; echo "web by pod IP:"
      timeout 15 wget -q -O - http://$web_ip:8080/
      echo "web by Service IP:"
      timeout 15 wget -q -O - http://$svc_ip/
      echo SMOKE-OK
EOF
log "smoke: waiting for the client pod"
deadline=$(($(date +%s) + 120))
while :; do
  phase=$(kctl -n "$NS" get pod smoke-client -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $phase == Succeeded || $phase == Failed ]] && break
  (($(date +%s) < deadline)) || { dump; die "smoke: the client pod did not finish (phase ${phase:-none})"; }
  sleep 1
done
out=$(kctl -n "$NS" logs smoke-client)
printf '%s\n' "$out" | sed 's/^/  | /' >&2
if [[ $phase != Succeeded ]] || ! grep -q SMOKE-OK <<<"$out" || ! grep -q '"gitVersion"' <<<"$out"; then
  dump; die "smoke: FAILED"
fi
log "smoke: OK in $(($(date +%s) - start))s (API server via Service $KUBERNETES_SVC_IP, pod $web_ip, Service $svc_ip)"
