# saathii-workers: `make run` brings everything up, `make test` runs the whole suite.
# DATABASE_URL / REDIS_URL, when set, name the services to use; otherwise embedded
# PostgreSQL and Redis are started under .data/ (and reused when already running).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCAL := $(PY) -m devtools.local
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: help setup db down run test test-quick lint status health admin metrics history pause resume \
	run-task clean chaos bench bench-lag bench-scrape

help:  ## this list
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP)  ## create .venv and install the package with its embedded and dev extras

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[embedded,dev]'
	rm -f $(VENV)/.installed-* && touch $@

db: setup  ## start (or reuse) the embedded servers and apply the schema
	$(LOCAL) up

down: setup  ## stop the embedded servers
	$(LOCAL) down

run: setup  ## workers, scheduler, metrics and admin in the foreground; Ctrl-C stops all
	$(LOCAL) run

test: setup  ## the whole suite, against a real PostgreSQL and Redis it starts itself
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup  ## the suite without the tests marked slow (CI runs them all)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check .

status: setup  ## each job: schedule, next run, last run, paused
	$(LOCAL) exec -- $(PY) -m workers status

health: setup  ## every health check; exit 0 healthy, 1 degraded, 2 failing
	$(LOCAL) exec -- $(PY) -m workers health

admin: setup  ## the admin alone (make run starts it too): http://127.0.0.1:8080/
	$(LOCAL) exec -- $(PY) -m workers admin

metrics: setup  ## print one Prometheus scrape (make run serves them at :9464/metrics)
	$(LOCAL) exec -- $(PY) -m workers metrics --once

history: setup  ## make history [JOB=coin_deduction] [ARGS="--limit 50"]
	$(LOCAL) exec -- $(PY) -m workers history $(JOB) $(ARGS)

pause: setup  ## make pause JOB=coin_deduction: its runs are skipped until resumed
	@test -n "$(JOB)" || { echo "usage: make pause JOB=<job>" >&2; exit 2; }
	$(LOCAL) exec -- $(PY) -m workers pause $(JOB)

resume: setup  ## make resume JOB=coin_deduction
	@test -n "$(JOB)" || { echo "usage: make resume JOB=<job>" >&2; exit 2; }
	$(LOCAL) exec -- $(PY) -m workers resume $(JOB)

run-task: setup  ## make run-task TASK=coin_deduction ARGS="--as-of 2026-11-22T10:00+05:30"
	@test -n "$(TASK)" || { echo "usage: make run-task TASK=<job> [ARGS=\"--as-of ISO8601 | --enqueue\"]" >&2; exit 2; }
	$(LOCAL) exec -- $(PY) -m workers run-task $(TASK) $(ARGS)

clean:
	$(LOCAL) down || true
	rm -rf .data .pytest_cache .ruff_cache

# The workers under a storm of faults (python -m chaos): real servers and processes,
# logical time at 60x, then the ledger's invariants. The JSON summary is the last line.
DURATION ?= 600
WORKERS ?= 3
SEED ?= 1
SHARDS ?= 1
# API=broken or API=fixed: traffic as the real Saathii API, on its own schema (see README).
API ?=

chaos: setup  ## make chaos DURATION=600 WORKERS=3 SEED=1 SHARDS=1 [API=fixed]; exit 1 on violations
	$(PY) -m chaos --duration $(DURATION) --workers $(WORKERS) --seed $(SEED) --shards $(SHARDS) \
		$(if $(API),--api $(API))

# The billing benchmark (python -m bench, never part of `make test`): one tick against N
# ongoing calls, beside the bare-UPDATE floor and the original per-call loop; prints the
# table and the targets' verdicts, writes bench/results/billing.json and billing.png.
bench: setup  ## make bench [BENCH_ARGS="--calls 1000,10000 --sample 200"]
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[embedded,dev,bench]'
	$(PY) -m bench $(BENCH_ARGS)

# Tick lag with the real scheduler and workers (python -m bench.lag): for each of MINUTES
# wall-clock minutes with CALLS live calls, the delay from the minute boundary to the
# commit of that minute's billing; p50/p99/max, bench/results/lag.json. Takes MINUTES + 1.
CALLS ?= 10000
MINUTES ?= 10

bench-lag: setup  ## make bench-lag CALLS=10000 MINUTES=10
	$(PY) -m bench.lag --calls $(CALLS) --minutes $(MINUTES) $(LAG_ARGS)

# A /metrics scrape and the health checks beside a long run history (python -m bench.scrape):
# RUNS rows of job_runs; p50/p95/max of 50 scrapes over HTTP, bench/results/scrape.json.
RUNS ?= 1000000

bench-scrape: setup  ## make bench-scrape RUNS=1000000
	$(PY) -m bench.scrape --runs $(RUNS) $(SCRAPE_ARGS)

# The admin's pages and endpoints beside RUNS job_runs and ADMIN_CALLS ongoing calls
# (python -m bench.admin): p50/p99 of 100 requests each, bench/results/admin.json.
ADMIN_CALLS ?= 100000

bench-admin: setup  ## make bench-admin RUNS=1000000 ADMIN_CALLS=100000
	$(PY) -m bench.admin --runs $(RUNS) --calls $(ADMIN_CALLS) $(ADMIN_BENCH_ARGS)
