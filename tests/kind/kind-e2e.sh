#!/usr/bin/env bash
# End-to-end run on kind, for machines with a Docker engine (ours have none, so this script is
# kept correct by review). It creates a kind cluster, builds and loads both images, installs the
# chart with the simulator backend, runs the e2e crate's CRD cases, and checks the path only kind
# has: the DaemonSet on a real kubelet enforcing a quota and reporting pressure as pod conditions.
# (The e2e crate's operator and agent cases start their components as host processes, which suits
# the local control plane; they are not run here.)
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

# 1. The CRD cases of the e2e crate need only an API server (no components), so they run as is.
cargo test -p kube-dmem-e2e --test crd -- --test-threads=1

# 2. The in-cluster path the local suite cannot reach: the real DaemonSet on a real kubelet and
#    containerd, with the simulator backend. A quota with high 1Gi and a pod whose simulated
#    workload uses 2Gi must give VRAMLimitsApplied=True, VRAMPressure=True (AboveHigh), and a quota
#    status that counts the pod. The pod runs the pause image every kind node already holds.
ns=kube-dmem-kind-e2e
kubectl delete namespace "$ns" --ignore-not-found --wait
kubectl create namespace "$ns"
kubectl apply -n "$ns" -f - <<'YAML'
apiVersion: kube-dmem.io/v1alpha1
kind: DmemQuota
metadata: {name: smoke}
spec:
  selector: {matchLabels: {app: smoke}}
  limits: [{region: "*", max: 4Gi, high: 1Gi}]
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  labels: {app: smoke}
  annotations: {sim.kube-dmem.io/usage: "drm/0000:03:00.0/vram0=2Gi"}
spec:
  nodeSelector: {kube-dmem.io/gpu: "true"}
  containers: [{name: pause, image: registry.k8s.io/pause:3.10, imagePullPolicy: IfNotPresent}]
YAML
kubectl -n "$ns" wait pod/smoke --for=condition=Ready --timeout 120s
kubectl -n "$ns" wait pod/smoke --for=condition=kube-dmem.io/VRAMLimitsApplied=True --timeout 30s
kubectl -n "$ns" wait pod/smoke --for=condition=kube-dmem.io/VRAMPressure=True --timeout 30s
reason=$(kubectl -n "$ns" get pod smoke \
  -o jsonpath='{.status.conditions[?(@.type=="kube-dmem.io/VRAMPressure")].reason}')
[ "$reason" = AboveHigh ] || { echo "kind-e2e: VRAMPressure reason is $reason, want AboveHigh" >&2; exit 1; }
for _ in $(seq 30); do
  matched=$(kubectl -n "$ns" get dmq smoke -o jsonpath='{.status.matchedPods}')
  [ "$matched" = 1 ] && break
  sleep 1
done
[ "$matched" = 1 ] || { echo "kind-e2e: quota status matchedPods=$matched, want 1" >&2; exit 1; }
kubectl delete namespace "$ns" --wait
echo "kind-e2e: passed"
