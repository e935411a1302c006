#!/usr/bin/env bash
# Smoke test of the cluster from tests/scripts/cluster-up.sh: fake nodes, scheduling of the
# kube-dmem.io/vram extended resource, kwok running pods, RBAC, ServiceAccount tokens (incl.
# pod-bound tokens carrying the node name), and helm against the cluster.
# Uses its own temporary namespace and deletes it at the end. Exit 0 = all checks passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${KUBE_DMEM_E2E_DIR:-/tmp/kube-dmem-e2e}
export PATH=$ROOT/tests/tools/bin:$PATH
export KUBECONFIG=${KUBECONFIG:-$STATE/kubeconfig}
export KUBECACHEDIR=$STATE/kube-cache # keep kubectl discovery caches out of ~/.kube
NS=smoke-$RANDOM$RANDOM
passed=0 failed=0
log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ok() { log "PASS: $*"; passed=$((passed + 1)); }
bad() { log "FAIL: $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
cleanup() { kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT
# decode the claims (payload) of a JWT
jwt_claims() { local p; p=$(cut -d. -f2 <<<"$1" | tr '_-' '/+'); while ((${#p} % 4)); do p+='='; done; base64 -d <<<"$p"; }

log "server $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
for n in $(kubectl get nodes -l type=kwok -o name); do
  check "$n Ready" kubectl wait --for=condition=Ready --timeout=30s "$n"
done

kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" kube-dmem.io/test=smoke >/dev/null
check "ServiceAccount $NS/default created by the controller-manager" \
  kubectl wait --for=jsonpath='{.metadata.name}'=default --timeout=30s -n "$NS" serviceaccount/default

pod() { # pod <name> <vram> <spec lines...>
  local name=$1 vram=$2; shift 2
  kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
$(printf '  %s\n' "$@")
  containers:
  - name: c
    image: registry.invalid/none:never-pulled
    resources: {limits: {kube-dmem.io/vram: "$vram"}}
EOF
}
pod p-nodename 4 "nodeName: gpu-node-0"
pod p-scheduled 8 "nodeSelector: {kubernetes.io/hostname: gpu-node-1}"
pod p-too-big 32 "nodeSelector: {type: kwok}"
check "pod with nodeName=gpu-node-0 Running (kwok)" \
  kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Running --timeout=60s pod/p-nodename
check "pod with nodeSelector scheduled onto gpu-node-1 and Running" \
  kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Running --timeout=60s pod/p-scheduled
check "scheduler placed it on gpu-node-1" \
  test "$(kubectl get -n "$NS" pod/p-scheduled -o jsonpath='{.spec.nodeName}')" = gpu-node-1
check "pod asking 32 kube-dmem.io/vram (> 16 per node) is Unschedulable" \
  kubectl wait -n "$NS" --for=jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}'=Unschedulable --timeout=60s pod/p-too-big
log "  $(kubectl get -n "$NS" pod/p-too-big -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].message}')"

# RBAC (authorization-mode=Node,RBAC)
SA=system:serviceaccount:$NS:default
check "admin: can-i '*' '*'" test "$(kubectl auth can-i '*' '*')" = yes
check "RBAC denies $SA list pods" test "$(kubectl auth can-i list pods -n "$NS" --as "$SA" || true)" = no
kubectl create rolebinding sa-view -n "$NS" --clusterrole=view --serviceaccount="$NS:default" >/dev/null
check "RBAC allows $SA list pods after a view RoleBinding" test "$(kubectl auth can-i list pods -n "$NS" --as "$SA")" = yes

# ServiceAccount tokens (TokenRequest API)
tok=$(kubectl create token default -n "$NS" --duration=10m)
check "kubectl create token default" test -n "$tok"
check "the token authenticates as $SA" \
  test "$(kubectl --token "$tok" --kubeconfig=/dev/null --server "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')" \
    --certificate-authority "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" \
    auth whoami -o jsonpath='{.status.userInfo.username}')" = "$SA"
uid=$(kubectl get -n "$NS" pod/p-nodename -o jsonpath='{.metadata.uid}')
btok=$(kubectl create token default -n "$NS" --bound-object-kind Pod --bound-object-name p-nodename --bound-object-uid "$uid")
claims=$(jwt_claims "$btok")
log "  pod-bound token claims: $claims"
check "pod-bound token carries the pod name" grep -q '"pod":{"name":"p-nodename"' <<<"$claims"
check "pod-bound token carries the node name (ServiceAccountTokenPodNodeInfo)" grep -q '"node":{"name":"gpu-node-0"' <<<"$claims"
extra=$(kubectl create -o jsonpath='{.status.user.extra}' -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec: {token: "$btok"}
EOF
)
log "  TokenReview user.extra: $extra"
check "TokenReview exposes authentication.kubernetes.io/node-name=gpu-node-0" \
  grep -q '"authentication.kubernetes.io/node-name":\["gpu-node-0"\]' <<<"$extra"

# helm against the cluster
check "helm version" helm version
tmp=$(mktemp -d)
helm create "$tmp/demo" >/dev/null
if helm install demo "$tmp/demo" -n "$NS" --wait --timeout 120s >/dev/null 2>"$tmp/err"; then
  ok "helm install (deployment pods Ready via kwok)"
else
  bad "helm install: $(tail -3 "$tmp/err")"
fi
check "helm list shows demo deployed" test "$(helm list -n "$NS" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["status"])')" = deployed
rm -rf "$tmp"

log "$passed passed, $failed failed"
echo "$passed passed, $failed failed"
((failed == 0))
