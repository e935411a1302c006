#!/usr/bin/env bash
# Owns: booting the container-node VM and running one command in it.
#   usage: tests/node/run.sh [--driver] [--driver-params 'P=V ...'] [--no-containerd] [--smp N] [--mem SIZE]
#                            [--keep DIR] -- COMMAND [ARG...]
# Boots the node kernel (build-kernel.sh 7.3) under qemu TCG with no network device; the guest's root
# is an overlay of the cached Debian tree (rootfs.sh) and a tmpfs, the host's root is at /host
# (read-only 9p), the results directory is a writable 9p share at /run/results. guest-init.sh starts
# containerd (cgroupfs driver, CNI conf for a bridge, no registry), imports the local images
# (images.sh: localhost/kube-dmem/busybox:1, localhost/kube-dmem/pause:1, namespace k8s.io), then runs
# COMMAND with bash in /host<current directory>. --driver loads tests/vm/dmemtest (built against the
# node kernel by tests/vm/build-module.sh) before containerd starts, so dmem has regions to account.
# COMMAND's output is printed, its exit status is ours. We fail if the kernel log shows an
# oops/WARNING/BUG/panic or if no exit status came back. --keep DIR (or NODE_RESULTS=DIR) keeps the
# results share.
# Env: VM_TIMEOUT (s, default 900); NODE_EXTRA_IMAGES (more image archives to import, host paths,
# space-separated; product-images.sh makes ours); KUBE_DMEM_* are passed into the guest. The results share holds
# console, dmesg, containerd.log, timings and anything COMMAND wrote to /run/results.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
smp=2 mem=3G containerd=1 driver=0 params='' keep=${NODE_RESULTS:-}
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  case "$1" in
    --driver) driver=1 ;;
    --driver-params) driver=1; params=$2; shift ;;
    --no-containerd) containerd=0 ;;
    --smp) smp=$2; shift ;;
    --mem) mem=$2; shift ;;
    --keep) keep=$2; shift ;;
    *) echo "node/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "node/run.sh: no command" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "node/run.sh: qemu-system-x86_64 missing (tests/vm/prereqs.sh)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "node/run.sh: /bin/busybox missing (busybox-static; the guest powers off with it)" >&2; exit 1; }

kdir=$("$here/build-kernel.sh" 7.3)
rootfs=$("$here/rootfs.sh")/root
images=$("$here/images.sh")

if [ -n "$keep" ]; then res=$keep; mkdir -p "$res"; rm -f "$res"/{rc,out,timings,console,dmesg}
else res=$(mktemp -d "${TMPDIR:-/tmp}/kube-dmem-node.XXXXXX"); trap 'rm -rf "$res"' EXIT; fi
ko=
if [ "$driver" = 1 ]; then cp "$("$here/../vm/build-module.sh" "$kdir")" "$res/dmemtest.ko"; ko=/run/results/dmemtest.ko; fi
{
  printf 'export %s=%q\n' NODE_ROOTFS "$rootfs" NODE_INIT "$here/guest-init.sh" NODE_CONTAINERD "$containerd" \
    DMEMTEST_KO "$ko" DMEMTEST_PARAMS "$params" KUBE_DMEM_DMEMTEST_KO "$ko" \
    NODE_IMAGES "$images/busybox.tar $images/pause.tar${NODE_EXTRA_IMAGES:+ $NODE_EXTRA_IMAGES}" GUEST_CWD "$PWD" HOME /root TMPDIR /tmp \
    KUBE_DMEM_REAL_KERNEL 1 KUBE_DMEM_KERNEL_SERIES 7.3
  while IFS='=' read -r name _; do
    case "$name" in
      KUBE_DMEM_REAL_KERNEL | KUBE_DMEM_KERNEL_SERIES | KUBE_DMEM_DMEMTEST_KO) ;;
      KUBE_DMEM_*) printf 'export %s=%q\n' "$name" "${!name}" ;;
    esac
  done < <(env)
} >"$res/env"
printf '%q ' "$@" >"$res/cmd"
echo >>"$res/cmd"

# The guest page-caches what it reads from the host's root (cache=loose): the tree is read-only to
# the guest and nothing on the host changes it during a run. Measured: boot to a command 25 s
# instead of 51 s; the one-node cluster registered its node at 282 s of guest uptime instead of
# 489 s (2026-12-01, 2 cores). NODE_9P_CACHE= turns it off.
cache9p=${NODE_9P_CACHE-loose}
t0=$EPOCHREALTIME
qemu_rc=0
timeout "${VM_TIMEOUT:-900}" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" -nographic -no-reboot -nic none \
  -kernel "$kdir/bzImage" \
  -append "console=ttyS0 quiet panic=-1 oops=panic root=hostroot rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144${cache9p:+,cache=$cache9p} ro init=$here/guest-init.sh" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot \
  -virtfs local,path="$res",mount_tag=results,security_model=none,id=results \
  </dev/null >"$res/console" 2>&1 || qemu_rc=$?
t1=$EPOCHREALTIME

[ -f "$res/out" ] && cat "$res/out"
bad=$(grep -hE 'Oops|WARNING:|BUG:|Kernel panic|Call Trace|general protection fault|UBSAN|KASAN' \
  "$res/console" "$res/dmesg" 2>/dev/null | head -20 || true)
echo "node/run.sh: qemu $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; guest uptime at: $(tr '\n' ' ' <"$res/timings" 2>/dev/null)" >&2
if [ -n "$bad" ] || [ ! -f "$res/rc" ]; then
  echo "node/run.sh: FAILED (qemu exit $qemu_rc$([ -f "$res/rc" ] || echo ', no exit status from the guest'))" >&2
  [ -z "$bad" ] || { echo "node/run.sh: kernel log problems:" >&2; echo "$bad" >&2; }
  echo "--- console" >&2; tail -50 "$res/console" >&2
  [ ! -f "$res/dmesg" ] || { echo "--- dmesg (tail)" >&2; tail -40 "$res/dmesg" >&2; }
  [ ! -f "$res/containerd.log" ] || { echo "--- containerd.log (tail)" >&2; tail -20 "$res/containerd.log" >&2; }
  exit 1
fi
exit "$(cat "$res/rc")"
