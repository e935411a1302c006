#!/usr/bin/env bash
# The agent's NRI plugin (device-plugin/src/nri/) against a REAL containerd 2.x on this host.
#
# Starts containerd as root with its own root, state and NRI socket in a temp dir (NRI enabled,
# CRI with the native snapshotter, a locally built busybox image as both sandbox and workload
# image, no registry, no CNI: the pod uses host networking), runs the plugin (the `nri_probe`
# example: the real plugin code with a stand-in agent loop, recording each request it handled
# with its arrival time), then through CRI (tests/nri/cri-run, as the kubelet would) runs a pod
# whose container writes its start time. It asserts that:
#   1. the plugin registered (containerd's Configure and Synchronize reached it);
#   2. it saw RunPodSandbox and CreateContainer for that pod, with the limits in force, and
#      CreateContainer BEFORE the container's process started;
#   3. after containerd restarts (new socket), the plugin registers again by itself;
#   4. with a stuck agent loop the plugin still answers in time and the pod runs;
#   5. with the plugin gone the pod runs too.
#
#   tests/nri/fetch-runtime.sh /tmp/nrirt     # containerd, runc, busybox (private apt, no install)
#   RUNTIME_DIR=/tmp/nrirt tests/nri/real-containerd.sh
#
# Env: RUNTIME_DIR (bin/{containerd,ctr,containerd-shim-runc-v2,runc} and busybox, as
# fetch-runtime.sh lays them out), PROBE (the nri_probe binary; default: cargo builds it),
# CRI_RUN (default: go builds tests/nri/cri-run from the module proxy or cache), KEEP=1 keeps the
# temp dir. Fails loudly when a prerequisite is missing. Needs root, cgroups and mount rights.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { printf '[nri-real %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (containerd and runc)"
rt=${RUNTIME_DIR:?set RUNTIME_DIR (see tests/nri/fetch-runtime.sh)}
for b in containerd ctr containerd-shim-runc-v2 runc; do
  [[ -x $rt/bin/$b ]] || die "missing $rt/bin/$b (run tests/nri/fetch-runtime.sh $rt)"
done
[[ -x $rt/busybox ]] || die "missing $rt/busybox (a static busybox)"
"$rt/bin/runc" --version >/dev/null 2>&1 || die "runc does not run here: $("$rt/bin/runc" --version 2>&1 | head -1)"
[[ -d /sys/fs/cgroup ]] || die "no /sys/fs/cgroup"

if [[ -z ${PROBE:-} ]]; then
  log "building the nri_probe example"
  (cd "$repo" && cargo build -q -p kube-dmem-device-plugin --example nri_probe) || die "cargo build failed"
  PROBE=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]+)".*/\1/')/debug/examples/nri_probe
fi
[[ -x $PROBE ]] || die "no probe binary at $PROBE"
T=$(mktemp -d /tmp/kube-dmem-nri.XXXXXX)
if [[ -z ${CRI_RUN:-} ]]; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x $go ]] || die "no Go toolchain to build tests/nri/cri-run (or set CRI_RUN)"
  log "building cri-run"
  (cd "$here/cri-run" && GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod \
    "$go" build -o "$T/cri-run" .) || die "building tests/nri/cri-run failed"
  CRI_RUN=$T/cri-run
fi

pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Sandbox shm and rootfs mounts left by an interrupted run.
  { grep -o " $T[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [[ $rc -ne 0 ]]; then
    log "containerd log tail:"; tail -n 30 "$T/containerd.log" >&2 || true
    log "probe log tail:"; tail -n 30 "$T/probe.log" >&2 || true
    log "events:"; cat "$T/events" >&2 || true
  fi
  if [[ ${KEEP:-0} == 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
  exit "$rc"
}
trap cleanup EXIT

image=docker.io/library/kube-dmem-nri-probe:1
mkdir -p "$T/nri" "$T/out"
cat > "$T/config.toml" <<TOML
version = 3
root = "$T/root"
state = "$T/state"
[grpc]
  address = "$T/containerd.sock"
[ttrpc]
  address = "$T/containerd.sock.ttrpc"
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "$T/nri/nri.sock"
  plugin_path = "$T/nri/plugins"
  plugin_config_path = "$T/nri/conf.d"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
[plugins."io.containerd.cri.v1.runtime"]
  # Sandboxed build machines may forbid lowering oom_score_adj even to root.
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$image"
TOML

wait_for() { # seconds description command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  die "timed out after ${secs}s waiting for $what"
}
start_containerd() {
  rm -f "$T/nri/nri.sock"
  PATH=$rt/bin:$PATH "$rt/bin/containerd" --config "$T/config.toml" >>"$T/containerd.log" 2>&1 &
  pids+=($!); containerd_pid=$!
  wait_for 30 "containerd's NRI socket" test -S "$T/nri/nri.sock"
}
events() { grep -c " $1 " "$T/events" 2>/dev/null || true; }

log "starting containerd $("$rt/bin/containerd" --version | awk '{print $3}') in $T"
start_containerd
ctr=("$rt/bin/ctr" -a "$T/containerd.sock" -n k8s.io)
"$here/make-image.sh" "$rt/busybox" "$T/image.tar" "$image"
"${ctr[@]}" images import --local --snapshotter native "$T/image.tar" >/dev/null || die "image import failed"

log "starting the plugin"
: > "$T/events"
"$PROBE" "$T/nri/nri.sock" "$T/events" "$T/out" >"$T/probe.log" 2>&1 &
pids+=($!); probe_pid=$!
wait_for 15 "Configure and Synchronize" bash -c "grep -q ' Synchronize ' '$T/events' && grep -q ' Configure ' '$T/events'"
grep -q 'Registered with the NRI runtime' "$T/probe.log" || die "probe did not log its registration"
log "1/5 registered, configured and synchronized"

log "running a pod through CRI"
"$CRI_RUN" "$T/containerd.sock" "$image" "$T/out" ml train 1f0e2d3c-aaaa-bbbb-cccc-000000000001 -- \
  /bin/sh -c 'cat /out/ml.train > /out/at-start; date +%s > /out/started' \
  >"$T/cri-run.log" 2>&1 || { cat "$T/cri-run.log" >&2; die "cri-run failed"; }
# The stand-in loop appends a line to out/ml.train before it answers a round for ml/train, as the
# real loop writes the pod's dmem limits first; the container's first command copies the file.
# Two rounds (RunPodSandbox, then CreateContainer) must be there when the process starts.
[[ -f $T/out/started ]] || die "the container did not run its command"
rounds=$(grep -c '^round$' "$T/out/at-start" || true)
(( rounds >= 2 )) || die "the container's process started after only $rounds round(s) of the plugin"
line() { grep " $1 ml/train " "$T/events" | head -1 || true; }
sandbox=$(line RunPodSandbox); create=$(line CreateContainer)
[[ -n $sandbox ]] || die "the plugin never saw RunPodSandbox for ml/train"
[[ -n $create ]] || die "the plugin never saw CreateContainer for ml/train"
[[ $create == *" InForce" ]] || die "CreateContainer did not find the limits in force: $create"
container=$(awk '/^container / {print $2}' "$T/cri-run.log")
[[ $create == *" $container "* ]] || die "CreateContainer named another container than $container: $create"
created_at=${create%% *}; started=$(cat "$T/out/started")
(( created_at / 1000000000 <= started )) || die "CreateContainer ($created_at ns) after the process started ($started s)"
log "2/5 RunPodSandbox and CreateContainer seen; $rounds rounds ran before the container's process started"

log "restarting containerd"
configured=$(events Configure)
kill "$containerd_pid"; wait "$containerd_pid" 2>/dev/null || true
start_containerd
wait_for 20 "the plugin to register again" bash -c "[ \$(grep -c ' Configure ' '$T/events') -gt $configured ]"
log "3/5 re-registered after the runtime restarted"

run_pod() { # name
  "$CRI_RUN" "$T/containerd.sock" "$image" "$T/out" ml "$1" "1f0e2d3c-aaaa-bbbb-cccc-00000000000${#1}" -- \
    /bin/sh -c 'exit 0' >"$T/cri-run-$1.log" 2>&1 || { cat "$T/cri-run-$1.log" >&2; die "pod $1 did not run"; }
}
log "stuck agent loop: every round takes 10 s"
kill "$probe_pid"; wait "$probe_pid" 2>/dev/null || true
configured=$(events Configure)
NRI_PROBE_ROUND_DELAY_MS=10000 "$PROBE" "$T/nri/nri.sock" "$T/events" >>"$T/probe.log" 2>&1 &
pids+=($!); probe_pid=$!
wait_for 15 "the plugin to register" bash -c "[ \$(grep -c ' Configure ' '$T/events') -gt $configured ]"
begin=$(date +%s)
run_pod slow
slow=$(grep " CreateContainer ml/slow " "$T/events" | head -1 || true)
[[ $slow == *" TimedOut" ]] || die "expected a timed-out CreateContainer for ml/slow, got: '$slow'"
grep -q 'closing plugin\|plugin.*timed out\|context deadline exceeded' "$T/containerd.log" \
  && die "containerd saw the plugin miss its deadline"
log "4/5 stuck loop: pod ran after $(( $(date +%s) - begin )) s, the plugin answered before containerd's deadline"

log "plugin gone"
kill "$probe_pid"; wait "$probe_pid" 2>/dev/null || true
run_pod gone
log "5/5 pods run without the plugin"
log "PASS"
