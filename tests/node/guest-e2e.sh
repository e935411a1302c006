#!/bin/bash
# Owns: the real-node e2e run inside the node VM, once guest-cluster.sh has the node Ready
# (KUBECONFIG and NODE_BIN exported). Makes the test GPU look like a GPU to the node (the device
# nodes and by-path links udev would make for a DRM driver), installs the chart with `helm install`
# (tests/node/values.yaml: our images, the sysfs backend, NRI on), waits for the agent and the
# operator, then runs the realnode test binary (KUBE_DMEM_NODE_E2E_TEST, a host path) with its output and
# logs on the results share.
set -euo pipefail
up() { cut -d' ' -f1 /proc/uptime; }
t() { echo "T $1 $(up)"; echo "$1 $(up)" >>/run/results/timings; }
repo=$PWD
kc() { "$NODE_BIN/kubectl" "$@"; }

# "udev" for the test driver: every PCI address of a dmem region gets a render node (the driver's
# char device under another name) and the by-path link the agent's Allocate looks up.
[ -c /dev/dmemtest ] || { echo "guest-e2e: /dev/dmemtest missing (run.sh --driver)" >&2; exit 1; }
devno=$(stat -c '%t %T' /dev/dmemtest)
mkdir -p /dev/dri/by-path
minor=128
for bdf in $(sed -n 's|^drm/\([0-9a-f:.]*\)/.*|\1|p' /sys/fs/cgroup/dmem.capacity | sort -u); do
  mknod -m 666 "/dev/dri/renderD$minor" c $((0x${devno% *})) $((0x${devno#* }))
  ln -s "../renderD$minor" "/dev/dri/by-path/pci-$bdf-render"
  minor=$((minor + 1))
done
ls -l /dev/dri /dev/dri/by-path

kc create namespace kube-dmem
"$NODE_BIN/helm" install kube-dmem "$repo/charts/kube-dmem" --namespace kube-dmem \
  -f "$repo/tests/node/values.yaml" ${KUBE_DMEM_NODE_HELM_ARGS:-}
t helm-installed
kc -n kube-dmem rollout status daemonset/kube-dmem-device-plugin --timeout=600s
t agent-ready
kc -n kube-dmem rollout status deployment/kube-dmem-operator --timeout=600s
t operator-ready

export KUBE_DMEM_KUBECTL=$NODE_BIN/kubectl KUBE_DMEM_E2E_RUN_DIR=/run/results/e2e \
  KUBE_DMEM_REAL_NODE=1 NODE_HELM=$NODE_BIN/helm NODE_CHART=$repo/charts/kube-dmem \
  NODE_VALUES=$repo/tests/node/values.yaml KUBE_DMEM_NODE_KUBECTL_DMEM=/host$KUBE_DMEM_NODE_KUBECTL_DMEM
mkdir -p /run/results/e2e
rc=0
"/host$KUBE_DMEM_NODE_E2E_TEST" --test-threads=1 ${KUBE_DMEM_NODE_E2E_FILTER:-} || rc=$?
t tests-done
kc -n kube-dmem logs daemonset/kube-dmem-device-plugin --tail=-1 >/run/results/logs/agent.log 2>&1 || true
kc -n kube-dmem logs deployment/kube-dmem-operator --tail=-1 >/run/results/logs/operator.log 2>&1 || true
kc get pods -A -o wide >/run/results/logs/pods.txt 2>&1 || true
# KUBE_DMEM_NODE_SERVE=1 (development): keep the cluster up and run the scripts the host drops in
# the results share's inbox/ (output to NAME.out, status to NAME.rc) until inbox/stop appears.
if [ -n "${KUBE_DMEM_NODE_SERVE:-}" ]; then
  mkdir -p /run/results/inbox
  echo "guest-e2e: serving /run/results/inbox"
  while [ ! -e /run/results/inbox/stop ]; do
    for f in /run/results/inbox/*.sh; do
      [ -e "$f" ] || continue
      mv "$f" "$f.taken"
      (bash "$f.taken" >"${f%.sh}.out" 2>&1; echo $? >"${f%.sh}.rc")
    done
    sleep 1
  done
fi
exit "$rc"
