#!/usr/bin/env bash
# Core modules take inputs as values and time as an argument (docs/contributing.md §2). Core is a
# matter of WHERE a file lives, listed in tests/scripts/core-paths.txt (every `decide/` directory,
# the crds library, the simulator, a few pure files), not of what its header says. This check:
#   1. fails when a core file names an I/O or clock API in code (comments and test modules, from
#      the first `#[cfg(test)]` on, are exempt);
#   2. fails when a file whose `//!` header calls itself CORE lives outside the core paths, or a
#      file inside them calls itself EDGE: the layout and the headers must agree.
set -euo pipefail
cd "$(dirname "$0")/../.."
forbidden='std::fs|tokio::fs|kube::Api|kube::Client|tonic::transport|Instant::now|Timestamp::now|SystemTime::now|std::net|tokio::net|std::process|std::env::var'
status=0
core_files() {
  while IFS= read -r entry; do
    entry=${entry%%#*}
    entry=$(echo "$entry" | xargs)
    [ -z "$entry" ] && continue
    if [ -d "$entry" ]; then
      find "$entry" -name '*.rs' -not -path '*/bin/*' -not -path '*/tests/*'
    elif [ -f "$entry" ]; then
      echo "$entry"
    else
      echo "core-paths.txt names $entry, which does not exist" >&2
      return 1
    fi
  done < tests/scripts/core-paths.txt
}
# Every `decide/` directory is core, whether or not the list names it.
mapfile -t core < <({ core_files; find . -path ./target -prune -o -type d -name decide -print \
  | sed 's|^\./||' | while read -r d; do find "$d" -name '*.rs' -not -path '*/tests/*'; done; } | sort -u)
[ "${#core[@]}" -gt 0 ] || { echo "no core files found"; exit 1; }
for file in "${core[@]}"; do
  hits=$(awk '/^#\[cfg\(test\)\]/{exit} /^[[:space:]]*\/\//{next} {print FILENAME":"NR": "$0}' "$file" \
    | grep -E "$forbidden" || true)
  if [ -n "$hits" ]; then
    echo "core module uses I/O or a clock: $hits"
    status=1
  fi
  if grep -qE '^//!.*\bEDGE\b' "$file"; then
    echo "$file is in a core path but its header says EDGE"
    status=1
  fi
done
in_core() { local f; for f in "${core[@]}"; do [ "$f" = "$1" ] && return 0; done; return 1; }
while IFS= read -r file; do
  if ! in_core "$file"; then
    echo "$file says CORE in its header but lives outside the core paths (tests/scripts/core-paths.txt)"
    status=1
  fi
done < <(grep -rlE '^//! ?CORE\b' --include='*.rs' crds operator device-plugin kubectl-dmem 2>/dev/null | sort)
[ "$status" -eq 0 ] && echo "core purity: ok (${#core[@]} core files)"
exit "$status"
