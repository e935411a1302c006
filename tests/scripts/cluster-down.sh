#!/usr/bin/env bash
# Stop the local control plane started by tests/scripts/cluster-up.sh and remove its state dir.
# Idempotent: safe to run when nothing is up. Same env as cluster-up.sh
# (KUBE_DMEM_E2E_DIR, default /tmp/kube-dmem-e2e; KUBE_DMEM_CLUSTER_NAME, default kube-dmem).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/tests/tools/bin
STATE=${KUBE_DMEM_E2E_DIR:-/tmp/kube-dmem-e2e}
NAME=${KUBE_DMEM_CLUSTER_NAME:-kube-dmem}

log() { printf '[cluster-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ $STATE == / || -z $STATE ]] && { log "refusing to remove state dir '$STATE'"; exit 1; }

export KWOK_WORKDIR=$STATE/kwok
CLUSTER_DIR=$KWOK_WORKDIR/clusters/$NAME

if [[ ! -e $STATE ]]; then
  log "nothing to do ($STATE does not exist)"
  rm -f "$STATE.lock"
  exit 0
fi

exec 9>"$STATE.lock"
flock -w 600 9 || { log "timed out waiting for the lock $STATE.lock"; exit 1; }

# Our component processes: pids from kwokctl's pid files whose command line points into this
# state dir (so a recycled pid is never touched). Collected BEFORE `kwokctl delete`, which removes
# the pid files and only sends SIGTERM without waiting.
ours() {
  local f pid
  shopt -s nullglob
  for f in "$KWOK_WORKDIR"/clusters/*/pids/*.pid; do
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$KWOK_WORKDIR/"; then echo "$pid"; fi
  done
}
mapfile -t pids < <(ours)

# 1. the normal way: kwokctl stops every component it started and removes the cluster dir
if [[ -f $CLUSTER_DIR/kwok.yaml && -x $BIN/kwokctl ]]; then
  log "kwokctl delete cluster $NAME"
  PATH=$BIN:$PATH "$BIN/kwokctl" --name "$NAME" delete cluster >&2 9>&- || log "kwokctl delete failed; stopping pids directly"
fi

# 2. make sure every one of them is gone (kwokctl missing or failed, half-created cluster, ...)
for pid in "${pids[@]}"; do
  if [[ -e /proc/$pid ]]; then kill "$pid" 2>/dev/null || true; fi
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 100); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
  if [[ -e /proc/$pid ]]; then
    log "pid $pid still alive after 10s; SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
done
((${#pids[@]} == 0)) || log "stopped ${#pids[@]} process(es): ${pids[*]}"

rm -rf "$STATE"
rm -f "$STATE.lock"
log "removed $STATE"
