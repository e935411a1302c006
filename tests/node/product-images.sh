#!/usr/bin/env bash
# Owns: the images of our own binaries for the real node, made locally (no registry, no engine):
#   localhost/kube-dmem/device-plugin:dev  the node agent (release build) + the shared libraries it
#                                          links (glibc, libgcc_s, found with ldd), like distroless/cc
#   localhost/kube-dmem/operator:dev       the operator, the same way, running as uid 65532
#   localhost/kube-dmem/workload:dev       tests/workload, a static binary (the e2e pods' program)
#   usage: tests/node/product-images.sh OUTDIR AGENT_BIN OPERATOR_BIN WORKLOAD_BIN
# Writes OUTDIR/{device-plugin,operator,workload}.tar and prints their paths on one line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/node/oci.sh
. "$here/oci.sh"
[ $# -eq 4 ] || { echo "usage: $0 OUTDIR AGENT_BIN OPERATOR_BIN WORKLOAD_BIN" >&2; exit 2; }
out=$1 agent=$2 operator=$3 workload=$4
for b in "$agent" "$operator" "$workload"; do [ -x "$b" ] || { echo "node/product-images: $b missing" >&2; exit 1; }; done
file -L "$workload" | grep -qE 'static(-pie)? linked' || { echo "node/product-images: $workload is not static" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# rootfs_for BIN DIR: BIN at /usr/local/bin and every library ldd resolves, at the same paths.
rootfs_for() {
  local bin=$1 root=$2 lib
  mkdir -p "$root/usr/local/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  # Line tables are for local debugging; the image keeps symbols (backtraces) but not the rest,
  # which is most of its size and slows the import into containerd under TCG.
  strip --strip-debug -o "$root/usr/local/bin/$(basename "$bin")" "$bin"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
rootfs_for "$agent" "$work/agent"
oci_image localhost/kube-dmem/device-plugin:dev "$work/agent" "$out/device-plugin.tar" \
  '{"Entrypoint": ["/usr/local/bin/kube-dmem-device-plugin"], "Env": ["PATH=/usr/local/bin"]}'
rootfs_for "$operator" "$work/operator"
oci_image localhost/kube-dmem/operator:dev "$work/operator" "$out/operator.tar" \
  '{"Entrypoint": ["/usr/local/bin/kube-dmem-operator"], "Env": ["PATH=/usr/local/bin"], "User": "65532:65532"}'
mkdir -p "$work/workload"
strip --strip-debug -o "$work/workload/workload" "$workload"
oci_image localhost/kube-dmem/workload:dev "$work/workload" "$out/workload.tar" \
  '{"Entrypoint": ["/workload"], "Env": ["PATH=/"]}'
echo "$out/device-plugin.tar $out/operator.tar $out/workload.tar"
