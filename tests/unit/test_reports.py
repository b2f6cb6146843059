"""explain / incident report over a real liquidation's audit records."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import msgspec
import pytest

from cluster import config, reports
from cluster.humanize import Units
from tests.unit.liquidation_world import USD, World
from tests.unit.test_liquidation_scenarios import open_long


def thin_book_world() -> World:
    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD, "bs": 5_000 * USD},
              insurance=1_000_000 * USD, backstops=["bs"])
    w.mark(300_000)
    open_long(w, "alice", 10_000, leverage=20)
    w.mark(290_000)
    w.cancel_all("mm")
    w.place("mm", 1, 1_000, 280_500)
    w.mark(281_000)
    return w


def test_explain_gives_the_whole_path_and_incident_sums_it(tmp_path):
    w = thin_book_world()
    records = w.audit
    liq_id = w.results[0].liquidation_id
    found = reports.liquidation(records, liq_id)
    assert found["account"] == "alice" and found["status"] == "closed"
    assert found["path"][:3] == ["trigger", "cancel", "plan"]
    assert found["path"][-4:] == ["backstop", "plan", "insurance", "end"]
    assert sum(found["closed_lots"].values()) == 10_000
    assert found["forced_fees"] == sum(r.fee for r in w.results)
    assert found["insurance_fund_delta"] == sum(r.fund_delta for r in w.results)

    # the same through the files the nodes write, and the report over them
    os.makedirs(tmp_path / "audit")
    with open(tmp_path / "audit" / "liquidator.jsonl", "wb") as fh:
        for r in records:
            fh.write(msgspec.json.encode(r) + b"\n")
    # a journal torn by a failed write, and a damaged one: skipped and counted, not fatal
    (tmp_path / "audit" / "risk.jsonl").write_bytes(b'{"ts_ns": 1, "node": "risk", "ru')
    (tmp_path / "audit" / "oracle.jsonl").write_bytes(b'\xff\xfe garbage\n{"ts_ns": 2}\n')
    loaded, unreadable = reports.load(str(tmp_path))
    assert unreadable == {"oracle.jsonl": 2, "risk.jsonl": 1}
    assert reports.liquidation(loaded, liq_id)["path"] == found["path"]
    report = reports.incident(loaded, None, None)
    assert report["liquidations_by_status"] == {"closed": 1}
    assert report["insurance_fund"]["from_liquidations"] == found["insurance_fund_delta"]
    md = reports.incident_markdown(report, Units.of(config.load()))
    row = next(line for line in md.splitlines() if line.startswith(f"| {liq_id} |"))
    assert row.startswith(f"| {liq_id} | alice | BTC-PERP | closed |")
    # closed in contracts (lots of 0.001), the fees and the fund in collateral (atoms of 1e-6)
    closed = ", ".join(f"{kind} {Decimal(lots) / 1000}" for kind, lots in found["closed_lots"].items())
    assert f"| {closed} | {Decimal(found['forced_fees']) / 10**6} USDC | " in row
    json.dumps(report)  # serialisable as is


def test_parse_time():
    now = 1_700_000_000 * 1_000_000_000
    assert reports.parse_time("-15m", now) == now - 900 * 1_000_000_000
    assert reports.parse_time("1700000000", now) == now
    assert reports.parse_time("2023-11-14T22:13:20Z", now) == now


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e300", "soon", "2026-13-01"])
def test_parse_time_refuses_what_is_not_a_time_with_a_value_error(text):
    with pytest.raises(ValueError):
        reports.parse_time(text)
