#!/usr/bin/env bash
# Kernel-side cost of herdwatch: 512-byte read+write (the loop of dd bs=512), a getpid loop
# and an exec storm, with nothing attached, with an empty tp_btf/sys_enter program (the
# floor any syscall entry hook pays) and with the agent's eBPF programs attached and
# drained, alternated in one run; then each sys_enter program's own run time by the
# kernel's BPF statistics. Prints the table README.md quotes. About 5 minutes with the
# defaults on 2 vCPUs.
#
# Needs root and the eBPF toolchain (scripts/install-ebpf-toolchain.sh). Refuses to run
# while another process holds a program on the syscall tracepoints (a local cluster's
# herdwatch agent, say), because then nothing is ever "off"; --allow-other-hooks measures
# anyway and says so in the output. Extra arguments go to the benchmark (see --help), e.g.
# bench/kernel.sh --rounds 5.
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
