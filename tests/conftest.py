"""Shared fixtures: a real cluster (every node its own process) on free loopback tcp ports in a
temporary directory, driven through the real CLI and the real client SDK."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import settings

from cluster import config

# CI runs the property tests on a fixed seed, so that a landing does not depend on which examples
# one run happened to draw; `make test` on a workstation draws new ones every run, which is where
# new failures are found (and then pinned as examples).
settings.register_profile("ci", derandomize=True, print_blob=True)
# Before resolving a money or matching change: new random seeds and 10x the examples of every
# property test (`make test-deep`). A test's own max_examples is scaled, not replaced.
settings.register_profile("deep", derandomize=False, print_blob=True)
# Mutation testing (`make mutate`): the CI examples, no deadline (mutmut's trampolines slow every
# call) and no example database, so a mutant's verdict depends on nothing a previous one saved.
settings.register_profile("mutate", derandomize=True, deadline=None, database=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)
DEEP_FACTOR = 10 if PROFILE == "deep" else 1


def pytest_collection_modifyitems(config, items):
    """Timing tests need a quiet machine: skipped unless asked for (PERPX_TIMING=1, as
    `make test-timing` and `make test-deep` do), whatever -m says. Under the deep profile every
    property test runs DEEP_FACTOR times its own max_examples (a test's @settings would otherwise
    override the profile's)."""
    skip = pytest.mark.skip(reason="timing test: run `make test-timing` on a quiet machine")
    for item in items:
        if "timing" in item.keywords and os.environ.get("PERPX_TIMING") != "1":
            item.add_marker(skip)
        test = getattr(item, "obj", None)
        if DEEP_FACTOR > 1 and getattr(test, "is_hypothesis_test", False) \
                and not getattr(test, "_perpx_deepened", False):
            own = test._hypothesis_internal_use_settings
            test._hypothesis_internal_use_settings = settings(
                own, max_examples=own.max_examples * DEEP_FACTOR)
            test._perpx_deepened = True  # a parametrized test is one function, scaled once


ROOT = Path(__file__).resolve().parent.parent


class ClusterHandle:
    def __init__(self, tmp: Path, internal_ipc: bool = False,
                 symbol_overrides: dict[str, dict] | None = None,
                 node_settings: dict[str, dict] | None = None) -> None:
        self.run_dir = tmp / "run"
        self.config_path = config.write_tcp_topology(
            config.DEFAULT_CONFIG, tmp / "topology.toml", config.free_tcp_ports(20), self.run_dir,
            internal_ipc=internal_ipc, node_settings=node_settings)
        if symbol_overrides:
            raw = tomllib.loads(self.config_path.read_text())
            for symbol, changes in symbol_overrides.items():
                raw["symbols"][symbol].update(changes)
            self.config_path.write_text(config._dump_toml(raw))
        self.topo = config.load(self.config_path, run_dir=str(self.run_dir))
        _HANDLES.append(self)  # reaped after the test whatever happened (reap_clusters)

    def cli(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "cluster.cli", *args]
        if args and args[0] != "calc":
            cmd += ["--run-dir", str(self.run_dir)]
            if args[:2] == ("cluster", "up"):
                cmd += ["--config", str(self.config_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str, ok: bool = True) -> dict:
        proc = self.cli(*args, "--json")
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    def status(self) -> dict:
        return json.loads((self.run_dir / "status.json").read_text())

    def up(self) -> dict:
        return self.cli_json("cluster", "up", "--detach")

    def down(self) -> dict:
        return self.cli_json("cluster", "down")

    def node_pids(self) -> dict[str, int]:
        return {n: v["pid"] for n, v in self.status()["nodes"].items()}

    def endpoint(self) -> str:
        return self.topo.nodes["gateway"].client

    def md_endpoint(self) -> str:
        return self.topo.nodes["gateway"].pub

    def api_key(self, account: str) -> str:
        return self.topo.accounts[account].api_key


def _perpx_pids(run_dir: Path) -> dict[int, str]:
    """pid -> command line of each live (not zombie) process started for this run directory."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (Path("/proc") / pid / "stat").read_text()
        except OSError:
            continue
        if str(run_dir) in cmdline and stat.split(") ")[-1][:1] != "Z":
            found[int(pid)] = cmdline
    return found


def perpx_processes(run_dir: Path) -> list[str]:
    """Command lines of live processes started for this run directory."""
    return list(_perpx_pids(run_dir).values())


def stop_and_reap(handle: ClusterHandle, grace_s: float = 5.0) -> list[str]:
    """Stop the cluster if anything of it runs, wait (polling) for its processes to exit, then
    SIGKILL by pid whatever its run directory still names (a detached supervisor or node that
    outlived a failed test). Returns the command lines it had to kill."""
    if not _perpx_pids(handle.run_dir):
        return []
    try:
        handle.cli("cluster", "down", timeout=30)
    except subprocess.TimeoutExpired:
        pass
    return reap_run_dir(handle.run_dir, grace_s)


def reap_run_dir(run_dir: Path, grace_s: float = 5.0) -> list[str]:
    """Wait (polling) for the processes of a run directory to exit, then SIGKILL by pid the ones
    left. Returns the command lines it had to kill."""
    deadline = time.monotonic() + grace_s
    while _perpx_pids(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = _perpx_pids(run_dir)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return list(leftovers.values())


_HANDLES: list[ClusterHandle] = []


@pytest.fixture(autouse=True)
def reap_clusters():
    """Every cluster a test configured is stopped and its processes killed after the test, even
    when the test failed between `up()` and its own `try`."""
    first = len(_HANDLES)
    yield
    handles, _HANDLES[first:] = _HANDLES[first:], []
    for handle in handles:
        stop_and_reap(handle)


@pytest.fixture
def cluster(tmp_path):
    handle = ClusterHandle(tmp_path)
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


@pytest.fixture
def cluster_handle(tmp_path):
    """A configured but not started cluster (tests that start it themselves)."""
    handle = ClusterHandle(tmp_path)
    try:
        yield handle
    finally:
        stop_and_reap(handle)


@pytest.fixture
def bench_cluster():
    """perf.cluster_load.Cluster, the venue `make bench` drives (`with bench_cluster(env) as
    venue:`): each one made is stopped, its processes killed and its directory removed after the
    test, also when its start failed half-way (its __exit__ never runs then)."""
    from perf.cluster_load import Cluster

    made: list[Cluster] = []

    def make(env: dict[str, str] | None = None) -> Cluster:
        made.append(Cluster(env))
        return made[-1]

    try:
        yield make
    finally:
        for venue in made:
            if _perpx_pids(venue.run_dir):
                venue.cli("cluster", "down")
            reap_run_dir(venue.run_dir)
            shutil.rmtree(venue.tmp, ignore_errors=True)

