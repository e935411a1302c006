#!/usr/bin/env bash
# Owns: which kernel the real-kernel tests boot for a series.
#   usage: tests/vm/kernel.sh 7.2|7.3      (prints the cache directory on stdout, like build-kernel.sh)
# 7.3 is the container node's kernel (tests/node/build-kernel.sh): its fragment holds every line of
# tests/vm/kernel.config and adds what a node needs, so one cold build serves both suites instead of
# two 7.3 builds of 5-15 minutes each. The check below keeps that true: a line of this directory's
# fragment missing from the node kernel's final .config fails here, before any test runs.
# 7.2 (the legacy profile, no node on it) is tests/vm/kernel.config on tinyconfig.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
series=${1:?usage: kernel.sh 7.2|7.3}
case "$series" in
  7.3) kdir=$("$here/../node/build-kernel.sh" 7.3) ;;
  *) exec "$here/build-kernel.sh" "$series" ;;
esac
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$here/kernel.config" | while IFS= read -r line; do
  grep -qxF "$line" "$kdir/config" || echo "$line"; done)
if [ -n "$missing" ]; then
  echo "vm/kernel: the node kernel $kdir lacks lines of tests/vm/kernel.config:" >&2
  echo "$missing" >&2
  exit 1
fi
echo "$kdir"
