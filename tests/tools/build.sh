#!/usr/bin/env bash
# Build the local control-plane tools (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, kwokctl, helm) from the Go module proxy, once per
# version set, into a cache OUTSIDE the checkout, and link it as tests/tools/bin.
#
#   tests/tools/build.sh            # build if needed, then (re)link tests/tools/bin
#   tests/tools/build.sh --print    # print the cache dir it would use and exit
#
# The cache dir is keyed on every go.mod/go.sum under tests/tools, this script and
# `go version`, so a version bump builds into a fresh dir while GOCACHE/GOMODCACHE
# (shared across keys) keep rebuilds incremental. A warm run only relinks.
#
# Env: KUBE_DMEM_TOOLS_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/kube-dmem),
#      GO (go binary; default `go` on PATH, else /usr/local/go/bin/go),
#      BUILD_P (go build -p, default 2), NICE (nice level, default 15).
# See tests/tools/README.md and docs/testing.md §5.
set -euo pipefail

TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[tools/build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $GO ]] || die "no Go toolchain (set GO=/path/to/go); Go >= 1.26 is required (kwok v0.8.0, helm v4, etcd v3.6.16)"

# Hermetic-ish build settings. GOTOOLCHAIN=local: never fetch a toolchain.
# -mod=readonly: go.mod/go.sum are committed and authoritative (with a complete go.sum the
# go command needs no checksum-database lookups, so this also works where sum.golang.org is
# unreachable; see docs/testing.md §5.6).
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
CACHE_ROOT=${KUBE_DMEM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-dmem}
export GOCACHE=$CACHE_ROOT/gocache GOMODCACHE=$CACHE_ROOT/gomod
P=${BUILD_P:-2}
NICE=${NICE:-15}

MODULES=(k8s etcd kwok helm)
GOVERSION=$("$GO" version)
KEY=$( {
  for m in "${MODULES[@]}"; do
    echo "== $m"; cat "$TOOLS/$m/go.mod" "$TOOLS/$m/go.sum"
  done
  echo "== build.sh"; cat "$TOOLS/build.sh"
  echo "== $GOVERSION"
} | sha256sum | cut -c1-16)
DIR=$CACHE_ROOT/tools-$KEY
BIN=$DIR/bin

if [[ ${1:-} == --print ]]; then echo "$DIR"; exit 0; fi

link_bin() {
  local link=$TOOLS/bin old
  touch "$BIN/.last-used"
  # prune binaries of other version sets unused for 14 days (GOCACHE/GOMODCACHE are left alone)
  for old in "$CACHE_ROOT"/tools-*; do
    [[ $old != "$DIR" && -n $(find "$old/bin/.last-used" -mtime +14 2>/dev/null) ]] && rm -rf "$old"
  done
  if [[ -d $link && ! -L $link ]]; then rm -rf "$link"; fi # a stale real dir (git-ignored output)
  ln -sfn "$BIN" "$link"
}

if [[ -f $BIN/.complete ]]; then
  link_bin
  log "up to date: $BIN (key $KEY)"
  log "tests/tools/bin -> $BIN"
  exit 0
fi

log "building tools into $BIN (key $KEY; $GOVERSION; -p $P; nice $NICE)"
log "GOCACHE=$GOCACHE GOMODCACHE=$GOMODCACHE"
mkdir -p "$BIN"
TMP=$(mktemp -d "$DIR/tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# version and release time (the module proxy's .info Time) of a module in a tools module
modver() { (cd "$TOOLS/$1" && "$GO" list -m -f "{{.Version}}" "$2"); }
modtime() { (cd "$TOOLS/$1" && "$GO" list -m -f "{{.Time.UTC.Format \"2006-01-02T15:04:05Z\"}}" "$2"); }

# gobuild <module dir> <ldflags> <name=pkg>...: builds into $TMP, then moves each binary into $BIN.
gobuild() {
  local mod=$1 ldf=$2; shift 2
  local spec name pkg t0=$SECONDS
  local need=()
  for spec in "$@"; do
    [[ -x $BIN/${spec%%=*} ]] || need+=("$spec")
  done
  if ((${#need[@]} == 0)); then log "$mod: already built"; return; fi
  log "$mod: downloading modules (if not cached)"
  (cd "$TOOLS/$mod" && "$GO" mod download) || die "$mod: go mod download failed"
  for spec in "${need[@]}"; do
    name=${spec%%=*} pkg=${spec#*=}
    log "$mod: go build $name ($pkg)"
    (cd "$TOOLS/$mod" && nice -n "$NICE" "$GO" build -p "$P" -trimpath -tags "${TAGS:-}" \
      -ldflags "$ldf" -o "$TMP/$name" "$pkg") || die "$mod: building $name failed"
    mv -f "$TMP/$name" "$BIN/$name"
    log "$mod: $name done ($((SECONDS - t0))s since $mod start)"
  done
}

T_ALL=$SECONDS

# --- Kubernetes (docs/testing.md §5.1): upstream version ldflags (both packages), default tags.
K8S_V=$(modver k8s k8s.io/kubernetes)
K8S_DATE=$(modtime k8s k8s.io/kubernetes)
[[ $K8S_V =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "unexpected k8s.io/kubernetes version '$K8S_V'"
K8S_LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDF+=" -X $p.gitVersion=$K8S_V -X $p.gitMajor=${BASH_REMATCH[1]} -X $p.gitMinor=${BASH_REMATCH[2]}"
  K8S_LDF+=" -X $p.gitTreeState=clean -X $p.buildDate=$K8S_DATE"
done
TAGS=selinux,notest,grpcnotrace gobuild k8s "$K8S_LDF" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kubectl=k8s.io/kubernetes/cmd/kubectl

# --- etcd (docs/testing.md §5.2): main package is the module root; default name would be "server".
ETCD_V=$(modver etcd go.etcd.io/etcd/server/v3)
gobuild etcd "-s -w" etcd=go.etcd.io/etcd/server/v3

# --- kwok + kwokctl (docs/testing.md §5.3): no ldflags needed (version is a constant).
KWOK_V=$(modver kwok sigs.k8s.io/kwok)
gobuild kwok "-s -w" kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl

# --- helm (docs/testing.md §5.4): upstream Makefile ldflags, else `helm version` says v4.x only.
HELM_V=$(modver helm helm.sh/helm/v4)
gobuild helm "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_V -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  helm=helm.sh/helm/v4/cmd/helm

{
  echo "# tests/tools/build.sh output; key $KEY"
  echo "kubernetes $K8S_V"
  echo "etcd $ETCD_V"
  echo "kwok $KWOK_V"
  echo "helm $HELM_V"
  echo "go $GOVERSION"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - T_ALL))s"
  echo "# --version output:"
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwokctl; do
    echo "$b: $("$BIN/$b" --version 2>&1 | head -1)"
  done
  echo "kubectl: $("$BIN/kubectl" version --client 2>&1 | head -1)"
  echo "helm: $("$BIN/helm" version --short 2>&1 | head -1)"
} > "$BIN/VERSIONS"
touch "$BIN/.complete"
link_bin
log "done in $((SECONDS - T_ALL))s; tests/tools/bin -> $BIN"
sed 's/^/    /' "$BIN/VERSIONS" >&2
