#!/usr/bin/env bash
# Makes sure the servers the tests and the demo start for themselves are
# installed: redis-server and PostgreSQL's server binaries (initdb, postgres),
# faketime (the clock-skew tests run workers on a shifted clock), and
# Chromium with chromedriver (the operator console's browser test).
# As root it installs the missing Debian packages; otherwise it names them and
# stops. Idempotent and quiet when everything is there.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# redis-cli creates the test clusters (Debian ships it in redis-tools).
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)

have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_postgres || missing+=(postgresql)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
# The operator console's browser test drives Debian's headless Chromium
# through chromedriver, at these paths (crates/admin-console/tests/browser.rs).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

# The test kit runs PostgreSQL as the `postgres` user when started as root.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

# De-duplicate.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ]; then
  echo "tally needs these Debian packages: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing missing packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages from starting their own system services:
# tests and the demo start private servers on free ports instead.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
