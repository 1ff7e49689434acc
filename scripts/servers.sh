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
#   start_private_redis_cluster "$state" # six nodes; exports REDIS_URL (redis+cluster://)
#   start_private_postgres "$state" db   # exports DATABASE_URL (database recreated)
#
# Every server started, each cluster node included, is stopped by
# stop_started_servers (or, kept, by stop_kept_servers).

started_pids=()
cluster_create_pid=
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
  # A `redis-cli --cluster create` still running (start_private_redis_cluster).
  if [ -n "$cluster_create_pid" ]; then kill -TERM "$cluster_create_pid" 2>/dev/null || true; cluster_create_pid=; fi
  for pid in "${started_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${started_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  started_pids=()
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# free_ports N: N distinct free loopback ports, one a line (all held open while
# they are picked, so no two are the same).
free_ports() {
  python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in held))' "$1"
}

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
  wait_redis "$port" "$state/redis.log"
}

# wait_redis PORT LOG: waits until the redis-server on 127.0.0.1:PORT answers
# PING; otherwise shows the end of its LOG and stops.
wait_redis() {
  local port=$1 log=$2
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  say "redis-server on port $port did not start; the end of $log:"
  last_lines "$log"
  die "redis-server did not start, see $log"
}

# start_private_redis_cluster STATE_DIR [extra redis-server args...]: a private
# Redis Cluster of six redis-server nodes (--cluster-enabled yes) on free
# loopback ports, made three masters with one replica each by `redis-cli
# --cluster create ... --cluster-replicas 1 --cluster-yes`, as the test kit
# (crates/tally-testkit/src/redis_cluster.rs) and compose's cluster profile
# do. Each node's cluster bus gets a free port of its own (--cluster-port)
# rather than port + 10000, which may be taken or above 65535. The nodes'
# data, nodes.conf and logs go to STATE_DIR/redis-cluster/node-1 ... node-6,
# emptied first: a cluster is always created afresh (nodes.conf remembers the
# ports of an earlier cluster). Returns once every node reports
# cluster_state:ok and knows all six, three are masters and three replicas
# linked to their masters; exports REDIS_URL as
# redis+cluster://127.0.0.1:PORT,... naming every node.
start_private_redis_cluster() {
  local state=$1; shift
  local dir="$state/redis-cluster" ports=() nodes=() node_pids=() i node log pid
  mapfile -t ports < <(free_ports 12)   # six client ports, then six bus ports
  [ "${#ports[@]}" = 12 ] || die "cannot find free ports for the Redis Cluster"
  for i in 0 1 2 3 4 5; do nodes+=("127.0.0.1:${ports[i]}"); done
  say "starting a private Redis Cluster of six nodes on ${nodes[*]} (data in $dir)"
  rm -rf "$dir"
  for i in 0 1 2 3 4 5; do
    node="$dir/node-$((i + 1))"
    mkdir -p "$node"
    run_server redis-server --port "${ports[i]}" --cluster-port "${ports[i + 6]}" --bind 127.0.0.1 \
      --dir "$node" --save '' --logfile "$node/redis.log" --daemonize no \
      --cluster-enabled yes --cluster-config-file nodes.conf "$@"
    node_pids+=("$!")
  done
  for i in 0 1 2 3 4 5; do wait_redis "${ports[i]}" "$dir/node-$((i + 1))/redis.log"; done
  log="$dir/create.log"
  # In the background, watched from here: redis-cli ignores SIGINT, and waits
  # forever for the nodes to join if one of them is gone (stopped by a
  # Ctrl-C, or crashed). stop_started_servers ends it if we stop meanwhile.
  local deadline=$((SECONDS + 60))
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$log" 2>&1 </dev/null &
  cluster_create_pid=$!
  while kill -0 "$cluster_create_pid" 2>/dev/null; do
    for pid in "${node_pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || die "a Redis Cluster node (pid $pid) is gone while the cluster was being created (stopped, or see its log in $dir)"
    done
    [ "$SECONDS" -le "$deadline" ] || die "redis-cli --cluster create did not finish within 60 s, see $log"
    sleep 0.1
  done
  if ! wait "$cluster_create_pid"; then
    cluster_create_pid=
    say "redis-cli --cluster create failed; the end of $log:"
    last_lines "$log"
    die "the Redis Cluster was not created, see $log"
  fi
  cluster_create_pid=
  local masters=0 replicas=0 ok=0 port info
  deadline=$((SECONDS + 60))
  while [ "$SECONDS" -le "$deadline" ]; do
    masters=0 replicas=0 ok=0
    for port in "${ports[@]:0:6}"; do
      info=$( { redis-cli -p "$port" cluster info; redis-cli -p "$port" info replication; } 2>/dev/null | tr -d '\r' || true)
      case "$info" in *cluster_state:ok*cluster_known_nodes:6*) ok=$((ok + 1)) ;; esac
      case "$info" in
        *role:master*) masters=$((masters + 1)) ;;
        *role:slave*master_link_status:up*) replicas=$((replicas + 1)) ;;
      esac
    done
    if [ "$ok" = 6 ] && [ "$masters" = 3 ] && [ "$replicas" = 3 ]; then
      REDIS_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
      export REDIS_URL
      say "Redis Cluster ready: cluster_state:ok on all six nodes, 3 masters, 3 replicas linked to them"
      return
    fi
    sleep 0.1
  done
  die "the Redis Cluster is not ready after 60 s (cluster_state:ok and six nodes known on $ok of 6, $masters masters, $replicas replicas linked); logs in $dir"
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
