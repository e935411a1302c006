#!/usr/bin/env bash
# Fetches what tests/nri/real-containerd.sh runs, without installing anything on the machine:
# containerd 2.x (with ctr and the runc shim) and busybox-static from Debian sid through a PRIVATE
# apt configuration (the machine's own sources are never touched; the mirror host is read from
# them), and a runc that runs on this machine (sid's, or the machine's own distribution's when
# sid's needs a newer glibc). Each .deb is unpacked with dpkg-deb -x.
#
#   tests/nri/fetch-runtime.sh DEST      # then: RUNTIME_DIR=DEST tests/nri/real-containerd.sh
set -euo pipefail
dest=${1:?usage: fetch-runtime.sh DEST}
mkdir -p "$dest"; dest=$(cd "$dest" && pwd)
work=$dest/.apt; mkdir -p "$work"/{lists/partial,cache/archives/partial,parts,debs}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || { echo "fetch-runtime: no Debian mirror found in the machine's apt sources" >&2; exit 1; }
echo "deb [trusted=yes] $mirror sid main" > "$work/sources.list"
apt_sid=(apt-get -o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts="$work/parts"
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Acquire::Check-Valid-Until=false)
"${apt_sid[@]}" update >/dev/null
(cd "$work/debs" && "${apt_sid[@]}" download containerd busybox-static runc)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$dest/root"; done
mkdir -p "$dest/bin"
for b in containerd ctr containerd-shim-runc-v2; do ln -sf "$dest/root/usr/bin/$b" "$dest/bin/$b"; done
ln -sf "$dest/root/usr/bin/busybox" "$dest/busybox"
runc=$dest/root/usr/sbin/runc
if ! "$runc" --version >/dev/null 2>&1; then
  echo "fetch-runtime: sid's runc does not run here ($("$runc" --version 2>&1 | head -1)); using the machine's distribution's runc" >&2
  (cd "$work/debs" && rm -f runc_*.deb && apt-get download runc)
  mkdir -p "$dest/host-runc" && dpkg-deb -x "$work"/debs/runc_*.deb "$dest/host-runc"
  runc=$dest/host-runc/usr/sbin/runc
fi
ln -sf "$runc" "$dest/bin/runc"
"$dest/bin/runc" --version | head -1
"$dest/bin/containerd" --version
