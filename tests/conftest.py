"""Shared fixtures: a real cluster (every node its own process) on free loopback tcp ports in a
temporary directory, driven through the real CLI and the real client SDK."""

from __future__ import annotations

import json
import os
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
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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


def perpx_processes(run_dir: Path) -> list[str]:
    """Command lines of live processes started for this run directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (Path("/proc") / pid / "stat").read_text()
        except OSError:
            continue
        if str(run_dir) in cmdline and stat.split(") ")[-1][:1] != "Z":
            found.append(cmdline)
    return found


@pytest.fixture
def cluster(tmp_path):
    handle = ClusterHandle(tmp_path)
    handle.up()
    try:
        yield handle
    finally:
        handle.cli("cluster", "down")
        deadline = time.monotonic() + 5
        while perpx_processes(handle.run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def cluster_handle(tmp_path):
    """A configured but not started cluster (tests that start it themselves)."""
    handle = ClusterHandle(tmp_path)
    try:
        yield handle
    finally:
        handle.cli("cluster", "down")
