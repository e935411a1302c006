#!/usr/bin/env bash
# Owns: the container node's guest userspace (Debian sid: containerd 2.x, runc, the reference CNI
# plugins, iproute2, iptables, mount, procps), made with mmdebstrap and cached as a directory tree.
#   usage: tests/node/rootfs.sh        (prints the cache directory; the tree is <dir>/root)
# Cache: ~/.cache/kube-dmem/node-rootfs/<sha of this script>/ with root/, manifest (package versions),
# build-seconds and .complete. The tree is never written after it is complete: tests/node/run.sh
# boots it as the read-only lower layer of an overlay (tmpfs upper) inside the guest.
# The mirror is read at run time from the machine's own /etc/apt configuration (first Debian URI;
# KUBE_DMEM_DEBIAN_MIRROR overrides) and never written into the repository; the machine's apt
# sources are not changed (mmdebstrap runs its own apt inside the tree). sid's Release file is served
# past its Valid-Until date, hence Acquire::Check-Valid-Until=false. The apt sources list inside the
# tree is removed again, so the tree names no mirror.
# sid moves daily: a cached tree is reused as is; KUBE_DMEM_ROOTFS_REFRESH=1 rebuilds it.
set -euo pipefail

for tool in mmdebstrap sha256sum; do
  command -v "$tool" >/dev/null || { echo "node/rootfs: missing $tool (apt-get install mmdebstrap)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "node/rootfs: must run as root (mmdebstrap --mode=root keeps real ownership)" >&2; exit 1; }
cache=${KUBE_DMEM_CACHE:-$HOME/.cache/kube-dmem}
log() { echo "node/rootfs: $*" >&2; }

suite=sid
packages=(containerd runc containernetworking-plugins iproute2 iptables mount procps ca-certificates)
key=$( { cat "$0"; echo "$suite ${packages[*]}"; } | sha256sum | cut -c1-12)
dest=$cache/node-rootfs/$key
if [ "${KUBE_DMEM_ROOTFS_REFRESH:-0}" != 1 ] && [ -f "$dest/.complete" ]; then
  log "cached: $dest"; echo "$dest"; exit 0
fi

mirror() {
  [ -n "${KUBE_DMEM_DEBIAN_MIRROR:-}" ] && { echo "$KUBE_DMEM_DEBIAN_MIRROR"; return; }
  local uris
  uris=$( { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
            sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; } |
          grep -v -e security -e '^$' | grep '/debian/\?$' || true)
  [ -n "$uris" ] || { echo "node/rootfs: no Debian mirror in /etc/apt (set KUBE_DMEM_DEBIAN_MIRROR)" >&2; return 1; }
  head -1 <<<"$uris"
}
mirror_uri=$(mirror)

mkdir -p "$cache/node-rootfs"
exec 9>"$cache/node-rootfs/.$key.lock"
flock 9
if [ "${KUBE_DMEM_ROOTFS_REFRESH:-0}" != 1 ] && [ -f "$dest/.complete" ]; then
  log "cached: $dest"; echo "$dest"; exit 0
fi
t0=$SECONDS
rm -rf "$dest"; mkdir -p "$dest"
log "mmdebstrap $suite (${packages[*]}) into $dest/root"
inc=$(IFS=,; echo "${packages[*]}")
# shellcheck disable=SC2016 # the hooks are run by mmdebstrap's sh, with $1 the tree
# Hooks: mount points the guest init uses (/host: the host's root after pivot_root), no apt sources,
# no machine-id (the guest writes one into its tmpfs overlay), the manifest of package versions.
nice -n 10 mmdebstrap --mode=root --variant=minbase --format=directory \
  --aptopt='Acquire::Check-Valid-Until "false"' --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
  --include="$inc" \
  --customize-hook='mkdir -p "$1/host" "$1/etc/cni/net.d" "$1/var/lib/containerd" "$1/var/lib/kubelet"' \
  --customize-hook='rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*; : >"$1/etc/machine-id"' \
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" >"$1/../manifest"' \
  "$suite" "$dest/root" "deb $mirror_uri $suite main" >&2
for b in containerd ctr runc; do
  [ -x "$dest/root/usr/bin/$b" ] || { echo "node/rootfs: $b missing from the tree" >&2; exit 1; }
done
[ -x "$dest/root/usr/lib/cni/bridge" ] || { echo "node/rootfs: CNI plugins missing (/usr/lib/cni)" >&2; exit 1; }
echo "$((SECONDS - t0))" >"$dest/build-seconds"
touch "$dest/.complete"
log "built $dest in $((SECONDS - t0)) s ($(du -sh "$dest/root" | cut -f1)); containerd $(grep '^containerd ' "$dest/manifest" | cut -d' ' -f2), runc $(grep '^runc ' "$dest/manifest" | cut -d' ' -f2)"
echo "$dest"
