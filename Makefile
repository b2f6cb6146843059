# perpx: the two commands that matter are `make cluster` and `make test`; both set themselves up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup cluster test test-fast bench bench-core bench-netsim probe load clean chaos

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the local cluster with demo traffic; Ctrl-C stops it, DEMO_SECONDS=N stops it after N s.
cluster: $(STAMP)
	$(VENV)/bin/perpx cluster up --demo

# The whole suite: unit, property (hypothesis) and end-to-end tests with real processes.
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

# The cluster against the null pipeline, open loop: perf/results/bench.{json,md,png}, < 10 minutes.
bench: $(STAMP) $(VENV)/.bench
	$(PY) -m perf.bench

# Where the CPU goes at one offered rate, per node: CPU, us per order, run-queue wait, py-spy.
# PROBE_ARGS passes flags, e.g. PROBE_ARGS="--pipeline null --rate 90000 --spy".
probe: $(STAMP) $(VENV)/.bench
	$(PY) -m perf.probe $(PROBE_ARGS)

$(VENV)/.bench: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.bench

# Matching core benchmark: 1M-op streams through the engine and a minimal reference book.
bench-core: $(STAMP)
	$(PY) -m perf.bench_core

# netsim's cost when present but shaping nothing, against it compiled out (PERPX_NETSIM=off).
bench-netsim: $(STAMP)
	$(PY) -m perf.cluster_load

# locust user load, headless and bounded (LOAD_SECONDS, default 60; LOCUST_ARGS passes through).
load: $(STAMP) $(VENV)/.load
	$(PY) -m perf.run_load

$(VENV)/.load: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,load]'
	touch $(VENV)/.load

# Chaos experiments (#22): every experiments/*.toml that can run today, one fresh cluster each
# (waiting ones are listed and skipped); perf/results/chaos/index.html + one HTML and JSON each.
# Exit code 1 when any hypothesis failed (the index is written either way).
chaos: $(STAMP) $(VENV)/.chaos
	$(VENV)/bin/perpx chaos run experiments/*.toml --index --out perf/results/chaos $(CHAOS_ARGS)

$(VENV)/.chaos: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,chaos]'
	touch $(VENV)/.chaos

clean:
	rm -rf var .pytest_cache .hypothesis
