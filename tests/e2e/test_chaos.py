"""The chaos checker can fail: a hypothesis a real fault breaks gives FAIL with its evidence and
exit code 1, and the same experiment without the fault passes with exit code 0 (real clusters,
through `perpx chaos run`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

EXPERIMENT = """
name = "{name}"
before = "2s"
observe = "2s"
end = "2s"

[load]
rate = 20
timeout = "500ms"
post_only_share = 0.2

{steps}

[[hypothesis]]
name = "orders answered within 250 ms while the fault lasts"
metric = "p99_ms"
phase = "during"
op = "<="
value = 250

[[hypothesis]]
name = "no outcome unknown"
metric = "unknown"
op = "=="
value = 0

[[hypothesis]]
name = "no acknowledged order lost"
metric = "acked_orders_lost"
value = 0
"""

PARTITION = """
[[step]]
at = "0s"
action = "partition"
links = ["gateway->risk"]

[[step]]
at = "1.5s"
action = "heal"
links = ["gateway->risk"]
"""


def chaos_run(tmp_path, name: str, steps: str) -> tuple[subprocess.CompletedProcess, dict]:
    path = tmp_path / f"{name}.toml"
    path.write_text(EXPERIMENT.format(name=name, steps=steps))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "chaos", "run", str(path),
                           "--out", str(out), "--run-root", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=110, cwd=ROOT)
    report = json.loads((out / f"{name}.json").read_text())
    return proc, report


def test_a_fault_that_breaks_the_steady_state_fails_with_evidence_and_without_it_passes(tmp_path):
    broken, report = chaos_run(tmp_path, "partitioned", PARTITION)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    verdicts = {v["name"]: v for v in report["verdicts"]}
    slow = verdicts["orders answered within 250 ms while the fault lasts"]
    assert slow["verdict"] == "FAIL" and slow["observed"] > 1000  # held ~1.5 s by the partition
    assert "p99_ms = " in slow["evidence"] and "worst_ms" in slow["evidence"]
    assert verdicts["no outcome unknown"]["verdict"] == "FAIL"
    assert verdicts["no acknowledged order lost"]["verdict"] == "PASS"
    assert "FAIL     orders answered within 250 ms" in broken.stdout
    assert report["timeline"][0]["command"] == "netsim_partition"
    page = (tmp_path / "out" / "partitioned.html").read_text()
    assert "FAIL" in page and "netsim_partition" in page

    clean, report = chaos_run(tmp_path, "clean", "")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert all(v["verdict"] == "PASS" for v in report["verdicts"]), report["verdicts"]
    assert sum(s["sent"] for s in report["samples"]) >= 80
