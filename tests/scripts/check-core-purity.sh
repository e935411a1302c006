#!/usr/bin/env bash
# Core modules (a `//!` header that says CORE and never EDGE, and the whole crds library) take
# inputs as values and time as an argument. This check fails when one of them names an I/O or clock
# API in code (docs/contributing.md §2). Comments are not code, and test modules are exempt: the scan stops at
# the first `#[cfg(test)]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
forbidden='std::fs|tokio::fs|kube::Api|kube::Client|tonic::transport|Instant::now|Timestamp::now|SystemTime::now|std::net|tokio::net'
status=0
while IFS= read -r file; do
  # Only the non-test part of the file counts.
  hits=$(awk '/^#\[cfg\(test\)\]/{exit} /^[[:space:]]*\/\//{next} {print FILENAME":"NR": "$0}' "$file" \
    | grep -E "$forbidden" || true)
  if [ -n "$hits" ]; then
    echo "core module uses I/O or a clock: $hits"
    status=1
  fi
done < <( { grep -rlE '^//!.*\bCORE\b' --include='*.rs' crds operator device-plugin 2>/dev/null \
              | xargs -r grep -LE '^//!.*\bEDGE\b';
            find crds/src -name '*.rs' -not -path '*/bin/*'; } | sort -u)
[ "$status" -eq 0 ] && echo "core purity: ok"
exit "$status"
