#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds herdwatch's images without a registry or an image builder and imports them into the
# e2e cluster's containerd:
#   herdwatch/agent:dev       herdwatch-agent (release build) on an otherwise empty root
#   herdwatch/operator:dev    herdwatch-operator, run as uid 65532
#   herdwatch-e2e/workload:dev and the pause image (e2e/images/images.sh)
#
# The binaries link against glibc, so each image holds the binary, the shared libraries
# `ldd` names and the dynamic loader, at the paths the binary asks for; nothing else (no
# shell, no /etc/passwd: the operator runs by uid).
#
# Quick when nothing changed: cargo decides whether to rebuild, and an image is rebuilt only
# when the digest of its inputs (binary, libraries, this script) changed. Every image is
# imported whenever the cluster's containerd runs (import skips what is already there).
#
# Usage: scripts/images.sh [--no-build]   (--no-build: use the binaries as they are)
#        HERDWATCH_CARGO_PROFILE=release (default) selects the cargo profile.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../e2e/cluster/lib/common.sh
source "$REPO/e2e/cluster/lib/common.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERDWATCH_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"
PROFILE="${HERDWATCH_CARGO_PROFILE:-release}"
OUT="$HERDWATCH_CACHE/images"
IMAGE_TAG="${HERDWATCH_IMAGE_TAG:-dev}"
t0=$(date +%s)
say() { printf '[images %4ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

build=1
[[ ${1:-} == --no-build ]] && build=0

if ((build)); then
  # The agent embeds the kernel programs, built with Debian's Rust toolchain.
  "$REPO/scripts/install-ebpf-toolchain.sh"
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
  say "cargo build --profile $PROFILE (agent and operator)"
  (cd "$REPO" && cargo build --profile "$PROFILE" -p herdwatch-node-agent -p herdwatch-operator)
fi

bin_dir="$CARGO_TARGET_DIR/$PROFILE"
containerd_up() { [[ -S $CONTAINERD_SOCK ]] && "$BIN_DIR/ctr" --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

# The files an image of `binary` needs: the binary, then every library ldd resolves and the
# loader (PT_INTERP), one absolute path a line.
runtime_files() {
  local binary=$1 out
  out=$(LC_ALL=C ldd "$binary" 2>&1) || die "ldd $binary failed: $out"
  echo "$binary"
  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)";
  # linux-vdso has no file.
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
  if grep -q 'not found' <<<"$out"; then die "$binary needs libraries this machine lacks: $out"; fi
}

# build_image <image> <binary> <user> : builds the image when its inputs changed, prints nothing.
build_image() {
  local image=$1 binary=$2 user=$3 base files key stamp root f
  [[ -x $binary ]] || die "$binary is missing: run without --no-build"
  base=${image//\//_}; base=${base//:/_}
  mapfile -t files < <(runtime_files "$binary")
  # Identity of the image's inputs: what goes in and how it is laid out.
  key=$( { sha256sum "${files[@]}" | awk '{print $1}'; printf '%s\n' "${files[@]}" "$user" "$image";
           sha256sum "$REPO/scripts/images.sh" "$REPO/e2e/images/build-image.sh" | awk '{print $1}'; } | sha256sum | cut -d' ' -f1)
  stamp="$OUT/$base.inputs"
  if [[ -f $OUT/$base.oci.tar && -f $OUT/$base.oci.tar.digest && "$(cat "$stamp" 2>/dev/null)" == "$key" ]]; then
    say "$image: unchanged ($(cat "$OUT/$base.oci.tar.digest"))"
    return
  fi
  root=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  mkdir -p "$root/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$binary" "$root/bin/"
  for f in "${files[@]:1}"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
  done
  local opts=(--no-import --output "$OUT/$base.oci.tar"
    --label "org.opencontainers.image.title=${image%%:*}")
  [[ -n $user ]] && opts+=(--user "$user")
  "$REPO/e2e/images/build-image.sh" "${opts[@]}" "$image" "$root" "/bin/$(basename "$binary")" >/dev/null
  echo "$key" >"$stamp"
  say "$image: built $(cat "$OUT/$base.oci.tar.digest") ($(( $(stat -c %s "$OUT/$base.oci.tar") / 1024 )) KiB archive)"
}

mkdir -p "$OUT"
build_image "herdwatch/agent:$IMAGE_TAG" "$bin_dir/herdwatch-agent" ""
build_image "herdwatch/operator:$IMAGE_TAG" "$bin_dir/herdwatch-operator" "65532:65532"

if containerd_up; then
  "$REPO/e2e/images/images.sh" import
  "$REPO/e2e/images/import-image.sh" "$OUT/herdwatch_agent_$IMAGE_TAG.oci.tar" "$OUT/herdwatch_operator_$IMAGE_TAG.oci.tar"
  say "images imported into the cluster's containerd"
else
  "$REPO/e2e/images/images.sh" build
  say "the cluster's containerd is not running: archives are in $OUT; start the cluster (make cluster-up) and run make images again to import them"
fi
