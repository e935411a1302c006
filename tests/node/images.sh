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
key=$(cat "$0" /bin/busybox | sha256sum | cut -c1-12)
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

# oci NAME CMD_JSON ROOTDIR
oci() {
  local name=$1 cmd=$2 root=$3 out=$work/oci-$1
  mkdir -p "$out/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
  python3 - "$out" "$work/layer.tar" "$name" "$cmd" <<'PY'
import hashlib, json, os, shutil, sys
out, layer, name, cmd = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs/sha256", d), "wb") as f: f.write(data)
    return "sha256:" + d, len(data)
ld, ls = blob(open(layer, "rb").read())
cfg = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
       "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
       "rootfs": {"type": "layers", "diff_ids": [ld]},
       "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/node/images.sh"}]}
cd, cs = blob(json.dumps(cfg, sort_keys=True).encode())
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]}
md, ms = blob(json.dumps(man, sort_keys=True).encode())
idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
       "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                      "platform": {"architecture": "amd64", "os": "linux"},
                      "annotations": {"io.containerd.image.name": name,
                                      "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
json.dump(idx, open(os.path.join(out, "index.json"), "w"), sort_keys=True)
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(out, "oci-layout"), "w"))
PY
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$out" -cf "$dest/${name##*/}.tar.tmp" .
  mv "$dest/${name##*/}.tar.tmp" "$dest/$(basename "${name%%:*}").tar"
  echo "$name" >>"$dest/names"
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
