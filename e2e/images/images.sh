#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The e2e cluster's own images, built from local files (no registry, no pulls):
#   herdwatch-e2e/pause:dev     the pods' sandbox process (pause/pause.c, static)
#   herdwatch-e2e/workload:dev  busybox-static with sh, httpd, wget, nc and friends;
#                               runs `httpd -f -p 8080 -h /www` by default
# Usage: images.sh build     write the archives under $HERDWATCH_CACHE/images
#        images.sh import    build what is missing and import into the cluster's containerd
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib/common.sh
source "$HERE/../cluster/lib/common.sh"

OUT="$HERDWATCH_CACHE/images"
PAUSE_TAR="$OUT/pause.oci.tar"
WORKLOAD_TAR="$OUT/workload.oci.tar"
# Applets of the workload image (symlinks to the one static busybox).
APPLETS=(sh ash httpd wget ssl_client nc cat echo ls sleep ps id env hostname mkdir rm
  kill true false printf grep sed head tail wc date uname whoami touch chmod test '[' timeout)

# Rebuilds an archive only when one of its inputs is newer than it.
_stale() {
  local out=$1 f
  shift
  [[ -f $out && -f $out.digest ]] || return 0
  for f in "$@" "$HERE/build-image.sh"; do
    [[ $f -nt $out ]] && return 0
  done
  return 1
}

build_pause() {
  _stale "$PAUSE_TAR" "$HERE/pause/pause.c" || return 0
  ensure_debs gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin"
  gcc -static -Os -s -o "$root/bin/pause" "$HERE/pause/pause.c"
  "$HERE/build-image.sh" --no-import --output "$PAUSE_TAR" --user 65535:65535 \
    "$PAUSE_IMAGE" "$root" /bin/pause >/dev/null
  rm -rf "$root"
}

build_workload() {
  _stale "$WORKLOAD_TAR" /bin/busybox "$HERE/images.sh" || return 0
  ensure_debs /bin/busybox:busybox-static
  local ldd_out
  ldd_out=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
  grep -q 'not a dynamic executable' <<<"$ldd_out" \
    || die "/bin/busybox is not the static one: apt-get install -y busybox-static"
  local root a
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in "${APPLETS[@]}"; do ln -s busybox "$root/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf 'herdwatch e2e workload\n' >"$root/www/index.html"
  "$HERE/build-image.sh" --no-import --output "$WORKLOAD_TAR" \
    --cmd /bin/httpd --cmd -f --cmd -p --cmd 8080 --cmd -h --cmd /www \
    "$WORKLOAD_IMAGE" "$root" >/dev/null
  rm -rf "$root"
}

case "${1:-import}" in
  build) build_pause; build_workload ;;
  import)
    build_pause; build_workload
    "$HERE/import-image.sh" "$PAUSE_TAR" "$WORKLOAD_TAR" ;;
  *) echo "usage: $0 {build|import}" >&2; exit 2 ;;
esac
