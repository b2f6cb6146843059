"""Market data over a lossy link: a subscriber's book copy (cluster.book_mirror) notices every lost
delta by its sequence number, resyncs from a snapshot, and is never wrong for the sequence number
it claims."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from cluster.book_mirror import BookMirror
from cluster.client import Client
from cluster.protocol import BUY, SELL
from tests.e2e.helpers import wait_mark, wait_netsim_applied

pytestmark = pytest.mark.e2e
SYMBOL = "ETH-PERP"


@contextlib.asynccontextmanager
async def maker_and_watcher(cluster):
    """A market maker (mm1), a watcher (bob) subscribed to the symbol's market data, the mark."""
    async with Client(cluster.endpoint(), api_key=cluster.api_key("mm1"),
                      market_data=cluster.md_endpoint()) as mm, \
            Client(cluster.endpoint(), api_key=cluster.api_key("bob"),
                   market_data=cluster.md_endpoint()) as watcher:
        mark = (await wait_mark(mm, SYMBOL)).mark
        await watcher.subscribe(b"md." + SYMBOL.encode())
        yield mm, watcher, mark


async def trade_and_watch(cluster) -> tuple[BookMirror, object]:
    async with maker_and_watcher(cluster) as (mm, watcher, mark):
        await asyncio.sleep(0.3)  # the subscription reaches the gateway's PUB
        mirror = BookMirror(SYMBOL)
        await mirror.resync(watcher)

        async def watch(until: float) -> None:
            while time.monotonic() < until:
                try:
                    batch = await asyncio.wait_for(watcher.market_data(), 0.2)
                except asyncio.TimeoutError:
                    continue
                if not mirror.feed(batch):
                    await mirror.resync(watcher)

        watching = asyncio.create_task(watch(time.monotonic() + 6))
        for i in range(120):  # quotes on both sides, a third of them cancelled again
            side = BUY if i % 2 else SELL
            report = await mm.place(SYMBOL, side, 1 + i % 5, mark - side * (20 + i % 40))
            if i % 3 == 0:
                await mm.cancel(SYMBOL, report.event.order_id)
        await watching
        return mirror, await watcher.book(SYMBOL, depth=1000)


def test_a_lossy_market_data_link_is_noticed_and_resynced_never_wrong(cluster):
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "set", "gateway->subscribers",
                                                  "--loss", "0.3"), "gateway")
    mirror, final = asyncio.run(trade_and_watch(cluster))
    assert mirror.gaps > 0 and mirror.resyncs > 1, (mirror.gaps, mirror.resyncs)
    if mirror.synced and mirror.book_seq == final.book_seq:
        assert mirror.levels(1000) == (final.bids, final.asks)
    assert not mirror.synced or mirror.book_seq <= final.book_seq


async def mirror_without_asking(cluster) -> tuple[BookMirror, object]:
    """A copy kept from market data alone: deltas, and the snapshots matching publishes."""
    async with maker_and_watcher(cluster) as (mm, watcher, mark):
        mirror = BookMirror(SYMBOL)  # unsynced until a published snapshot arrives
        target: list = []  # the book once trading stops

        async def watch(until: float) -> None:
            while time.monotonic() < until:
                if target and mirror.synced and mirror.book_seq == target[0].book_seq:
                    return
                try:
                    mirror.feed(await asyncio.wait_for(watcher.market_data(), 0.2))
                except asyncio.TimeoutError:
                    continue

        watching = asyncio.create_task(watch(time.monotonic() + 15))
        for i in range(90):
            side = BUY if i % 2 else SELL
            await mm.place(SYMBOL, side, 1 + i % 5, mark - side * (20 + i % 40))
        target.append(await watcher.book(SYMBOL, depth=1000))
        await watching  # one snapshot a second, each lost with p 0.3: level within seconds
        await mm.cancel_all(SYMBOL)
        return mirror, target[0]


def test_a_subscriber_heals_from_published_snapshots_without_asking(cluster):
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "set", "gateway->subscribers",
                                                  "--loss", "0.3"), "gateway")
    try:
        mirror, final = asyncio.run(mirror_without_asking(cluster))
    finally:
        cluster.cli_json("netsim", "clear")
    assert mirror.resyncs >= 1 and mirror.synced, (mirror.gaps, mirror.resyncs)
    assert mirror.book_seq == final.book_seq and mirror.levels(1000) == (final.bids, final.asks)


def test_leak_an_anonymous_subscriber_sees_trades_but_no_account(cluster):
    """Issue 17, the leak: an anonymous subscriber to every topic saw ('trade', 'taker1', 'mm2')
    97 times in a few seconds. Public market data names no account; the trader's own session
    still gets its fills."""
    from cluster.protocol import Fill, Trade

    async def run() -> tuple[list, list, list]:
        async with Client(cluster.endpoint(), market_data=cluster.md_endpoint()) as anyone, \
                maker_and_watcher(cluster) as (mm, bob, mark):
            await anyone.subscribe(b"")
            await asyncio.sleep(0.3)  # the subscription reaches the gateway's PUB
            await mm.place(SYMBOL, SELL, 3, mark + 50)
            await bob.place(SYMBOL, BUY, 3, mark + 50)
            frames, trades = [], []
            deadline = time.monotonic() + 5
            while not trades and time.monotonic() < deadline:
                try:
                    topic, frame = await asyncio.wait_for(anyone._md.recv_multipart(), 0.5)
                except asyncio.TimeoutError:
                    continue
                frames.append(frame)
                trades += [m for m in anyone._md_codec.decode(frame) if type(m) is Trade]
            fills = []
            while not fills:  # its own fill, on its own session (reports are waited for)
                report = await asyncio.wait_for(bob.reports.get(), 5)
                fills += [report.event] if type(report.event) is Fill else []
            return frames, trades, fills

    frames, trades, fills = asyncio.run(run())
    assert trades and (trades[0].taker_account, trades[0].maker_account) == ("", "")
    assert not [f for f in frames if b"mm1" in f or b"bob" in f]
    assert fills and fills[0].qty == 3  # bob's own session: his fill
