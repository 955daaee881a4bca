#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Imports OCI image archives (as written by build-image.sh) into the e2e cluster's
# containerd, in the namespace the kubelet uses. An image already there with the same
# digest is left alone. Usage: import-image.sh <archive.oci.tar>...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib/common.sh
source "$HERE/../cluster/lib/common.sh"

(($# >= 1)) || { echo "usage: $0 <archive.oci.tar>..." >&2; exit 2; }
ctr_bin="$BIN_DIR/ctr"
[[ -x $ctr_bin ]] || ctr_bin=$(command -v ctr) || die "ctr not found (run cluster.sh up first)"
[[ -S $CONTAINERD_SOCK ]] || die "the cluster's containerd is not running ($CONTAINERD_SOCK); run e2e/cluster/cluster.sh up"
ctr_() { "$ctr_bin" --address "$CONTAINERD_SOCK" -n "$CONTAINERD_NS" "$@"; }

for archive in "$@"; do
  [[ -f $archive ]] || die "no such archive: $archive"
  index=$(tar -xOf "$archive" index.json)
  ref=$(jq -r '.manifests[0].annotations["io.containerd.image.name"]' <<<"$index")
  digest=$(jq -r '.manifests[0].digest' <<<"$index")
  if ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }' | grep -qxF "$digest"; then
    log "image $ref already imported ($digest)"
    continue
  fi
  ctr_ images import "$archive" >/dev/null \
    || die "ctr images import $archive failed"
  log "imported $ref ($digest)"
done
