#!/usr/bin/env bash
# Owns: building and caching the guest kernels.
#   usage: tests/vm/build-kernel.sh 7.2|7.3      (prints the cache directory on stdout)
# 7.2 is Debian's linux-source-7.2 from sid (the simulator's "legacy" profile), 7.3 is linux-source-7.3
# from trixie-backports ("current"). The source package is fetched through a private apt configuration
# under the cache directory; the machine's own apt sources are only read (for the mirror's address),
# never changed. Result: ~/.cache/kube-dmem/kernels/<package version>-<sha of kernel.config>/ holding
# bzImage, config and build/ (the configured and built tree, for out-of-tree modules), and .complete.
# A cached kernel is reused without any network access; KUBE_DMEM_KERNEL_REFRESH=1 asks the mirror for
# the newest source version first, KUBE_DMEM_KERNEL_SOURCE_VERSION=V pins one (and needs no network
# when its .deb is already in the private apt cache).
# The container node (tests/node/build-kernel.sh) builds with this script too, from its own fragment
# into its own cache directory: KUBE_DMEM_KERNEL_FRAGMENT (default tests/vm/kernel.config) and
# KUBE_DMEM_KERNEL_CACHE_NAME (default kernels; the node's is node-kernels).
set -euo pipefail

series=${1:?usage: build-kernel.sh 7.2|7.3}
case "$series" in
  7.2) suite=sid ;;
  7.3) suite=trixie-backports ;;
  *) echo "build-kernel: unknown kernel series '$series' (7.2 or 7.3)" >&2; exit 2 ;;
esac
for tool in apt-get apt-cache dpkg-deb make gcc flex bison bc xz flock; do
  command -v "$tool" >/dev/null || { echo "build-kernel: missing $tool (see tests/vm/prereqs.sh)" >&2; exit 1; }
done
pkg=linux-source-$series
here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBE_DMEM_CACHE:-$HOME/.cache/kube-dmem}
fragment=${KUBE_DMEM_KERNEL_FRAGMENT:-$here/kernel.config}
frag_sha=$(sha256sum "$fragment" | cut -c1-12)
kernels=$cache/${KUBE_DMEM_KERNEL_CACHE_NAME:-kernels}
log() { echo "build-kernel[${KUBE_DMEM_KERNEL_CACHE_NAME:-kernels}/$series]: $*" >&2; }

# --- the cached result, if any (no network) --------------------------------------------------------
cached() {
  local want=${KUBE_DMEM_KERNEL_SOURCE_VERSION:-} d best=
  for d in "$kernels"/*-"$frag_sha"; do
    if [ ! -f "$d/.complete" ] || [ "$(cat "$d/series")" != "$series" ]; then continue; fi
    if [ -n "$want" ] && [ "$(cat "$d/source-version")" != "$want" ]; then continue; fi
    best=$d
  done
  [ -n "$best" ] && echo "$best"
}
if [ "${KUBE_DMEM_KERNEL_REFRESH:-0}" != 1 ] && out=$(cached); then
  log "cached: $out"; echo "$out"; exit 0
fi

# --- a private apt configuration --------------------------------------------------------------------
mirror() {
  [ -n "${KUBE_DMEM_DEBIAN_MIRROR:-}" ] && { echo "$KUBE_DMEM_DEBIAN_MIRROR"; return; }
  local uris
  uris=$( { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
            sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; } |
          grep -v -e security -e '^$' | grep '/debian/\?$' || true)
  [ -n "$uris" ] || { echo "build-kernel: no Debian mirror in /etc/apt (set KUBE_DMEM_DEBIAN_MIRROR)" >&2; return 1; }
  head -1 <<<"$uris"
}
apt=$cache/apt
mkdir -p "$apt"/sources.list.d "$apt"/lists/partial "$apt"/cache/archives/partial "$kernels"
echo "deb $(mirror) $suite main" >"$apt/sources.list.$suite"
aptopts=(-o Dir::Etc::sourcelist="$apt/sources.list.$suite" -o Dir::Etc::sourceparts="$apt/sources.list.d"
         -o Dir::State::Lists="$apt/lists/$suite" -o Dir::Cache="$apt/cache"
         -o Acquire::Check-Valid-Until=false -o APT::Get::List-Cleanup=false)
[ "$(id -u)" -ne 0 ] || aptopts+=(-o APT::Sandbox::User=root)
mkdir -p "$apt/lists/$suite/partial"
if [ -n "${KUBE_DMEM_KERNEL_SOURCE_VERSION:-}" ] && [ "${KUBE_DMEM_KERNEL_REFRESH:-0}" != 1 ] &&
  [ -f "$apt/cache/archives/${pkg}_${KUBE_DMEM_KERNEL_SOURCE_VERSION//:/%3a}_all.deb" ]; then
  version=$KUBE_DMEM_KERNEL_SOURCE_VERSION
else
  log "apt-get update ($suite, private lists under $apt)"
  apt-get "${aptopts[@]}" -qq update >&2
  version=${KUBE_DMEM_KERNEL_SOURCE_VERSION:-$(apt-cache "${aptopts[@]}" show "$pkg" 2>/dev/null |
    sed -n 's/^Version: //p' | sort -V | tail -1)}
fi
[ -n "$version" ] || { echo "build-kernel: $pkg not found in $suite" >&2; exit 1; }
key=$version-$frag_sha
dest=$kernels/$key
if [ -f "$dest/.complete" ]; then log "cached: $dest"; echo "$dest"; exit 0; fi

# --- build (one builder per key) ---------------------------------------------------------------------
exec 9>"$kernels/.$key.lock"
flock 9
if [ -f "$dest/.complete" ]; then log "cached: $dest"; echo "$dest"; exit 0; fi
t0=$SECONDS
rm -rf "$dest"; mkdir -p "$dest"
deb_dir=$apt/cache/archives
deb=$deb_dir/${pkg}_${version//:/%3a}_all.deb
if [ ! -f "$deb" ]; then
  log "downloading $pkg=$version"
  (cd "$deb_dir" && apt-get "${aptopts[@]}" -qq download "$pkg=$version" >&2)
fi
[ -f "$deb" ] || { echo "build-kernel: download of $pkg=$version left no .deb" >&2; exit 1; }
log "unpacking $(basename "$deb")"
dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$pkg.tar.xz" | tar -xJ -C "$dest"
mv "$dest/$pkg" "$dest/build"

cd "$dest/build"
# Fixed build identity, so the same source and fragment give the same kernel (modulo the compiler).
export KBUILD_BUILD_TIMESTAMP=@0 KBUILD_BUILD_USER=kube-dmem KBUILD_BUILD_HOST=kube-dmem
mk() { nice -n 10 make ARCH=x86_64 -j"${KUBE_DMEM_BUILD_JOBS:-$(nproc)}" "$@" >&2; }
mk -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$fragment" >&2
mk -s olddefconfig
bad=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment" | while IFS= read -r line; do
  grep -qxF "$line" .config || echo "$line"; done)
[ -z "$bad" ] || { echo "build-kernel: kernel.config lines not in the final .config:" >&2; echo "$bad" >&2; exit 1; }
grep -q '^CONFIG_64BIT=y' .config
log "make bzImage modules (nice, -j${KUBE_DMEM_BUILD_JOBS:-$(nproc)})"
mk -s bzImage modules
cp arch/x86/boot/bzImage "$dest/bzImage"
cp .config "$dest/config"
echo "$series" >"$dest/series"
echo "$version" >"$dest/source-version"
echo "$((SECONDS - t0))" >"$dest/build-seconds"
touch "$dest/.complete"
log "built $dest in $((SECONDS - t0)) s"
echo "$dest"
