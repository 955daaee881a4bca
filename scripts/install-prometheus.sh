#!/usr/bin/env bash
# Installs what the alerting tests need: Debian's Prometheus (prometheus and promtool)
# and Alertmanager. Idempotent: packages already installed are skipped. The packages'
# own services are not used: the end-to-end harness runs its own instances, so a
# service the package starts (on hosts with an init system) is stopped and disabled.
set -euo pipefail

log() { printf '[prometheus] %s\n' "$*" >&2; }

packages=(prometheus prometheus-alertmanager)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  log "present: $(prometheus --version 2>&1 | head -1)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  log "error: installing packages needs root; run: sudo apt-get install -y ${missing[*]}"
  exit 1
fi
log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for service in prometheus prometheus-alertmanager; do
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$service" ]; then
    "/etc/init.d/$service" stop >/dev/null 2>&1 || true
  fi
done
log "installed: $(prometheus --version 2>&1 | head -1)"
