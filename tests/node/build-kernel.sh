#!/usr/bin/env bash
# Owns: the container-node kernel's identity: tests/node/kernel.config on tinyconfig, cached in
# ~/.cache/kube-dmem/node-kernels/<package version>-<sha of kernel.config>/. The build itself (source
# fetch through the private apt configuration shared with tests/vm, so the ~165 MB .deb is downloaded
# once; tinyconfig + fragment; reproducible build identity; cache and lock) is tests/vm/build-kernel.sh.
# The result's build/ tree is what tests/vm/build-module.sh builds the dmemtest driver against.
#   usage: tests/node/build-kernel.sh [7.3|7.2]     (default 7.3; prints the cache directory on stdout)
# Why tinyconfig + a big fragment rather than defconfig + kvm_guest.config: see tests/node/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KUBE_DMEM_KERNEL_FRAGMENT=$here/kernel.config KUBE_DMEM_KERNEL_CACHE_NAME=node-kernels \
  exec "$here/../vm/build-kernel.sh" "${1:-7.3}"
