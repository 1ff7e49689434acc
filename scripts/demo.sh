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
# here is stopped on exit, success or not.
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SCRIPT=demo
source scripts/servers.sh

scripts/ensure-deps.sh
say "building the binaries (cargo build --bins)"
cargo build --bins   # not --quiet: a cold build takes minutes, its progress shows

state="$PWD/.state"
mkdir -p "$state"
trap 'status=$?; stop_started_servers; [ "$status" = 0 ] || say "demo failed (exit $status); logs are in $state"' EXIT

[ -n "${REDIS_URL:-}" ] || start_private_redis "$state" --appendonly yes
[ -n "${DATABASE_URL:-}" ] || start_private_postgres "$state" tally_demo

./target/debug/tally demo "$@"
