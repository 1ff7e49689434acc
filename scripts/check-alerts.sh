#!/usr/bin/env bash
# Check the operations assets: the Prometheus rules in deploy/prometheus/ and
# the Grafana dashboard in deploy/grafana/.
#
#   scripts/check-alerts.sh        # from anywhere; exit 1 on any failure
#
# Steps:
#   1. make sure promtool is there: Debian's package `prometheus` ships
#      /usr/bin/promtool. As root it is installed (without leaving a
#      prometheus server running); otherwise the script names the package and
#      stops.
#   2. promtool check rules deploy/prometheus/alerts.yaml
#   3. promtool test rules deploy/prometheus/alerts_test.yaml (every alert
#      fires on its input series and stays quiet on the near misses)
#   4. deploy/grafana/check_dashboard.py: the dashboard is valid JSON, every
#      panel has a datasource and targets, panel ids are unique, and every
#      metric an expression names is one tally exports; the same check on the
#      rule expressions, plus every runbook_url pointing at a heading of
#      docs/OPERATIONS.md
#   5. every dashboard expression parsed by promtool (written out as
#      recording rules, Grafana variables replaced by sample values)
#   6. yamllint on the rule files, when deploy/.venv has it (see
#      scripts/validate-deploy.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RULES=deploy/prometheus/alerts.yaml
RULE_TESTS=deploy/prometheus/alerts_test.yaml
DASHBOARD=deploy/grafana/tally-dashboard.json
VENV="${DEPLOY_VENV:-$ROOT/deploy/.venv}"

TMP="$(mktemp -d)"
created_policy_rc=0
cleanup() {
    rm -rf "$TMP"
    if [[ $created_policy_rc == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT

install_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "promtool is missing: install the Debian package 'prometheus' (it ships /usr/bin/promtool):" >&2
        echo "  sudo apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi

    local started=$SECONDS before after pid
    echo "== installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        apt-get update -qq
    fi
    # The package's postinst would start a prometheus server; policy-rc.d
    # answering 101 forbids it. Only a file created here is removed again.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy_rc=1
    fi
    before="$(pgrep -x prometheus || true)"
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # Belt and braces: stop any prometheus server the install started (by
    # pid, and only processes that were not running before).
    after="$(pgrep -x prometheus || true)"
    for pid in $after; do
        if ! grep -qx "$pid" <<<"$before"; then
            echo "   stopping prometheus (pid $pid) started by the package install" >&2
            kill "$pid" || true
        fi
    done
    # Under systemd the unit was enabled by the package; keep it from starting at boot.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    if [[ $created_policy_rc == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        created_policy_rc=0
    fi
    command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after installing prometheus" >&2; exit 1; }
    echo "   installed $(promtool --version 2>&1 | head -n 1) in $((SECONDS - started)) s"
}

failed=()
step() {
    local name="$1"
    shift
    echo "== $name"
    if "$@"; then
        echo "   ok"
    else
        echo "   FAILED: $name"
        failed+=("$name")
    fi
}

install_promtool

# The checker needs PyYAML: the validation venv has it, Debian's python3 usually too.
PY=python3
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1; then
    PY="$VENV/bin/python"
fi

step "promtool check rules" promtool check rules "$RULES"
step "promtool test rules" promtool test rules "$RULE_TESTS"
step "dashboard and rule names" "$PY" deploy/grafana/check_dashboard.py \
    --dashboard "$DASHBOARD" --rules "$RULES" --operations docs/OPERATIONS.md \
    --emit-rules "$TMP/dashboard-rules.json"
if [[ -s "$TMP/dashboard-rules.json" ]]; then
    step "dashboard expressions parse" promtool check rules "$TMP/dashboard-rules.json"
fi
if [[ -x "$VENV/bin/yamllint" ]]; then
    step "yamllint" "$VENV/bin/yamllint" --strict -c scripts/yamllint.yaml "$RULES" "$RULE_TESTS"
else
    echo "== yamllint: skipped ($VENV/bin/yamllint not found; scripts/validate-deploy.sh creates it)"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all operations checks passed"
