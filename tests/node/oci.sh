# shellcheck shell=bash
# Owns: writing one OCI image archive without a registry or a container engine, for
# `ctr -n k8s.io images import` (sourced by images.sh and product-images.sh).
#   oci_image NAME ROOTDIR OUT.tar CONFIG_JSON
# NAME is the image reference containerd records (`io.containerd.image.name`); ROOTDIR becomes the
# single uncompressed layer; CONFIG_JSON is the image config's `config` object (Entrypoint, Cmd, Env,
# User). Reproducible: fixed mtimes, owners and ordering, so the same inputs give the same digests.
oci_image() {
  local name=$1 root=$2 out=$3 config=$4 work
  work=$(mktemp -d)
  mkdir -p "$work/oci/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
  python3 - "$work/oci" "$work/layer.tar" "$name" "$config" <<'PY'
import hashlib, json, os, sys
out, layer, name, config = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs/sha256", d), "wb") as f: f.write(data)
    return "sha256:" + d, len(data)
ld, ls = blob(open(layer, "rb").read())
cfg = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
       "config": dict({"WorkingDir": "/"}, **config),
       "rootfs": {"type": "layers", "diff_ids": [ld]},
       "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/node/oci.sh"}]}
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
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/oci" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$work"
}
