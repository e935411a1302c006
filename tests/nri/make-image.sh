#!/usr/bin/env bash
# Packs a static busybox into an OCI image-layout tarball for `ctr images import`, no registry:
#   make-image.sh BUSYBOX_BINARY OUT.tar NAME:TAG
# One layer holding /bin/busybox and links to a few applets; its default command sleeps, so the
# image also serves as the CRI sandbox (pause) image.
set -euo pipefail
busybox=${1:?busybox binary}; out=${2:?output tarball}; ref=${3:?image name:tag}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/out" "$work/img/blobs/sha256"
cp "$busybox" "$work/rootfs/bin/busybox"; chmod 0755 "$work/rootfs/bin/busybox"
for applet in sh sleep date cat; do ln -s busybox "$work/rootfs/bin/$applet"; done
blob() { # file mediatype -> prints a descriptor and stores the blob
  local sum size; sum=$(sha256sum "$1" | cut -d' ' -f1); size=$(stat -c %s "$1")
  cp "$1" "$work/img/blobs/sha256/$sum"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$sum" "$size"
}
tar -C "$work/rootfs" --numeric-owner --owner=0 --group=0 --sort=name -cf "$work/layer.tar" .
diffid=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$(blob "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sleep","100000"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diffid" > "$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' "$config" "$layer" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
printf '{"schemaVersion":2,"manifests":[%s]}' "${manifest%\}},\"annotations\":{\"org.opencontainers.image.ref.name\":\"$ref\",\"io.containerd.image.name\":\"$ref\"}}" > "$work/img/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/img/oci-layout"
tar -C "$work/img" -cf "$out" oci-layout index.json blobs
