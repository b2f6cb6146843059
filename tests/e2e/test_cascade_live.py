"""The issue's end-to-end check, on a small scale: a snapshot of a running cluster cascaded with a
-8 % shock (the liquidator's own decisions, `--close venue`) names the same accounts as the same
shock applied live through the feeds."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cluster.client import Client
from cluster.protocol import BUY, SELL, SetMarginMode
from tests.e2e.helpers import wait_mark
from tests.e2e.helpers import shock
from tests.e2e.test_liquidation import liquidations, requote

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"
# isolated longs of 5 BTC: 50x and 25x are liquidated well before -8 %, 8x and 5x survive it
LEVERAGE = {"alice": 50, "taker1": 25, "bob": 8, "taker2": 5}


async def open_positions(cluster) -> None:
    async with Client(cluster.endpoint(), api_key=cluster.api_key("mm1")) as mm:
        price = None
        for name, lev in LEVERAGE.items():
            async with Client(cluster.endpoint(), api_key=cluster.api_key(name),
                              market_data=cluster.md_endpoint()) as c:
                if price is None:
                    price = (await wait_mark(c, SYMBOL)).mark
                await c.request(SetMarginMode(symbol=SYMBOL, mode="isolated"))
                await c.set_leverage(SYMBOL, lev)
                await mm.place(SYMBOL, SELL, qty=5_000, price=price)
                await c.place(SYMBOL, BUY, qty=5_000, price=price)
                view = await c.account_view()
                assert view.positions[0].qty == 5_000, (name, view)
        # a book for the liquidations to sell into, both in the snapshot and live
        await mm.place(SYMBOL, BUY, qty=20_000, price=price * 97 // 100)


async def crash_live(cluster, until: float) -> set[str]:
    shock(cluster, SYMBOL, -80_000)
    async with Client(cluster.endpoint(), api_key=cluster.api_key("alice"),
                      market_data=cluster.md_endpoint()) as watcher, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm1")) as mm, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm2")) as mm2:
        while time.monotonic() < until:
            index = (await wait_mark(watcher, SYMBOL)).index
            await requote(mm, mm2, index)
            await asyncio.sleep(0.3)
            found = {r["numbers"]["account"] for r in liquidations(cluster.run_dir)
                     if r["rule"] == "liquidation.trigger"}
            if found >= {"alice", "taker1"} and time.monotonic() > until - 6:
                break
    return {r["numbers"]["account"] for r in liquidations(cluster.run_dir)
            if r["rule"] == "liquidation.trigger"}


def test_snapshot_cascade_names_the_accounts_a_live_crash_liquidates(cluster, tmp_path):
    asyncio.run(open_positions(cluster))
    snap = tmp_path / "snap.json"
    cluster.cli_json("cascade", "snapshot", "--out", str(snap))
    sim = cluster.cli_json("cascade", "--snapshot", str(snap), "--shock", "-0.08",
                           "--close", "venue")
    simulated = {liq["key"].split(":")[0] for liq in sim["liquidations"]}
    live = asyncio.run(crash_live(cluster, time.monotonic() + 25))
    assert simulated == {"alice", "taker1"}, json.dumps(sim["liquidations"])
    assert live == simulated
