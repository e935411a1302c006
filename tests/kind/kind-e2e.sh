#!/usr/bin/env bash
# End-to-end run on kind, for machines with a Docker engine (ours have none, so this script is
# kept correct by review). It creates a kind cluster, builds and loads both images, installs the
# chart with the simulator backend, and runs the same e2e crate as the local control plane does,
# against the components running in the cluster.
#
#   tests/kind/kind-e2e.sh            # create, install, test, delete
#   KEEP=1 tests/kind/kind-e2e.sh     # leave the cluster up afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine is reachable" >&2; exit 2; }

cluster=kube-dmem
cleanup() { [ -n "${KEEP:-}" ] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --config tests/kind/kind-config.yaml --wait 120s
fi
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"

docker build -f tests/kind/Dockerfile.operator -t kube-dmem-operator:dev .
docker build -f tests/kind/Dockerfile.device-plugin -t kube-dmem-device-plugin:dev .
kind load docker-image --name "$cluster" kube-dmem-operator:dev kube-dmem-device-plugin:dev

# The agent uses hostPath volumes, which the restricted Pod Security level forbids.
kubectl create namespace kube-dmem --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace kube-dmem pod-security.kubernetes.io/enforce=privileged --overwrite
helm upgrade --install kube-dmem charts/kube-dmem -n kube-dmem -f tests/kind/kind-values.yaml --wait --timeout 5m
kubectl -n kube-dmem rollout status daemonset -l app.kubernetes.io/component=device-plugin --timeout 120s

# The e2e crate then talks to the components already running in the cluster instead of starting
# host processes.
KUBE_DMEM_E2E_COMPONENTS=in-cluster cargo test -p kube-dmem-e2e -- --test-threads=1
