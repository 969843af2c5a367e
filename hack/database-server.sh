#!/usr/bin/env bash
# A throwaway database server on loopback, for the tests: PostgreSQL or MariaDB from the
# Debian packages (postgresql, mariadb-server), in a temporary directory, run as the
# unprivileged user nobody (PostgreSQL refuses to run as root).
#
#   database-server.sh run postgresql|mariadb DIR [--until-stdin-closes]
#       Start the server in the foreground, create the user keyward with a random
#       password, print "ready URL" (URL: the server's admin URL, with that password and
#       no database), and stop the server (removing DIR) on SIGTERM/SIGINT, when it dies,
#       or — with --until-stdin-closes — when standard input closes, so a test process
#       that dies for any reason takes its server with it.
set -euo pipefail

log() { echo "database-server: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }

pid=

teardown() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
  exit "$status"
}

# Polls COMMAND until it succeeds, the server dies, or 60 seconds pass.
wait_until() {
  local what=$1; shift
  local deadline=$((SECONDS + 60))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$dir/server.log" >&2 || true; die "$what: the server exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$dir/server.log" >&2 || true; die "$what: not ready after 60s"; }
    sleep 0.1
  done
}

start_postgresql() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$bin/initdb" ] || die "PostgreSQL is not installed (apt-get install postgresql)"
  echo "$password" >"$dir/password"
  as_nobody "$bin/initdb" --no-sync -D "$dir/data" -U keyward --pwfile="$dir/password" \
    --auth=scram-sha-256 -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  setpriv --reuid=nobody --regid=nogroup --clear-groups --pdeathsig KILL -- \
    "$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$dir/server.log" 2>&1 &
  pid=$!
  wait_until "PostgreSQL" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
  url="postgres://keyward:$password@127.0.0.1:$port"
}

start_mariadb() {
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || die "MariaDB is not installed (apt-get install mariadb-server)"
  as_nobody mariadb-install-db --no-defaults --datadir="$dir/data" --user=nobody \
    --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
    || { cat "$dir/install.log" >&2; die "mariadb-install-db failed"; }
  setpriv --reuid=nobody --regid=nogroup --clear-groups --pdeathsig KILL -- \
    /usr/sbin/mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysql.sock" \
    --port="$port" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$dir/mariadb.pid" \
    --tmpdir="$dir" --log-error="$dir/server.log" --innodb-buffer-pool-size=32M \
    --innodb-flush-log-at-trx-commit=0 --skip-log-bin >/dev/null 2>&1 &
  pid=$!
  wait_until "MariaDB" mariadb-admin --no-defaults -S "$dir/mysql.sock" -u root ping
  mariadb --no-defaults -S "$dir/mysql.sock" -u root -e \
    "CREATE USER 'keyward'@'127.0.0.1' IDENTIFIED BY '$password'; GRANT ALL ON *.* TO 'keyward'@'127.0.0.1';"
  url="mysql://keyward:$password@127.0.0.1:$port"
}

run() {
  local engine=$1
  dir=$2
  local until_stdin_closes=${3:-}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chown nobody:nogroup "$dir"
  cd "$dir"
  trap teardown EXIT
  trap 'exit 0' INT TERM
  port=$(free_port)
  password=$(openssl rand -hex 16)
  case "$engine" in
    postgresql) start_postgresql ;;
    mariadb) start_mariadb ;;
    *) die "unknown engine $engine" ;;
  esac
  echo "ready $url"
  log "ready: $engine on 127.0.0.1:$port in $dir"
  if [ "$until_stdin_closes" = --until-stdin-closes ]; then
    # A background command's standard input is /dev/null: read a copy of ours.
    exec 3<&0
    (read -r _ <&3 || true) &
    wait -n "$pid" $! || true
  else
    wait "$pid" || true
  fi
}

case "${1:-}" in
  run) shift; [ $# -ge 2 ] || die "usage: $0 run postgresql|mariadb DIR [--until-stdin-closes]"; run "$@" ;;
  *) die "usage: $0 run postgresql|mariadb DIR [--until-stdin-closes]" ;;
esac
