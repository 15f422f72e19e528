# One entry point for people and CI. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pip's own output, cut to what says how far along it is: one numbered line per package resolved,
# the install, and everything from the first error on (pip on these machines also lists every
# local index it skips: noise). awk exits 0, so pipefail still reports pip's own failure.
PIP_PROGRESS := awk '/ERROR|error:/ { e = 1 } \
  e { print; fflush(); next } \
  /^Collecting / { n++; printf "    %3d %s\n", n, substr($$0, 12); fflush(); next } \
  /^Installing collected packages:/ { k = split($$0, p, ","); printf "    installing %d package%s\n", k, k == 1 ? "" : "s"; fflush() }'

.PHONY: setup engine system-deps run test test-fast lint bench-overhead bench-priority bench-affinity bench-batch bench-abuse bench-scale-out bench-cli bench-burst fuzz config-docs clean

$(STAMP): pyproject.toml
	@echo "==> project environment ($(VENV)): about 1.5 min the first time"
	@start=$$SECONDS; test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  echo "  [1/3] upgrade pip"; \
	  $(BIN)/pip install --upgrade pip 2>&1 | $(PIP_PROGRESS); \
	  echo "  [2/3] install tidegate and its dev tools (pip install -e '.[dev]')"; \
	  $(BIN)/pip install -e '.[dev]' 2>&1 | $(PIP_PROGRESS); \
	  echo "  [3/3] check: import tidegate.cli"; \
	  $(BIN)/python -c "import tidegate.cli"; \
	  echo "✓ project environment ready ($$((SECONDS - start)) s)"
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

## The fuzz harnesses (SSE parser, batch JSONL reader, multipart upload, redactor) under atheris,
## FUZZ_SECONDS each (default 60). `make test` runs each briefly; this run adds the inputs that
## reach new code to tests/fuzz/corpus/ (commit them) and leaves failing ones in
## tests/fuzz/artifacts/ (replay: python -m tests.fuzz.runner NAME --replay FILE).
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := sse batch_lines multipart redaction
fuzz: setup
	@for name in $(FUZZ_HARNESSES); do \
	  echo "==> fuzz $$name ($(FUZZ_SECONDS) s)"; \
	  $(BIN)/python -m tests.fuzz.runner $$name --seconds $(FUZZ_SECONDS) 2>&1 \
	    | grep -v -E "^#[0-9]+|^WARNING: Failed to find function" || exit 1; \
	done

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	PYTHONPATH=. $(BIN)/lint-imports

bench-overhead: setup
	$(BIN)/python -m benchmarks.overhead

## Interactive TTFT under a batch flood: one real vLLM replica (its compute on core 0, the rest on
## the other cores), straight and through tidegate
## (~12 min).
bench-priority: engine
	$(BIN)/python -m benchmarks.priority --engine-cpus 0

## Round robin, least-outstanding and prefix affinity on two real vLLM replicas: prefix-cache hit
## rate, TTFT and load per replica for a multi-turn workload (~6 min).
bench-affinity: engine
	$(BIN)/python -m benchmarks.affinity

## The Batch API: a 10,000-line batch on the fake upstream (lines/s, then three kill -9 of the
## gateway: zero lost or duplicated lines) and a 200-line batch on one real vLLM replica beside an
## interactive tenant (TTFT p95 vs idle, batch tokens/s) (~10 min).
bench-batch: engine
	$(BIN)/python -m benchmarks.batch

## Abusive inputs (a 100,000-message chat, bodies past server.max_body_bytes, 300 MB uploads,
## malformed values ...) against one gateway: refusal latency, /healthz meanwhile, RSS; then the
## budget race, 200 concurrent requests through 3 gateways on PostgreSQL and Redis (~3 min).
bench-abuse: setup
	$(BIN)/python -m benchmarks.abuse

## 1, 2 and 3 gateways sharing PostgreSQL and Redis in front of one fake pool: aggregate req/s,
## the upstream's peak in-flight vs capacity, interactive TTFT p95 under a batch flood, Redis
## commands per request (~1.5 min; needs PostgreSQL and redis-server).
bench-scale-out: setup
	$(BIN)/python -m benchmarks.scale_out

## How long `tidegate --help`, a group's --help and `config show` take to start: 20 fresh
## processes each, median/mean/min/max wall time and CPU (~1 min).
bench-cli: setup
	$(BIN)/python -m benchmarks.cli_startup

## Bursts against local autoscaling: one real vLLM CPU replica at min, max 2, a burst of 4x its
## capacity for 60 s; TTFT p95 with a fixed replica, with autoscaling and with a warm standby,
## the time to the second replica's first request, and the simulator's prediction of each
## (~15 min).
bench-burst: engine
	$(BIN)/python -m benchmarks.burst

## Regenerate the README's configuration reference from the schema.
config-docs: setup
	$(BIN)/python -m tidegate.config_docs --write README.md

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache
