#!/usr/bin/env bash
# `make demo`: a throwaway control plane in .demo/, the CRDs and examples/ applied, the
# operator running against it, and what it reports. `make demo-down` stops it all.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.demo
cluster=$dir/cluster

kubectl_() { "$bin/kubectl" --kubeconfig "$cluster/kubeconfig" "$@"; }

up() {
  bin=${KUBEBUILDER_ASSETS:-$("$root/hack/test-bins.sh")}
  (cd "$root" && cargo build --quiet --bin keyward)
  down >/dev/null 2>&1 || true
  mkdir -p "$dir"
  echo "==> starting a local control plane in $cluster"
  KUBEBUILDER_ASSETS=$bin "$root/hack/control-plane.sh" up "$cluster" >/dev/null
  echo "==> applying crds/ and examples/"
  kubectl_ apply -f "$root/crds/"
  kubectl_ wait --for=condition=Established crd --all --timeout=60s >/dev/null
  kubectl_ apply -f "$root/examples/"
  echo "==> running the operator (log: $dir/operator.log)"
  KUBECONFIG=$cluster/kubeconfig setsid "$root/target/debug/keyward" run >"$dir/operator.log" 2>&1 </dev/null &
  echo $! >"$dir/operator.pid"
  kubectl_ wait --for=jsonpath='{.status.observedGeneration}'=1 oac,ek --all -A --timeout=60s >/dev/null
  echo
  kubectl_ get oac,ek -A
  cat <<DONE

The control plane and the operator keep running. Try:
  export KUBECONFIG=$cluster/kubeconfig
  $bin/kubectl describe oac developer-portal
Stop everything with: make demo-down
DONE
}

down() {
  if [ -f "$dir/operator.pid" ]; then
    kill -TERM "$(cat "$dir/operator.pid")" 2>/dev/null || true
    rm -f "$dir/operator.pid"
  fi
  "$root/hack/control-plane.sh" down "$cluster"
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 1 ;;
esac
