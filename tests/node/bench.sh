#!/usr/bin/env bash
# Owns: the real-node benchmark, host side (not a CI stage: about 20 minutes under TCG). The same
# node, cluster and chart as the suite (e2e.sh); instead of the cases it runs
# tests/e2e/realnode/bench.rs, which prints a table (also kept as bench.txt in the results share).
#   usage: tests/node/bench.sh
# Env: KUBE_DMEM_NODE_BENCH_PODS (50), KUBE_DMEM_NODE_BENCH_WAVE (5 pods applied at a time),
#      KUBE_DMEM_NODE_BENCH_STEADY_S (300),
#      KUBE_DMEM_NODE_BENCH_STARTS (10), KUBE_DMEM_NODE_KEEP=DIR as for e2e.sh.
set -euo pipefail
exec "$(dirname "$0")/e2e.sh" --ignored --nocapture --exact bench::real_node_benchmark
