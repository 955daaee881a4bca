#!/usr/bin/env bash
# Kernel-side cost of herdwatch: dd bs=512, a getpid loop and an exec storm, each with the
# eBPF programs detached and attached (and drained), alternated in one run; prints the
# ratios as a table. Needs root and the eBPF toolchain (scripts/install-ebpf-toolchain.sh).
# Extra arguments go to the benchmark (see --help), e.g. bench/kernel.sh --rounds 3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/kernel.sh loads BPF programs: run it as root" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herdwatch/target}"
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-ebpf-toolchain.sh
cargo build --release -p herdwatch-node-agent --example kernel_bench
exec "$CARGO_TARGET_DIR/release/examples/kernel_bench" "$@"
