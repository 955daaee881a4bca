#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds a single-layer OCI image from a local directory, without a registry or an image
# builder daemon, and imports it into the e2e cluster's containerd.
#
# Usage: build-image.sh [options] <name:tag> <rootfs-dir> [entrypoint...]
#   --cmd ARG          add ARG to the image's Cmd (repeatable)
#   --env KEY=VALUE    add an environment variable (repeatable; PATH is set by default)
#   --workdir DIR      working directory (default /)
#   --user UID[:GID]   user to run as (default: the image's root)
#   --label KEY=VALUE  add an image label (repeatable)
#   --keep-owners      keep the rootfs files' owners (default: everything owned by root)
#   --output FILE      where to write the image archive
#                      (default $HERDWATCH_CACHE/images/<name>_<tag>.oci.tar)
#   --no-import        only write the archive
#
# Names without a registry are stored as docker.io/<name> (that is how the kubelet asks
# for them), so a pod uses `image: <name:tag>` with imagePullPolicy Never or IfNotPresent.
# The archive is reproducible: same files, same digest. The image digest is printed last.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib/common.sh
source "$HERE/../cluster/lib/common.sh"

usage() { sed -n '3,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd_args=() envs=() labels=() workdir=/ user="" output="" do_import=1 owners=(--owner=0 --group=0)
while (($#)); do
  case $1 in
    --cmd) cmd_args+=("$2"); shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    --output) output=$2; shift 2 ;;
    --keep-owners) owners=(); shift ;;
    --no-import) do_import=0; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
(($# >= 2)) || usage
name=$1 rootfs=$2
shift 2
entrypoint=("$@")
[[ -d $rootfs ]] || die "rootfs $rootfs is not a directory"
command -v jq >/dev/null 2>&1 || ensure_debs jq:jq

# Full reference: [registry/]path:tag; no registry means docker.io, no path means library/.
ref=$name
[[ ${ref##*/} == *:* ]] || ref="$ref:latest"
first=${ref%%/*}
if [[ $ref != */* ]]; then ref="docker.io/library/$ref"
elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then ref="docker.io/$ref"; fi
tag=${ref##*:}

if [[ -z $output ]]; then
  base=${name//\//_}; base=${base//:/_}
  output="$HERDWATCH_CACHE/images/$base.oci.tar"
fi
mkdir -p "$(dirname "$output")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"

# Writes stdin as a blob; prints "<digest> <size>".
put_blob() {
  local tmp="$work/blob.tmp" d
  cat >"$tmp"
  d=$(sha256sum "$tmp" | cut -d' ' -f1)
  mv -f "$tmp" "$blobs/$d"
  echo "$d $(stat -c %s "$blobs/$d")"
}

# The layer: every file of the rootfs, owned by root (unless --keep-owners), sorted, with
# fixed times.
(cd "$rootfs" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/files"
tar -C "$rootfs" --no-recursion --numeric-owner "${owners[@]}" --mtime=@0 \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$work/layer.tar" -T "$work/files"
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
read -r layer_digest layer_size < <(gzip -n -6 <"$work/layer.tar" | put_blob)

# JSON array of the arguments ("null" for none); one --arg each, so "-p" stays a value.
json_array() {
  (($#)) || { echo null; return; }
  local a out='[]'
  for a in "$@"; do out=$(jq -c --arg v "$a" '. + [$v]' <<<"$out"); done
  echo "$out"
}
label_obj='{}'
for l in ${labels[@]+"${labels[@]}"}; do
  label_obj=$(jq -c --arg k "${l%%=*}" --arg v "${l#*=}" '. + {($k): $v}' <<<"$label_obj")
done
config=$(jq -cn \
  --argjson entrypoint "$(json_array ${entrypoint[@]+"${entrypoint[@]}"})" \
  --argjson cmd "$(json_array ${cmd_args[@]+"${cmd_args[@]}"})" \
  --argjson env "$(json_array "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ${envs[@]+"${envs[@]}"})" \
  --argjson labels "$label_obj" \
  --arg workdir "$workdir" --arg user "$user" --arg diff "sha256:$diff_id" '{
    created: "1970-01-01T00:00:00Z",
    architecture: "amd64", os: "linux",
    config: ({Env: $env, WorkingDir: $workdir, Labels: $labels}
             + (if $entrypoint then {Entrypoint: $entrypoint} else {} end)
             + (if $cmd then {Cmd: $cmd} else {} end)
             + (if $user != "" then {User: $user} else {} end)),
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "herdwatch e2e/images/build-image.sh"}]
  }')
read -r config_digest config_size < <(printf '%s' "$config" | put_blob)
manifest=$(jq -cn --arg cd "sha256:$config_digest" --argjson cs "$config_size" \
  --arg ld "sha256:$layer_digest" --argjson ls "$layer_size" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]
  }')
read -r manifest_digest manifest_size < <(printf '%s' "$manifest" | put_blob)
jq -cn --arg md "sha256:$manifest_digest" --argjson ms "$manifest_size" --arg ref "$ref" --arg tag "$tag" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
                 platform: {architecture: "amd64", os: "linux"},
                 annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $tag}}]
  }' >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
(cd "$work/layout" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/layout-files"
tar -C "$work/layout" --no-recursion --numeric-owner --owner=0 --group=0 --mtime=@0 \
  -cf "$output.tmp" -T "$work/layout-files"
mv -f "$output.tmp" "$output"
echo "sha256:$manifest_digest" >"$output.digest"
log "image $ref: $output (sha256:$manifest_digest, layer $((layer_size / 1024)) KiB)"

if ((do_import)); then
  "$HERE/import-image.sh" "$output"
fi
echo "sha256:$manifest_digest"
