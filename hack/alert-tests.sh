#!/usr/bin/env bash
# The chart's alerts, proven (`make alerts`, part of `make test`): renders the
# PrometheusRule with the default values, takes its rule groups (everything under
# `spec:`) into a Prometheus rules file, checks it with `promtool check rules`, then runs
# the unit tests of tests/alerts/ against it with `promtool test rules`. Each test file
# names the rules file `rules.yaml`, which this script writes beside copies of the tests.
# Every alert must have tests and a section in docs/operations.md, where its runbook_url
# points. It also checks that every query of the Grafana dashboard parses as PromQL, with its
# variables as the dashboard's "All" gives them ($namespace, $encryption_key: .*) and
# $__rate_interval as 1m (python3 reads the JSON).
# promtool comes from PATH (Debian: the `prometheus` package); helm as hack/chart-lint.sh
# finds it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "alert-tests: promtool not found: install Prometheus's promtool (Debian: apt-get install prometheus)" >&2
  exit 1
fi
assets=${KUBEBUILDER_ASSETS:-}
if [ -z "$assets" ] || [ ! -x "$assets/helm" ]; then
  assets=$(hack/test-bins.sh --with-helm)
fi
helm=$assets/helm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$helm" template keyward charts/keyward --namespace keyward \
  --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml >"$work/rule.yaml"
# The template writes `spec:` as a top-level line and the groups two spaces under it.
sed -n '/^spec:$/,$p' "$work/rule.yaml" | sed '1d; s/^  //' >"$work/rules.yaml"
grep -q '^groups:$' "$work/rules.yaml" || {
  echo "alert-tests: no rule groups under spec: in the rendered PrometheusRule" >&2
  exit 1
}

echo "alert-tests: promtool check rules"
promtool check rules "$work/rules.yaml"

echo "alert-tests: the dashboard's queries parse"
python3 - charts/keyward/files/keyward-dashboard.json >"$work/dashboard-rules.yaml" <<'PYTHON'
import json, sys

def panels(listed):
    for panel in listed:
        yield panel
        yield from panels(panel.get("panels", []))

dashboard = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in panels(dashboard["panels"]):
    for target in panel.get("targets", []):
        expr = target["expr"]
        for variable, value in (("$namespace", ".*"), ("$encryption_key", ".*"), ("$__rate_interval", "1m")):
            expr = expr.replace(variable, value)
        print(f"      - record: dashboard_panel_{panel['id']}_{target['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PYTHON
promtool check rules "$work/dashboard-rules.yaml"

cp tests/alerts/*.yaml "$work/"
tests=()
for test in tests/alerts/*.yaml; do tests+=("$work/$(basename "$test")"); done
[ ${#tests[@]} -gt 0 ] || { echo "alert-tests: no tests in tests/alerts" >&2; exit 1; }

# Every alert of the rules file has tests, a row in the README's table, and a section of
# docs/operations.md that its runbook_url points at (GitHub's anchor of a heading is its
# lowercased text).
mapfile -t alerts < <(sed -n 's/^ *- alert: //p' "$work/rules.yaml")
for alert in "${alerts[@]}"; do
  grep -q "alertname: $alert\$" tests/alerts/*.yaml || {
    echo "alert-tests: $alert has no test in tests/alerts" >&2
    exit 1
  }
  grep -q "^| \`$alert\` |" README.md || {
    echo "alert-tests: $alert has no row in the README's table of alerts" >&2
    exit 1
  }
  grep -q "^### $alert\$" docs/operations.md || {
    echo "alert-tests: $alert has no section (### $alert) in docs/operations.md" >&2
    exit 1
  }
  anchor=$(echo "$alert" | tr '[:upper:]' '[:lower:]')
  grep -q "runbook_url: .*/docs/operations.md#$anchor\$" "$work/rules.yaml" || {
    echo "alert-tests: the runbook_url of $alert does not point at docs/operations.md#$anchor" >&2
    exit 1
  }
done

echo "alert-tests: promtool test rules (${#alerts[@]} alerts)"
cd "$work"
promtool test rules "${tests[@]/#$work\//}"
