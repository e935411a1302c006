#!/bin/bash
# Owns: PID 1 of the container-node VM (started by tests/node/run.sh as init=).
# Stage 1 runs the host's bash from the host's root filesystem (read-only 9p, as in tests/vm): it
# mounts a tmpfs on /run and the results share, builds the node's root as an overlay (lower: the
# cached Debian tree of rootfs.sh, read over the same 9p; upper: tmpfs) and pivot_roots into it, the
# host's root landing on /host (read-only). Stage 2 runs the tree's bash: kernel filesystems, cgroup2,
# tmpfs for /run /tmp /var/lib/containerd /var/lib/kubelet, loopback up, the dmemtest driver loaded
# (run.sh --driver; the host's busybox insmod), containerd started and
# waited for, the local images imported, then the command run.sh left in the results share
# (run as `bash /run/results/cmd` in GUEST_CWD under /host). Output, exit status, timings (guest
# uptime in seconds: timings), containerd's log and the kernel log go to the results share; the VM
# powers off with the host's busybox (`reboot -f`; qemu runs with -no-reboot).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
up() { cut -d' ' -f1 /proc/uptime; }
if [ "${1:-}" != --stage2 ]; then
  mount -t devtmpfs dev /dev
  exec </dev/console >/dev/console 2>&1
  mount -t proc proc /proc
  mount -t tmpfs -o mode=755 node /run
  mkdir -p /run/results /run/ovl/upper /run/ovl/work /run/ovl/root
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /run/results
  echo "stage1 $(up)" >/run/results/timings
  # shellcheck source=/dev/null # written by run.sh
  . /run/results/env
  fail() { echo "guest-init: $*" | tee -a /run/results/out; echo 125 >/run/results/rc; /bin/busybox reboot -f; }
  [ -d "$NODE_ROOTFS/host" ] || fail "no node rootfs at $NODE_ROOTFS"
  mount -t overlay overlay -o "lowerdir=$NODE_ROOTFS,upperdir=/run/ovl/upper,workdir=/run/ovl/work" /run/ovl/root ||
    fail "overlay mount failed"
  umount /proc
  cd /run/ovl/root || fail "no overlay root"
  pivot_root . host || fail "pivot_root failed"
  # shellcheck disable=SC2093 # fail only runs if exec itself fails
  exec /bin/bash "/host$NODE_INIT" --stage2
  fail "exec stage 2 failed"
fi

# --- stage 2: inside the node's root ---------------------------------------------------------------
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=755 run /run
mkdir -p /run/results /run/lock
mount --move /host/run/results /run/results
R=/run/results
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=711 containerd /var/lib/containerd
mount -t tmpfs -o mode=755 kubelet /var/lib/kubelet
echo "stage2 $(up)" >>"$R/timings"
finish() {
  dmesg >"$R/dmesg" 2>&1
  sync
  /host/bin/busybox reboot -f
}
trap finish EXIT
# shellcheck source=/dev/null # written by run.sh
. "$R/env"
echo "guest: kernel $(uname -r), up $(up) s" >"$R/boot"
ip link set lo up
hostname node0
echo node0 >/etc/hostname
printf '127.0.0.1 localhost node0\n::1 localhost ip6-localhost\n' >/etc/hosts
: >/etc/resolv.conf
tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id

# containerd: cgroupfs driver, CNI plugins from Debian's /usr/lib/cni, the local pause image.
mkdir -p /etc/containerd /etc/cni/net.d
cat >/etc/containerd/config.toml <<'TOML'
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "localhost/kube-dmem/pause:1"
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "/etc/cni/net.d"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
TOML
cat >/etc/cni/net.d/10-kube-dmem.conflist <<'JSON'
{"cniVersion": "1.0.0", "name": "kube-dmem",
 "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                       "routes": [{"dst": "0.0.0.0/0"}]}},
             {"type": "loopback"}]}
JSON
rc=0
if [ -n "${DMEMTEST_KO:-}" ]; then
  # shellcheck disable=SC2086 # DMEMTEST_PARAMS is a list of module parameters
  if /host/bin/busybox insmod "$DMEMTEST_KO" $DMEMTEST_PARAMS >"$R/insmod.log" 2>&1; then
    echo "driver-loaded $(up)" >>"$R/timings"
  else
    echo "guest-init: insmod $DMEMTEST_KO $DMEMTEST_PARAMS failed: $(cat "$R/insmod.log")" >"$R/out"
    rc=125
  fi
fi
if [ "$rc" = 0 ] && [ "${NODE_CONTAINERD:-1}" = 1 ]; then
  containerd >"$R/containerd.log" 2>&1 &
  for _ in $(seq 1 600); do
    ctr version >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ctr version >"$R/ctr-version" 2>&1; then
    echo "containerd-ready $(up)" >>"$R/timings"
    for img in $NODE_IMAGES; do
      ctr -n k8s.io images import "/host$img" >>"$R/images.log" 2>&1 || rc=125
    done
    echo "images-imported $(up)" >>"$R/timings"
  else
    echo "guest-init: containerd did not answer ctr version" >"$R/out"
    rc=125
  fi
fi
if [ "$rc" = 0 ]; then
  echo "command-start $(up)" >>"$R/timings"
  cd "/host$GUEST_CWD" 2>/dev/null || cd /
  bash "$R/cmd" >"$R/out" 2>&1 </dev/null || rc=$?
  echo "command-end $(up)" >>"$R/timings"
fi
echo "$rc" >"$R/rc"
