# shellcheck shell=bash
# Configuration files of containerd, CNI, kubelet and kube-proxy. Written on every `up`,
# but only touched when their content changes.

write_configs() {
  mkdir -p "$CONF_DIR" "$CNI_CONF_DIR" "$CLUSTER_DIR/cni/ipam" "$CLUSTER_DIR/pod-logs"

  # Pods get no DNS server of the cluster (there is no cluster DNS add-on): their
  # resolv.conf names the pod's own loopback, so name lookups fail at once instead of
  # leaving the machine. Services are reached by their ClusterIP.
  write_if_changed "$CONF_DIR/resolv.conf" "# herdwatch e2e cluster: no cluster DNS; use Service ClusterIPs
nameserver 127.0.0.1
options ndots:1 timeout:1 attempts:1"

  # A private containerd: its own root, state, socket, CNI configuration and sandbox image.
  write_if_changed "$CONF_DIR/containerd.toml" "version = 2
root = \"$CONTAINERD_ROOT\"
state = \"$CONTAINERD_STATE\"
oom_score = 0
disabled_plugins = [
  \"io.containerd.snapshotter.v1.btrfs\",
  \"io.containerd.snapshotter.v1.zfs\",
  \"io.containerd.snapshotter.v1.devmapper\",
  \"io.containerd.snapshotter.v1.aufs\",
  \"io.containerd.tracing.processor.v1.otlp\",
]

[grpc]
  address = \"$CONTAINERD_SOCK\"

[plugins]
  [plugins.\"io.containerd.internal.v1.opt\"]
    path = \"$CLUSTER_DIR/containerd/opt\"
  [plugins.\"io.containerd.grpc.v1.cri\"]
    sandbox_image = \"docker.io/$PAUSE_IMAGE\"
    netns_mounts_under_state_dir = true
    disable_tcp_service = true
    stream_server_address = \"127.0.0.1\"
    enable_selinux = false
    # The machines' root lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj:
    # containers get no score below containerd's own (0) instead of failing to start.
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins.\"io.containerd.grpc.v1.cri\".cni]
      bin_dir = \"$CNI_BIN_DIR\"
      conf_dir = \"$CNI_CONF_DIR\"
      max_conf_num = 1
    [plugins.\"io.containerd.grpc.v1.cri\".containerd]
      snapshotter = \"overlayfs\"
      default_runtime_name = \"runc\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
        runtime_type = \"io.containerd.runc.v2\"
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
          BinaryName = \"${HERDWATCH_RUNC:-$(command -v runc || echo /usr/sbin/runc)}\"
          SystemdCgroup = false
          Root = \"$CONTAINERD_STATE/runc\""

  # bridge + host-local + loopback + portmap. No masquerading: there is nowhere outside to
  # go, so the plugins add no iptables rules of their own (portmap only for hostPort pods).
  write_if_changed "$CNI_CONF_DIR/10-herdwatch.conflist" "{
  \"cniVersion\": \"1.0.0\",
  \"name\": \"herdwatch\",
  \"plugins\": [
    {
      \"type\": \"bridge\",
      \"bridge\": \"$CNI_BRIDGE\",
      \"isGateway\": true,
      \"ipMasq\": false,
      \"hairpinMode\": true,
      \"ipam\": {
        \"type\": \"host-local\",
        \"dataDir\": \"$CLUSTER_DIR/cni/ipam\",
        \"ranges\": [[{\"subnet\": \"$POD_CIDR\", \"gateway\": \"$NODE_IP\"}]],
        \"routes\": [{\"dst\": \"0.0.0.0/0\"}]
      }
    },
    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}},
    {\"type\": \"loopback\"}
  ]
}"

  write_if_changed "$CONF_DIR/crictl.yaml" "runtime-endpoint: unix://$CONTAINERD_SOCK
image-endpoint: unix://$CONTAINERD_SOCK
timeout: 30"

  # The kubelet. Notes:
  # - failCgroupV1: false: the machines are cgroup-hybrid (v1 controllers + cgroup2).
  # - cgroupRoot /herdwatch: the pods live in their own subtree of each hierarchy, created by
  #   `up` and removed by `down`; the kubelet does not move itself or the machine's processes.
  # - image GC off (threshold 100): images are imported by hand and cannot be pulled again.
  # - eviction thresholds low: a busy test machine must not evict the test pods.
  write_if_changed "$CONF_DIR/kubelet.yaml" "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /herdwatch
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: 0.0.0.0
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
failSwapOn: false
resolvConf: $CONF_DIR/resolv.conf
clusterDomain: $CLUSTER_DOMAIN
podLogsDir: $CLUSTER_DIR/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
staticPodPath: \"\"
protectKernelDefaults: false
makeIPTablesUtilChains: false
localStorageCapacityIsolation: true"

  # kube-proxy in iptables mode: routes Service ClusterIPs (among them the API server's
  # 10.96.0.1) to their endpoints. conntrack sizes and timeouts are left as the machine has them.
  write_if_changed "$CONF_DIR/kube-proxy.yaml" "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $CONF_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses:
- $NODE_IP/32
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  masqueradeAll: false
  syncPeriod: 10s
  minSyncPeriod: 1s"
}
