#!/usr/bin/env bash
# `make demo`: a whole matchday through the real services.
#
# Starts a private redis-server and PostgreSQL under .state/ (unless REDIS_URL
# and DATABASE_URL are set), then runs `tally demo`, which migrates, seeds a
# small season, starts cron-gateway, scoring-worker and stats-worker as
# separate processes, records a matchday of results, calls the cron endpoint
# with the secret, waits until the leaderboard reflects every result, prints
# the leaderboard and a league table, and stops the services. Everything this
# script started is stopped on exit, success or not.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[demo] %s\033[0m\n' "$*" >&2; exit 1; }

scripts/ensure-deps.sh

say "building the binaries (cargo build --bins)"
cargo build --quiet --bins

state="$PWD/.state"
mkdir -p "$state"
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ "$status" = 0 ] || say "demo failed (exit $status); server logs are in $state"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_bin() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] || die "PostgreSQL server binaries not found: install the Debian package postgresql"
  echo "$found/$1"
}

if [ -z "${REDIS_URL:-}" ]; then
  port=$(free_port)
  mkdir -p "$state/redis"
  say "starting a private redis-server on 127.0.0.1:$port (AOF on, data in .state/redis)"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$state/redis" --appendonly yes --save '' \
    --logfile "$state/redis.log" --daemonize no &
  pids+=("$!")
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi

if [ -z "${DATABASE_URL:-}" ]; then
  port=$(free_port)
  run_as=()
  if [ "$(id -u)" = 0 ]; then run_as=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
  if [ ! -f "$state/pg/PG_VERSION" ]; then
    say "initialising a private PostgreSQL cluster in .state/pg"
    rm -rf "$state/pg"; mkdir -p "$state/pg"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$state/pg" && chmod o+x "$state" "$PWD"
    "${run_as[@]}" "$(pg_bin initdb)" -D "$state/pg" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$state/initdb.log" 2>&1 \
      || die "initdb failed, see $state/initdb.log"
  fi
  say "starting PostgreSQL on 127.0.0.1:$port"
  "${run_as[@]}" "$(pg_bin postgres)" -D "$state/pg" -p "$port" -k "$state/pg" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off >"$state/postgres.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do
    "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$port" -q 2>/dev/null && break; sleep 0.1
  done
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  "${run_as[@]}" "$(pg_bin psql)" -h 127.0.0.1 -p "$port" -U postgres -qAt \
    -c "DROP DATABASE IF EXISTS tally_demo WITH (FORCE)" -c "CREATE DATABASE tally_demo" >/dev/null \
    || die "cannot create the demo database"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/tally_demo"
fi

./target/debug/tally demo "$@"
