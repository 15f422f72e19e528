# One entry point for people and CI. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pip on these machines lists every local index it skips; keep that noise off the console.
QUIET_PIP := grep -v "WARNING: Location" || true

.PHONY: setup engine system-deps run test test-fast lint bench-overhead bench-priority bench-affinity bench-batch config-docs clean

$(STAMP): pyproject.toml
	@echo "==> project environment ($(VENV))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(BIN)/pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -c "import tidegate.cli"
	@touch $(STAMP)

setup: $(STAMP)

## The vLLM engine venv and the bundled model (idempotent; a no-op once built).
engine: setup
	$(BIN)/tidegate engine install
	$(BIN)/tidegate model prepare

## Serve the bundled model through tidegate on http://127.0.0.1:8080/v1.
run: setup
	$(BIN)/tidegate up

## Debian packages some tests drive: Chromium (the bench report is checked in a real browser)
## and docker-compose (parses the compose file; no daemon needed). Installed when missing and this
## user may (root); otherwise those tests skip and say why.
SYSTEM_PACKAGES := chromium fonts-dejavu-core docker-compose
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "==> installing $(SYSTEM_PACKAGES) (Debian)"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "chromium or docker-compose missing and not root: their tests will skip"; fi; \
	fi

## Everything: unit, integration (PostgreSQL, Redis, loopback servers), deploy manifests and the
## real-engine e2e tests.
test: engine system-deps
	$(BIN)/pytest

## Without the real engine (seconds instead of minutes).
test-fast: setup
	$(BIN)/pytest -m "not e2e"

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-overhead: setup
	$(BIN)/python -m tidegate.bench.overhead

## Interactive TTFT under a batch flood: one real vLLM replica (its compute on core 0, the rest on
## the other cores), straight and through tidegate
## (~12 min).
bench-priority: engine
	$(BIN)/python -m tidegate.bench.priority --engine-cpus 0

## Round robin, least-outstanding and prefix affinity on two real vLLM replicas: prefix-cache hit
## rate, TTFT and load per replica for a multi-turn workload (~6 min).
bench-affinity: engine
	$(BIN)/python -m tidegate.bench.affinity

## The Batch API: a 10,000-line batch on the fake upstream (lines/s, then three kill -9 of the
## gateway: zero lost or duplicated lines) and a 200-line batch on one real vLLM replica beside an
## interactive tenant (TTFT p95 vs idle, batch tokens/s) (~10 min).
bench-batch: engine
	$(BIN)/python -m tidegate.bench.batch

## Regenerate the README's configuration reference from the schema.
config-docs: setup
	$(BIN)/python -m tidegate.config_docs --write README.md

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache
