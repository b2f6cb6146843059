"""Demo traffic for `make cluster`: two market makers quote both symbols around the mark, two takers
cross the spread now and then; trades, marks and the top of book are printed as they happen."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from functools import partial

from cluster.client import Client, RequestFailed
from cluster.config import Topology
from cluster.humanize import Units, describe
from cluster.protocol import BUY, SELL, IndexMark, MaintenanceAlert, OrderRejected, Trade
from cluster.units import from_units

MAKERS = ("mm1", "mm2")
TAKERS = ("taker1", "taker2")


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, topo: Topology, seed: int) -> None:
        self.topo = topo
        self.units = Units.of(topo)
        self.rng = random.Random(seed)
        self.marks: dict[str, int] = {}
        self.trades = 0
        self.clients: dict[str, Client] = {}
        self.quotes_placed = 0
        self.rejects: dict[str, int] = {}  # reason -> count

    async def connect(self) -> None:
        gw = self.topo.nodes["gateway"]
        for name in MAKERS + TAKERS:
            acct = self.topo.accounts[name]
            client = Client(gw.client, api_key=acct.api_key, market_data=gw.pub)
            await client.connect()
            self.clients[name] = client

    def fmt(self, symbol: str, ticks: int) -> str:
        return self.clients[MAKERS[0]].price_str(symbol, ticks)

    def fmt_qty(self, symbol: str, lots: int) -> str:
        return self.clients[MAKERS[0]].qty_str(symbol, lots)

    async def watch_market(self) -> None:
        client = self.clients[MAKERS[0]]
        await client.subscribe(b"md.", b"mark.")
        last_mark_print: dict[str, float] = {}
        while True:
            for msg in await client.market_data():
                t = type(msg)
                if t is Trade:
                    self.trades += 1
                    side = "buy" if msg.taker_side > 0 else "sell"
                    say(f"TRADE  {msg.symbol:9} {self.fmt_qty(msg.symbol, msg.qty):>8} @ "
                        f"{self.fmt(msg.symbol, msg.price):>10}  taker {side}  (trade {msg.trade_id})")
                elif t is IndexMark:
                    self.marks[msg.symbol] = msg.mark
                    now = time.monotonic()
                    if now - last_mark_print.get(msg.symbol, 0) >= 2.0:
                        last_mark_print[msg.symbol] = now
                        say(f"MARK   {msg.symbol:9} index {self.fmt(msg.symbol, msg.index):>10}  "
                            f"mark {self.fmt(msg.symbol, msg.mark):>10}  from {msg.sources} feeds")

    async def watch_alerts(self, name: str) -> None:
        """An account's margin alerts are private: they come with its own reports, not as market
        data (the demo holds every demo account's session, so it can say them all)."""
        client = self.clients[name]
        money = partial(from_units, unit=self.topo.atom)
        while True:
            msg = (await client.reports.get()).event
            if type(msg) is MaintenanceAlert:
                say(f"ALERT  {msg.account} at/below maintenance: equity {money(msg.equity)} "
                    f"<= MM {money(msg.maintenance_margin)} + fee {money(msg.forced_fee)}")

    def rejected(self, name: str, symbol: str, reason: str, detail: dict) -> None:
        """Count a refusal and say why, with the venue's numbers."""
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        numbers = describe(self.units.numbers(reason, detail, symbol))
        say(f"REJECT {name:7} {symbol:9} {reason}" + (f"  ({numbers})" if numbers else ""))

    def answered(self, name: str, symbol: str, report) -> None:
        if type(report.event) is OrderRejected:
            self.rejected(name, symbol, report.event.reason, report.event.detail)

    def failed(self, name: str, symbol: str, exc: Exception) -> None:
        """A request refused with an Error, or never answered."""
        if isinstance(exc, RequestFailed):
            self.rejected(name, symbol, exc.error.reason, exc.error.detail)
        else:
            self.rejected(name, symbol, "timeout", {})

    async def make_markets(self, name: str, offset_ppm: int) -> None:
        client = self.clients[name]
        while True:
            for symbol in self.topo.symbols:
                mark = self.marks.get(symbol)
                if not mark:
                    continue
                try:
                    await client.cancel_all(symbol)
                    for level in range(1, 4):
                        gap = max(1, mark * (offset_ppm * level) // 1_000_000)
                        size = client.lots(symbol, self.topo.symbols[symbol].lot_size) * \
                            self.rng.randint(5, 40)
                        for side, price in ((BUY, mark - gap), (SELL, mark + gap)):
                            report = await client.place(symbol, side, size, price, post_only=True)
                            self.quotes_placed += 1
                            self.answered(name, symbol, report)
                except (RequestFailed, asyncio.TimeoutError) as exc:
                    self.failed(name, symbol, exc)
            await asyncio.sleep(0.5 + self.rng.random() * 0.3)

    async def take(self, name: str) -> None:
        client = self.clients[name]
        while True:
            await asyncio.sleep(0.3 + self.rng.random() * 0.5)
            symbol = self.rng.choice(sorted(self.topo.symbols))
            mark = self.marks.get(symbol)
            if not mark:
                continue
            side = self.rng.choice((BUY, SELL))
            size = self.rng.randint(1, 8)
            try:
                if self.rng.random() < 0.5:
                    report = await client.place(symbol, side, size, type="market", tif="IOC")
                else:
                    limit = mark + side * mark // 500
                    report = await client.place(symbol, side, size, limit, tif="IOC")
                self.answered(name, symbol, report)
            except (RequestFailed, asyncio.TimeoutError) as exc:
                self.failed(name, symbol, exc)

    async def show_book(self) -> None:
        client = self.clients[TAKERS[0]]
        while True:
            await asyncio.sleep(2.0)
            for symbol in sorted(self.topo.symbols):
                book = await client.book(symbol, depth=1)
                bid = f"{self.fmt_qty(symbol, book.bids[0][1])} @ {self.fmt(symbol, book.bids[0][0])}" \
                    if book.bids else "-"
                ask = f"{self.fmt_qty(symbol, book.asks[0][1])} @ {self.fmt(symbol, book.asks[0][0])}" \
                    if book.asks else "-"
                say(f"BOOK   {symbol:9} bid {bid:>22}   ask {ask:>22}")

    async def summary(self) -> None:
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejects.items()))
        say(f"SUMMARY trades seen {self.trades}, quotes placed {self.quotes_placed}, "
            f"rejects {sum(self.rejects.values())}" + (f" ({why})" if why else ""))
        for name, client in self.clients.items():
            view = await client.account_view()
            positions = ", ".join(f"{p.symbol} {self.fmt_qty(p.symbol, p.qty)}" for p in view.positions)
            say(f"ACCOUNT {name:7} equity {from_units(view.equity, self.topo.atom)} "
                f"{self.topo.collateral}  fees {from_units(view.fees_paid, self.topo.atom)}  "
                f"positions: {positions or 'flat'}")

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def run_demo(topo: Topology, seconds: float | None, on_done) -> None:
    demo = Demo(topo, seed=topo.seed)
    tasks: list[asyncio.Task] = []
    try:
        await demo.connect()
        say("perpx demo: market makers mm1, mm2 quote BTC-PERP and ETH-PERP; takers taker1, taker2 "
            "cross the spread." + (f" Stops after {seconds:g} s." if seconds else " Ctrl-C stops."))
        tasks = [asyncio.create_task(demo.watch_market()), asyncio.create_task(demo.show_book())]
        tasks += [asyncio.create_task(demo.make_markets(n, 300 + 200 * i)) for i, n in enumerate(MAKERS)]
        tasks += [asyncio.create_task(demo.take(n)) for n in TAKERS]
        tasks += [asyncio.create_task(demo.watch_alerts(n)) for n in demo.clients]
        if seconds:
            await asyncio.sleep(seconds)
        else:
            await asyncio.Event().wait()
    except Exception as exc:  # the demo must never take the cluster down with it
        print(f"perpx demo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(demo.summary(), 5)
        except Exception as exc:
            print(f"perpx demo: summary unavailable: {exc}", file=sys.stderr, flush=True)
        await demo.close()
        on_done()
