#!/usr/bin/env bash
# One command for the example: clients/typescript/examples/run.sh [MATCH_ID]
#
# Installs the package's dependencies (npm ci, first time only), builds it,
# and runs examples/enqueue.mjs against REDIS_URL when set, else against the
# demo's own Redis: the private redis-server that `make demo` keeps under
# .state/redis (AOF on), started here the same way and stopped on exit. The
# jobs stay in its append-only file, and the workers of the next `make demo`
# take them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(cd ../.. && pwd)
TALLY_SCRIPT=example
# shellcheck source=../../../scripts/servers.sh
source "$repo/scripts/servers.sh"

command -v npm >/dev/null 2>&1 || die "the example needs Node.js 20 or newer with npm"
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run --silent build >/dev/null

if [ -z "${REDIS_URL:-}" ]; then
  "$repo/scripts/ensure-deps.sh"
  state="$repo/.state"
  mkdir -p "$state"
  trap stop_started_servers EXIT
  start_private_redis "$state" --appendonly yes
fi
node examples/enqueue.mjs "$@"
