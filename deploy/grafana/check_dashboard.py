#!/usr/bin/env python3
"""Static checks of tally's Grafana dashboard and Prometheus rules.

    check_dashboard.py --dashboard deploy/grafana/tally-dashboard.json \
        [--rules deploy/prometheus/alerts.yaml] [--operations docs/OPERATIONS.md]

Dashboard: valid JSON; a `datasource` variable of type datasource (query
prometheus) and a `queue` variable; panel ids unique; every panel other than
a row has a datasource and at least one target, each target an expression and
a refId unique in its panel; every metric an expression names is one tally
exports (or a histogram series of one), every function a PromQL function,
every $variable defined; panels do not overlap.

Rules (with --rules, needs PyYAML): every expression names only tally's
metrics or the rule file's own recording rules; every alert has a severity of
warning or critical, a summary, a description and a runbook_url whose anchor
is a heading of docs/OPERATIONS.md (with --operations).

With --emit-rules FILE it also writes every dashboard expression, Grafana
variables replaced by sample values, as a recording rule into FILE, so that
`promtool check rules FILE` parses them with Prometheus' own parser.

Exit status 1 with one line per problem, 0 when clean. Run by
scripts/check-alerts.sh.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# The names the services expose (tally-service, cron-gateway); see
# docs/OPERATIONS.md "Read the dashboard".
COUNTERS = {
    "tally_jobs_completed_total",
    "tally_jobs_failed_total",
    "tally_jobs_retried_total",
    "tally_jobs_dead_total",
    "tally_lease_recoveries_total",
    "tally_http_requests_total",
    "tally_outbox_relayed_total",
    "tally_outbox_rejected_total",
    "tally_outbox_relay_errors_total",
    "tally_outbox_settled_by_worker_total",
    "tally_repair_runs_total",
    "tally_repair_found_total",
    "tally_repair_jobs_total",
}
GAUGES = {
    "tally_queue_ready_jobs",
    "tally_queue_scheduled_jobs",
    "tally_queue_in_flight_jobs",
    "tally_queue_dead_jobs",
    "tally_queue_oldest_ready_age_seconds",
    "tally_worker_heartbeat_timestamp_seconds",
    "tally_outbox_pending_rows",
    "tally_outbox_oldest_pending_age_seconds",
    "tally_outbox_rejected_rows",
    "tally_repair_remaining_matches",
}
HISTOGRAMS = {
    "tally_job_duration_seconds",
    "tally_job_wait_seconds",
    "tally_http_request_duration_seconds",
    "tally_outbox_relay_lag_seconds",
}
METRICS = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

FUNCTIONS = {
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
    # functions
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp",
    "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
    "last_over_time", "present_over_time",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Keywords followed by a parenthesised label list.
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}


def variables_in(expr: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)", expr))


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = LABEL_LIST.sub("", text)
    text = re.sub(r"(?<![\w:])\d[\w.]*", "", text)  # numbers and durations (0.99, 15m, 1e3)
    metrics, functions = set(), set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", text):
        word = m.group(0)
        if word.lower() in KEYWORDS:
            continue
        if text[m.end():].lstrip().startswith("("):
            functions.add(word)
        else:
            metrics.add(word)
    return metrics, functions


def check_expr(where: str, expr: str, known: set[str], problems: list[str]) -> None:
    metrics, functions = names_in(expr)
    for name in sorted(metrics - known):
        problems.append(f"{where}: unknown metric {name!r} in {expr!r}")
    for name in sorted(functions - FUNCTIONS):
        problems.append(f"{where}: unknown PromQL function {name!r} in {expr!r}")


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))
    return out


def check_dashboard(path: Path) -> list[str]:
    problems: list[str] = []
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: not valid JSON: {e}"]

    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in dash:
            problems.append(f"{path}: missing {key!r}")
    if not isinstance(dash.get("schemaVersion"), int) or dash.get("schemaVersion", 0) < 36:
        problems.append(f"{path}: schemaVersion should be a recent one (36 or newer)")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{path}: needs a variable 'datasource' of type datasource, query prometheus")
    if "queue" not in variables:
        problems.append(f"{path}: needs a variable 'queue'")
    defined = set(variables) | GRAFANA_BUILTINS

    for name, var in variables.items():
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            check_expr(f"variable {name}", inner.group(1) if inner else text, METRICS, problems)
            for ref in sorted(variables_in(text) - defined):
                problems.append(f"variable {name}: undefined variable ${ref}")

    ids: dict[int, str] = {}
    boxes = []
    for panel in all_panels(dash.get("panels", [])):
        title = panel.get("title", "?")
        pid = panel.get("id")
        where = f"panel {pid} {title!r}"
        if not isinstance(pid, int):
            problems.append(f"{where}: id must be an integer")
        elif pid in ids:
            problems.append(f"{where}: id {pid} already used by {ids[pid]!r}")
        else:
            ids[pid] = title
        grid = panel.get("gridPos")
        if not grid or not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{where}: needs a gridPos with x, y, w, h")
        else:
            if grid["x"] + grid["w"] > 24:
                problems.append(f"{where}: wider than the 24-column grid")
            for other, ob in boxes:
                if (grid["x"] < ob["x"] + ob["w"] and ob["x"] < grid["x"] + grid["w"]
                        and grid["y"] < ob["y"] + ob["h"] and ob["y"] < grid["y"] + grid["h"]):
                    problems.append(f"{where}: overlaps {other}")
            boxes.append((where, grid))
        if panel.get("type") == "row":
            continue
        if not panel.get("datasource"):
            problems.append(f"{where}: no datasource")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = set()
        for target in targets:
            expr = target.get("expr", "")
            ref = target.get("refId")
            if not expr.strip():
                problems.append(f"{where}: target {ref} has no expr")
            if not ref or ref in refs:
                problems.append(f"{where}: target refId {ref!r} missing or repeated")
            refs.add(ref)
            if not (target.get("datasource") or panel.get("datasource")):
                problems.append(f"{where}: target {ref} has no datasource")
            check_expr(f"{where} target {ref}", expr, METRICS, problems)
            for var in sorted(variables_in(expr) - defined):
                problems.append(f"{where} target {ref}: undefined variable ${var}")
    return problems


# Sample values for Grafana's variables when the expressions are handed to promtool.
SAMPLE_VALUES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def emit_rules(dashboard: Path, out: Path) -> None:
    """Every panel expression as a recording rule (JSON is valid YAML)."""
    dash = json.loads(dashboard.read_text())
    rules = []
    for panel in all_panels(dash.get("panels", [])):
        for target in panel.get("targets") or []:
            expr = re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_VALUES.get(m.group(1), ".*"), target.get("expr", ""))
            rules.append({"record": f"dashboard:panel_{panel.get('id')}:{target.get('refId')}", "expr": expr})
    out.write_text(json.dumps({"groups": [{"name": "dashboard-expressions", "rules": rules}]}, indent=2))


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def check_rules(path: Path, operations: Path | None) -> list[str]:
    try:
        import yaml
    except ImportError:
        return [f"{path}: PyYAML is needed to check the rules (pip install pyyaml)"]
    problems: list[str] = []
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        return [f"{path}: not valid YAML: {e}"]

    anchors = None
    if operations is not None:
        anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", operations.read_text(), re.M)}

    rules = [r for g in doc.get("groups", []) for r in g.get("rules", [])]
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        where = f"{path}: rule {name}"
        check_expr(where, str(rule.get("expr", "")), METRICS | recorded, problems)
        if "alert" not in rule:
            continue
        severity = rule.get("labels", {}).get("severity")
        if severity not in ("warning", "critical"):
            problems.append(f"{where}: severity must be warning or critical, not {severity!r}")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                problems.append(f"{where}: no {key} annotation")
        url = annotations.get("runbook_url", "")
        if anchors is not None and url:
            target, _, anchor = url.partition("#")
            if not target.endswith(operations.name) or anchor not in anchors:
                problems.append(f"{where}: runbook_url {url!r} is not a heading of {operations}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", type=Path, required=True)
    parser.add_argument("--rules", type=Path)
    parser.add_argument("--operations", type=Path)
    parser.add_argument("--emit-rules", type=Path, metavar="FILE")
    args = parser.parse_args()

    problems = check_dashboard(args.dashboard)
    if args.rules:
        problems += check_rules(args.rules, args.operations)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    if args.emit_rules:
        emit_rules(args.dashboard, args.emit_rules)
    panels = [p for p in all_panels(json.loads(args.dashboard.read_text())["panels"]) if p.get("type") != "row"]
    print(f"   {args.dashboard}: {len(panels)} panels, "
          f"{sum(len(p['targets']) for p in panels)} queries, all metrics known")
    return 0


if __name__ == "__main__":
    sys.exit(main())
