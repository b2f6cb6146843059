"""An order through the real processes: gateway -> risk -> matching -> risk -> gateway, both clients."""

from __future__ import annotations

import pytest

from cluster.client import Client
from cluster.protocol import BUY, SELL, Fill, OrderAccepted
from cluster.rules.units import ceil_div
from tests.e2e.helpers import next_report, wait_mark

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"


async def test_two_accounts_cross_fill_positions_balances_fees_and_book(cluster):
    spec = cluster.topo.symbols[SYMBOL]
    deposits = {a: cluster.topo.accounts[a].deposit for a in ("alice", "bob")}
    async with Client(cluster.endpoint(), api_key=cluster.api_key("alice"),
                      market_data=cluster.md_endpoint()) as alice, \
            Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
        price = (await wait_mark(alice, SYMBOL)).mark

        ask = await alice.place(SYMBOL, SELL, qty=20, price=price)  # rests: 0.020 BTC
        assert type(ask.event) is OrderAccepted and ask.event.status == "new"
        bid = await bob.place(SYMBOL, BUY, qty=12, price=price)  # takes 0.012 BTC
        assert type(bid.event) is OrderAccepted

        bob_fill = await next_report(bob, Fill)
        alice_fill = await next_report(alice, Fill)
        notional = price * 12 * spec.atoms_per_tick_lot
        taker_fee = ceil_div(notional * spec.taker_fee_ppm, 1_000_000)
        maker_fee = ceil_div(notional * spec.maker_fee_ppm, 1_000_000)
        assert (bob_fill.price, bob_fill.qty, bob_fill.liquidity, bob_fill.fee, bob_fill.remaining) \
            == (price, 12, "taker", taker_fee, 0)
        assert (alice_fill.price, alice_fill.qty, alice_fill.liquidity, alice_fill.fee,
                alice_fill.remaining) == (price, 12, "maker", maker_fee, 8)
        assert alice_fill.trade_id == bob_fill.trade_id

        a, b = await alice.account_view(), await bob.account_view()
        assert b.balance == deposits["bob"] - notional - taker_fee
        assert a.balance == deposits["alice"] + notional - maker_fee
        assert b.wallet_balance == deposits["bob"] - taker_fee
        assert a.wallet_balance == deposits["alice"] - maker_fee
        assert [(p.symbol, p.qty, p.cost) for p in b.positions] == [(SYMBOL, 12, notional)]
        assert [(p.symbol, p.qty, p.cost) for p in a.positions] == [(SYMBOL, -12, -notional)]
        assert (a.fees_paid, b.fees_paid) == (maker_fee, taker_fee)
        assert a.open_orders == 1 and b.open_orders == 0
        assert a.order_margin > 0 and b.order_margin == 0

        book = await bob.book(SYMBOL, depth=5)
        assert book.asks == [(price, 8)] and book.bids == []


async def test_a_session_whose_connection_is_gone_is_forgotten(cluster):
    """A client that vanishes without Logout: the first report the gateway cannot route to it
    drops its session, so reports stop fanning out to dead connections."""
    import asyncio
    import time

    import msgspec
    import zmq

    from cluster.protocol import Logon

    ctx = zmq.Context()
    ghost = ctx.socket(zmq.DEALER)
    ghost.setsockopt(zmq.LINGER, 0)
    ghost.connect(cluster.endpoint())
    ghost.send(msgspec.msgpack.encode([Logon(req_id=1, api_key=cluster.api_key("alice"))]))
    assert ghost.poll(10_000)
    ghost.recv()
    ghost.close()  # gone, no Logout
    ctx.term()
    await asyncio.sleep(0.3)

    def disconnected() -> int:
        return cluster.status()["nodes"]["gateway"]["stats"].get("sessions_disconnected", 0)

    async with Client(cluster.endpoint(), api_key=cluster.api_key("alice"),
                      market_data=cluster.md_endpoint()) as alice:
        price = (await wait_mark(alice, SYMBOL)).mark
        placed = await alice.place(SYMBOL, BUY, qty=1, price=price - price // 100)
        assert type(placed.event) is OrderAccepted  # its report also went to the ghost's session
        deadline = time.monotonic() + 10
        while disconnected() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert disconnected() == 1
        await alice.cancel(SYMBOL, placed.event.order_id)
