#!/usr/bin/env bash
# Owns: the host packages the real node needs beyond the real-kernel tests' (tests/vm/prereqs.sh):
# mmdebstrap (the guest's Debian userspace), openssl (the cluster's throw-away PKI), python3 and file
# (image assembly). Installs what is missing; a prerequisite that still fails is an error, never a skip.
set -euo pipefail
"$(dirname "$0")/../vm/prereqs.sh"
packages=(mmdebstrap openssl python3 file)
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "node/prereqs: installing ${missing[*]}"
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
for t in mmdebstrap openssl python3 file; do
  command -v "$t" >/dev/null || { echo "node/prereqs: $t is missing after install" >&2; exit 1; }
done
echo "node/prereqs: ok"
