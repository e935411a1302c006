#!/bin/bash
# Owns: the one-node control plane inside the node VM (run by cluster.sh through run.sh; PKI, tool
# and kubelet paths are host paths, seen under /host). etcd and the control plane run on the guest;
# the node's address is 10.99.0.1 on a veth pair inside the guest (the kubelet refuses a loopback
# node address, the apiserver wants a default route; the guest has no network device, so nothing
# leaves it). The apiserver listens on all of the guest's addresses so pods reach it at 10.99.0.1
# (there is no kube-proxy: in-cluster clients are pointed there, see tests/node/README.md). The
# kubelet listens on 0.0.0.0:10250 so the apiserver reaches it for logs. Prints `T <step> <guest
# uptime>` lines and a final summary.
#   guest-cluster.sh PKI BIN KUBELET [COMMAND...]
# Without COMMAND: runs one busybox pod and exits non-zero unless it succeeds. With COMMAND: runs it
# once the node is Ready, with KUBECONFIG (admin), NODE_BIN (the tools) and NODE_KUBELET_START (a
# script that starts the kubelet again, for restart tests) exported; its status is ours.
set -euo pipefail
pki_host=$1 bin=/host$2 kubelet=/host$3
shift 3
up() { cut -d' ' -f1 /proc/uptime; }
t() { echo "T $1 $(up)"; echo "$1 $(up)" >>/run/results/timings; }
w=/run/node; mkdir -p $w/pki /var/lib/etcd /var/log/node
# the PKI, with kubeconfigs pointing at the guest copy
for f in "/host$pki_host"/*; do sed "s|PKI/|$w/pki/|g" "$f" >"$w/pki/$(basename "$f")"; done
chmod 600 $w/pki/*.key
L=/run/results/logs; mkdir -p $L
kc() { "$bin/kubectl" --kubeconfig $w/pki/admin.kubeconfig "$@"; }
waitfor() { # waitfor NAME TIMEOUT CMD...
  local name=$1 n=$2; shift 2
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && { t "$name"; return 0; }; sleep 1; done
  echo "timeout waiting for $name" >&2; return 1
}
ip link add node0 type veth peer name node0-peer
ip addr add 10.99.0.1/24 dev node0
ip link set node0 up; ip link set node0-peer up
ip route add default via 10.99.0.2 dev node0
# KUBE_DMEM_NODE_ROOT_SUBTREE='+cpu +memory ... +dmem' pre-enables controllers at the root; by default the
# root is left as booted (nothing enabled), so what the kubelet/runc enable by themselves shows.
if [ -n "${KUBE_DMEM_NODE_ROOT_SUBTREE:-}" ]; then
  echo "$KUBE_DMEM_NODE_ROOT_SUBTREE" >/sys/fs/cgroup/cgroup.subtree_control
fi
echo "root subtree_control before the kubelet: '$(cat /sys/fs/cgroup/cgroup.subtree_control)'"
t start

"$bin/etcd" --name=node0 --data-dir=/var/lib/etcd --listen-client-urls=http://127.0.0.1:2379 \
  --advertise-client-urls=http://127.0.0.1:2379 --listen-peer-urls=http://127.0.0.1:2380 \
  --initial-advertise-peer-urls=http://127.0.0.1:2380 --initial-cluster=node0=http://127.0.0.1:2380 \
  --unsafe-no-fsync --quota-backend-bytes=1073741824 >$L/etcd.log 2>&1 &
waitfor etcd-listening 120 bash -c 'echo >/dev/tcp/127.0.0.1/2379'

"$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address=10.99.0.1 \
  --secure-port=6443 --service-cluster-ip-range=10.96.0.0/24 \
  --tls-cert-file=$w/pki/apiserver.crt --tls-private-key-file=$w/pki/apiserver.key --client-ca-file=$w/pki/ca.crt \
  --kubelet-client-certificate=$w/pki/admin.crt --kubelet-client-key=$w/pki/admin.key \
  --service-account-key-file=$w/pki/sa.pub --service-account-signing-key-file=$w/pki/sa.key \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --allow-privileged=true --enable-admission-plugins=NodeRestriction \
  >$L/kube-apiserver.log 2>&1 &
waitfor apiserver-ready 600 kc get --raw /readyz

"$bin/kube-controller-manager" --kubeconfig=$w/pki/controller-manager.kubeconfig --leader-elect=false \
  --bind-address=127.0.0.1 --root-ca-file=$w/pki/ca.crt --service-account-private-key-file=$w/pki/sa.key \
  --use-service-account-credentials=true --controllers='*,-nodeipam' >$L/kube-controller-manager.log 2>&1 &
"$bin/kube-scheduler" --kubeconfig=$w/pki/scheduler.kubeconfig --leader-elect=false --bind-address=127.0.0.1 \
  >$L/kube-scheduler.log 2>&1 &

cat >$w/kubelet.yaml <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: 0.0.0.0
readOnlyPort: 0
failSwapOn: false
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: $w/pki/ca.crt}}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
localStorageCapacityIsolation: false
# Under TCG on a busy host containerd's shims took more than the default 2 minutes to create or
# start a container (CreateContainer and StartContainer "context deadline exceeded" in the race
# cases' first waves); the deadline bounds each CRI call only, nothing the cases check.
runtimeRequestTimeout: 10m
YAML
cat >$w/kubelet-start.sh <<SH
#!/bin/bash
# Starts the kubelet in the background (again, after a restart test killed it); appends to its log.
"$kubelet" --config=$w/kubelet.yaml --kubeconfig=$w/pki/kubelet.kubeconfig --hostname-override=node0 \\
  --node-ip=10.99.0.1 --v=2 >>$L/kubelet.log 2>&1 &
SH
chmod +x $w/kubelet-start.sh
$w/kubelet-start.sh
waitfor controller-manager-default-sa 600 kc get serviceaccount default
waitfor node-registered 600 kc get node node0
waitfor node-ready 600 kc wait --for=condition=Ready node/node0 --timeout=1s

if [ $# -gt 0 ]; then
  export KUBECONFIG=$w/pki/admin.kubeconfig NODE_BIN=$bin NODE_KUBELET_START=$w/kubelet-start.sh
  t command-start
  rc=0
  "$@" || rc=$?
  t command-end
  echo "--- summary (guest uptime, s)"; cat /run/results/timings
  exit "$rc"
fi

kc apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: hello
    image: localhost/kube-dmem/busybox:1
    imagePullPolicy: Never
    command: [/bin/sh, -c, 'echo hello from pod; cat /proc/self/cgroup; for f in dmem.capacity dmem.max dmem.current; do echo "$f: $(cat "/sys/fs/cgroup/$f" 2>&1)"; done']
    resources: {limits: {memory: 64Mi, cpu: 100m}}
YAML
waitfor pod-scheduled 300 bash -c "[ -n \"\$($bin/kubectl --kubeconfig $w/pki/admin.kubeconfig get pod hello -o jsonpath='{.spec.nodeName}')\" ]"
waitfor pod-succeeded 600 bash -c "[ \"\$($bin/kubectl --kubeconfig $w/pki/admin.kubeconfig get pod hello -o jsonpath='{.status.phase}')\" = Succeeded ]"
kc logs hello || true
kc get nodes -o wide
kc get node node0 -o jsonpath='{.status.capacity}'; echo
for d in /sys/fs/cgroup /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods/burstable; do
  echo "$d: subtree_control: $(cat $d/cgroup.subtree_control)"
  [ ! -f $d/dmem.max ] || echo "$d: dmem.max: $(cat $d/dmem.max)"
done
[ ! -e /dev/dmemtest ] || { echo "--- /dev/dmemtest"; cat /dev/dmemtest; }
cat /sys/fs/cgroup/cgroup.subtree_control
echo "--- summary (guest uptime, s)"; cat /run/results/timings
