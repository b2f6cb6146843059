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


async def test_defect_8_an_oracle_killed_around_a_funding_time_neither_skips_nor_repeats_one(tmp_path):
    """Issue 17, defect 8, through the real processes: SIGKILL the oracle just before a funding
    time; the supervisor restarts it, it resumes from its snapshot, and risk settles every
    funding time once: consecutive multiples of the interval, none missing, none twice."""
    import json
    import os
    import signal
    import time

    interval_s = 3
    interval = interval_s * 1_000_000_000
    handle = ClusterHandle(tmp_path, symbol_overrides={SYMBOL: {"funding_interval_s": interval_s}})
    handle.up()

    def settled() -> list[int]:
        path = handle.run_dir / "audit" / "risk.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
        # the funding time each settlement was for (before it was named: the one just passed)
        return [r["numbers"].get("funding_ts_ns") or r["ts_ns"] // interval * interval
                for r in records if r["rule"] == "risk.funding" and r["subject"] == SYMBOL]

    async def until(predicate, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"not in {seconds} s: {settled()}")

    try:
        async with Client(handle.endpoint(), api_key=handle.api_key("alice"),
                          market_data=handle.md_endpoint()) as alice, \
                Client(handle.endpoint(), api_key=handle.api_key("bob")) as bob:
            price = (await wait_mark(alice, SYMBOL)).mark
            await alice.place(SYMBOL, BUY, qty=100, price=price)
            await bob.place(SYMBOL, SELL, qty=100, price=price)
            filled_ns = time.time_ns()
            # the first funding time after the trade: every one from it on is alice's to pay
            first = (await until(lambda: [t for t in settled() if t > filled_ns], 15))[0]
            # kill it 0.3 s before the next funding time: it is down (restarting) across it
            await asyncio.sleep(max(0.0, (first + interval - time.time_ns()) / 1e9 - 0.3))
            pid = handle.node_pids()["oracle"]
            os.kill(pid, signal.SIGKILL)
            await until(lambda: handle.node_pids()["oracle"] != pid
                        and handle.status()["nodes"]["oracle"]["state"] == "running", 15)
            times = await until(lambda: (t := [x for x in settled() if x >= first])
                                and t[-1] >= first + 2 * interval and t, 20)
            assert times == list(range(first, times[-1] + 1, interval)), times
            log = (handle.run_dir / "log" / "oracle.log").read_text()
            assert "oracle_state_restored" in log
            a = await alice.account_view()
            after = [x for x in settled() if x >= first]  # (another may have come meanwhile)
            assert len(times) <= len(a.funding) <= len(after)  # one payment per funding time
            assert after == list(range(first, after[-1] + 1, interval)), after
    finally:
        handle.down()
