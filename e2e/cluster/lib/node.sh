# shellcheck shell=bash
# Host side of the node: the bridge that carries the node address, the sysctls pods need,
# and the cgroup subtree of the pods. Everything created here is removed by `down`;
# nothing that exists on the machine already is moved or changed, except two sysctls whose
# old values are restored by `down`.

CGROUP_NAME="herdwatch"   # = kubelet cgroupRoot /herdwatch

# Mount points of the machine's cgroup hierarchies (v1 controllers and the cgroup2 one).
_cgroup_mounts() {
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

ensure_node_network() {
  if ! ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    log "node: creating bridge $CNI_BRIDGE with $NODE_IP/${POD_CIDR#*/}"
    ip link add "$CNI_BRIDGE" type bridge
  fi
  if ! ip -4 addr show dev "$CNI_BRIDGE" | grep -q "inet $NODE_IP/"; then
    ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$CNI_BRIDGE"
  fi
  ip link set "$CNI_BRIDGE" up

  # Pod -> Service -> pod on the same bridge needs bridged traffic to pass iptables, and
  # Service traffic is routed, so forwarding must be on. Old values are kept for `down`.
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
  [[ -d /proc/sys/net/bridge ]] || die "br_netfilter is not available (modprobe br_netfilter failed)"
  local key file orig="$RUN_DIR/sysctl.orig"
  for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    file=/proc/sys/${key//.//}
    if [[ $(cat "$file") != 1 ]]; then
      grep -q "^$key=" "$orig" 2>/dev/null || echo "$key=$(cat "$file")" >>"$orig"
      echo 1 >"$file"
    fi
  done
}

restore_node_network() {
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    ip link set "$CNI_BRIDGE" down || true
    ip link delete "$CNI_BRIDGE" type bridge || true
    log "node: removed bridge $CNI_BRIDGE"
  fi
  local line key val orig="$RUN_DIR/sysctl.orig"
  if [[ -f $orig ]]; then
    while IFS= read -r line; do
      key=${line%%=*}; val=${line#*=}
      echo "$val" >"/proc/sys/${key//.//}" 2>/dev/null || true
    done <"$orig"
    rm -f "$orig"
  fi
}

ensure_cgroups() {
  local mnt dir
  while read -r mnt; do
    dir="$mnt/$CGROUP_NAME"
    [[ -d $dir ]] && continue
    mkdir "$dir"
    # A new cpuset cgroup starts with no CPUs and no memory nodes: copy the parent's.
    if [[ -f $dir/cpuset.cpus ]]; then
      cat "$mnt/cpuset.cpus" >"$dir/cpuset.cpus"
      cat "$mnt/cpuset.mems" >"$dir/cpuset.mems"
    fi
  done < <(_cgroup_mounts)
}

# Pids of every process inside the cluster's cgroup subtree (its pods' containers).
cgroup_pids() {
  local mnt
  while read -r mnt; do
    [[ -d $mnt/$CGROUP_NAME ]] || continue
    find "$mnt/$CGROUP_NAME" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(_cgroup_mounts) | sort -un
}

# Kills what is left in the pods' cgroups and removes the subtree (deepest first).
remove_cgroups() {
  local pids mnt tries=0
  pids=$(cgroup_pids)
  while [[ -n $pids ]] && ((tries < 20)); do
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.5
    pids=$(cgroup_pids); tries=$((tries + 1))
  done
  [[ -z $pids ]] || log "node: processes still in the pods' cgroups: $pids"
  while read -r mnt; do
    [[ -d $mnt/$CGROUP_NAME ]] || continue
    find "$mnt/$CGROUP_NAME" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $mnt/$CGROUP_NAME ]] && log "node: could not remove $mnt/$CGROUP_NAME"
  done < <(_cgroup_mounts)
  return 0
}

# Unmounts everything mounted below the cluster directory (pod volumes of the kubelet,
# container root filesystems and network namespaces of containerd), deepest first.
# Optional argument: a directory below it, to unmount only there.
unmount_cluster_dir() {
  local mnts m tries=0 top=${1:-$CLUSTER_DIR}
  while :; do
    mnts=$(awk -v d="$top/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
    [[ -z $mnts ]] && return 0
    ((tries++ < 5)) || { log "node: still mounted: $(tr '\n' ' ' <<<"$mnts")"; return 0; }
    while IFS= read -r m; do
      m=$(printf '%b' "$m")   # /proc/self/mounts escapes spaces as \040
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done <<<"$mnts"
  done
}

# Removes the iptables chains a kubelet makes when makeIPTablesUtilChains is on (it is off
# in this cluster's configuration; this cleans up after configurations that had it on).
remove_kubelet_iptables() {
  local ipt table chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    while "$ipt" -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$ipt" -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || continue
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}
