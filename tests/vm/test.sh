#!/usr/bin/env bash
# Owns: the real-kernel test stage, end to end (what CI calls):
#   prerequisites -> kernels 7.3 and 7.2 (cached) -> dmemtest driver -> the differential vectors
#   (device-plugin/tests/real_kernel.rs) in a VM on each kernel.
# Exits non-zero on any failure; prints how long each part took.
#   usage: tests/vm/test.sh [VECTOR...]      (default: every vector)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."

read -ra series_list <<<"${KUBE_DMEM_KERNELS:-7.3 7.2}"
timings=()
now() { echo "$EPOCHREALTIME"; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
step() { printf '\n==> %s\n' "$*"; }

step "prerequisites"
"$here/prereqs.sh"

for s in "${series_list[@]}"; do
  step "kernel $s"
  t=$(now)
  log=$(mktemp)
  { "$here/kernel.sh" "$s" 2>&1 >/dev/null; } | tee "$log" >&2
  kind=warm; grep -q 'build-kernel\[.*\]: built ' "$log" && kind=cold
  rm -f "$log"
  timings+=("kernel $s build ($kind): $(took "$t")")
done

step "test binary (cargo test --no-run)"
t=$(now)
build=(cargo test -p kube-dmem-device-plugin --test real_kernel --no-run)
bin=$("${build[@]}" --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*real_kernel-[^"]*"' | tail -1 | cut -d'"' -f4) || true
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "test.sh: could not build the real_kernel test binary:" >&2
  "${build[@]}" >&2 || true
  exit 1
fi
timings+=("test binary: $(took "$t")")

failed=()
for s in "${series_list[@]}"; do
  step "differential vectors on $s"
  t=$(now)
  err=$(mktemp)
  if "$here/run.sh" "$s" -- "$bin" "$@" 2>"$err"; then :; else failed+=("$s"); fi
  cat "$err" >&2
  boot=$(sed -n 's/.*boot-to-command \([0-9.]*\) s.*/\1 s/p' "$err")
  rm -f "$err"
  timings+=("vectors on $s: $(took "$t") (boot-to-command ${boot:-?})")
  if [ $# -eq 0 ]; then
    # The agent's first round on a freshly booted kernel, where nothing has enabled a controller
    # at the root yet (the full run above enables dmem there in T00, before the agent vectors).
    step "agent round on a fresh boot of $s (A1)"
    t=$(now)
    if "$here/run.sh" "$s" -- "$bin" A1; then :; else failed+=("$s (fresh boot)"); fi
    timings+=("agent on a fresh boot of $s: $(took "$t")")
  fi
done

step "timings"
printf '  %s\n' "${timings[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "test.sh: FAILED on kernel(s) ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all real-kernel tests passed"
