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
  start_database
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
Rotate the demo key and watch every step (Backfilling, Staging, Promoting,
Reencrypting, Verifying, Retiring, Succeeded):
  $bin/kubectl patch ek apim --type merge -p '{"spec":{"rotation":{"generation":1}}}'
  $bin/kubectl get ek apim -w
$database_note
Stop everything with: make demo-down
DONE
}

# The API manager's database the example key re-encrypts: a local PostgreSQL with WSO2's
# table of OAuth applications, when the machine has PostgreSQL and we may start it as an
# unprivileged user; otherwise say how to get one.
start_database() {
  if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || [ "$(id -u)" != 0 ] \
    || ! command -v psql >/dev/null; then
    database_note="No local PostgreSQL was started (it needs the postgresql package and root, to run
it as an unprivileged user). Without one the rotation waits at Backfilling, saying why:
  sudo apt-get install postgresql && sudo make demo
or point Secret apim-db (key url) at a PostgreSQL of yours holding WSO2's tables."
    return
  fi
  echo "==> starting a local PostgreSQL for the API manager's database (log: $dir/postgresql.log)"
  setsid "$root/hack/database-server.sh" run postgresql "$dir/postgresql" \
    >"$dir/postgresql.out" 2>"$dir/postgresql.log" </dev/null &
  echo $! >"$dir/postgresql.pid"
  local url=
  for _ in $(seq 1 60); do
    url=$(sed -n 's/^ready //p' "$dir/postgresql.out" 2>/dev/null)
    [ -n "$url" ] && break
    sleep 1
  done
  [ -n "$url" ] || { echo "PostgreSQL did not start; see $dir/postgresql.log" >&2; exit 1; }
  psql -q "$url/postgres" -c "CREATE DATABASE apim_db"
  psql -q "$url/apim_db" -c "CREATE TABLE IDN_OAUTH_CONSUMER_APPS (ID INTEGER NOT NULL PRIMARY KEY, \
    CONSUMER_KEY VARCHAR(255), CONSUMER_SECRET VARCHAR(2048))"
  kubectl_ create secret generic apim-db --from-literal=url="$url/apim_db" \
    --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
  database_note="The API manager's database is a local PostgreSQL ($dir/postgresql); its table
IDN_OAUTH_CONSUMER_APPS is what the rotation re-encrypts, and what the census counts:
  $root/target/debug/keyward scan database --engine postgresql \\
    --url-file <($bin/kubectl get secret apim-db -o jsonpath='{.data.url}' | base64 -d)"
}

down() {
  local process
  for process in operator job-runner postgresql; do
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
