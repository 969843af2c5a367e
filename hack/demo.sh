#!/usr/bin/env bash
# `make demo`: a throwaway control plane in .demo/, the CRDs and examples/ applied, the
# operator running against it, the job runner playing the kubelet for re-encryption
# Jobs (there is no kubelet here), and what it reports. `make demo-down` stops it all.
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
  echo "==> running the job runner for re-encryption Jobs (log: $dir/job-runner.log)"
  KUBEBUILDER_ASSETS=$bin setsid python3 "$root/hack/job-runner.py" --kubeconfig "$cluster/kubeconfig" \
    --keyward "$root/target/debug/keyward" --log-dir "$dir/jobs" >"$dir/job-runner.out" 2>"$dir/job-runner.log" </dev/null &
  echo $! >"$dir/job-runner.pid"
  for _ in $(seq 1 60); do
    grep -q "job-runner ready" "$dir/job-runner.out" 2>/dev/null && break
    sleep 1
  done
  echo "==> running the operator (log: $dir/operator.log)"
  KUBECONFIG=$cluster/kubeconfig setsid "$root/target/debug/keyward" run \
    --job-node-selector keyward.io/job-runner=true \
    --job-toleration keyward.io/job-runner=true:NoSchedule >"$dir/operator.log" 2>&1 </dev/null &
  echo $! >"$dir/operator.pid"
  kubectl_ wait --for=jsonpath='{.status.observedGeneration}'=1 oac,ek --all -A --timeout=60s >/dev/null
  echo
  kubectl_ get oac,ek -A
  cat <<DONE

The control plane, the operator and the job runner keep running. Try:
  export KUBECONFIG=$cluster/kubeconfig
  $bin/kubectl describe oac developer-portal
Rotate the demo key and watch every step:
  $bin/kubectl patch ek apim --type merge -p '{"spec":{"rotation":{"generation":1}}}'
  $bin/kubectl get ek apim -w
Stop everything with: make demo-down
DONE
}

down() {
  local process
  for process in operator job-runner; do
    if [ -f "$dir/$process.pid" ]; then
      kill -TERM "$(cat "$dir/$process.pid")" 2>/dev/null || true
      rm -f "$dir/$process.pid"
    fi
  done
  "$root/hack/control-plane.sh" down "$cluster"
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 1 ;;
esac
