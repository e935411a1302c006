#!/usr/bin/env bash
# The end-to-end suite (docs/contributing.md §8, tier 5): a local control plane (cluster-up.sh: etcd,
# kube-apiserver, controller-manager, scheduler, kwok with fake GPU nodes), the Helm chart
# installed with `helm install` (CRD from its crds/, RBAC, admission policy), a server-side dry
# run of the rendered chart, the kube-dmem binaries built, then `cargo test -p kube-dmem-e2e`.
# The tests run the binaries as host processes with tokens of the chart's ServiceAccounts.
# The cluster is always torn down at the end (KUBE_DMEM_E2E_KEEP_CLUSTER=1 keeps it).
#
#   tests/scripts/e2e.sh                 # everything
#   tests/scripts/e2e.sh -- crd          # extra arguments go to `cargo test` (a filter, ...)
#
# Env: KUBE_DMEM_E2E_DIR (cluster state dir, default /tmp/kube-dmem-e2e; use another one to run
# beside a dev cluster), KUBE_DMEM_E2E_THREADS (test threads per binary, default 1).
# Logs of every component process: target/e2e-runs/<run id>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SCRIPTS=$ROOT/tests/scripts
export PATH=$ROOT/tests/tools/bin:$PATH
RELEASE=kube-dmem
RELEASE_NS=kube-dmem
CHART=charts/kube-dmem
VALUES=$SCRIPTS/e2e-values.yaml
T0=$SECONDS

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[[ ${1:-} == -- ]] && shift

cleanup() {
  local rc=$?
  if [[ ${KUBE_DMEM_E2E_KEEP_CLUSTER:-0} == 1 ]]; then
    log "keeping the cluster (KUBE_DMEM_E2E_KEEP_CLUSTER=1); down: tests/scripts/cluster-down.sh"
  else
    "$SCRIPTS/cluster-down.sh" || log "cluster-down failed"
  fi
  if ((rc == 0)); then log "PASSED in $((SECONDS - T0))s"; else log "FAILED (exit $rc) after $((SECONDS - T0))s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the control-plane tools (tests/tools/build.sh)"
"$ROOT/tests/tools/build.sh"

log "building kube-dmem-operator, kube-dmem-device-plugin and kubectl-dmem"
cargo build --locked -p kube-dmem-operator -p kube-dmem-device-plugin -p kubectl-dmem

log "cluster up"
eval "$(KUBE_DMEM_SKIP_BUILD=1 "$SCRIPTS/cluster-up.sh")"
export KUBECONFIG
export KUBECACHEDIR=${KUBE_DMEM_E2E_DIR:-/tmp/kube-dmem-e2e}/kube-cache

log "server-side dry run of the rendered chart"
# The release namespace first: the namespaced objects' dry run needs it (helm install reuses it).
kubectl create namespace "$RELEASE_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm template "$RELEASE" "$CHART" -n "$RELEASE_NS" -f "$VALUES" --include-crds \
  | kubectl apply --dry-run=server -n "$RELEASE_NS" -f - >/dev/null
log "ok: the API server accepts every rendered object"

log "helm install $RELEASE $CHART -n $RELEASE_NS"
if helm status "$RELEASE" -n "$RELEASE_NS" >/dev/null 2>&1; then
  helm uninstall "$RELEASE" -n "$RELEASE_NS" --wait >/dev/null
fi
helm install "$RELEASE" "$CHART" -n "$RELEASE_NS" --create-namespace -f "$VALUES" \
  --wait --timeout 120s >/dev/null
kubectl -n "$RELEASE_NS" get pods -o wide >&2

run_id=$(date +%Y%m%d-%H%M%S)-$$
export KUBE_DMEM_E2E_RUN_ID=$run_id
log "cargo test -p kube-dmem-e2e (logs: target/e2e-runs/$run_id/)"
cargo test --locked --no-fail-fast -p kube-dmem-e2e -- --test-threads="${KUBE_DMEM_E2E_THREADS:-1}" "$@"
