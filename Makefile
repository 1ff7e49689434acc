# tally: the two commands a newcomer needs are `make demo` and `make test`.
# Every target only wraps cargo and the scripts beside it; `make` alone lists them.

SHELL := bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@if [ -t 1 ] && [ -z "$$NO_COLOR" ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install redis-server and PostgreSQL's server if missing (Debian, as root)
	@scripts/ensure-deps.sh

.PHONY: build
build: ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

# The engine's suites that run a second time, on a throwaway Redis Cluster
# (TALLY_TEST_REDIS=cluster: see crates/tally-testkit/src/backend.rs).
TEST_ON_CLUSTER = TALLY_TEST_REDIS=cluster $(CARGO) test -p tally-queue --no-fail-fast \
	--test reliability --test chaos --test failures --test promises

.PHONY: test
test: deps ## Run all tests against throwaway Redis and PostgreSQL servers, then the engine's suites on a Redis Cluster
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets --no-fail-fast
	$(TEST_ON_CLUSTER)
	scripts/test-typescript.sh
	scripts/test-servers.sh

.PHONY: test-cluster
test-cluster: deps ## The engine's reliability, chaos, failure and promise suites on a throwaway Redis Cluster (part of test)
	$(TEST_ON_CLUSTER)

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, no unused dependencies (cargo-machete)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/unused-deps.sh

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: demo
demo: deps ## Play a whole matchday through the real services on private Redis and PostgreSQL (DEMO_REDIS=cluster: on a six-node Redis Cluster)
	scripts/demo.sh

.PHONY: demo-up
demo-up: deps ## Like demo, but keep Redis and PostgreSQL running and print the exports for the tally CLI
	DEMO_KEEP=1 scripts/demo.sh

.PHONY: demo-console
demo-console: deps ## Like demo-up, then keep the services and the operator console running; prints its address and token
	DEMO_CONSOLE=1 scripts/demo.sh

.PHONY: demo-down
demo-down: ## Stop the servers (and services) demo-up or demo-console kept running
	scripts/demo.sh --down

.PHONY: bench
bench: deps ## Queue benchmark beside BullMQ, and the pipeline benchmark; figures go to docs/BENCHMARKS.md
	scripts/bench.sh

.PHONY: soak
soak: deps ## Soak benchmark: 1M jobs, two worker processes, one killed every 3 s; exactly-once, Redis memory, worker RSS
	$(CARGO) run --quiet --release -p tally-bench --example soak

.PHONY: check-deploy
check-deploy: ## Lint the Dockerfile and compose file, validate the Kubernetes manifests offline, test the alert rules
	scripts/validate-deploy.sh
	scripts/check-alerts.sh

.PHONY: clean-state
clean-state: ## Remove the demo's local state directory (and, as root, its PostgreSQL data in ~postgres)
	@if [ -f .state/pg-location ]; then case "$$(cat .state/pg-location)" in */tally-*/pg) rm -rf "$$(dirname "$$(cat .state/pg-location)")" ;; esac; fi
	rm -rf .state
