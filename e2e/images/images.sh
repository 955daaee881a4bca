#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The e2e cluster's own images, built from local files (no registry, no pulls):
#   herdwatch-e2e/pause:dev     the pods' sandbox process (pause/pause.c, static)
#   herdwatch-e2e/workload:dev  busybox-static with sh, httpd, wget, nc and friends;
#                               runs `httpd -f -p 8080 -h /www` by default
#   herdwatch-e2e/shop:dev      the attack suite's web shop: busybox httpd with two CGI
#                               scripts, one with a command injection (shop/), running as
#                               uid 1000, and a few things worth stealing
#   herdwatch-e2e/shop:v2       the same files under another digest
# Usage: images.sh build     write the archives under $HERDWATCH_CACHE/images
#        images.sh import    build what is missing and import into the cluster's containerd
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib/common.sh
source "$HERE/../cluster/lib/common.sh"

OUT="$HERDWATCH_CACHE/images"
PAUSE_TAR="$OUT/pause.oci.tar"
WORKLOAD_TAR="$OUT/workload.oci.tar"
SHOP_TAR="$OUT/shop.oci.tar"
SHOP_V2_TAR="$OUT/shop-v2.oci.tar"
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

# Applets of the shop image: what its scripts use, and what an intruder would reach for.
SHOP_APPLETS=(sh ash httpd grep cat date hostname echo wget nc cp ln rm mkdir chmod mount
  unshare nsenter awk crontab id ping ls sleep touch find truncate env printf timeout true)

build_shop() {
  _stale "$SHOP_TAR" /bin/busybox "$HERE/images.sh" "$HERE"/shop/* || return 0
  ensure_debs /bin/busybox:busybox-static gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev
  local root a image
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,tmp,root,etc/crontabs,etc/ssl/private,usr/local/bin,var/log/shop} \
    "$root"/www/{cgi-bin,data} "$root/home/app/.aws"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  cp /bin/busybox "$root/bin/busybox"
  for a in "${SHOP_APPLETS[@]}"; do ln -s busybox "$root/bin/$a"; done
  install -m 0755 "$HERE/shop/lookup" "$HERE/shop/status" "$root/www/cgi-bin/"
  printf 'shop\n' >"$root/www/index.html"
  printf 'apple 12\npear 7\nplum 0\n' >"$root/www/data/stock.txt"
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:shop:/home/app:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$root/etc/group"
  # A literal crypt(3) hash: the dollars are not expansions.
  # shellcheck disable=SC2016
  printf 'root:$6$shop$0000000000000000000000:19000:0:99999:7:::\napp:!:19000::::::\n' >"$root/etc/shadow"
  chmod 0640 "$root/etc/shadow"
  printf 'export PATH=/bin\n' >"$root/etc/profile"
  printf -- '-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n' >"$root/etc/ssl/private/shop.key"
  chmod 0600 "$root/etc/ssl/private/shop.key"
  printf '[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = example\n' >"$root/home/app/.aws/credentials"
  printf 'ls\n' >"$root/home/app/.ash_history"
  chown -R 1000:1000 "$root/home/app" "$root/var/log/shop"
  gcc -static -Os -s -o "$root/usr/local/bin/attack" "$HERE/shop/attack.c"
  # A set-user-ID root program, as images that ship su or sudo have.
  install -m 4755 "$root/usr/local/bin/attack" "$root/usr/local/bin/shop-admin"
  # Two digests of the same files: the label is all that differs.
  for image in "$SHOP_IMAGE=$SHOP_TAR" "$SHOP_IMAGE_V2=$SHOP_V2_TAR"; do
    "$HERE/build-image.sh" --no-import --keep-owners --user 1000:1000 \
      --label "shop.version=${image%%=*}" --output "${image#*=}" \
      --cmd /bin/httpd --cmd -f --cmd -p --cmd 8080 --cmd -h --cmd /www \
      "${image%%=*}" "$root" >/dev/null
  done
  rm -rf "$root"
}

case "${1:-import}" in
  build) build_pause; build_workload; build_shop ;;
  import)
    build_pause; build_workload; build_shop
    "$HERE/import-image.sh" "$PAUSE_TAR" "$WORKLOAD_TAR" "$SHOP_TAR" "$SHOP_V2_TAR" ;;
  *) echo "usage: $0 {build|import}" >&2; exit 2 ;;
esac
