"""`make cluster`'s demo, as the CLI runs it: the venue comes up, quotes and trades are printed with
marks and books, every refusal is printed with its reason, it stops by itself and leaves nothing."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import perpx_processes

pytestmark = pytest.mark.e2e


def test_demo_trades_explains_its_rejects_and_stops_clean(cluster_handle):
    # as `make cluster` runs it: risk and matching with hot standbys
    proc = cluster_handle.cli("cluster", "up", "--demo", "--standby", "--seconds", "5", timeout=90)
    out = proc.stdout
    assert proc.returncode == 0, (out, proc.stderr)
    assert re.search(r"^TRADE ", out, re.M) and re.search(r"^MARK ", out, re.M), out
    assert re.search(r"^BOOK ", out, re.M), out
    summary = re.search(r"^SUMMARY trades seen (\d+), quotes placed (\d+), rejects (\d+)(.*)$",
                        out, re.M)
    assert summary and int(summary.group(1)) > 0 and int(summary.group(2)) > 0, out
    rejects = re.findall(r"^REJECT +(\S+) +(\S+) +(\S+)", out, re.M)
    assert len(rejects) == int(summary.group(3))  # each one printed, with its reason
    assert all(reason.islower() and "_" in reason or reason == "timeout"
               for _, _, reason in rejects), rejects
    assert len(re.findall(r"^ACCOUNT ", out, re.M)) == 4
    deadline = time.monotonic() + 5
    while perpx_processes(cluster_handle.run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert perpx_processes(cluster_handle.run_dir) == []
    # Each stateful core leaves its closing state in its log: money conserved, and a state hash
    # that a replay of the same inputs must reproduce.
    risk = final_state(cluster_handle.run_dir / "log" / "risk.log", "risk_final_state")
    assert risk["conserved"] is True and risk["money_held"] == risk["money_owed"], risk
    assert re.fullmatch(r"[0-9a-f]{64}", risk["state_hash"]), risk
    matching = final_state(cluster_handle.run_dir / "log" / "matching.log", "matching_final_state")
    assert re.fullmatch(r"[0-9a-f]{64}", matching["state_hash"]), matching
    # and no node met a message it could not read or handle: the nodes speak one protocol
    for node in ("gateway", "risk", "matching", "oracle", "liquidator", "feeds"):
        stats = final_state(cluster_handle.run_dir / "log" / f"{node}.log", "node_stopping")["stats"]
        assert stats["bad_frames"] == 0 and stats["errors"] == 0, (node, stats)
        assert stats.get("frames_refused", 0) == 0, (node, stats)  # (cluster/senders.py)


def final_state(log, event: str) -> dict:
    records = [json.loads(line) for line in log.read_text().splitlines() if event in line]
    assert len(records) == 1, f"{log}: {len(records)} {event} records"
    return records[0]
