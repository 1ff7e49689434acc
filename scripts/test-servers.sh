#!/usr/bin/env bash
# Checks scripts/servers.sh as demo.sh uses it: a private PostgreSQL and
# redis-server, and a private Redis Cluster, start under a state directory
# inside a private (mode 700) folder, answer, and stop, and no folder's permissions were changed on the
# way (run as root, PostgreSQL runs as the postgres user, which cannot reach
# the state directory: its data must live where that user can reach it).
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SCRIPT=test-servers
source scripts/servers.sh

# No colour codes when the output is not a terminal (piped, as here).
esc=$'\033'
case "$(say plain 2>&1)" in *"$esc"*) die "say colours a pipe" ;; esac
case "$(make --no-print-directory help)" in *"$esc"*) die "make help colours a pipe" ;; esac

top=$(mktemp -d)          # mode 700
state="$top/a/b/state"
mkdir -p "$state"
chmod 700 "$top/a" "$top/a/b" "$state"
modes() { stat -c '%a %n' "$top" "$top/a" "$top/a/b" "$state" "$(dirname "$top")"; }
before=$(modes)
cleanup() {
  stop_started_servers
  if [ -f "$state/pg-location" ]; then
    data=$(cat "$state/pg-location")
    case "$data" in */tally-*/pg) rm -rf "$(dirname "$data")" ;; esac
  fi
  rm -rf "$top"
}
trap cleanup EXIT

start_private_redis "$state"
start_private_postgres "$state" tally_check
answer=$("$(pg_bin psql)" "$DATABASE_URL" -qAt -c 'SELECT 1')
[ "$answer" = 1 ] || die "PostgreSQL answered ${answer:-nothing}"
redis-cli -u "$REDIS_URL" ping | grep -q PONG || die "redis-server does not answer"
after=$(modes)
[ "$before" = "$after" ] || die "permissions changed: before [$before] after [$after]"
stop_started_servers
if "$(pg_bin pg_isready)" -d "$DATABASE_URL" -q; then die "PostgreSQL still running after stop"; fi

# A private Redis Cluster (DEMO_REDIS=cluster make demo): six nodes, three
# masters with a replica each, a key written through the cluster URL's first
# node lands on its slot's master, and stop_started_servers stops every node.
start_private_redis_cluster "$state"
case "$REDIS_URL" in redis+cluster://*,*,*,*,*,*) ;; *) die "not a six-node cluster URL: $REDIS_URL" ;; esac
hosts=${REDIS_URL#redis+cluster://}
IFS=, read -r -a cluster_nodes <<<"$hosts"
roles=$(for node in "${cluster_nodes[@]}"; do redis-cli -p "${node##*:}" role | head -n 1; done | sort | uniq -c | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
[ "$roles" = "3 master, 3 slave" ] || die "cluster roles: $roles"
redis-cli -c -p "${cluster_nodes[0]##*:}" set '{check}key' value | grep -q OK || die "cannot write through the cluster"
cluster_pids=("${started_pids[@]}")
stop_started_servers
for pid in "${cluster_pids[@]}"; do ! kill -0 "$pid" 2>/dev/null || die "cluster node $pid still running after stop"; done

# Kept servers (make demo-up) outlive their starter, and a second start on
# the same data fails with the cause from PostgreSQL's log, not a psql error.
( KEEP_SERVERS=$state; start_private_postgres "$state" tally_check >/dev/null 2>&1 )
[ -s "$state/servers.pids" ] || die "no kept server recorded"
while read -r pid; do kill -0 "$pid" 2>/dev/null || die "kept server $pid is gone"; done <"$state/servers.pids"
clash=$( (start_private_postgres "$state" tally_check) 2>&1 || true)
stop_started_servers
case "$clash" in *postmaster.pid*) ;; *) die "a second start does not show the cause: $clash" ;; esac
kept=$(cat "$state/servers.pids")
stop_kept_servers "$state" 2>/dev/null
for pid in $kept; do ! kill -0 "$pid" 2>/dev/null || die "kept server $pid still running after stop_kept_servers"; done
say "ok: servers started and stopped, no permission changed ($(tr '\n' ' ' <<<"$after"))"
