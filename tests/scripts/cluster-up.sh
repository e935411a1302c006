#!/usr/bin/env bash
# Bring up a local Kubernetes control plane for integration/e2e tests, from local binaries only:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok-controller, via
# `kwokctl --runtime binary` (RBAC + admission on), then N fake GPU nodes driven by kwok.
# Idempotent: if the cluster is already up and healthy it only re-applies the nodes.
#
#   eval "$(tests/scripts/cluster-up.sh)"   # stdout is only the export KUBECONFIG=... line
#   tests/scripts/cluster-down.sh
#
# Env (all optional):
#   KUBE_DMEM_E2E_DIR        state dir (default /tmp/kube-dmem-e2e); kubeconfig at $KUBE_DMEM_E2E_DIR/kubeconfig
#   KUBE_DMEM_CLUSTER_NAME   kwokctl cluster name (default kube-dmem)
#   KUBE_DMEM_FAKE_NODES     number of fake nodes gpu-node-0..N-1 (default 2)
#   KUBE_DMEM_FAKE_VRAM      kube-dmem.io/vram capacity of each fake node (default 16)
#   KUBE_DMEM_UP_TIMEOUT     seconds to wait for health / node readiness (default 180)
#   KUBE_DMEM_SKIP_BUILD=1   do not run tests/tools/build.sh (expects tests/tools/bin to exist)
# kubectl: tests/tools/bin/kubectl (built at the cluster's version, so no skew) is put first on PATH;
# kwokctl shells out to `kubectl get --raw /healthz` and would otherwise try to download one.
# stdout carries only the `export KUBECONFIG=...` line; progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS=$ROOT/tests/scripts
BIN=$ROOT/tests/tools/bin
STATE=${KUBE_DMEM_E2E_DIR:-/tmp/kube-dmem-e2e}
NAME=${KUBE_DMEM_CLUSTER_NAME:-kube-dmem}
NODES=${KUBE_DMEM_FAKE_NODES:-2}
VRAM=${KUBE_DMEM_FAKE_VRAM:-16}
TIMEOUT=${KUBE_DMEM_UP_TIMEOUT:-180}

log() { printf '[cluster-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$SECONDS

# --- binaries
if [[ ${KUBE_DMEM_SKIP_BUILD:-0} != 1 ]]; then
  "$ROOT/tests/tools/build.sh" # seconds when the cache is warm
fi
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl; do
  [[ -x $BIN/$b ]] || die "$BIN/$b missing; run tests/tools/build.sh"
done
export PATH=$BIN:$PATH
KUBECTL=$BIN/kubectl
KUBE_V=$(awk '$1=="kubernetes"{print $2}' "$BIN/VERSIONS")
ETCD_V=$(awk '$1=="etcd"{print $2}' "$BIN/VERSIONS")
[[ -n $KUBE_V && -n $ETCD_V ]] || die "cannot read versions from $BIN/VERSIONS"

# --- kwokctl environment: every binary it could fetch is given locally (pkg/config/vars.go @v0.8.0).
mkdir -p "$STATE"
export KWOK_WORKDIR=$STATE/kwok
export KWOK_RUNTIME=binary
export KWOK_KUBE_VERSION=$KUBE_V
export KWOK_ETCD_VERSION=${ETCD_V#v}
export KWOK_KUBE_BINARY_PREFIX=$BIN KWOK_BINARY_PREFIX=$BIN
export KWOK_KUBE_APISERVER_BINARY=$BIN/kube-apiserver
export KWOK_KUBE_CONTROLLER_MANAGER_BINARY=$BIN/kube-controller-manager
export KWOK_KUBE_SCHEDULER_BINARY=$BIN/kube-scheduler
export KWOK_CONTROLLER_BINARY=$BIN/kwok
export KWOK_ETCD_BINARY=$BIN/etcd
export KWOK_KUBECTL_BINARY=$KUBECTL
# Belt and braces: if kwokctl still tried to download something, make it fail fast instead of hanging
# (only for kwokctl; loopback stays direct so kubectl reaches the apiserver).
kwokctl_offline() {
  HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1 \
    kwokctl --name "$NAME" "$@" 9>&- # the components it forks must not inherit (and hold) our lock
}

CLUSTER_DIR=$KWOK_WORKDIR/clusters/$NAME
KCFG=$STATE/kubeconfig
export KUBECONFIG=$KCFG
export KUBECACHEDIR=$STATE/kube-cache # keep kubectl discovery caches out of ~/.kube
k() { kubectl --kubeconfig "$KCFG" "$@"; }
healthy() { [[ -f $KCFG ]] && [[ $(k get --raw /readyz 2>/dev/null) == ok ]]; }

# Serialise concurrent cluster-up/down on the same state dir.
exec 9>"$STATE.lock"
flock -w 600 9 || die "timed out waiting for the lock $STATE.lock"

if [[ -f $CLUSTER_DIR/kwok.yaml ]] && ! healthy; then
  log "found an unhealthy cluster in $CLUSTER_DIR; tearing it down first"
  flock -u 9
  "$SCRIPTS/cluster-down.sh"
  exec 9>"$STATE.lock"; flock -w 600 9
  mkdir -p "$STATE"
fi

if healthy; then
  log "cluster $NAME already up ($KCFG)"
else
  log "creating cluster $NAME (kubernetes $KUBE_V, etcd $ETCD_V) in $CLUSTER_DIR"
  if ! kwokctl_offline create cluster --runtime binary \
    --kubeconfig "" \
    --kube-apiserver-binary "$BIN/kube-apiserver" \
    --kube-controller-manager-binary "$BIN/kube-controller-manager" \
    --kube-scheduler-binary "$BIN/kube-scheduler" \
    --kwok-controller-binary "$BIN/kwok" \
    --etcd-binary "$BIN/etcd" \
    --kube-authorization --kube-admission \
    --quiet-pull \
    --config "$SCRIPTS/kwokctl.yaml" \
    --wait "${TIMEOUT}s" >&2; then
    for f in "$CLUSTER_DIR"/logs/*.log; do
      [[ -f $f ]] && { log "--- tail $f"; tail -n 20 "$f" >&2; }
    done
    die "kwokctl create cluster failed"
  fi
  cp "$CLUSTER_DIR/kubeconfig.yaml" "$KCFG.tmp" && mv -f "$KCFG.tmp" "$KCFG"
  fetched=$(find "$KWOK_WORKDIR/cache" -type f 2>/dev/null | head -5 || true)
  [[ -z $fetched ]] || die "kwokctl downloaded into $KWOK_WORKDIR/cache (must stay offline): $fetched"
fi

# --- wait for the control plane itself (kwokctl's --wait only logs on timeout)
wait_for() { # wait_for <what> <command...>
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
  log "ok: $what"
}
wait_for "apiserver /readyz" healthy
# the controller-manager's ServiceAccount controller creates "default" SAs: pods can't be admitted before
wait_for "kube-controller-manager (ServiceAccount default/default)" k get serviceaccount default -n default
wait_for "kube-scheduler lease" k get lease kube-scheduler -n kube-system

# --- fake GPU nodes, driven by kwok (annotation kwok.x-k8s.io/node=fake; see kwokctl.yaml)
resources() {
  printf '    %s: "%s"\n' cpu 32 memory 256Gi pods 110 ephemeral-storage 1Ti kube-dmem.io/vram "$VRAM"
}
nodes_yaml() {
  local i n
  for ((i = 0; i < NODES; i++)); do
    n=gpu-node-$i
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
    type: kwok
    kube-dmem.io/fake-node: "true"
spec:
  providerID: kwok://$n
status:
  capacity:
$(resources)
  allocatable:
$(resources)
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $KUBE_V
    kubeProxyVersion: $KUBE_V
EOF
  done
}
log "applying $NODES fake GPU node(s) (kube-dmem.io/vram=$VRAM each)"
nodes_yaml | k apply -f - >&2
names=()
for ((i = 0; i < NODES; i++)); do names+=("node/gpu-node-$i"); done
if ((NODES > 0)); then
  k wait --for=condition=Ready --timeout="${TIMEOUT}s" "${names[@]}" >&2 || {
    k get nodes -o wide >&2 || true
    tail -n 30 "$CLUSTER_DIR/logs/kwok-controller.log" >&2 || true
    die "fake nodes did not become Ready"
  }
  for ((i = 0; i < NODES; i++)); do
    v=$(k get node "gpu-node-$i" -o jsonpath='{.status.allocatable.kube-dmem\.io/vram}')
    [[ $v == "$VRAM" ]] || die "gpu-node-$i allocatable kube-dmem.io/vram is '$v', want '$VRAM'"
  done
fi

log "cluster $NAME is up in $((SECONDS - T0))s; server $(k config view -o jsonpath='{.clusters[0].cluster.server}')"
log "logs: $CLUSTER_DIR/logs/   down: tests/scripts/cluster-down.sh"
echo "export KUBECONFIG=$KCFG"
