#!/usr/bin/env bash
# A throwaway Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated nodes that run pods).
#
#   control-plane.sh run DIR [--until-stdin-closes]
#       Start everything in the foreground, write DIR/kubeconfig, print
#       "ready DIR/kubeconfig", and stop everything (removing DIR) on SIGTERM/SIGINT,
#       when a component dies, or — with --until-stdin-closes — when standard input
#       closes, so a test process that dies for any reason takes its cluster with it.
#       SIGUSR1 stops kube-apiserver and SIGUSR2 starts it again (ready once
#       DIR/apiserver-started holds one more line), while the rest runs on: how a test
#       takes the API server away from watchers for real. DIR/etcd-url is etcd's URL.
#   control-plane.sh up DIR      Start in the background; returns once ready.
#   control-plane.sh down DIR    Stop what `up` started.
#
# Binaries come from $KUBEBUILDER_ASSETS when set, else from hack/test-bins.sh (which
# builds them once per pinned version into a cache outside the repository).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { echo "control-plane: $*" >&2; }
die() { log "$*"; exit 1; }

# Number of simulated nodes kwok manages.
NODES=${KEYWARD_TEST_NODES:-2}

assets() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    echo "$KUBEBUILDER_ASSETS"
  else
    "$here/test-bins.sh"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
names=()

# Starts a component in the background, logging to DIR/logs/NAME.log. Each one dies with
# this script even when it is SIGKILLed (parent-death signal).
start() {
  local name=$1; shift
  setpriv --pdeathsig KILL -- "$@" >"$dir/logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

teardown() {
  local status=$?
  trap - EXIT INT TERM
  local i
  for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" 2>/dev/null || true; done
  if [ "${KEYWARD_KEEP_CONTROL_PLANE:-}" = 1 ]; then
    log "kept $dir"
  else
    rm -rf "$dir"
  fi
  exit "$status"
}

# Polls an apiserver endpoint until it answers 200 or the timeout passes.
wait_for() {
  local what=$1 url=$2 timeout=$3 deadline=$((SECONDS + $3))
  until curl -fsk -H "Authorization: Bearer $token" "$url" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$dir"/logs/*.log >&2 || true
      die "$what not ready after ${timeout}s"
    fi
    check_alive
    sleep 0.2
  done
}

check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      tail -n 30 "$dir/logs/${names[$i]}.log" >&2 || true
      die "${names[$i]} exited"
    fi
  done
}

# The index of component NAME in pids/names.
index_of() {
  local i
  for i in "${!names[@]}"; do
    [ "${names[$i]}" = "$1" ] && { echo "$i"; return; }
  done
  die "no component $1"
}

kubectl_() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

run() {
  dir=$1
  local until_stdin_closes=${2:-}
  mkdir -p "$dir/logs" "$dir/pki"
  dir=$(cd "$dir" && pwd)
  trap teardown EXIT
  trap 'exit 0' INT TERM
  bin=$(assets)
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing"
  done

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  token=$(openssl rand -hex 24)
  echo "$token,keyward-admin,keyward-admin,system:masters" >"$dir/pki/tokens.csv"
  openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null

  start etcd "$bin/etcd" --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level warn

  echo "http://127.0.0.1:$etcd_port" >"$dir/etcd-url"
  apiserver=("$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$dir/pki" \
    --token-auth-file "$dir/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --allow-privileged=true)
  start kube-apiserver "${apiserver[@]}"

  local server="https://127.0.0.1:$api_port"
  wait_for kube-apiserver "$server/readyz" 120
  # The serving certificate the apiserver generated for itself (with its CA).
  local ca
  ca=$(base64 -w0 <"$dir/pki/apiserver.crt")
  cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: keyward-test
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: keyward-admin
  user:
    token: $token
contexts:
- name: keyward-test
  context:
    cluster: keyward-test
    user: keyward-admin
current-context: keyward-test
KUBECONFIG

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" \
    --service-account-private-key-file "$dir/pki/sa.key" \
    --root-ca-file "$dir/pki/apiserver.crt" \
    --controllers '*' --leader-elect=false --secure-port 0 \
    --use-service-account-credentials=false

  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/kubeconfig" --leader-elect=false --secure-port 0

  start kwok "$bin/kwok" --kubeconfig "$dir/kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 10.1.0.1 --cidr 10.2.0.0/16 --node-lease-duration-seconds 40 \
    --server-address 127.0.0.1:0

  local node
  for node in $(seq 1 "$NODES"); do
    kubectl_ apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$node
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-node-$node
    type: kwok
spec: {}
NODE
  done
  # Pods can be scheduled once kwok reports the nodes Ready and the namespace's
  # default service account exists.
  kubectl_ wait --for=condition=Ready node --all --timeout=60s >/dev/null
  wait_for "default service account" "$server/api/v1/namespaces/default/serviceaccounts/default" 60
  check_alive

  echo "$server" >"$dir/server"
  echo "ready $dir/kubeconfig"
  log "ready: $("$bin/kube-apiserver" --version) at $server (kubeconfig $dir/kubeconfig)"

  local watcher=()
  if [ "$until_stdin_closes" = --until-stdin-closes ]; then
    exec 3<&0
    (read -r _ <&3 || true) &
    watcher=($!)
  fi
  # Until a signal, a component dying, or standard input closing; SIGUSR1 and SIGUSR2
  # stop and start the API server (looked at every second, so a signal that comes just
  # before a wait is not left waiting).
  local stop_apiserver=0 start_apiserver=0 i tick
  trap 'stop_apiserver=1' USR1
  trap 'start_apiserver=1' USR2
  while :; do
    if [ "$stop_apiserver" = 1 ]; then
      stop_apiserver=0
      i=$(index_of kube-apiserver)
      # Killed, as a crash would: no graceful shutdown that keeps serving meanwhile.
      kill -KILL "${pids[$i]}" 2>/dev/null || true
      while kill -0 "${pids[$i]}" 2>/dev/null; do wait "${pids[$i]}" 2>/dev/null || true; done
      unset 'pids[i]' 'names[i]'
      log "kube-apiserver stopped"
      continue
    fi
    if [ "$start_apiserver" = 1 ]; then
      start_apiserver=0
      start kube-apiserver "${apiserver[@]}"
      wait_for kube-apiserver "$server/readyz" 120
      echo started >>"$dir/apiserver-started"
      log "kube-apiserver started again"
      continue
    fi
    sleep 1 &
    tick=$!
    wait -n "${pids[@]}" "${watcher[@]}" "$tick" 2>/dev/null || true
    kill "$tick" 2>/dev/null || true
    wait "$tick" 2>/dev/null || true
    # Woken by a signal to handle, by the tick, or by a component or standard input
    # ending. Which one is asked of the processes themselves: one wait may collect the
    # tick and the watcher together, and a later wait would no longer know the watcher.
    [ "$stop_apiserver" = 1 ] || [ "$start_apiserver" = 1 ] && continue
    for i in "${pids[@]}" "${watcher[@]}"; do kill -0 "$i" 2>/dev/null || break 2; done
  done
  check_alive
  [ ${#watcher[@]} -eq 0 ] || kill "${watcher[@]}" 2>/dev/null || true
}

up() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  setsid bash "$0" run "$dir" </dev/null >"$dir.log" 2>&1 &
  echo $! >"$dir.pid"
  local deadline=$((SECONDS + 300))
  until grep -q '^ready ' "$dir.log" 2>/dev/null; do
    kill -0 "$(cat "$dir.pid")" 2>/dev/null || { cat "$dir.log" >&2; die "control plane failed to start"; }
    [ "$SECONDS" -lt "$deadline" ] || die "control plane not ready after 300s; see $dir.log"
    sleep 0.5
  done
  echo "$dir/kubeconfig"
}

down() {
  local dir=$1
  dir=$(cd "$dir" 2>/dev/null && pwd) || { log "nothing running at $1"; return 0; }
  if [ -f "$dir.pid" ]; then
    local pid
    pid=$(cat "$dir.pid")
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    rm -f "$dir.pid"
  fi
  log "stopped"
}

case "${1:-}" in
  run) shift; [ $# -ge 1 ] || die "usage: $0 run DIR [--until-stdin-closes]"; run "$@" ;;
  up) shift; [ $# -eq 1 ] || die "usage: $0 up DIR"; up "$1" ;;
  down) shift; [ $# -eq 1 ] || die "usage: $0 down DIR"; down "$1" ;;
  *) die "usage: $0 run|up|down DIR" ;;
esac
