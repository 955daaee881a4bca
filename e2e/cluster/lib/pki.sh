# shellcheck shell=bash
# Certificates and kubeconfigs of the cluster (openssl, one CA for everything).
# Everything is generated once and reused; `down --purge` removes it.

# Writes $2 to file $1 only when the content differs (keeps `up` idempotent).
write_if_changed() {
  local file=$1 content=$2
  if [[ -f $file ]] && [[ "$(cat "$file")" == "$content" ]]; then return 0; fi
  mkdir -p "$(dirname "$file")"
  printf '%s\n' "$content" >"$file.tmp.$$"
  mv -f "$file.tmp.$$" "$file"
}

_pki_ca() {
  [[ -f $PKI_DIR/ca.crt && -f $PKI_DIR/ca.key ]] && return 0
  log "pki: creating the cluster CA"
  openssl genrsa -out "$PKI_DIR/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/ca.key" -sha256 -days 3650 \
    -subj "/CN=herdwatch-e2e-ca" -out "$PKI_DIR/ca.crt" 2>/dev/null
}

# _pki_cert <file-stem> <CN> <O or ""> <extendedKeyUsage> [subjectAltName]
_pki_cert() {
  local stem=$1 cn=$2 org=$3 eku=$4 san=${5:-} subj ext
  [[ -f $PKI_DIR/$stem.crt && -f $PKI_DIR/$stem.key ]] && return 0
  subj="/CN=$cn"
  [[ -n $org ]] && subj="/O=$org$subj"
  ext="$PKI_DIR/$stem.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n $san ]] && echo "subjectAltName=$san"
  } >"$ext"
  openssl genrsa -out "$PKI_DIR/$stem.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/$stem.key" -subj "$subj" -out "$PKI_DIR/$stem.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$stem.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 3650 -extfile "$ext" \
    -out "$PKI_DIR/$stem.crt" 2>/dev/null
  rm -f "$PKI_DIR/$stem.csr" "$ext"
}

# _kubeconfig <file> <server> <cert-stem> <user-name>
_kubeconfig() {
  local file=$1 server=$2 stem=$3 user=$4
  write_if_changed "$file" "apiVersion: v1
kind: Config
clusters:
- name: herdwatch-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$stem.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$stem.key")
contexts:
- name: herdwatch-e2e
  context:
    cluster: herdwatch-e2e
    user: $user
current-context: herdwatch-e2e"
}

ensure_pki() {
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  _pki_ca
  local sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sans+=",DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:$NODE_NAME"
  sans+=",IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP"
  _pki_cert apiserver kube-apiserver "" serverAuth "$sans"
  _pki_cert etcd-server etcd "" serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
  _pki_cert apiserver-etcd-client kube-apiserver-etcd-client "" clientAuth
  _pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
  _pki_cert admin herdwatch-e2e-admin system:masters clientAuth
  _pki_cert controller-manager system:kube-controller-manager "" clientAuth
  _pki_cert scheduler system:kube-scheduler "" clientAuth
  _pki_cert kube-proxy system:kube-proxy "" clientAuth
  _pki_cert kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
  _pki_cert kubelet-serving "system:node:$NODE_NAME" system:nodes serverAuth \
    "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
  if [[ ! -f $PKI_DIR/sa.key ]]; then
    openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI_DIR"/*.key

  local local_server="https://127.0.0.1:$APISERVER_PORT"
  _kubeconfig "$ADMIN_KUBECONFIG" "$local_server" admin herdwatch-e2e-admin
  _kubeconfig "$CONF_DIR/controller-manager.kubeconfig" "$local_server" controller-manager system:kube-controller-manager
  _kubeconfig "$CONF_DIR/scheduler.kubeconfig" "$local_server" scheduler system:kube-scheduler
  _kubeconfig "$CONF_DIR/kube-proxy.kubeconfig" "$local_server" kube-proxy system:kube-proxy
  _kubeconfig "$CONF_DIR/kubelet.kubeconfig" "$local_server" kubelet-client "system:node:$NODE_NAME"
  chmod 600 "$ADMIN_KUBECONFIG" "$CONF_DIR"/*.kubeconfig
}
