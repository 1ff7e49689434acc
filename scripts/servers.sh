# shellcheck shell=bash
# Shell helpers, sourced by demo.sh and bench.sh: start a private redis-server
# and PostgreSQL under a state directory on free loopback ports, and stop
# everything started here on exit. PostgreSQL runs as the `postgres` user
# when we are root (it refuses to run as root); its data directory then lives
# in that user's own home (`~postgres/tally-<hash of STATE_DIR>`, created by
# the postgres user itself), so no permission anywhere is loosened: the
# postgres user cannot, and need not, reach STATE_DIR. The path is written
# to STATE_DIR/pg-location; `pg_data_dir STATE_DIR` prints it.
#
#   source scripts/servers.sh
#   start_private_redis  "$state"        # exports REDIS_URL
#   start_private_postgres "$state" db   # exports DATABASE_URL (database recreated)

started_pids=()
# KEEP_SERVERS=STATE_DIR: servers outlive the script (own session), their pids
# go to STATE_DIR/servers.pids for stop_kept_servers, not to started_pids.
KEEP_SERVERS=${KEEP_SERVERS:-}

# run_server CMD...: starts a server in the background and records its pid.
run_server() {
  if [ -n "$KEEP_SERVERS" ]; then
    setsid "$@" </dev/null &
    echo "$!" >>"$KEEP_SERVERS/servers.pids"
  else
    "$@" &
    started_pids+=("$!")
  fi
}

# stop_kept_servers STATE_DIR: stops what a KEEP_SERVERS run left running.
stop_kept_servers() {
  local state=$1 pid
  [ -f "$state/servers.pids" ] || { say "no kept servers in $state"; return 0; }
  started_pids=()
  while read -r pid; do started_pids+=("$pid"); done <"$state/servers.pids"
  stop_started_servers
  rm -f "$state/servers.pids" "$state/servers.env"
  say "kept servers stopped"
}

# last_lines FILE: the end of a server's log, to show why it did not start.
last_lines() { tail -n 5 "$1" 2>/dev/null | sed 's/^/    /' >&2 || true; }

# Colour only on a terminal and without NO_COLOR (https://no-color.org).
colour() { [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; }
say() { if colour; then printf '\033[1m[%s]\033[0m %s\n' "${TALLY_SCRIPT:-tally}" "$*" >&2; else printf '[%s] %s\n' "${TALLY_SCRIPT:-tally}" "$*" >&2; fi; }
die() { if colour; then printf '\033[31m[%s] %s\033[0m\n' "${TALLY_SCRIPT:-tally}" "$*" >&2; else printf '[%s] %s\n' "${TALLY_SCRIPT:-tally}" "$*" >&2; fi; exit 1; }

stop_started_servers() {
  local pid
  for pid in "${started_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${started_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  started_pids=()
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_bin() {
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
  local found="" dir
  for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && found=$(printf '%s\n%s\n' "$found" "$dir" | sort -V | tail -n 1); done
  [ -n "$found" ] || die "PostgreSQL server binaries not found: install the Debian package postgresql"
  echo "$found/$1"
}

# start_private_redis STATE_DIR [extra redis-server args...]
start_private_redis() {
  local state=$1; shift
  local port; port=$(free_port)
  mkdir -p "$state/redis"
  say "starting a private redis-server on 127.0.0.1:$port (data in $state/redis)"
  run_server redis-server --port "$port" --bind 127.0.0.1 --dir "$state/redis" --save '' \
    --logfile "$state/redis.log" --daemonize no "$@"
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  say "redis-server did not start; the end of $state/redis.log:"
  last_lines "$state/redis.log"
  die "redis-server did not start, see $state/redis.log"
}

# pg_data_dir STATE_DIR: where start_private_postgres keeps the cluster.
# As a normal user, STATE_DIR/pg. As root, a directory in the postgres user's
# home (which that user owns and can reach), named after STATE_DIR so two
# checkouts do not share a cluster; nothing else needs its permissions changed.
pg_data_dir() {
  local state=$1
  if [ "$(id -u)" != 0 ]; then echo "$state/pg"; return; fi
  local home; home=$(getent passwd postgres | cut -d: -f6)
  [ -n "$home" ] && [ -d "$home" ] \
    || die "running as root, PostgreSQL runs as the postgres user, whose home directory (${home:-none}) does not exist"
  echo "$home/tally-$(printf %s "$state" | sha1sum | cut -c1-12)/pg"
}

# start_private_postgres STATE_DIR DATABASE
start_private_postgres() {
  local state=$1 db=$2
  local port; port=$(free_port)
  local data; data=$(pg_data_dir "$state")
  local run_as=()
  if [ "$(id -u)" = 0 ]; then run_as=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
  mkdir -p "$state"
  echo "$data" >"$state/pg-location"
  if ! "${run_as[@]}" test -f "$data/PG_VERSION"; then
    say "initialising a private PostgreSQL cluster in $data"
    # Created by the user that runs PostgreSQL, in a directory it owns.
    "${run_as[@]}" rm -rf "$data"
    "${run_as[@]}" mkdir -p -m 700 "$data" || die "cannot create $data"
    "${run_as[@]}" "$(pg_bin initdb)" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
      >"$state/initdb.log" 2>&1 || die "initdb failed, see $state/initdb.log"
  fi
  say "starting PostgreSQL on 127.0.0.1:$port"
  run_server "${run_as[@]}" "$(pg_bin postgres)" -D "$data" -p "$port" -k "$data" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$state/postgres.log" 2>&1
  local ready=""
  for _ in $(seq 100); do
    "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$port" -q 2>/dev/null && { ready=1; break; }; sleep 0.1
  done
  if [ -z "$ready" ]; then
    # The cause (a stale postmaster.pid, a server of this data directory
    # still running, …) is in the log: show it rather than a psql error.
    say "PostgreSQL did not start; the end of $state/postgres.log:"
    last_lines "$state/postgres.log"
    die "PostgreSQL did not start (data in $data), see $state/postgres.log"
  fi
  PGOPTIONS='-c client_min_messages=warning' "$(pg_bin psql)" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null \
    || die "cannot create database $db, see $state/postgres.log"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/$db"
}
