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
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SCRIPT=demo
source scripts/servers.sh

scripts/ensure-deps.sh
say "building the binaries (cargo build --bins)"
cargo build --bins   # not --quiet: a cold build takes minutes, its progress shows

state="$PWD/.state"
mkdir -p "$state"
if [ "${1:-}" = --down ]; then stop_kept_servers "$state"; exit 0; fi
trap 'status=$?; stop_started_servers; [ "$status" = 0 ] || say "demo failed (exit $status); logs are in $state"' EXIT

alive() { [ -f "$state/servers.pids" ] && while read -r pid; do kill -0 "$pid" 2>/dev/null || return 1; done <"$state/servers.pids"; }
if [ "${DEMO_KEEP:-}" = 1 ] && alive && [ -f "$state/servers.env" ]; then
  say "reusing the kept servers ($state/servers.env)"
  # shellcheck disable=SC1091
  source "$state/servers.env"
else
  if [ "${DEMO_KEEP:-}" != 1 ] && alive && [ -z "${DATABASE_URL:-}" ]; then
    die "the servers kept by make demo-up are running on this data: run make demo-up again, or make demo-down first"
  fi
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    [ ! -f "$state/servers.pids" ] || stop_kept_servers "$state"
    KEEP_SERVERS=$state
  fi
  [ -n "${REDIS_URL:-}" ] || start_private_redis "$state" --appendonly yes
  [ -n "${DATABASE_URL:-}" ] || start_private_postgres "$state" tally_demo
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    printf 'export REDIS_URL=%q DATABASE_URL=%q\n' "$REDIS_URL" "$DATABASE_URL" >"$state/servers.env"
  fi
fi

"${CARGO_TARGET_DIR:-target}/debug/tally" demo "$@"
if [ "${DEMO_KEEP:-}" = 1 ]; then
  say "the servers keep running (make demo-down stops them); for the tally CLI:"
  echo "export REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL"
else
  say "the servers stop now; make demo-up keeps them running for the tally CLI"
fi
