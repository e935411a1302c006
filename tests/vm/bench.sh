#!/usr/bin/env bash
# Owns: the real-kernel benchmark (not part of test.sh or CI): the agent's steady-state round on a
# full node (110 pod cgroups x 2 regions), timed on each kernel in the VM and on the in-process
# simulator in the same guest (same emulated CPU), and the simulator on the host; a new pod
# cgroup -> inotify -> its limits verified, with a round of that pod alone and of every pod; plus
# what the harness costs (kernel build cold/warm, VM boot to command). Prints a table.
#   usage: tests/vm/bench.sh [ROUNDS]          (default 200; KUBE_DMEM_KERNELS as in test.sh)
# Built with --release (the agent ships in release; KUBE_DMEM_BENCH_PROFILE=debug for a debug build).
# The VM is qemu TCG (software emulation): its absolute times are those of an emulated CPU; the
# kernel/simulator ratio in the same guest is the number to compare. The guest kernel has no usable
# clocksource of its own (no HPET/ACPI in tinyconfig, TSC uncalibrated: 4 ms jiffies), so the
# guest is told the host's TSC frequency and to trust its TSC (VM_APPEND); checked: `sleep 10` in
# the guest measures 10.19 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
rounds=${1:-200}
read -ra series_list <<<"${KUBE_DMEM_KERNELS:-7.3 7.2}"

"$here/prereqs.sh" >/dev/null
profile=${KUBE_DMEM_BENCH_PROFILE:-release}
build=(cargo test -p kube-dmem-device-plugin --test real_kernel --no-run)
[ "$profile" = debug ] || build+=(--release)
bin=$("${build[@]}" --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*real_kernel-[^"]*"' | tail -1 | cut -d'"' -f4) || true
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "bench.sh: could not build the real_kernel test binary:" >&2
  "${build[@]}" >&2 || true
  exit 1
fi

khz=$(awk -F': *' '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
if [ -n "$khz" ] && grep -q constant_tsc /proc/cpuinfo; then
  export VM_APPEND="tsc_early_khz=$khz tsc=reliable clocksource=tsc"
else
  echo "bench.sh: no constant TSC on the host; guest times have 4 ms resolution" >&2
fi

rows=() notes=() newpods=()
row() { rows+=("$(printf '| %s | %s | %s | %s |' "$@")"); }
# Column N (4 median, 5 p99, in us) of the BENCH line whose name matches K, in ms.
field() { awk -F'\t' -v n="$2" -v k="$3" '$1 == "BENCH" && $2 ~ k { printf "%.2f", $n / 1000 }' <<<"$1"; }

host=$("$bin" --bench "$rounds")
row "simulator, host (native CPU)" "$(field "$host" 4 simulator) ms" "$(field "$host" 5 simulator) ms" "-"
for s in "${series_list[@]}"; do
  t=$EPOCHREALTIME
  kdir=$("$here/kernel.sh" "$s" 2>/dev/null)
  warm=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  cold=$(cat "$kdir/build-seconds" 2>/dev/null || echo "?")
  notes+=("kernel $s build: cold ${cold} s (recorded when the cached kernel was built), warm ${warm} s")
  err=$(mktemp)
  out=$("$here/run.sh" "$s" -- "$bin" --bench "$rounds" 2>"$err") || {
    cat "$err" >&2
    echo "$out" >&2
    rm -f "$err"
    exit 1
  }
  boot=$(sed -n 's/.*boot-to-command \([0-9.]*\) s.*total \([0-9.]*\) s.*/\1 s (qemu start to power-off \2 s)/p' "$err")
  rm -f "$err"
  notes+=("VM $s: boot-to-command ${boot:-?}")
  km=$(field "$out" 4 kernel) kp=$(field "$out" 5 kernel)
  sm=$(field "$out" 4 simulator) sp=$(field "$out" 5 simulator)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  row "kernel $s, VM (TCG)" "$km ms" "$kp ms" "$(ratio "$km" "$sm") x (p99 $(ratio "$kp" "$sp") x)"
  row "simulator, same VM ($s run)" "$sm ms" "$sp ms" "1"
  # NEWPOD lines: column 3 says which round, 4 median, 5 p99 (us).
  newpod() { awk -F'\t' -v n="$2" -v k="$3" '$1 == "NEWPOD" && $3 == k { printf "%.2f", $n / 1000 }' <<<"$1"; }
  am=$(newpod "$out" 4 "pod alone") ap=$(newpod "$out" 5 "pod alone")
  wm=$(newpod "$out" 4 "every pod") wp=$(newpod "$out" 5 "every pod")
  newpods+=("$(printf '| kernel %s, VM (TCG) | %s ms | %s ms | %s ms | %s ms | %s x |' "$s" "$am" "$ap" "$wm" "$wp" "$(ratio "$wp" "$ap")")")
done

echo
echo "Agent round, steady state, 110 pod cgroups x 2 regions, $rounds rounds each ($profile build):"
echo
echo "| Backend | Median | p99 | Kernel / simulator in the same VM |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "New pod cgroup (mkdir) -> inotify event -> its limits written and read back, on that full node:"
echo
echo "| Kernel | Round of the pod alone: median | p99 | Round of every pod: median | p99 | p99 ratio |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${newpods[@]}"
echo
printf '%s\n' "${notes[@]}"
