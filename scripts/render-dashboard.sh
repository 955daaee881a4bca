#!/usr/bin/env bash
# Renders docs/dashboard.png: herdwatch's Grafana dashboard (charts/herdwatch/dashboards/
# herdwatch.json) drawn from the data of the e2e suite's Prometheus, without Grafana.
# Run it after `make e2e-test`, while that Prometheus still runs (e2e/prometheus/prometheus.sh
# keeps it up until `prometheus.sh down`).
#
# Usage: scripts/render-dashboard.sh [output.png]   (default: docs/dashboard.png)
#
# e2e/src/bin/render-dashboard.rs runs each panel's PromQL as range queries and writes an
# HTML page of SVG charts laid out on the dashboard's grid; headless Chromium (Debian's
# package, installed here when missing) screenshots it. HERDWATCH_DASHBOARD_MINUTES (30,
# starting no earlier than Prometheus's data) and HERDWATCH_DASHBOARD_STEP (30 s) choose the
# range.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-$REPO/docs/dashboard.png}")"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herdwatch/target}"
log() { printf '[render-dashboard] %s\n' "$*" >&2; }
die() { printf '[render-dashboard] ERROR: %s\n' "$*" >&2; exit 1; }

chromium_bin() { command -v chromium || command -v chromium-browser || true; }
if [[ -z $(chromium_bin) ]]; then
  [[ $(id -u) -eq 0 ]] || die "Chromium is missing: run sudo apt-get install -y chromium"
  log "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  fi
fi
CHROMIUM=$(chromium_bin)
[[ -n $CHROMIUM ]] || die "the chromium package installed no chromium command"

bash "$REPO/e2e/prometheus/prometheus.sh" status >/dev/null ||
  die "the e2e Prometheus is not running: run make e2e-test (or make prometheus-up) first; $(bash "$REPO/e2e/prometheus/prometheus.sh" status 2>&1 | tr '\n' ' ')"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$REPO"
cargo build -q -p herdwatch-e2e --bin render-dashboard
read -r width height < <(cargo run -q -p herdwatch-e2e --bin render-dashboard -- \
  --output "$work/dashboard.html")
mkdir -p "$(dirname "$OUT")"
# --no-sandbox: Chromium's sandbox refuses to run as root, which the e2e machines are.
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size="$width,$height" --screenshot="$OUT" "file://$work/dashboard.html" \
  >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; die "chromium failed"; }
[[ -s $OUT ]] || { cat "$work/chromium.log" >&2; die "chromium wrote no $OUT"; }
log "wrote $OUT (${width}x${height})"
