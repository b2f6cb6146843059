"""`perpx watch SYMBOL`: a symbol's market data as it happens, one line per event, led by its UTC
time: trades, the top
of the book when it changes (kept by cluster.book_mirror from the delta stream), the mark and
index (at most once a second), funding rates, volatility regime changes, the oracle's mode and
sources, and venue notices. Bounded by --seconds, or until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import time

from cluster.book_mirror import BookMirror
from cluster.protocol import (
    BookDelta, BookLevels, FundingRate, IndexMark, Notice, OracleMode, OracleSource, Regime, Trade,
    to_jsonable,
)

MARK_EVERY_S = 1.0


def topics(symbol: str) -> list[bytes]:
    s = symbol.encode()
    return [b"md." + s, b"mark." + s, b"funding." + s, b"regime." + s, b"oracle." + s,
            b"notice." + s]


class Watcher:
    """Turns one symbol's market data into lines for a person (or, with as_json, one JSON object
    per message). Pure apart from the clock it is given."""

    def __init__(self, client, symbol: str, *, as_json: bool = False) -> None:
        self.c, self.symbol, self.as_json = client, symbol, as_json
        self.book = BookMirror(symbol)
        self.top: tuple | None = None
        self.mark_said_at = float("-inf")
        self.events = 0

    def price(self, ticks: int) -> str:
        return self.c.price_str(self.symbol, ticks)

    def qty(self, lots: int) -> str:
        return self.c.qty_str(self.symbol, lots)

    def top_line(self) -> str | None:
        """The best bid and ask, when they changed since last said (and the copy is in sync)."""
        if not self.book.synced:
            return None
        bids, asks = self.book.levels(1)
        top = (bids[0] if bids else None, asks[0] if asks else None)
        if top == self.top:
            return None
        self.top = top
        bid = f"{self.qty(top[0][1])} @ {self.price(top[0][0])}" if top[0] else "-"
        ask = f"{self.qty(top[1][1])} @ {self.price(top[1][0])}" if top[1] else "-"
        return f"TOP      bid {bid:>22}   ask {ask:>22}"

    def lines(self, messages: list, now: float) -> list[str]:
        out = []
        for msg in messages:
            if getattr(msg, "symbol", self.symbol) != self.symbol and type(msg) is not Notice:
                continue
            if self.as_json:
                out.append(json.dumps(to_jsonable(msg)))  # with its type name
                continue
            line = self.line(msg, now)
            if line:
                out.append(line)
        self.events += len(out)
        return out

    def line(self, msg, now: float) -> str | None:
        t = type(msg)
        if t is Trade:
            side = "buy" if msg.taker_side > 0 else "sell"
            return (f"TRADE    {self.qty(msg.qty):>10} @ {self.price(msg.price):>10}  taker {side}"
                    f"  (trade {msg.trade_id})")
        if t is BookDelta or t is BookLevels:
            self.book.feed([msg])  # a gap leaves it unsynced until matching's next snapshot
            return self.top_line()
        if t is IndexMark:
            if now - self.mark_said_at < MARK_EVERY_S:
                return None
            self.mark_said_at = now
            return (f"MARK     {self.price(msg.mark):>10}  index {self.price(msg.index):>10}  "
                    f"last {self.price(msg.last) if msg.last else '-':>10}  oracle {msg.mode} "
                    f"from {msg.sources} feeds")
        if t is FundingRate:
            return f"FUNDING  rate {msg.rate_e9 / 1e7:.7g}%  at mark {self.price(msg.mark)}"
        if t is Regime:
            if not msg.changed:
                return None  # repeated every second as a state; said when it changes
            return (f"REGIME   {msg.regime}  realized vol {msg.realized_vol_ppm / 1e4:g}% "
                    f"(threshold {msg.threshold_ppm / 1e4:g}%, {msg.window_s} s)")
        if t is OracleMode:
            return f"ORACLE   {msg.previous} -> {msg.mode}  {msg.reason}"
        if t is OracleSource:
            why = f"  silent {msg.age_ms} ms" if msg.status == "stale" and msg.age_ms >= 0 else \
                f"  {msg.deviation_ppm / 1e4:+g}% from the others" if msg.status == "outlier" else ""
            return f"SOURCE   {msg.venue} {msg.previous} -> {msg.status}{why}"
        if t is Notice:
            return f"NOTICE   {msg.rule} {msg.subject} {msg.decision}"
        return None


def _say(line: str) -> None:
    print(line, flush=True)


def timestamped(line: str, wall: float) -> str:
    """A line for a person, led by the UTC time of day it was said, to the millisecond."""
    seconds = int(wall)
    return f"{time.strftime('%H:%M:%S', time.gmtime(seconds))}.{int((wall - seconds) * 1000):03d}" \
        f"  {line}"


async def watch(client, symbol: str, seconds: float | None, as_json: bool, say=_say) -> int:
    """Subscribe, take a snapshot for the top of book, then say each event until `seconds` have
    passed; the number of lines said."""
    w = Watcher(client, symbol, as_json=as_json)
    await client.subscribe(*topics(symbol))
    await w.book.resync(client)  # after subscribing, so no delta after the snapshot is missed
    def said(line: str) -> str:  # JSON lines carry their own fields; a person's get the time
        return line if as_json else timestamped(line, time.time())

    first = w.top_line()
    if first and not as_json:
        say(said(first))
        w.events += 1
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:  # a timeout scope, not wait_for: a Ctrl-C's cancel is never lost (client.answer_within)
            async with asyncio.timeout(left):
                batch = await client.market_data()
        except TimeoutError:
            break
        for line in w.lines(batch, time.monotonic()):
            say(said(line))
    return w.events
