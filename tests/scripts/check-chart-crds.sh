#!/usr/bin/env bash
# The Helm chart ships the CRD as a byte-for-byte copy of the generated file (docs/contributing.md §11.1):
#   crds/dmemquotas.kube-dmem.io.yaml  ->  charts/kube-dmem/crds/dmemquotas.kube-dmem.io.yaml
# Without arguments this fails when the copy is missing, differs, or the chart's crds/ holds any
# other file (Helm would install it too). With --fix it makes the copy and removes strays.
# Regenerating the source itself is crdgen's job (a unit test in crds/ fails when it is stale).
#
#   tests/scripts/check-chart-crds.sh          # check (CI)
#   tests/scripts/check-chart-crds.sh --fix    # update the chart's copy
set -euo pipefail
cd "$(dirname "$0")/../.."

name=dmemquotas.kube-dmem.io.yaml
src=crds/$name
dst_dir=charts/kube-dmem/crds
dst=$dst_dir/$name

fix=false
case "${1:-}" in
  "") ;;
  --fix) fix=true ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--fix]" >&2; exit 2 ;;
esac

if [[ ! -f $src ]]; then
  echo "check-chart-crds: $src does not exist; generate it first:" >&2
  echo "  cargo run -q -p kube-dmem-crds --bin crdgen > $src" >&2
  exit 1
fi

# Files in the chart's crds/ other than the copy (Helm installs every file there).
strays=()
if [[ -d $dst_dir ]]; then
  while IFS= read -r -d '' f; do
    [[ $f == "$dst" ]] || strays+=("$f")
  done < <(find "$dst_dir" -mindepth 1 -maxdepth 1 ! -name .gitkeep -print0)
fi

if $fix; then
  mkdir -p "$dst_dir"
  cp "$src" "$dst"
  for f in "${strays[@]}"; do rm -rf -- "$f"; echo "check-chart-crds: removed stray $f"; done
  rm -f "$dst_dir/.gitkeep"
  echo "check-chart-crds: $dst updated from $src"
  exit 0
fi

status=0
if [[ ! -f $dst ]]; then
  echo "check-chart-crds: $dst is missing (the chart would install no CRD)." >&2
  status=1
elif ! cmp -s "$src" "$dst"; then
  echo "check-chart-crds: $dst differs from $src (the chart would install a stale CRD):" >&2
  diff -u "$dst" "$src" | head -n 40 >&2 || true
  status=1
fi
for f in "${strays[@]}"; do
  echo "check-chart-crds: unexpected $f in the chart's crds/ (Helm would install it)." >&2
  status=1
done
if [[ $status -ne 0 ]]; then
  echo "check-chart-crds: run 'tests/scripts/check-chart-crds.sh --fix' and commit the result." >&2
  exit 1
fi
echo "check-chart-crds: ok ($dst matches $src)"
