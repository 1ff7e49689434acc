#!/bin/sh
# The one-shot `redis-cluster-init` service of compose's `cluster` profile
# (deploy/compose.yaml): makes the nodes in REDIS_CLUSTER_NODES one Redis
# Cluster and exits 0 once every node reports cluster_state:ok and knows all
# the others, so the services that wait for it start on a working cluster.
#
#   REDIS_CLUSTER_NODES     host:port of every node, space-separated (required)
#   REDIS_CLUSTER_REPLICAS  replicas per master (default 1)
#   REDIS_CLUSTER_TIMEOUT   seconds to wait for cluster_state:ok (default 60)
#
# - Fresh nodes (each knows only itself, no slot assigned): `redis-cli
#   --cluster create … --cluster-replicas N --cluster-yes`.
# - Nodes that already form a cluster (a restart; their nodes.conf is in
#   their volume): each node is introduced to every other at its current
#   address (CLUSTER MEET), since containers may come back with other IP
#   addresses; nodes that know each other already are left as they are.
# - Anything in between (some nodes fresh, some not: a volume was removed)
#   is refused: stop the stack, remove the six node volumes
#   (docker volume rm tally_redis-node-1-data … tally_redis-node-6-data;
#   the queues on the cluster are lost) and start again.
#
# redis-cli --cluster create and CLUSTER MEET take IP addresses only, so the
# node names are resolved first. POSIX sh: the redis image's shell is busybox.
set -eu

nodes="${REDIS_CLUSTER_NODES:?set REDIS_CLUSTER_NODES to the nodes, host:port, space-separated}"
replicas="${REDIS_CLUSTER_REPLICAS:-1}"
timeout="${REDIS_CLUSTER_TIMEOUT:-60}"

say() {
    echo "redis-cluster-init: $*"
}

# ip:port of every node.
addresses=""
for node in $nodes; do
    host="${node%:*}"
    port="${node##*:}"
    ip="$(getent hosts "$host" | awk 'NR == 1 { print $1 }')"
    if [ -z "$ip" ]; then
        say "cannot resolve $host" >&2
        exit 1
    fi
    addresses="$addresses $ip:$port"
done

cli() {
    address="$1"
    shift
    redis-cli -h "${address%:*}" -p "${address##*:}" "$@"
}

# One field of CLUSTER INFO on one node.
info_field() {
    cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"
}

fresh=0
formed=0
for address in $addresses; do
    if [ "$(info_field "$address" cluster_known_nodes)" = 1 ] && [ "$(info_field "$address" cluster_slots_assigned)" = 0 ]; then
        fresh=$((fresh + 1))
    else
        formed=$((formed + 1))
    fi
done

if [ "$formed" = 0 ]; then
    say "creating the cluster:$addresses ($replicas replica(s) per master)"
    # shellcheck disable=SC2086 # one argument per address
    redis-cli --cluster create $addresses --cluster-replicas "$replicas" --cluster-yes
elif [ "$fresh" = 0 ]; then
    say "the nodes already form a cluster; introducing them at their current addresses"
    for address in $addresses; do
        for other in $addresses; do
            if [ "$other" != "$address" ]; then
                cli "$address" cluster meet "${other%:*}" "${other##*:}" > /dev/null
            fi
        done
    done
else
    say "$fresh node(s) are new and $formed belong to a cluster: refusing to guess." >&2
    say "Stop the stack, remove the volumes of all six nodes (docker volume rm tally_redis-node-1-data ... tally_redis-node-6-data) and start again." >&2
    exit 1
fi

# Done when every node serves all slots and knows every other node.
total="$(echo "$addresses" | wc -w)"
waited=0
while :; do
    ok=0
    for address in $addresses; do
        if [ "$(info_field "$address" cluster_state)" = ok ] && [ "$(info_field "$address" cluster_known_nodes)" = "$total" ]; then
            ok=$((ok + 1))
        fi
    done
    if [ "$ok" = "$total" ]; then
        say "cluster_state:ok on all $total nodes"
        exit 0
    fi
    if [ "$waited" -ge "$timeout" ]; then
        say "cluster_state:ok and all $total nodes known on only $ok of them after ${timeout} s" >&2
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
