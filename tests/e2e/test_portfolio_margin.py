"""The `portfolio` margin mode on a real cluster (#24): two accounts hold the same hedge (long 20
BTC, short 225 ETH); an admin allows alice the portfolio mode (`perpx account portfolio enable`:
her own key may neither select it before nor allow it herself), alice switches to it with `perpx
account margin-mode`, bob stays in cross. A BTC crash that ETH does not follow (the move the hedge does not cover) liquidates alice,
on the stress grid's requirement that `perpx stress` prints for the same notionals, and not bob,
whose summed ladder is far below his equity."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from cluster.client import Client
from cluster.protocol import BUY, SELL
from tests.e2e.helpers import poll, shock, wait_mark
from tests.e2e.test_liquidation import liquidations

pytestmark = pytest.mark.e2e
BTC, ETH = "BTC-PERP", "ETH-PERP"
LONG_BTC, SHORT_ETH = 20_000, 22_500  # lots: 20 BTC, 225 ETH (about 600k and 450k USDC)
DEPTH_TICKS = 50  # the makers' closing depth, this far from the price: a small liquidity add-on


async def requote_btc(mm: Client, mm2: Client, price: int) -> None:
    """A deep bid near the new price (both accounts' longs could close into it), one small ask,
    and a trade at the price."""
    await mm.cancel_all(BTC)
    await mm.place(BTC, BUY, qty=2 * LONG_BTC, price=price - DEPTH_TICKS)
    await mm.place(BTC, SELL, qty=5, price=price)
    await mm2.place(BTC, BUY, qty=5, price=price, tif="IOC")


async def open_hedges(cluster) -> None:
    async with Client(cluster.endpoint(), api_key=cluster.api_key("mm1"),
                      market_data=cluster.md_endpoint()) as mm, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm2")) as mm2:
        btc, eth = (await wait_mark(mm, BTC)).mark, (await wait_mark(mm, ETH)).mark
        # the books both legs would close into, before anything is held: a portfolio account's
        # liquidity add-on walks them (an empty book would charge the full scan move)
        await mm.place(BTC, BUY, qty=2 * LONG_BTC, price=btc - DEPTH_TICKS)
        await mm2.place(ETH, SELL, qty=2 * SHORT_ETH, price=eth + DEPTH_TICKS)
        for name in ("alice", "bob"):
            async with Client(cluster.endpoint(), api_key=cluster.api_key(name)) as c:
                await mm.place(BTC, SELL, qty=LONG_BTC, price=btc)
                await c.place(BTC, BUY, qty=LONG_BTC, price=btc)
                await mm2.place(ETH, BUY, qty=SHORT_ETH, price=eth)
                await c.place(ETH, SELL, qty=SHORT_ETH, price=eth)
                view = await c.account_view()
                assert {p.symbol: p.qty for p in view.positions} == {
                    BTC: LONG_BTC, ETH: -SHORT_ETH}, (name, view)


async def crash(cluster, until: float) -> None:
    """BTC -7 % through the feeds, ETH left alone; the makers follow BTC's index down."""
    shock(cluster, BTC, -70_000)
    async with Client(cluster.endpoint(), api_key=cluster.api_key("mm1"),
                      market_data=cluster.md_endpoint()) as mm, \
            Client(cluster.endpoint(), api_key=cluster.api_key("mm2")) as mm2:
        while time.monotonic() < until:
            await requote_btc(mm, mm2, (await wait_mark(mm, BTC)).index)
            await asyncio.sleep(0.3)
            if triggers(cluster, "alice") and time.monotonic() > until - 4:
                break  # alice's liquidation seen, and bob watched for a few seconds after it


def triggers(cluster, account: str) -> list[dict]:
    return [r["numbers"] for r in liquidations(cluster.run_dir)
            if r["rule"] == "liquidation.trigger" and r["numbers"]["account"] == account]


def test_a_portfolio_account_is_liquidated_by_a_decorrelated_crash_its_cross_twin_is_not(cluster):
    asyncio.run(open_hedges(cluster))
    refused = cluster.cli_json("account", "margin-mode", "alice", "portfolio", ok=False)
    assert refused["error"] == "portfolio_not_enabled", refused
    assert "perpx account portfolio enable alice" in refused["detail"]["enabled_by"]
    own = cluster.cli_json("account", "portfolio", "enable", "alice", "--api-key",
                           cluster.api_key("alice"), ok=False)  # a trade key: not an admin's
    assert (own["error"], own["detail"]["required"]) == ("missing_scope", "admin"), own
    allowed = cluster.cli_json("account", "portfolio", "enable", "alice")  # the topology's admin
    assert (allowed["action"], allowed["detail"]["by"], allowed["detail"]["enabled"]) == (
        "portfolio_access_changed", "admin", 1)
    assert cluster.cli_json("account", "show", "alice")["portfolio_enabled"] is True
    switched = cluster.cli_json("account", "margin-mode", "alice", "portfolio")
    d = switched["detail"]
    assert (switched["action"], d["from"], d["to"]) == ("account_margin_mode_changed", "cross",
                                                        "portfolio")
    assert d["binding_regime"] == "decor50" and d["initial_source"] == "stress"
    assert d["initial_margin"] > d["maintenance_margin"] == d["stress_requirement"]

    alice, bob = (cluster.cli_json("stress", name) for name in ("alice", "bob"))
    assert (alice["margin_mode"], alice["in_force"]) == ("portfolio", "stress (portfolio mode)")
    assert alice["requirement_in_force"] == alice["portfolio_requirement"] > \
        alice["ladder_maintenance"]
    assert (bob["margin_mode"], bob["in_force"]) == ("cross", "ladder (cross mode)")
    assert bob["requirement_in_force"] == bob["ladder_maintenance"]
    for report in (alice, bob):  # the same hedge: the grid binds at decorrelation for both
        assert report["stress"]["binding"] == "decor50"
        assert report["equity_over_requirement"] > 0
    assert "in force: stress (portfolio mode)" in cluster.cli("stress", "alice", check=True).stdout
    view = cluster.cli_json("account", "show", "alice")
    assert view["margin_mode"] == "portfolio" and view["portfolio"]["binding_regime"] == "decor50"

    asyncio.run(crash(cluster, time.monotonic() + 25))
    found = poll(lambda: triggers(cluster, "alice"), 5)
    assert found, "alice (portfolio) was not liquidated after BTC fell 7 %"
    t = found[0]
    assert t["portfolio"] == 1 and t["maintenance_source"] == "stress"
    assert t["equity"] <= t["maintenance_margin"] + t["forced_fee"]
    assert t["maintenance_margin"] == t["stress_requirement"]
    # the same legs through `perpx stress` (offline, no book): the grid's figure to the atom
    legs = [f"{s}={Decimal(t[f'notional.{s}']) / 10**6}" for s in (BTC, ETH)]
    offline = cluster.cli_json("stress", *[x for leg in legs for x in ("--notional", leg)])
    assert offline["stress"]["requirement"] == t["stress_requirement"] - t["liquidity_addon"]
    assert offline["stress"]["binding"] == t["binding"]
    assert t[f"notional.{BTC}"] > 0 > t[f"notional.{ETH}"]
    assert not triggers(cluster, "bob"), "bob (cross) was liquidated: his ladder is far below"
    after = cluster.cli_json("stress", "bob")
    assert after["in_force"] == "ladder (cross mode)" and after["equity_over_requirement"] > 0
