#!/usr/bin/env bash
# Checks the chart's observability files with Prometheus' own tools (docs/user-guide.md §9):
#   1. `promtool check rules` and `promtool test rules` on charts/kube-dmem/alerts/;
#   2. every PromQL expression of the Grafana dashboard parses: promtool cannot parse a bare
#      expression, so each panel query becomes a recording rule of a temporary rules file, with
#      Grafana's variables replaced ($__rate_interval and friends by 5m, $node-style variables,
#      which the dashboard uses only in regex matchers, by .*), checked with `promtool check rules`;
#   3. every panel has a unique id, a position, a data source and a query, and every kube_dmem_* metric the dashboard and the alerts use is
#      documented in docs/user-guide.md §6, so a renamed metric cannot leave them silently empty.
# Needs promtool (Debian/Ubuntu: `apt-get install prometheus`; or PROMTOOL=/path/to/promtool) and
# python3. Fails, with a message, when either is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { printf 'check-observability: FAILED: %s\n' "$*" >&2; exit 1; }

PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
[[ -n $PROMTOOL && -x $PROMTOOL ]] ||
  die "promtool not found: install it (Debian/Ubuntu: apt-get install prometheus) or set PROMTOOL=/path/to/promtool"
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed to read the dashboard JSON)"

ALERTS=charts/kube-dmem/alerts
DASHBOARD=charts/kube-dmem/dashboards/kube-dmem.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "==> promtool check rules $ALERTS/kube-dmem.rules.yaml"
"$PROMTOOL" check rules "$ALERTS/kube-dmem.rules.yaml" || die "alert rules do not pass promtool check rules"

echo "==> promtool test rules $ALERTS/kube-dmem.rules.test.yaml"
"$PROMTOOL" test rules "$ALERTS/kube-dmem.rules.test.yaml" || die "alert rule unit tests fail"

echo "==> dashboard queries parse ($DASHBOARD)"
python3 - "$DASHBOARD" "$tmp/dashboard.rules.yaml" <<'PY' || die "the dashboard is malformed (see above)"
import json, re, sys
dashboard_path, out_path = sys.argv[1], sys.argv[2]
with open(dashboard_path) as f:
    dash = json.load(f)
panels = []
def walk(items):
    for p in items:
        if p.get("type") == "row":
            walk(p.get("panels", []))
        else:
            panels.append(p)
walk(dash.get("panels", []))
if not panels:
    sys.exit("no panels in the dashboard")
rules, problems = [], []
ids = [p.get("id") for p in panels]
if len(set(ids)) != len(ids) or None in ids:
    problems.append(f"panel ids must be present and unique: {ids}")
for p in panels:
    if not p.get("gridPos") or not p.get("datasource"):
        problems.append(f"panel {p.get('id')} ({p.get('title')!r}) lacks gridPos or datasource")
    exprs = [t.get("expr", "") for t in p.get("targets", [])]
    if not any(e.strip() for e in exprs):
        problems.append(f"panel {p.get('id')} ({p.get('title')!r}) has no query")
    for i, e in enumerate(exprs):
        q = re.sub(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}", "5m", e)
        q = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*", ".*", q)
        rules.append({"record": f"dashboard:panel_{p.get('id')}_{i}", "expr": q})
if problems:
    sys.exit("\n".join(problems))
with open(out_path, "w") as f:
    # JSON is YAML; promtool reads it.
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
print(f"{len(rules)} queries in {len(panels)} panels")
PY
"$PROMTOOL" check rules --lint=none "$tmp/dashboard.rules.yaml" >/dev/null ||
  { "$PROMTOOL" check rules --lint=none "$tmp/dashboard.rules.yaml" || true
    die "a dashboard query does not parse (rule names are dashboard:panel_<panel id>_<query index>)"; }

echo "==> metrics used are documented (docs/user-guide.md)"
missing=0
for metric in $(grep -ohE 'kube_dmem_(agent|operator)_[a-z_]+' "$DASHBOARD" "$ALERTS/kube-dmem.rules.yaml" |
                sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  if ! grep -q "\`$metric\`" docs/user-guide.md; then
    echo "  not documented in docs/user-guide.md: $metric"
    missing=1
  fi
done
[[ $missing == 0 ]] || die "the dashboard or the alerts use metrics docs/user-guide.md §6 does not list"

echo "observability: ok"
