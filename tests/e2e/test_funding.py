"""Funding through the real processes: the oracle publishes a rate at each (short) interval, risk
settles it, the account view shows the history."""

from __future__ import annotations

import asyncio

import pytest

from cluster.client import Client
from cluster.protocol import BUY, SELL
from tests.conftest import ClusterHandle
from tests.e2e.helpers import wait_mark

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"


async def test_funding_is_settled_every_interval(tmp_path):
    handle = ClusterHandle(tmp_path, symbol_overrides={SYMBOL: {"funding_interval_s": 2}})
    handle.up()
    try:
        async with Client(handle.endpoint(), api_key=handle.api_key("alice"),
                          market_data=handle.md_endpoint()) as alice, \
                Client(handle.endpoint(), api_key=handle.api_key("bob")) as bob:
            price = (await wait_mark(alice, SYMBOL)).mark
            await alice.place(SYMBOL, BUY, qty=100, price=price)
            await bob.place(SYMBOL, SELL, qty=100, price=price)
            for _ in range(80):  # up to 8 s: at least one 2 s funding time passes
                a, b = await alice.account_view(), await bob.account_view()
                if a.funding and b.funding:
                    break
                await asyncio.sleep(0.1)
            assert a.funding and b.funding, "no funding settled"
            fa, fb = a.funding[0], b.funding[0]
            assert fa.rate_e9 == fb.rate_e9 and fa.ts_ns == fb.ts_ns
            assert (fa.qty, fb.qty) == (100, -100)
            if fa.rate_e9 > 0:  # longs pay shorts; the payer rounds up
                assert fa.payment < 0 < fb.payment and -fa.payment >= fb.payment
            elif fa.rate_e9 < 0:
                assert fb.payment < 0 < fa.payment and -fb.payment >= fa.payment
            assert a.positions[0].funding_paid == -sum(f.payment for f in a.funding)
    finally:
        handle.down()
