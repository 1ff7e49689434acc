#!/usr/bin/env bash
# `make bench`: tally's queue benchmark beside Node BullMQ and BullMQ's Rust
# port (same phases, same JSON shape, one sitting, runs interleaved), then the
# pipeline benchmark on a private PostgreSQL. Raw JSON lines go to
# target/bench/ (under CARGO_TARGET_DIR when set); the side-by-side tables are written into docs/BENCHMARKS.md
# between its generated-section markers.
#
#   BENCH_RUNS=3            runs of each queue benchmark (medians are reported)
#   PIPELINE_USERS=100000   PIPELINE_PREDICTIONS=1000000   PIPELINE_MATCHES=30
#   PEERS_DIR=bench (the comparison harnesses)   SKIP_PEERS=1   SKIP_PIPELINE=1
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_SCRIPT=bench
source scripts/servers.sh

scripts/ensure-deps.sh
say "building release binaries"
cargo build --quiet --release --bins

# Binaries and raw runs live in the cargo target directory (CARGO_TARGET_DIR honoured).
target_dir=${CARGO_TARGET_DIR:-target}
tally=$target_dir/release/tally
out=$target_dir/bench
mkdir -p "$out"
state="$(cd "$out" && pwd)/state"
trap 'stop_started_servers' EXIT
runs=${BENCH_RUNS:-3}
peers=${PEERS_DIR:-bench}
queue_runs="$out/queue-$(date +%Y%m%dT%H%M%S).jsonl"

for i in $(seq "$runs"); do
  say "queue benchmark run $i/$runs: tally"
  "$tally" --json bench queue | tail -n 1 >> "$queue_runs"
  if [ -z "${SKIP_PEERS:-}" ] && [ -x "$peers/bullmq/run.sh" ]; then
    say "queue benchmark run $i/$runs: Node BullMQ"
    "$peers/bullmq/run.sh" | tail -n 1 >> "$queue_runs" || say "BullMQ peer failed (skipped)"
    say "queue benchmark run $i/$runs: BullMQ Rust port"
    "$peers/bullmq-rs/run.sh" | tail -n 1 >> "$queue_runs" || say "BullMQ Rust peer failed (skipped)"
  fi
done

pipeline_json=""
if [ -z "${SKIP_PIPELINE:-}" ]; then
  start_private_postgres "$state" tally_bench
  say "pipeline benchmark: ${PIPELINE_USERS:-100000} users, ${PIPELINE_PREDICTIONS:-1000000} predictions"
  pipeline_json="$out/pipeline-$(date +%Y%m%dT%H%M%S).json"
  "$tally" --json bench pipeline --users "${PIPELINE_USERS:-100000}" \
    --predictions "${PIPELINE_PREDICTIONS:-1000000}" --matches "${PIPELINE_MATCHES:-30}" | tail -n 1 > "$pipeline_json"
  stop_started_servers
fi

python3 scripts/bench_report.py "$queue_runs" "$pipeline_json" docs/BENCHMARKS.md
say "tables written to docs/BENCHMARKS.md (raw runs in $out)"
