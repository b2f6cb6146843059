"""`perpx stress` and `perpx cascade --from-cluster` against a running cluster: a hedged cross
account (long BTC, short ETH) priced by the stress grid, and the cluster's state cascaded."""

from __future__ import annotations

import asyncio
import json

import pytest

from cluster.client import Client
from tests.conftest import ClusterHandle
from tests.e2e.helpers import wait_mark

pytestmark = pytest.mark.e2e


async def human_marks(handle: ClusterHandle) -> dict[str, str]:
    async with Client(handle.endpoint(), api_key=handle.api_key("alice"),
                      market_data=handle.md_endpoint()) as c:
        return {s: c.price_str(s, (await wait_mark(c, s)).mark) for s in ("BTC-PERP", "ETH-PERP")}


def trade(handle: ClusterHandle, symbol: str, buyer: str, seller: str, qty: str, price: str):
    sell = handle.cli_json("order", "place", "--account", seller, "--symbol", symbol,
                           "--side", "sell", "--qty", qty, "--price", price)
    assert sell["result"]["type"] == "OrderAccepted", sell
    buy = handle.cli_json("order", "place", "--account", buyer, "--symbol", symbol,
                          "--side", "buy", "--qty", qty, "--price", price)
    assert any(e["type"] == "Fill" for e in buy["later_events"]), buy


def test_stress_of_a_hedged_account_and_a_cascade_of_the_cluster(cluster, tmp_path):
    marks = asyncio.run(human_marks(cluster))
    trade(cluster, "BTC-PERP", "alice", "bob", "1", marks["BTC-PERP"])
    trade(cluster, "ETH-PERP", "bob", "alice", "7.5", marks["ETH-PERP"])

    view = cluster.cli_json("account", "show", "alice")
    stress = cluster.cli_json("stress", "alice")
    s = stress["stress"]
    assert set(s["notional"]) == {"BTC-PERP", "ETH-PERP"}
    assert s["notional"]["BTC-PERP"] > 0 > s["notional"]["ETH-PERP"]
    assert [g["name"] for g in s["regimes"]] == ["calm", "up50", "crisis", "decor50"]
    assert s["binding"] == "decor50"  # the hedge binds when correlation halves
    losses = {g["name"]: g["loss"] for g in s["regimes"]}
    assert losses["decor50"] > losses["calm"] > losses["crisis"]
    assert s["requirement"] == max(losses["decor50"], s["diversification_floor"]) + sum(
        a["addon"] for a in s["liquidity"])
    ladder = sum(p["maintenance_margin"] for p in view["positions"])  # at a mark a moment ago
    assert abs(stress["ladder_maintenance"] - ladder) * 20 < ladder
    assert stress["portfolio_requirement"] == max(stress["ladder_maintenance"], s["requirement"])
    assert stress["equity_over_stress"] == stress["cross_equity"] - s["requirement"]
    text = cluster.cli("stress", "alice", check=True).stdout
    assert "decor50" in text and "<- binds" in text

    snap_path = tmp_path / "snap.json"
    written = cluster.cli_json("cascade", "snapshot", "--out", str(snap_path))
    risk = cluster.status()["nodes"]["risk"]["stats"]  # (risk's figure, as metrics export it)
    snap = json.loads(snap_path.read_text())
    assert snap["accounts"]["alice"]["positions"] == {
        p["symbol"]: [p["qty"], p["cost"]] for p in view["positions"]}
    # the fund's cash as risk reports it, not the topology's starting cash; nothing moved it
    # between the two reads here (no liquidation, no funding settlement in this test's window)
    assert snap["insurance_fund"] == written["insurance_fund"] == risk["insurance_fund_atoms"]
    assert "live, risk (risk)" in snap["source"]
    assert snap["backstops"] == ["backstop"] and "backstop" in snap["accounts"]
    runs = [cluster.cli("cascade", "--snapshot", str(snap_path), "--shock", "-0.08",
                        "--regime", "crisis", "--json", check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    result = json.loads(runs[0])
    assert result["summary"]["money"]["before"] == result["summary"]["money"]["after"]
    assert result["summary"]["amplification"]["ETH-PERP"]["exogenous_bps"] == -800
    live = cluster.cli_json("cascade", "--from-cluster", "--shock", "-0.08")
    assert live["summary"]["money"]["before"] == live["summary"]["money"]["after"]
