#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Stages, least powerful first:
#   1. formatting and lints
#   2. the core-purity check (core modules never do I/O or read clocks)
#   3. every unit, simulator and FUSE test in the workspace
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "core modules stay pure"
bash tests/scripts/check-core-purity.sh

# The e2e crate needs a running control plane; its own stage below brings one up.
step "cargo test --workspace (unit, simulator, FUSE, gRPC)"
cargo test --workspace --locked --exclude kube-dmem-e2e
