# shellcheck shell=bash
# Builds the pinned upstream components through the Go module proxy and caches them in
# $HERDWATCH_CACHE/bin/<name>-<version>. A cached binary is never rebuilt.
# Sourced by cluster.sh after lib/common.sh.

KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

_go_env() {
  command -v go >/dev/null 2>&1 || die "Go is missing (expected /usr/local/go/bin/go, Go >= 1.25)"
  export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
}

# Writes a wrapper module in $CACHE_SRC/<dir> with the given go.mod text; echoes its path.
_wrapper_module() {
  local dir="$CACHE_SRC/$1" gomod=$2
  mkdir -p "$dir"
  if [[ ! -f $dir/go.mod ]] || [[ "$(cat "$dir/go.mod.in" 2>/dev/null)" != "$gomod" ]]; then
    printf '%s\n' "$gomod" >"$dir/go.mod"
    printf '%s\n' "$gomod" >"$dir/go.mod.in"
    rm -f "$dir/go.sum"
    # An empty package so that the module is a valid build root.
    printf 'package wrapper\n' >"$dir/wrapper.go"
  fi
  echo "$dir"
}

# Builds one binary: _go_build <dir> <out> <package> <cgo 0|1> <ldflags> [tags]
_go_build() {
  local dir=$1 out=$2 pkg=$3 cgo=$4 ldflags=$5 tags=${6:-} start tmp
  start=$(date +%s)
  tmp="$out.tmp.$$"
  log "building $(basename "$out") ($pkg) ..."
  if ! (cd "$dir" && CGO_ENABLED=$cgo go build -trimpath ${tags:+-tags="$tags"} \
          -ldflags="-s -w $ldflags" -o "$tmp" "$pkg") >"$dir/build.log" 2>&1; then
    rm -f "$tmp"
    tail -n 30 "$dir/build.log" >&2
    die "build of $(basename "$out") failed; full log: $dir/build.log"
  fi
  mv -f "$tmp" "$out"
  log "built $(basename "$out") in $(($(date +%s) - start))s"
}

build_kubernetes() {
  local names=("$@") name out missing=() minor commit info gomod dir staging ldflags v0
  for name in "${names[@]}"; do
    [[ -x $(cached_bin "$name") ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) && return 0
  _go_env
  log "preparing k8s.io/kubernetes $KUBE_VERSION (module download)"
  info=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") \
    || die "go mod download k8s.io/kubernetes@$KUBE_VERSION failed (is the Go module proxy reachable?)"
  commit=$(sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p' <<<"$info" | head -n1)
  gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")
  # Every staging module that k8s.io/kubernetes replaces with a local path is published as
  # k8s.io/<name> v0.<minor>.<patch>.
  v0="v0.${KUBE_VERSION#v1.}"
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod")
  [[ -n $staging ]] || die "found no staging modules in $gomod"
  dir=$(_wrapper_module "kubernetes-$KUBE_VERSION" "$(
    printf 'module herdwatch.dev/e2e/kubernetes-build\n\ngo 1.25.0\n\ngodebug default=go1.25\n\n'
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$v0"; done <<<"$staging"
    printf ')\n')")
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  ldflags=""
  local key val pkgv
  for key in gitVersion gitMajor gitMinor gitCommit gitTreeState buildDate; do
    case $key in
      gitVersion) val=$KUBE_VERSION ;;
      gitMajor) val=1 ;;
      gitMinor) val=$minor ;;
      gitCommit) val=$commit ;;
      gitTreeState) val=clean ;;
      buildDate) val=$(date -u +%Y-%m-%dT%H:%M:%SZ) ;;
    esac
    for pkgv in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X $pkgv.$key=$val"
    done
  done
  for name in "${missing[@]}"; do
    out=$(cached_bin "$name")
    # All static, the kubelet too (upstream links it with cgo, which it does not need on
    # Linux): with the same build settings for every binary, the kubelet reuses what the
    # other components compiled and builds in ~50 s instead of ~390 s.
    _go_build "$dir" "$out" "k8s.io/kubernetes/cmd/$name" 0 "$ldflags" "selinux,notest,grpcnotrace"
  done
}

build_etcd() {
  local out dir
  out=$(cached_bin etcd)
  [[ -x $out ]] && return 0
  _go_env
  dir=$(_wrapper_module "etcd-$ETCD_VERSION" "$(
    printf 'module herdwatch.dev/e2e/etcd-build\n\ngo 1.26.0\n\nrequire (\n'
    for m in go.etcd.io/etcd/server/v3 go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 \
             go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3; do
      printf '\t%s %s\n' "$m" "$ETCD_VERSION"
    done
    printf ')\n')")
  local commit
  commit=$(cd /tmp && go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" |
    sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -n1) || true
  _go_build "$dir" "$out" go.etcd.io/etcd/server/v3 0 \
    "${commit:+-X go.etcd.io/etcd/api/v3/version.GitSHA=${commit:0:12}}"
}

build_helm() {
  local out dir
  out=$(cached_bin helm)
  [[ -x $out ]] && return 0
  _go_env
  dir=$(_wrapper_module "helm-$HELM_VERSION" "$(
    printf 'module herdwatch.dev/e2e/helm-build\n\ngo 1.25.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION")")
  _go_build "$dir" "$out" helm.sh/helm/v3/cmd/helm 0 \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

build_crictl() {
  local out dir
  out=$(cached_bin crictl)
  [[ -x $out ]] && return 0
  _go_env
  dir=$(_wrapper_module "cri-tools-$CRICTL_VERSION" "$(
    printf 'module herdwatch.dev/e2e/cri-tools-build\n\ngo 1.25.0\n\nrequire sigs.k8s.io/cri-tools %s\n' "$CRICTL_VERSION")")
  _go_build "$dir" "$out" sigs.k8s.io/cri-tools/cmd/crictl 0 \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
}

# containerd v2 from source: only used when the kubelet refuses the distribution's
# containerd (HERDWATCH_CONTAINERD=source).
build_containerd() {
  local dir name
  for name in containerd containerd-shim-runc-v2 ctr; do
    [[ -x $(cached_bin "$name") ]] || break
    [[ $name == ctr ]] && return 0
  done
  _go_env
  dir=$(_wrapper_module "containerd-$CONTAINERD_VERSION" "$(
    printf 'module herdwatch.dev/e2e/containerd-build\n\ngo 1.25.0\n\nrequire github.com/containerd/containerd/v2 %s\n' "$CONTAINERD_VERSION")")
  local ld="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for name in containerd containerd-shim-runc-v2 ctr; do
    [[ -x $(cached_bin "$name") ]] && continue
    _go_build "$dir" "$(cached_bin "$name")" "github.com/containerd/containerd/v2/cmd/$name" 0 "$ld" \
      "no_btrfs,no_devmapper,no_zfs"
  done
}

cmd_build() {
  local start
  start=$(date +%s)
  mkdir -p "$CACHE_BIN" "$CACHE_SRC"
  log "build: cache $CACHE_BIN (kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION)"
  # One component after another: the machines have 2 cores.
  build_etcd
  build_kubernetes "${KUBE_COMPONENTS[@]}"
  build_helm
  build_crictl
  if [[ ${HERDWATCH_CONTAINERD:-debian} == source ]]; then build_containerd; fi
  log "build: all components present ($(($(date +%s) - start))s)"
}
