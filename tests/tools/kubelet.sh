#!/usr/bin/env bash
# Owns: building the kubelet from the Go module proxy at the Kubernetes version of tests/tools/k8s
# (k8s.io/kubernetes, v1.34.4 today), for the real-node VM (tests/node/). Kept apart from build.sh
# for now; see tests/node/README.md for how to fold it in.
#   tests/tools/kubelet.sh            # build if needed; prints the path of the kubelet binary
# The committed tests/tools/k8s/go.mod + go.sum cover only the four control-plane commands, so the
# kubelet is built in a copy of that module (under the cache) with cmd/kubelet added to its tool
# block: the go command resolves the kubelet's extra packages (cadvisor, cri-client, ...) inside the
# same module graph, so no version changes, and go.sum only gains lines (kept next to the binary as
# go.sum.kubelet, so they can be committed). Same ldflags/tags/GOCACHE/GOMODCACHE as build.sh.
# Cache: ${KUBE_DMEM_TOOLS_CACHE:-~/.cache/kube-dmem}/kubelet-<key>/kubelet (key: k8s/go.mod,
# k8s/go.sum, this script, `go version`). Env: GO, BUILD_P (default 2), NICE (default 15).
set -euo pipefail

TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[tools/kubelet %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $GO ]] || die "no Go toolchain (set GO=/path/to/go)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
CACHE_ROOT=${KUBE_DMEM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-dmem}
export GOCACHE=$CACHE_ROOT/gocache GOMODCACHE=$CACHE_ROOT/gomod
P=${BUILD_P:-2}
NICE=${NICE:-15}
GOVERSION=$("$GO" version)
KEY=$( { cat "$TOOLS/k8s/go.mod" "$TOOLS/k8s/go.sum" "$TOOLS/kubelet.sh"; echo "$GOVERSION"; } | sha256sum | cut -c1-16)
DIR=$CACHE_ROOT/kubelet-$KEY
if [[ -f $DIR/.complete ]]; then log "up to date: $DIR/kubelet"; echo "$DIR/kubelet"; exit 0; fi

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
if [[ -f $DIR/.complete ]]; then echo "$DIR/kubelet"; exit 0; fi
T0=$SECONDS
MOD=$DIR/mod
rm -rf "$MOD"; mkdir -p "$MOD"
cp "$TOOLS/k8s/go.mod" "$TOOLS/k8s/go.sum" "$MOD/"
# add cmd/kubelet to the tool block (regen.sh writes one)
grep -q '^tool (' "$MOD/go.mod" || die "tests/tools/k8s/go.mod has no tool block"
sed -i 's|^tool (|tool (\n\tk8s.io/kubernetes/cmd/kubelet|' "$MOD/go.mod"
cd "$MOD"
log "resolving cmd/kubelet's packages in the k8s module graph (go mod tidy; module proxy)"
"$GO" mod tidy >&2 || die "go mod tidy failed"
# The versions must not move: every require line of the committed go.mod must still be there.
changed=$(diff <(grep -E '^\s+\S+ v\S+' "$TOOLS/k8s/go.mod" | awk '{print $1, $2}' | sort) \
               <(grep -E '^\s+\S+ v\S+' go.mod | awk '{print $1, $2}' | sort) | grep '^<' || true)
[[ -z $changed ]] || die "adding the kubelet changed module versions:"$'\n'"$changed"
K8S_V=$("$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)
K8S_DATE=$("$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
[[ $K8S_V =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "unexpected k8s.io/kubernetes version '$K8S_V'"
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF+=" -X $p.gitVersion=$K8S_V -X $p.gitMajor=${BASH_REMATCH[1]} -X $p.gitMinor=${BASH_REMATCH[2]}"
  LDF+=" -X $p.gitTreeState=clean -X $p.buildDate=$K8S_DATE"
done
log "go build kubelet $K8S_V (-p $P, nice $NICE)"
GOFLAGS="-mod=readonly -buildvcs=false" nice -n "$NICE" "$GO" build -p "$P" -trimpath \
  -tags selinux,notest,grpcnotrace -ldflags "$LDF" -o "$DIR/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet \
  || die "building the kubelet failed"
mv -f "$DIR/kubelet.tmp" "$DIR/kubelet"
cp go.mod "$DIR/go.mod.kubelet"; cp go.sum "$DIR/go.sum.kubelet"
"$DIR/kubelet" --version >"$DIR/VERSION" 2>&1
echo "$((SECONDS - T0))" >"$DIR/build-seconds"
touch "$DIR/.complete"
log "built $DIR/kubelet ($(cat "$DIR/VERSION")) in $((SECONDS - T0)) s"
echo "$DIR/kubelet"
