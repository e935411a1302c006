#!/usr/bin/env bash
# Owns: building (and caching) the dmemtest test driver against one built kernel.
#   usage: tests/vm/build-module.sh KERNEL_CACHE_DIR     (prints the path of dmemtest.ko)
# The sources are copied next to the kernel, into KERNEL_CACHE_DIR/dmemtest-<sha of the sources>/,
# so the work tree stays clean and an unchanged module is not rebuilt.
set -euo pipefail

kdir=${1:?usage: build-module.sh KERNEL_CACHE_DIR}
[ -f "$kdir/.complete" ] || { echo "build-module: $kdir is not a built kernel (run build-kernel.sh)" >&2; exit 1; }
src=$(cd "$(dirname "$0")/dmemtest" && pwd)
sha=$(cat "$src/dmemtest.c" "$src/Makefile" | sha256sum | cut -c1-12)
out=$kdir/dmemtest-$sha
if [ ! -f "$out/dmemtest.ko" ]; then
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  cp "$src/dmemtest.c" "$src/Makefile" "$out.tmp/"
  # -Werror: the module must build without warnings on every kernel we test.
  make -s -C "$out.tmp" KDIR="$kdir/build" KCFLAGS=-Werror >&2
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "build-module: built $out/dmemtest.ko" >&2
fi
echo "$out/dmemtest.ko"
