#!/usr/bin/env bash
# Owns: the real-node end-to-end suite, host side. Builds what the node runs (release agent and
# operator, the static workload, the realnode test binary), makes their images, then boots the node
# VM with the test GPU driver, brings the one-node cluster up (cluster.sh) and runs guest-e2e.sh in
# it: chart installed with helm, tests/e2e/realnode.rs against the real kubelet, containerd, runc
# and kernel. Exit status = the suite's.
#   usage: tests/node/e2e.sh [TEST BINARY ARGUMENTS, e.g. a test name filter]
# Env: KUBE_DMEM_NODE_KEEP=DIR keeps the results share (logs of every component, the suite's output);
#      VM_TIMEOUT (default 2400 s); KUBE_DMEM_NODE_PROFILE=release|dev (the agent's and operator's build). Prerequisites: tests/node/prereqs.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { printf '[node/e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
"$here/prereqs.sh"
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}

# The images carry release binaries by default. KUBE_DMEM_NODE_PROFILE=dev builds them unoptimised
# instead, reusing what `cargo test` compiled (2 minutes instead of the release build's 11 on 2
# cores), for quick runs of single cases: under a 20-pod burst the unoptimised agent left the TCG
# guest so short of CPU that CRI calls hit the kubelet's deadline (2026-12-01).
profile=${KUBE_DMEM_NODE_PROFILE:-release}
case "$profile" in
  release) bindir=$target/release ;;
  dev) bindir=$target/debug ;;
  *) log "ERROR: KUBE_DMEM_NODE_PROFILE is release or dev, not '$profile'"; exit 2 ;;
esac
log "building the agent and the operator ($profile)"
cargo build -q --profile "$profile" --locked -p kube-dmem-device-plugin -p kube-dmem-operator
log "building the workload (static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --locked \
  --target x86_64-unknown-linux-gnu -p kube-dmem-workload
log "building kubectl-dmem and the realnode suite"
cargo build -q --locked -p kubectl-dmem
test_bin=$(cargo test -q --locked -p kube-dmem-e2e --test realnode --no-run --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "realnode":
        print(m["executable"])')
[ -x "$test_bin" ] || { log "ERROR: no realnode test binary"; exit 1; }
images=$("$here/product-images.sh" "$target/node-images" "$bindir/kube-dmem-device-plugin" \
  "$bindir/kube-dmem-operator" "$target/x86_64-unknown-linux-gnu/release/kube-dmem-workload")

keep=${KUBE_DMEM_NODE_KEEP:-}
opts=(--driver --mem 6G)
[ -z "$keep" ] || opts+=(--keep "$keep")
log "booting the node (cluster up takes 3-5 minutes under TCG)"
VM_TIMEOUT=${VM_TIMEOUT:-2400} NODE_EXTRA_IMAGES=$images KUBE_DMEM_NODE_E2E_TEST=$test_bin \
  KUBE_DMEM_NODE_KUBECTL_DMEM=$target/debug/kubectl-dmem \
  KUBE_DMEM_NODE_E2E_FILTER="$*" "$here/cluster.sh" "${opts[@]}" -- bash tests/node/guest-e2e.sh
