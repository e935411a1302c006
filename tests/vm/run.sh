#!/usr/bin/env bash
# Owns: running one command in a VM booted from a cached dmem kernel.
#   usage: tests/vm/run.sh 7.2|7.3 [--no-driver] [--driver-params 'P=V ...'] -- COMMAND [ARG...]
# The guest (qemu, TCG, one vCPU, no network device) sees the host's root filesystem read-only over
# 9p, so COMMAND can be any host binary (run in the guest from the same working directory, as root).
# Before COMMAND the guest mounts cgroup2 at /sys/fs/cgroup and loads the dmemtest driver. The
# command's output is printed here and its exit status is ours; we fail instead if the kernel log
# shows an oops, a WARNING, a BUG or a panic, or if the guest did not report an exit status.
# Environment: KUBE_DMEM_* variables are passed into the guest; VM_TIMEOUT (s, default 600), VM_MEM,
# VM_APPEND (more kernel command-line arguments; bench.sh uses it for a TSC clocksource).
# COMMAND and what it reads may live anywhere on the host, /tmp included (the guest sees it all
# read-only); COMMAND writes scratch files under TMPDIR=/run/tmp (HOME=/run/home), a guest tmpfs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
series=${1:?usage: run.sh 7.2|7.3 [--no-driver] [--driver-params PARAMS] -- COMMAND...}
shift
driver=1 params=
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  case "$1" in
    --no-driver) driver=0 ;;
    --driver-params) params=$2; shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "run.sh: no command" >&2; exit 2; }

kdir=$("$here/kernel.sh" "$series")
ko=
[ "$driver" = 0 ] || ko=$("$here/build-module.sh" "$kdir")

res=$(mktemp -d "${TMPDIR:-/tmp}/kube-dmem-vm.XXXXXX")
trap 'rm -rf "$res"' EXIT
# The driver travels in the results share, with the command's other files.
if [ -n "$ko" ]; then cp "$ko" "$res/dmemtest.ko"; ko=/run/results/dmemtest.ko; fi
{
  printf 'export %s=%q\n' GUEST_CWD "$PWD" DMEMTEST_KO "$ko" DMEMTEST_PARAMS "$params" \
    KUBE_DMEM_REAL_KERNEL 1 KUBE_DMEM_KERNEL_SERIES "$series" KUBE_DMEM_DMEMTEST_KO "$ko" \
    HOME /run/home TMPDIR /run/tmp RUST_BACKTRACE "${RUST_BACKTRACE:-1}"
  while IFS='=' read -r name _; do
    case "$name" in
      KUBE_DMEM_REAL_KERNEL | KUBE_DMEM_KERNEL_SERIES | KUBE_DMEM_DMEMTEST_KO) ;;
      KUBE_DMEM_*) printf 'export %s=%q\n' "$name" "${!name}" ;;
    esac
  done < <(env)
} >"$res/env"
printf '%q ' "$@" >"$res/cmd"
echo >>"$res/cmd"

t0=$EPOCHREALTIME
qemu_rc=0
timeout "${VM_TIMEOUT:-600}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 1 -m "${VM_MEM:-1G}" -nographic -no-reboot -nic none \
  -kernel "$kdir/bzImage" \
  -append "console=ttyS0 quiet panic=-1 oops=panic root=hostroot rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144 ro init=$here/guest-init.sh${VM_APPEND:+ $VM_APPEND}" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot \
  -virtfs local,path="$res",mount_tag=results,security_model=none,id=results \
  </dev/null >"$res/console" 2>&1 || qemu_rc=$?
t1=$EPOCHREALTIME

[ -f "$res/out" ] && cat "$res/out"
bad=$(grep -hE 'Oops|WARNING:|BUG:|Kernel panic|Call Trace|general protection fault|UBSAN|KASAN' \
  "$res/console" "$res/dmesg" 2>/dev/null | head -20 || true)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
if [ -f "$res/start" ] && [ -f "$res/end" ]; then
  echo "run.sh[$series]: boot-to-command $(cat "$res/start") s, command $(secs "$(cat "$res/start")" "$(cat "$res/end")") s (guest clock); total $(secs "$t0" "$t1") s" >&2
fi
if [ -n "$bad" ] || [ ! -f "$res/rc" ]; then
  echo "run.sh[$series]: FAILED (qemu exit $qemu_rc$([ -f "$res/rc" ] || echo ', no exit status from the guest'))" >&2
  [ -z "$bad" ] || { echo "run.sh[$series]: kernel log problems:" >&2; echo "$bad" >&2; }
  echo "--- console" >&2; tail -50 "$res/console" >&2
  [ ! -f "$res/dmesg" ] || { echo "--- dmesg (tail)" >&2; tail -40 "$res/dmesg" >&2; }
  exit 1
fi
exit "$(cat "$res/rc")"
