#!/usr/bin/env bash
# Validate the deployment assets offline: compose file, Dockerfile, and the
# Kubernetes manifests rendered from every overlay in k8s/overlays/.
#
#   scripts/validate-deploy.sh            # from anywhere; exit 1 on any failure
#
# Tools come from PyPI into deploy/.venv (created on first run, reinstalled
# when scripts/deploy-requirements.txt changes); after that no network is
# needed. Steps:
#   1. yamllint on deploy/ and k8s/
#   2. render each overlay with `kubectl kustomize` (kustomize v5.5): example
#      (CPU HPA), example-keda (KEDA, one Redis), example-cluster (KEDA's
#      redis-cluster trigger, services on a Redis Cluster), any other
#   3. kubernetes-validate --strict against the oldest and newest supported
#      Kubernetes versions (KEDA's CRDs have no bundled schema and are only
#      checked by step 4)
#   4. scripts/check_k8s_invariants.py: tally's own invariants
#   5. hadolint on deploy/Dockerfile
#   6. scripts/check_compose.py on deploy/compose.yaml and deploy/.env.example
#   7. shellcheck on this script, deploy/cargo-skeleton.sh and
#      deploy/redis-cluster-init.sh (compose's `cluster` profile)
#   8. scripts/test_deploy_checks.py: the checks themselves, including that
#      each kind of breakage (missing probe, short grace period, wrong KEDA
#      key, ...) makes them fail, and (when redis-server is installed) the
#      cluster init script against six local nodes
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOY_VENV:-$ROOT/deploy/.venv}"
REQUIREMENTS="$ROOT/scripts/deploy-requirements.txt"
# Oldest supported (preStop sleep needs 1.30) and newest schema shipped.
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

cd "$ROOT"

if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$REQUIREMENTS" "$VENV/.requirements"; then
    echo "== installing validation tools into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/.requirements"
fi
PY="$VENV/bin/python"
BIN="$VENV/bin"

if ! command -v kubectl > /dev/null; then
    echo "validate-deploy: kubectl (with kustomize) is needed to render k8s/overlays/" >&2
    exit 1
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

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

render_all() {
    local overlay name status=0
    for overlay in k8s/overlays/*/; do
        name="$(basename "$overlay")"
        if kubectl kustomize "$overlay" > "$OUT/$name.yaml"; then
            echo "   rendered $overlay ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
        else
            status=1
        fi
    done
    return "$status"
}

schemas() {
    local file version log status=0
    for file in "$OUT"/*.yaml; do
        for version in $K8S_VERSIONS; do
            log="$OUT/validate-$(basename "$file" .yaml)-$version.log"
            if ! "$BIN/kubernetes-validate" --strict --quiet -k "$version" "$file" > "$log" 2>&1; then
                status=1
            fi
            # A missing schema is only acceptable for KEDA's custom resources.
            if grep -v "api version keda.sh/" "$log" | grep -q "Couldn't find schema"; then
                status=1
            fi
            grep -v "api version keda.sh/" "$log" || true
        done
    done
    return "$status"
}

step "yamllint" "$BIN/yamllint" --strict -c scripts/yamllint.yaml deploy/compose.yaml deploy/otel-collector.yaml k8s
step "render overlays" render_all
step "kubernetes-validate --strict ($K8S_VERSIONS)" schemas
step "invariants" "$PY" scripts/check_k8s_invariants.py "$OUT"/*.yaml
step "hadolint" "$BIN/hadolint" deploy/Dockerfile
step "compose" "$PY" scripts/check_compose.py deploy/compose.yaml deploy/.env.example
step "shellcheck" "$BIN/shellcheck" scripts/validate-deploy.sh deploy/cargo-skeleton.sh deploy/redis-cluster-init.sh
step "checks catch breakage" "$PY" -m unittest --quiet scripts/test_deploy_checks.py

if ((${#failed[@]})); then
    echo "validate-deploy: ${#failed[@]} step(s) failed: ${failed[*]}"
    exit 1
fi
echo "validate-deploy: all steps passed"
