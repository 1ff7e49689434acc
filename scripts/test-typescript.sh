#!/usr/bin/env bash
# Builds and tests the TypeScript producer package (clients/typescript):
# `npm ci` from its committed lockfile, then its build (job types generated
# from docs/schemas/, the enqueue script bundled from crates/tally-queue/lua/,
# strict tsc for ESM and CommonJS) and its tests (node:test against private
# redis-server and PostgreSQL processes, and the Rust binaries of
# target/debug, which `make test` builds first).
#
# Needs Node.js 20 or newer with npm. When they are missing it names them
# and stops; it installs nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

need() {
  echo "the TypeScript package's tests need Node.js 20 or newer with npm: $1. Install Node.js 20+ and npm (on Debian 13: sudo apt-get install -y nodejs npm; on Debian 12, whose nodejs is 18, take Node.js 20+ from nodejs.org or NodeSource), then run make test again." >&2
  exit 1
}
command -v node >/dev/null 2>&1 || need "node not found"
command -v npm >/dev/null 2>&1 || need "npm not found"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || need "found Node.js $(node --version)"

start=$(date +%s)
npm ci --no-audit --no-fund --loglevel=error
npm test
echo "TypeScript package: built and tested in $(( $(date +%s) - start ))s" >&2
