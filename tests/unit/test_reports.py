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


def test_explain_account_finds_its_decisions_and_its_part_in_others():
    from cluster import render
    from cluster.audit import Explanation

    w = thin_book_world()
    liq_id = w.results[0].liquidation_id
    noise = [Explanation(ts_ns=1, node="risk", rule="risk.insufficient_margin", subject="alice",
                         decision="reject", numbers={"symbol": "BTC-PERP", "required": 2_500_000,
                                                     "available": 1_000_000}),
             Explanation(ts_ns=2, node="matching", rule="matching.post_only_would_take",
                         subject="mm", decision="reject", numbers={"symbol": "BTC-PERP",
                                                                   "price": 300_000})]
    records = sorted(noise + list(w.audit), key=lambda r: r.ts_ns)
    mine = reports.account(records, "alice")
    assert mine[0]["rule"] == "risk.insufficient_margin"
    assert {r["subject"] for r in mine[1:]} == {f"liq-{liq_id}"}  # her liquidation's every step
    assert len(mine) == 1 + len([r for r in w.audit if r.subject == f"liq-{liq_id}"])
    # the backstop sees only the step it took part in, by its name among the counterparties
    backstop = reports.account(records, "bs")
    assert [r["rule"] for r in backstop] == ["liquidation.backstop"]
    assert "mm" not in {r["subject"] for r in reports.account(records, "alice")}
    assert reports.account(records, "alice", since_ns=2) == mine[1:]
    assert reports.account(records, "alice", limit=2) == mine[-2:]
    text = render.decisions({"account": "alice", "decisions": mine}, Units.of(config.load()))
    assert text.splitlines()[0] == f"account alice: {len(mine)} decisions, oldest first"
    assert text.splitlines()[2].endswith("risk.insufficient_margin         reject     BTC-PERP  "
                                         "required 2.5, available 1")
    assert render.decisions({"account": "x", "decisions": []}, None) == \
        "account x: no decisions in the journals for this window"


def test_incident_summary_says_what_happened_for_how_long_in_trader_units():
    from cluster.audit import Explanation

    s = 1_000_000_000
    t0 = 1_800_000_000 * s

    def mode(at, decision, **numbers):
        return Explanation(ts_ns=t0 + at, node="oracle", rule="oracle.quorum_lost",
                           subject="BTC-PERP", decision=decision, numbers=numbers)

    records = [
        mode(0, "normal->carry", healthy=1, min_sources=3, last_good_index=300_005,
             last_good_age_ms=0, **{"outlier.bravo_ppm": 42_000}),
        Explanation(ts_ns=t0 + 1 * s, node="oracle", rule="oracle.source_stale", subject="BTC-PERP",
                    decision="bravo: healthy->stale", numbers={"venue": "bravo", "age_ms": -1,
                                                             "deviation_ppm": 0}),
        mode(4 * s, "carry->degraded"),
        mode(16 * s, "degraded->normal"),
        mode(20 * s, "normal->carry"),  # still in carry when the window ends
    ]
    report = reports.incident(records, t0, t0 + 30 * s)
    md = reports.incident_markdown(report, Units.of(config.load()))
    summary = md.split("## Summary")[1].split("## Liquidations")[0]
    assert "(30 s)" in summary
    assert "- oracle BTC-PERP: outside normal 3 time(s), carry 14 s, degraded 12 s" in summary
    assert "- liquidations: 0" in summary and "- auto-deleveraging: 0 event(s)" in summary
    # prices, not ticks; rates in percent; an age the venue never had is not shown
    assert "last good index 30000.5" in md and "outlier.bravo 4.2%" in md
    assert "age_ms=-1" not in md and "age ms -1" not in md and "300005" not in md
