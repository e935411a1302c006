#!/usr/bin/env bash
# Owns: the host packages the real-kernel tests need (kernel build, test module build, qemu, guest tools).
# CI calls this before tests/vm/test.sh. Any missing prerequisite is an error, never a skip.
set -euo pipefail

packages=(
  build-essential flex bison bc libelf-dev libssl-dev   # kernel + out-of-tree module build
  cpio gzip xz-utils                                     # unpacking linux-source, the guest initramfs
  qemu-system-x86                                        # the VM (TCG; no KVM needed)
  busybox-static                                         # the guest's /init userland
)

sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "prereqs: installing ${missing[*]}"
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Verify the tools themselves, not just the package database.
for t in gcc make flex bison bc cpio gzip xz ar qemu-system-x86_64 apt-get; do
  command -v "$t" >/dev/null || { echo "prereqs: $t is missing after install" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "prereqs: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
banner=$(/bin/busybox 2>&1 | head -1 || true)
case "$banner" in BusyBox*) ;; *) echo "prereqs: /bin/busybox does not run" >&2; exit 1 ;; esac
echo "prereqs: ok"
