"""The examples a newcomer starts from run against a real cluster and say what they claim."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_quickstart_quotes_reads_back_and_cleans_up(cluster):
    proc = subprocess.run([sys.executable, "examples/quickstart.py", "--config",
                           str(cluster.config_path), "--account", "mm2", "--qty", "0.02"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"bid 0\.02 @ \d+(\.\d)?: order \d+ new", lines[0]), lines
    assert re.fullmatch(r"ask 0\.02 @ \d+(\.\d)?: order \d+ new", lines[1]), lines
    held = [line for line in lines if line.startswith("open: ")]
    assert len(held) == 2 and all(re.search(r"holds [0-9.]+ USDC of margin$", h) for h in held)
    assert re.fullmatch(r"available [0-9.]+ USDC", lines[4]), lines
    assert lines[5].startswith("leverage refused: leverage_above_tier_max")
    assert lines[6] == "cancelled 2 orders (mass_cancel)"
    assert cluster.cli_json("order", "list", "--account", "mm2")["orders"] == []
