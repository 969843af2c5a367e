#!/usr/bin/env bash
# The chart checks that need no cluster (`make lint` runs them):
#   - helm lint, with the default values and with ci/full-values.yaml (every option);
#   - README.md is what helm-docs generates from README.md.gotmpl and values.yaml;
#   - Chart.yaml's appVersion (the default image tag) is Cargo.toml's version;
#   - files/crds.yaml is the repository's crds/keyward.yaml, byte for byte;
#   - every file of ci/bad-values/ makes `helm template` fail, and the message holds
#     each of the file's `# expect:` lines (the value it names);
#   - the PrometheusRule's groups, rendered with ci/full-values.yaml (every threshold
#     changed), pass `promtool check rules` (hack/alert-tests.sh tests the defaults).
# helm and helm-docs come from $KUBEBUILDER_ASSETS when it has them, else from
# hack/test-bins.sh, which builds them once into its cache.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/keyward
failed=0
fail() { echo "chart-lint: $*" >&2; failed=1; }

assets=${KUBEBUILDER_ASSETS:-}
if [ -z "$assets" ] || [ ! -x "$assets/helm" ] || [ ! -x "$assets/helm-docs" ]; then
  assets=$(hack/test-bins.sh --with-helm --with-helm-docs)
fi
helm=$assets/helm
helm_docs=$assets/helm-docs

echo "chart-lint: helm lint"
"$helm" lint --strict "$chart" --namespace keyward >/dev/null || fail "helm lint failed (default values)"
"$helm" lint --strict "$chart" --namespace keyward -f "$chart/ci/full-values.yaml" >/dev/null \
  || fail "helm lint failed (ci/full-values.yaml)"

echo "chart-lint: README.md"
if ! "$helm_docs" --chart-search-root "$chart" --log-level warning --dry-run \
  | diff -u "$chart/README.md" - >&2; then
  fail "$chart/README.md is not what helm-docs generates: run \`make chart-docs\` and commit it"
fi

echo "chart-lint: appVersion"
app_version=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$chart/Chart.yaml")
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$app_version" = "$crate_version" ] \
  || fail "$chart/Chart.yaml appVersion \"$app_version\" is not Cargo.toml's version \"$crate_version\""

echo "chart-lint: files/crds.yaml"
cmp -s crds/keyward.yaml "$chart/files/crds.yaml" \
  || fail "$chart/files/crds.yaml differs from crds/keyward.yaml: run \`make crds\`"

echo "chart-lint: ci/bad-values"
count=0
for values in "$chart"/ci/bad-values/*.yaml; do
  count=$((count + 1))
  name=${values#"$chart/"}
  mapfile -t expectations < <(sed -n 's/^# expect: //p' "$values")
  if [ ${#expectations[@]} -eq 0 ]; then
    fail "$name has no \`# expect:\` line"
    continue
  fi
  if output=$("$helm" template keyward "$chart" --namespace keyward -f "$values" 2>&1 >/dev/null); then
    fail "$name was accepted"
    continue
  fi
  for expected in "${expectations[@]}"; do
    [[ $output == *"$expected"* ]] || fail "$name: the refusal does not mention \"$expected\": $output"
  done
done
[ "$count" -gt 0 ] || fail "no values files in $chart/ci/bad-values"

echo "chart-lint: PrometheusRule (ci/full-values.yaml)"
if ! command -v promtool >/dev/null 2>&1; then
  fail "promtool not found: install Prometheus's promtool (Debian: apt-get install prometheus)"
else
  rules=$(mktemp)
  # The template writes `spec:` as a top-level line and the groups two spaces under it.
  "$helm" template keyward "$chart" --namespace keyward -f "$chart/ci/full-values.yaml" \
    --show-only templates/prometheusrule.yaml | sed -n '/^spec:$/,$p' | sed '1d; s/^  //' >"$rules"
  promtool check rules "$rules" >/dev/null || fail "promtool check rules refused the rendered PrometheusRule"
  rm -f "$rules"
fi

[ "$failed" -eq 0 ] && echo "chart-lint: ok ($count bad values files refused)"
exit "$failed"
