#!/usr/bin/env python3
"""Renders the benchmark JSON lines as Markdown tables into docs/BENCHMARKS.md.

Usage: bench_report.py QUEUE_RUNS.jsonl [PIPELINE.json|""] docs/BENCHMARKS.md

The queue table shows, per queue implementation, the median of its runs for
each headline figure (the same figures ../shared/peers/bullmq/summarize.mjs
reports), and tally's ratio to Node BullMQ. The tables replace whatever is
between the markers <!-- bench:begin --> and <!-- bench:end -->; the rest of
the file (the analysis) is left as written.
"""
import json
import statistics
import sys
from datetime import datetime, timezone

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def dig(obj, *path):
    for p in path:
        if isinstance(p, int):
            obj = obj[p] if isinstance(obj, list) and len(obj) > p else None
        elif callable(p):
            obj = next((x for x in obj or [] if p(x)), None)
        else:
            obj = (obj or {}).get(p)
        if obj is None:
            return None
    return obj


ROWS = [
    ("no-op jobs/s, concurrency 5", lambda r: dig(r, "process", lambda x: x.get("concurrency") == 5, "jobsPerSec"), "max"),
    ("no-op jobs/s, concurrency 50", lambda r: dig(r, "process", lambda x: x.get("concurrency") == 50, "jobsPerSec"), "max"),
    ("Redis CPU µs per job (c=5)", lambda r: dig(r, "process", lambda x: x.get("concurrency") == 5, "cost", "redisCpuUsPerJob"), "min"),
    ("Redis CPU µs per job (c=50)", lambda r: dig(r, "process", lambda x: x.get("concurrency") == 50, "cost", "redisCpuUsPerJob"), "min"),
    ("Redis commands per job (c=50)", lambda r: dig(r, "process", lambda x: x.get("concurrency") == 50, "cost", "redisCommandsPerJob"), "min"),
    ("enqueue-to-start p99 ms, 500 jobs/s, c=5", lambda r: dig(r, "latency", lambda x: x.get("concurrency") == 5, "latency", "p99Ms"), "min"),
    ("delayed lag p99 ms, spread", lambda r: dig(r, "delayed", lambda x: x.get("mode") == "spread", "lag", "p99Ms"), "min"),
    ("delayed lag p99 ms, burst", lambda r: dig(r, "delayed", lambda x: x.get("mode") == "burst", "lag", "p99Ms"), "min"),
    ("addBulk jobs/s", lambda r: dig(r, "enqueue", "addBulk", "jobsPerSec"), "max"),
    ("retry phase seconds (1000 jobs)", lambda r: dig(r, "retry", "seconds"), "min"),
]


def fmt(v):
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def queue_table(path):
    runs = {}
    meta = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            name = f'{r.get("queue")} {r.get("version", "")}'.strip()
            runs.setdefault(name, []).append(r)
            meta[name] = r
    order = sorted(runs, key=lambda n: (not n.startswith("tally"), n))
    head = "| measure (median of runs) | " + " | ".join(f"{n} ({len(runs[n])} runs)" for n in order)
    bull = next((n for n in order if n.startswith("bullmq ")), None)
    tally = next((n for n in order if n.startswith("tally")), None)
    lines = [head + (" | tally vs BullMQ |" if bull and tally else " |")]
    lines.append("|" + " --- |" * (len(order) + 1 + (1 if bull and tally else 0)))
    for label, get, better in ROWS:
        meds = {}
        for n in order:
            vals = [v for v in (get(r) for r in runs[n]) if isinstance(v, (int, float))]
            meds[n] = statistics.median(vals) if vals else None
        cells = [fmt(meds[n]) for n in order]
        if bull and tally:
            a, b = meds.get(tally), meds.get(bull)
            ratio = "–"
            if a and b:
                ratio = f"{a / b:.1f}x" if better == "max" else f"{b / a:.1f}x less" if a else "–"
            cells.append(ratio)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    redis = {n: (meta[n].get("redis"), meta[n].get("redisHz")) for n in order}
    return "\n".join(lines), redis


def pipeline_table(path):
    r = json.loads(open(path).read().strip().splitlines()[-1])
    rows = [
        ("users / predictions / matches played", f'{r.get("users"):,} / {r.get("predictions"):,} / {r.get("matches")}'),
        ("result → leaderboard fresh, p50 / p99 ms", f'{fmt(dig(r, "freshness", "p50Ms"))} / {fmt(dig(r, "freshness", "p99Ms"))}'),
        ("refresh (incremental) p50 ms", fmt(dig(r, "refresh", "p50Ms"))),
        ("naive full materialized-view refresh p50 ms", fmt(dig(r, "naiveRefresh", "p50Ms"))),
        ("leaderboard read p99 ms while refreshes run", fmt(dig(r, "readDuringRefresh", "p99Ms"))),
    ]
    naive, inc = dig(r, "naiveRefresh", "p50Ms"), dig(r, "refresh", "p50Ms")
    if naive and inc:
        rows.append(("refresh cheaper than naive by", f"{naive / inc:.0f}x"))
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main():
    queue_path, pipeline_path, doc = sys.argv[1], sys.argv[2], sys.argv[3]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table, redis = queue_table(queue_path)
    parts = [BEGIN, f"Generated by `make bench` on {when} (raw runs: `{queue_path}`).", "",
             "### Queue engine, side by side (one sitting, runs interleaved)", "", table, "",
             "Redis per queue: " + ", ".join(f"{n}: {v} hz {hz}" for n, (v, hz) in redis.items()), ""]
    if pipeline_path:
        parts += ["### Pipeline (PostgreSQL)", "", pipeline_table(pipeline_path), ""]
    parts.append(END)
    block = "\n".join(parts)
    try:
        text = open(doc).read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    open(doc, "w").write(text)
    print(block)


if __name__ == "__main__":
    main()
