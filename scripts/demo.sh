#!/usr/bin/env bash
# `make demo`: a whole matchday through the real services.
#
# Starts a private redis-server (AOF on) and PostgreSQL under .state/ unless
# REDIS_URL / DATABASE_URL are set, then runs `tally demo`, which migrates,
# seeds a small season, starts cron-gateway, scoring-worker and two
# stats-workers as separate processes, records a matchday of results, calls
# the cron endpoint with the secret, waits until the leaderboard reflects
# every result (checked against a brute-force recomputation), prints the
# leaderboard and a league table, and stops the services. Everything started
# here is stopped on exit, success or not, unless DEMO_KEEP=1 (`make
# demo-up`): then Redis and PostgreSQL keep running (a second `make demo-up`
# reuses them and plays the next matchday), the script prints the
# `export REDIS_URL=… DATABASE_URL=…` line for the tally CLI, and
# `scripts/demo.sh --down` (`make demo-down`) stops them.
#
# DEMO_CONSOLE=1 (`make demo-console`) keeps the servers as DEMO_KEEP=1 does,
# and after the matchday starts the services again (cron-gateway,
# scoring-worker, stats-worker) with the operator console (admin-console),
# all kept running in the background, and prints the dashboard's address and
# its token (DEMO_CONSOLE_PORT, default 8081 when free). Their pids go to
# .state/services.pids and their logs to .state/<name>.log; `make demo-down`
# stops them first, then the servers.
#
# DEMO_REDIS=cluster plays the matchday on a private Redis Cluster instead of
# one redis-server: six nodes (three masters, one replica each, AOF on) on
# free ports under .state/redis-cluster/, created afresh each time the
# servers start (start_private_redis_cluster in servers.sh); every service and
# the CLI get its redis+cluster:// URL, the workers QUEUE_PARTITIONS=3 (both
# queues in three partitions), and every node is stopped as the
# single redis-server is. Unset (or `single`) is one redis-server; any other
# value is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SCRIPT=demo
source scripts/servers.sh

redis_kind=${DEMO_REDIS:-single}
case "$redis_kind" in
  single | cluster) ;;
  *) die "DEMO_REDIS=$redis_kind is not known: DEMO_REDIS=cluster plays on a private Redis Cluster of six nodes; leave it unset (or single) for one redis-server" ;;
esac

scripts/ensure-deps.sh
say "building the binaries (cargo build --bins)"
cargo build --bins   # not --quiet: a cold build takes minutes, its progress shows

state="$PWD/.state"
mkdir -p "$state"
bin="${CARGO_TARGET_DIR:-target}/debug"
[ "${DEMO_CONSOLE:-}" != 1 ] || DEMO_KEEP=1

# stop_kept_services: stops the services a DEMO_CONSOLE run left running
# (SIGTERM: they drain, then exit).
stop_kept_services() {
  [ -f "$state/services.pids" ] || return 0
  local pid
  while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$state/services.pids"
  while read -r pid; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done <"$state/services.pids"
  rm -f "$state/services.pids" "$state/console.env"
  say "kept services and console stopped"
}

if [ "${1:-}" = --down ]; then stop_kept_services; stop_kept_servers "$state"; exit 0; fi
# Services kept by an earlier DEMO_CONSOLE run would take this matchday's jobs.
stop_kept_services
on_exit() {
  local status=$?
  stop_started_servers
  [ "$status" = 0 ] || say "demo failed (exit $status); logs are in $state"
}
trap on_exit EXIT
# Ctrl-C, SIGTERM, a closed terminal: exit, so that on_exit stops the servers
# (bash skips the EXIT trap when a signal kills it).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

alive() { [ -f "$state/servers.pids" ] && while read -r pid; do kill -0 "$pid" 2>/dev/null || return 1; done <"$state/servers.pids"; }
if [ "${DEMO_KEEP:-}" = 1 ] && alive && [ -f "$state/servers.env" ]; then
  say "reusing the kept servers ($state/servers.env)"
  # shellcheck disable=SC1091
  source "$state/servers.env"
  if [ "$redis_kind" = cluster ] && [[ "$REDIS_URL" != redis+cluster://* ]]; then
    die "the servers kept by make demo-up have one redis-server, not a cluster: make demo-down first for DEMO_REDIS=cluster"
  fi
else
  if [ "${DEMO_KEEP:-}" != 1 ] && alive && [ -z "${DATABASE_URL:-}" ]; then
    die "the servers kept by make demo-up are running on this data: run make demo-up again, or make demo-down first"
  fi
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    [ ! -f "$state/servers.pids" ] || stop_kept_servers "$state"
    KEEP_SERVERS=$state
  fi
  if [ "$redis_kind" = cluster ]; then
    [ -z "${REDIS_URL:-}" ] \
      || die "DEMO_REDIS=cluster starts a private Redis Cluster, but REDIS_URL is set: unset REDIS_URL, or drop DEMO_REDIS to play on that Redis"
    start_private_redis_cluster "$state" --appendonly yes
    # Each worker spreads its queue over three hash slots (partitions), so
    # the matchday's jobs cross several masters (docs/OPERATIONS.md).
    export QUEUE_PARTITIONS=${QUEUE_PARTITIONS:-3}
  elif [ -z "${REDIS_URL:-}" ]; then
    start_private_redis "$state" --appendonly yes
  fi
  [ -n "${DATABASE_URL:-}" ] || start_private_postgres "$state" tally_demo
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    printf 'export REDIS_URL=%q DATABASE_URL=%q\n' "$REDIS_URL" "$DATABASE_URL" >"$state/servers.env"
  fi
fi

"$bin/tally" demo "$@"

# port_free PORT: whether 127.0.0.1:PORT can be bound now.
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }
# wait_ready NAME ADDR: polls http://ADDR/readyz until it answers 200.
wait_ready() {
  local name=$1 addr=$2
  for _ in $(seq 200); do
    python3 -c 'import sys,urllib.request; urllib.request.urlopen("http://"+sys.argv[1]+"/readyz", timeout=1)' "$addr" 2>/dev/null && return 0
    sleep 0.1
  done
  say "$name did not become ready; the end of $state/$name.log:"
  last_lines "$state/$name.log"
  die "$name did not start, see $state/$name.log"
}
# keep_service NAME ADDR_VAR ADDR [VAR=VALUE...]: starts a service binary in its
# own session, kept after this script ends.
keep_service() {
  local name=$1 addr_var=$2 addr=$3
  shift 3
  env "$@" "$addr_var=$addr" setsid "$bin/$name" </dev/null >"$state/$name.log" 2>&1 &
  echo "$!" >>"$state/services.pids"
  wait_ready "$name" "$addr"
}

if [ "${DEMO_CONSOLE:-}" = 1 ]; then
  say "starting the services and the operator console (kept running)"
  token=$(python3 -c 'import secrets; print("demo-" + secrets.token_hex(16))')
  common=(REDIS_URL="$REDIS_URL" RUST_LOG="${RUST_LOG:-info}" "TALLY_QUEUE_PREFIX=${TALLY_QUEUE_PREFIX:-tally}")
  keep_service cron-gateway BIND_ADDR "127.0.0.1:$(free_port)" "${common[@]}" \
    CRON_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  keep_service scoring-worker HEALTH_ADDR "127.0.0.1:$(free_port)" "${common[@]}" DATABASE_URL="$DATABASE_URL"
  keep_service stats-worker HEALTH_ADDR "127.0.0.1:$(free_port)" "${common[@]}" DATABASE_URL="$DATABASE_URL"
  port=${DEMO_CONSOLE_PORT:-8081}
  port_free "$port" || port=$(free_port)
  keep_service admin-console ADMIN_BIND_ADDR "127.0.0.1:$port" "${common[@]}" ADMIN_TOKEN="$token"
  (umask 077; printf 'ADMIN_URL=http://127.0.0.1:%s/\nADMIN_TOKEN=%s\n' "$port" "$token" >"$state/console.env")
  say "the operator console runs at http://127.0.0.1:$port/ (token also in $state/console.env):"
  echo "  dashboard: http://127.0.0.1:$port/"
  echo "  token:     $token"
  echo "  API:       curl -H 'Authorization: Bearer $token' http://127.0.0.1:$port/api/v1/queues"
  say "services, console and servers keep running; make demo-down stops them all. For the tally CLI:"
  echo "export REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL"
elif [ "${DEMO_KEEP:-}" = 1 ]; then
  say "the servers keep running (make demo-down stops them); for the tally CLI:"
  echo "export REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL"
else
  say "the servers stop now; make demo-up keeps them running for the tally CLI"
fi
