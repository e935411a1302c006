#!/usr/bin/env bash
# Owns: the one-node cluster in the node VM (stretch goal of "a real node"): makes a throw-away PKI on
# the host (openssl), then boots tests/node/run.sh with guest-cluster.sh as the command, which starts
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (tests/tools/bin) and the kubelet
# (tests/tools/kubelet.sh) on containerd, all on the guest's loopback, waits for node Ready, runs one
# pod from the local busybox image and prints how long each step took (guest uptime, TCG).
#   usage: tests/node/cluster.sh [run.sh options] [-- COMMAND...]   e.g. --mem 4G --keep /tmp/node-res
# With COMMAND, guest-cluster.sh runs it (in the guest, from the repository under /host) once the node
# is Ready, instead of the one busybox pod; e2e.sh runs the real-node suite this way.
set -euo pipefail
opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
[ "${1:-}" != -- ] || shift
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
command -v openssl >/dev/null || { echo "node/cluster: missing openssl" >&2; exit 1; }
"$repo/tests/tools/build.sh" >&2
bin=$(readlink -f "$repo/tests/tools/bin")
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$bin/$b" ] || { echo "node/cluster: $bin/$b missing (tests/tools/build.sh)" >&2; exit 1; }
done
kubelet=$("$repo/tests/tools/kubelet.sh")

pki=$(mktemp -d "${TMPDIR:-/tmp}/kube-dmem-node-pki.XXXXXX")
trap 'rm -rf "$pki"' EXIT
cd "$pki"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kube-dmem-node-ca
# cert NAME SUBJECT [SAN]
cert() {
  ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
  # X.509 v3 with the usual extensions for every certificate: rustls (kube-rs, kubectl-dmem) refuses
  # v1 certificates, which openssl makes when the extension file is empty.
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$1.ext"
  if [ -n "${3:-}" ]; then printf 'subjectAltName=%s\n' "$3" >>"$1.ext"; fi
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$1.crt" -extfile "$1.ext"
}
cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:10.99.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc"
cert admin "/O=system:masters/CN=kubernetes-admin"
cert kubelet "/O=system:nodes/CN=system:node:node0"
cert controller-manager /CN=system:kube-controller-manager
cert scheduler /CN=system:kube-scheduler
ossl genrsa -out sa.key 2048
ossl rsa -in sa.key -pubout -out sa.pub
for u in admin kubelet controller-manager scheduler; do
  cat >"$u.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "https://127.0.0.1:6443", certificate-authority: PKI/ca.crt}}]
users: [{name: $u, user: {client-certificate: PKI/$u.crt, client-key: PKI/$u.key}}]
contexts: [{name: node, context: {cluster: node, user: $u}}]
current-context: node
YAML
done
chmod 644 ./*
cd "$repo"
NODE_PKI=$pki NODE_BIN=$bin NODE_KUBELET=$kubelet "$here/run.sh" "${opts[@]}" -- \
  bash tests/node/guest-cluster.sh "$pki" "$bin" "$kubelet" "$@"
