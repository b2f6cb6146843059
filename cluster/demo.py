"""Demo traffic for `make cluster`: two market makers quote both symbols around the mark, two takers
cross the spread now and then; trades, marks and the top of book are printed as they happen.

A stop is a stop: every loop checks `running`, every request has the client's timeout, the tasks
are cancelled and waited for at most TASK_STOP_S, the summary has SUMMARY_S and the clients close
together in at most about LOGOUT_S, so the demo ends within about 3 s of its deadline whatever
the venue does. A taker trades only on a mark younger than MARK_FRESH_S: one whose market-data
reader has stopped must not go on trading against a price the market has left."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from functools import partial

from cluster.client import TASK_STOP_S, Client, RequestFailed, stop_tasks, venue_client
from cluster.config import Topology
from cluster.humanize import Units, describe
from cluster.protocol import BUY, SELL, IndexMark, MaintenanceAlert, OrderRejected, Trade
from cluster.rules.units import from_units

MAKERS = ("mm1", "mm2")
TAKERS = ("taker1", "taker2")
REQUEST_TIMEOUT_S = 2.0  # the demo's requests: a venue slower than this is reported, not waited on
CONNECT_S = 10.0  # all four clients logged on, or the demo says why and stops
SUMMARY_S = 2.0  # the closing summary's account reads, together
MARK_FRESH_S = 3.0  # the oracle publishes every few hundred ms; older than this, a mark is stale
# Why the makers' post-only quotes are refused now and then: printed beside their count.
POST_ONLY_WHY = ("a maker's post-only quote that would have crossed the other maker's quote or a "
                 "level left by the moving mark; the venue refuses it instead of letting it take, "
                 "which is what post-only asks for")


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, topo: Topology, seed: int) -> None:
        self.topo = topo
        self.units = Units.of(topo)
        self.rng = random.Random(seed)
        self.marks: dict[str, tuple[int, float]] = {}  # symbol -> (mark, monotonic time seen)
        self.running = True  # False once stopping: every loop ends at its next turn
        self.trades = 0
        self.clients: dict[str, Client] = {}
        self.quotes_placed = 0
        self.rejects: dict[str, int] = {}  # reason -> count

    async def connect(self) -> None:
        for name in MAKERS + TAKERS:
            acct = self.topo.accounts[name]
            client = venue_client(self.topo, api_key=acct.api_key, market_data=True,
                                  timeout=REQUEST_TIMEOUT_S)
            self.clients[name] = client  # before connecting: close() releases it either way
            await client.connect()

    def fresh_mark(self, symbol: str) -> int | None:
        """The symbol's mark if one was seen in the last MARK_FRESH_S, else None."""
        mark, seen = self.marks.get(symbol, (0, 0.0))
        return mark if mark and time.monotonic() - seen <= MARK_FRESH_S else None

    def fmt(self, symbol: str, ticks: int) -> str:
        return self.clients[MAKERS[0]].price_str(symbol, ticks)

    def fmt_qty(self, symbol: str, lots: int) -> str:
        return self.clients[MAKERS[0]].qty_str(symbol, lots)

    async def watch_market(self) -> None:
        client = self.clients[MAKERS[0]]
        await client.subscribe(b"md.", b"mark.")
        last_mark_print: dict[str, float] = {}
        while self.running:
            for msg in await client.market_data():
                t = type(msg)
                if t is Trade:  # public: no account names (the demo's own fills say who)
                    self.trades += 1
                    side = "buy" if msg.taker_side > 0 else "sell"
                    say(f"TRADE  {msg.symbol:9} {self.fmt_qty(msg.symbol, msg.qty):>8} @ "
                        f"{self.fmt(msg.symbol, msg.price):>10}  taker {side}"
                        f"  (trade {msg.trade_id})")
                elif t is IndexMark:
                    now = time.monotonic()
                    self.marks[msg.symbol] = (msg.mark, now)
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
        while self.running:
            for symbol in self.topo.symbols:
                mark = self.fresh_mark(symbol)
                if not mark or not self.running:
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
        while self.running:
            await asyncio.sleep(0.3 + self.rng.random() * 0.5)
            symbol = self.rng.choice(sorted(self.topo.symbols))
            mark = self.fresh_mark(symbol)
            if not mark or not self.running:
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
        while self.running:
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
        if self.rejects.get("post_only_would_take"):
            say(f"        post_only_would_take: {POST_ONLY_WHY}")
        views = await asyncio.gather(*(c.account_view() for c in self.clients.values()),
                                     return_exceptions=True)
        for name, view in zip(self.clients, views):
            if isinstance(view, BaseException):
                say(f"ACCOUNT {name:7} unavailable: {type(view).__name__} {view}")
                continue
            positions = ", ".join(f"{p.symbol} {self.fmt_qty(p.symbol, p.qty)}" for p in view.positions)
            say(f"ACCOUNT {name:7} equity {from_units(view.equity, self.topo.atom)} "
                f"{self.topo.collateral}  fees {from_units(view.fees_paid, self.topo.atom)} "
                f"{self.topo.collateral}  positions: {positions or 'flat'}")

    async def close(self) -> None:
        """Every client together, each bounded by its own close()."""
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)


def said_if_failed(task: asyncio.Task) -> None:
    """A demo loop that died of an error says so when it dies (its traders stop on a stale mark
    rather than trade on it), not only at the end."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"perpx demo: {task.get_coro().__qualname__} stopped: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)


async def run_demo(topo: Topology, seconds: float | None, on_done) -> None:
    demo = Demo(topo, seed=topo.seed)
    tasks: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(CONNECT_S):
            await demo.connect()
        say("perpx demo: market makers mm1, mm2 quote BTC-PERP and ETH-PERP; takers taker1, taker2 "
            "cross the spread." + (f" Stops after {seconds:g} s." if seconds else " Ctrl-C stops."))
        tasks = [asyncio.create_task(demo.watch_market()), asyncio.create_task(demo.show_book())]
        tasks += [asyncio.create_task(demo.make_markets(n, 300 + 200 * i)) for i, n in enumerate(MAKERS)]
        tasks += [asyncio.create_task(demo.take(n)) for n in TAKERS]
        tasks += [asyncio.create_task(demo.watch_alerts(n)) for n in demo.clients]
        for task in tasks:
            task.add_done_callback(said_if_failed)
        if seconds:
            await asyncio.sleep(seconds)
        else:
            await asyncio.Event().wait()
    except Exception as exc:  # the demo must never take the cluster down with it
        print(f"perpx demo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        demo.running = False
        stuck = await stop_tasks(tasks, TASK_STOP_S)
        if stuck:  # said, and left behind: the stop goes on
            print(f"perpx demo: {len(stuck)} task(s) did not stop within {TASK_STOP_S:g} s",
                  file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(SUMMARY_S):
                await demo.summary()
        except Exception as exc:
            print(f"perpx demo: summary unavailable: {type(exc).__name__} {exc}", file=sys.stderr,
                  flush=True)
        finally:  # a second stop (Ctrl-C during the summary) still closes the clients
            await demo.close()
            on_done()
