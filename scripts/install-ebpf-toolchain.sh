#!/usr/bin/env bash
# Installs what building the kernel side of herdwatch needs: Debian's second Rust
# toolchain (it ships rust-src, which -Z build-std needs for the bpfel target) and
# bpf-linker built against Debian's LLVM 22. Idempotent: every step checks first.
set -euo pipefail

log() { printf '[ebpf-toolchain] %s\n' "$*" >&2; }

packages=(rustc-web cargo-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    log "error: installing packages needs root; run: sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "Debian Rust toolchain present"
fi

BPF_LINKER_VERSION=0.13.0
bpf_linker="${CARGO_HOME:-$HOME/.cargo}/bin/bpf-linker"
if [ -x "$bpf_linker" ] && "$bpf_linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "bpf-linker $BPF_LINKER_VERSION present"
else
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about 4 minutes on 2 cores)"
  # -L: llvm-sys links -lLLVM, which Debian keeps under /usr/lib/llvm-22/lib.
  RUSTFLAGS="-L /usr/lib/llvm-22/lib -C link-args=-Wl,-rpath,/usr/lib/llvm-22/lib" \
    cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi
