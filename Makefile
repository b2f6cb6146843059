# perpx: the two commands that matter are `make cluster` and `make test`; both set themselves up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup cluster test test-fast test-deep test-timing mutate bench bench-core bench-netsim bench-rest probe load cascade-report cascade-live clean chaos
.PHONY: surveillance-eval surveillance-cost fuzz failover-soak

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the local cluster with demo traffic (risk and matching with hot standbys); Ctrl-C stops it,
# DEMO_SECONDS=N stops it after N s.
cluster: $(STAMP)
	$(VENV)/bin/perpx cluster up --demo --standby

# The whole suite: unit, property (hypothesis) and end-to-end tests with real processes.
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

# Before resolving a money or matching change: every property test with new random seeds and 10x
# its examples (hypothesis profile "deep"), plus the timing tests; CI's profile is derandomized.
test-deep: $(STAMP)
	HYPOTHESIS_PROFILE=deep PERPX_TIMING=1 $(PY) -m pytest -q -m "not e2e"

# netsim's microsecond accuracy checks, skipped elsewhere: run them on a quiet machine.
test-timing: $(STAMP)
	PERPX_TIMING=1 $(PY) -m pytest -q -m timing

# Mutation testing (mutmut) of risk, matching, liquidator and the money helpers against the fast
# suite: perf/results/mutate/mutate.{json,md}. MUTATE_ARGS bounds it, e.g. "--sample 20" mutants
# per package (default 40; 0 = all) or "--packages nodes/risk --budget-s 900".
mutate: $(STAMP) $(VENV)/.mutate
	$(PY) -m perf.mutate $(MUTATE_ARGS)

$(VENV)/.mutate: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,mutate]'
	touch $(VENV)/.mutate

# The cluster against the null pipeline, open loop, with each safety feature's price (journal,
# CurveZMQ, hot standbys) and a mixed workload: perf/results/bench.{json,md,png}, ~15 minutes.
bench: $(STAMP) $(VENV)/.bench
	$(PY) -m perf.bench

# 100,000 hostile frames at a running venue's gateway and internal inboxes: nothing dies, nothing
# changes, each is refused with a reason or counted (perf/results/fuzz.{json,md}). FUZZ_ARGS, e.g.
# "--frames 20000 --seed 3".
fuzz: $(STAMP)
	$(PY) -m perf.fuzz $(FUZZ_ARGS)

# #19's soak: open-loop mixed orders while risk's and matching's primaries are killed in turn,
# 20 times; lost / doubled / unheard fills, money, pair state hashes, failover time
# (perf/results/failover-soak-kill.{json,md}). SOAK_ARGS, e.g. "--fault pause --kills 10".
failover-soak: $(STAMP)
	$(PY) -m perf.failover_soak $(SOAK_ARGS)

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

# REST facade (#25) vs the native protocol, order placement in the same run: perf/results/bench-rest.*
bench-rest: $(STAMP)
	$(PY) -m perf.bench_rest $(BENCH_REST_ARGS)

# locust user load, headless and bounded (LOAD_SECONDS, default 60; LOCUST_ARGS passes through).
load: $(STAMP) $(VENV)/.load
	$(PY) -m perf.run_load

$(VENV)/.load: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,load]'
	touch $(VENV)/.load

# The README's cascade demonstration (RISK-ANALYTICS 3.4's thin band, g*lambda = 0.8) swept over
# shock x latency x depth with 10% recovery: var/cascade/sweep.{html,json}, plots by matplotlib.
cascade-report: $(STAMP) $(VENV)/.report
	mkdir -p var/cascade
	$(VENV)/bin/perpx cascade band --size 4 --depth 5 --out var/cascade/thin-band.json
	$(VENV)/bin/perpx cascade sweep --snapshot var/cascade/thin-band.json \
		--shocks=-0.005,-0.01,-0.02,-0.04 --regimes calm --latencies 0,1,3 --depth-scales 1,2 \
		--recovery 0.1 --permanent 0.3 --out-dir var/cascade

# #24's end-to-end check: a cluster after LOAD_SECONDS (30) of locust load plus levered accounts,
# snapshotted and cascaded at -8 % (--close venue) against the same shock applied live through
# the feeds: perf/results/cascade-live.{json,md}; exit 1 on a difference no named cause explains.
cascade-live: $(STAMP) $(VENV)/.load
	$(PY) -m perf.cascade_live

$(VENV)/.report: pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,report]'
	touch $(VENV)/.report

# Surveillance (#23): the ranking over generated flow with injected abuse at three difficulty levels,
# several seeds, and clean runs: perf/results/surveillance-eval.{json,md,png}, about a minute.
surveillance-eval: $(STAMP) $(VENV)/.bench
	$(PY) -m perf.surveillance_eval $(SURV_EVAL_ARGS)

# The node's cost to the venue: max orders/s and CPU per order with and without it, alternating in
# one run: perf/results/surveillance-cost.{json,md}, a few minutes.
surveillance-cost: $(STAMP) $(VENV)/.bench
	$(PY) -m perf.surveillance_cost $(SURV_COST_ARGS)

# Chaos experiments (#22): every experiments/*.toml that can run today, one fresh cluster each
# (waiting ones are listed and skipped); perf/results/chaos/index.html + one HTML and JSON each.
# Exit code 1 when any hypothesis failed (the index is written either way).
chaos: $(STAMP) $(VENV)/.report
	$(VENV)/bin/perpx chaos run experiments/*.toml --index --out perf/results/chaos $(CHAOS_ARGS)

clean:
	rm -rf var .pytest_cache .hypothesis
