#!/usr/bin/env bash
# Runs one test N times in a row and stops at the first failure: the way to
# show that a test is not flaky (a flaky test is a defect, see README).
#
#   scripts/repeat-test.sh NAME [N] [CARGO_TEST_ARGS...]
#   scripts/repeat-test.sh s01_sigkill_chaos 20 -p tally-queue --test chaos
#   scripts/repeat-test.sh "" 10 -p tally-queue       (every test of the crate)
#
# With LOAD=1 a busy loop per core runs beside the test, as `make test` does
# when every test binary runs at once.
set -euo pipefail
name=${1?usage: scripts/repeat-test.sh NAME [N] [cargo test args...]}
n=${2:-20}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh >/dev/null  # redis-server, postgres, faketime, as make test has them
cargo test -q --no-run "$@" >/dev/null
load_pids=()
if [[ ${LOAD:-0} == 1 ]]; then
  for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    load_pids+=($!)
  done
  trap 'kill "${load_pids[@]}" 2>/dev/null || true' EXIT
fi
log=$(mktemp -t repeat-test.XXXXXX)
for i in $(seq "$n"); do
  start=$(date +%s.%N)
  if ! cargo test -q "$@" -- "$name" --nocapture >"$log" 2>&1; then
    echo "run $i of $n: FAILED (log: $log)"
    grep -E "panicked|assert|FAILED" "$log" | head -20
    exit 1
  fi
  printf 'run %d of %d: ok (%.1f s) %s\n' "$i" "$n" "$(echo "$(date +%s.%N) - $start" | bc)" \
    "$(grep -E '^chaos:' "$log" | head -1 || true)"
done
rm -f "$log"
echo "$name: $n runs in a row passed"
