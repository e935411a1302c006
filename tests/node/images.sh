#!/usr/bin/env bash
# Owns: the node's local OCI images, made without any registry: `busybox` (the host's busybox-static,
# with /bin/sh) and `pause` (a 20-line static C program: the CRI sandbox image). Each is an OCI image
# layout in a tar with one uncompressed layer, named by the `io.containerd.image.name` annotation, for
# `ctr -n k8s.io images import`. Reproducible: fixed mtimes, owners and ordering.
#   usage: tests/node/images.sh      (prints the cache directory holding busybox.tar, pause.tar, names)
# Cache: ~/.cache/kube-dmem/node-images/<sha of this script + busybox binary>/.
# Names: localhost/kube-dmem/busybox:1 and localhost/kube-dmem/pause:1 (pods use imagePullPolicy: Never).
set -euo pipefail

for t in gcc sha256sum tar python3; do
  command -v "$t" >/dev/null || { echo "node/images: missing $t" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "node/images: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
case "$(/bin/busybox 2>&1 | head -1)" in BusyBox*) ;; *) echo "node/images: /bin/busybox does not run" >&2; exit 1 ;; esac
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || { echo "node/images: /bin/busybox is not static" >&2; exit 1; }
cache=${KUBE_DMEM_CACHE:-$HOME/.cache/kube-dmem}
key=$(cat "$0" "$(dirname "$0")/oci.sh" /bin/busybox | sha256sum | cut -c1-12)
dest=$cache/node-images/$key
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi
rm -rf "$dest"; mkdir -p "$dest"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

cat >"$work/pause.c" <<'C'
/* The sandbox ("pause") process: sleep until SIGINT/SIGTERM, reap zombies. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction s = {0}, c = {0};
  s.sa_handler = stop; sigaction(SIGINT, &s, NULL); sigaction(SIGTERM, &s, NULL);
  c.sa_handler = reap; c.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &c, NULL);
  for (;;) pause();
}
C
gcc -static -Os -s -o "$work/pause" "$work/pause.c"

# shellcheck source=tests/node/oci.sh
. "$(dirname "$0")/oci.sh"
# oci NAME CMD_JSON ROOTDIR
oci() {
  oci_image "$1" "$3" "$dest/$(basename "${1%%:*}").tar" "{\"Cmd\": $2, \"Env\": [\"PATH=/bin\"]}"
  echo "$1" >>"$dest/names"
}
mkdir -p "$work/bb/bin" "$work/bb/tmp" "$work/pa"
cp /bin/busybox "$work/bb/bin/busybox"
ln -s busybox "$work/bb/bin/sh"
chmod 1777 "$work/bb/tmp"
oci localhost/kube-dmem/busybox:1 '["/bin/sh"]' "$work/bb"
cp "$work/pause" "$work/pa/pause"
oci localhost/kube-dmem/pause:1 '["/pause"]' "$work/pa"
touch "$dest/.complete"
echo "node/images: built $dest ($(du -h "$dest"/*.tar | tr '\t\n' ': '))" >&2
echo "$dest"
