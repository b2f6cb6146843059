"""A price crash from the feeds liquidates an account through the real processes, and
`perpx explain liquidation` shows its path."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cluster.client import Client
from cluster.protocol import BUY, SELL, SetMarginMode
from tests.e2e.helpers import shock, wait_mark

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"



def liquidations(run_dir) -> list[dict]:
    path = run_dir / "audit" / "liquidator.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def requote(mm: Client, mm2: Client, price: int) -> None:
    """Market makers follow the new price: a fresh book around it and one trade at it."""
    await mm.cancel_all(SYMBOL)
    await mm2.cancel_all(SYMBOL)
    await mm.place(SYMBOL, BUY, qty=200, price=price - 30)
    await mm.place(SYMBOL, SELL, qty=200, price=price + 30)
    await mm.place(SYMBOL, SELL, qty=5, price=price)
    await mm2.place(SYMBOL, BUY, qty=5, price=price, tif="IOC")


async def test_crash_liquidates_and_explain_shows_the_path(cluster):
    async with Client(cluster.endpoint(), api_key=cluster.api_key("alice"),
                      market_data=cluster.md_endpoint()) as alice, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm1")) as mm, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm2")) as mm2:
        price = (await wait_mark(alice, SYMBOL)).mark
        await alice.request(SetMarginMode(symbol=SYMBOL, mode="isolated"))
        await alice.set_leverage(SYMBOL, 50)
        await mm.place(SYMBOL, SELL, qty=5_000, price=price)
        await alice.place(SYMBOL, BUY, qty=5_000, price=price)  # 5 BTC isolated at 50x
        view = await alice.account_view()
        assert view.positions[0].mode == "isolated" and view.positions[0].qty == 5_000

        shock(cluster, SYMBOL, -30_000)  # every venue 3% lower
        deadline = time.monotonic() + 20
        found = []
        while time.monotonic() < deadline and not found:
            mark = (await wait_mark(alice, SYMBOL)).index
            await requote(mm, mm2, mark)
            await asyncio.sleep(0.3)
            found = [r for r in liquidations(cluster.run_dir)
                     if r["rule"] == "liquidation.trigger" and r["numbers"]["account"] == "alice"]
        assert found, "alice was not liquidated"
        liq_id = int(found[0]["subject"][4:])
        for _ in range(150):  # let the path finish
            if any(r["subject"] == f"liq-{liq_id}" and r["rule"] == "liquidation.end"
                   for r in liquidations(cluster.run_dir)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"liquidation {liq_id} did not end: "
                                 f"{[r['rule'] for r in liquidations(cluster.run_dir)]}")
        view = await alice.account_view()
        assert not view.positions or view.positions[0].qty < 5_000

    explained = cluster.cli_json("explain", "liquidation", str(liq_id))
    assert explained["account"] == "alice" and explained["symbol"] == SYMBOL
    assert explained["path"][:2] == ["trigger", "cancel"] and explained["path"][-1] == "end"
    assert explained["status"] in ("closed", "restored")
    trigger = explained["steps"][0]["numbers"]
    assert trigger["isolated"] == 1 and trigger["equity"] <= trigger["maintenance_margin"] + \
        trigger["forced_fee"]
    report = cluster.cli("incident", "report", "--since", "10m")
    assert report.returncode == 0 and f"| {liq_id} | alice | {SYMBOL} |" in report.stdout
