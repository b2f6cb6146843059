"""A venue in one process for surveillance tests and evaluation: the real matching engine, whose
events reach the surveillance core as the node's private feed would carry them (one EngineBatch
per command, stamped with the command's time), plus risk's leverage notices and account state.

    v = Venue()
    v.place("alice", 1, qty=5, price=300_000, at_ms=0)
    v.cancel("alice", oid, at_ms=3)
    v.core.tick(v.now)
"""

from __future__ import annotations

from cluster import config
from cluster.protocol import (
    AccountRisk, Cancel, EngineBatch, IndexMark, MarkPrice, NewOrder, Notice, Trade,
)
from nodes.matching.engine import MatchingEngine
from nodes.surveillance.core import SurveillanceCore

MS = 1_000_000
SYMBOL = "BTC-PERP"


class Venue:
    def __init__(self, symbol: str = SYMBOL, mark: int = 300_000, specs=None) -> None:
        self.specs = specs or config.load().symbols
        self.symbol = symbol
        self.engine = MatchingEngine(self.specs)
        self.core = SurveillanceCore(self.specs)
        self.batches: list = []  # every message the core was given, with its time
        self.next_id = 1
        self.now = 0
        self.leverage: dict[str, int] = {}
        self.positions: dict[str, tuple[int, int]] = {}  # account -> (qty, cost atoms)
        self.last_price = 0  # ticks, of the latest trade
        self.mark(mark)

    def feed(self, msg, now: int) -> None:
        self.now = max(self.now, now)
        self.batches.append((msg, now))
        self.core.handle(msg, now)

    def command(self, cmd, at_ns: int) -> list:
        events = self.engine.handle(cmd)
        if events:
            self.feed(EngineBatch(ts_ns=at_ns, events=events), at_ns)
        for ev in events:
            if type(ev) is Trade:
                self._position(ev)
        return events

    def mark(self, mark: int, at_ns: int | None = None) -> None:
        at = self.now if at_ns is None else at_ns
        self.engine.handle(MarkPrice(symbol=self.symbol, mark=mark))
        self.feed(IndexMark(symbol=self.symbol, index=mark, mark=mark, last=mark, seq=0, ts_ns=at),
                  at)

    def place(self, account: str, side: int, qty: int, price: int = 0, at_ns: int = 0,
              tif: str = "GTC", post_only: bool = False) -> int:
        oid = self.next_id
        self.next_id += 1
        self.command(NewOrder(order_id=oid, account=account, symbol=self.symbol, side=side,
                              qty=qty, price=price, type="limit" if price else "market",
                              tif=tif, post_only=post_only), at_ns)
        return oid

    def cancel(self, account: str, oid: int, at_ns: int) -> None:
        self.command(Cancel(account=account, symbol=self.symbol, order_id=oid), at_ns)

    def set_leverage(self, account: str, leverage: int, at_ns: int) -> None:
        before = self.leverage.get(account, self.specs[self.symbol].default_leverage)
        self.leverage[account] = leverage
        self.feed(Notice(rule="risk.leverage_changed", subject=account, decision="applied",
                         numbers={"symbol": self.symbol, "from": before, "to": leverage},
                         ts_ns=at_ns), at_ns)

    def account_risk(self, account: str, margin: int, at_ns: int) -> None:
        """Risk's account state for `account`: its position from the venue's fills, and `margin`
        atoms of wallet (risk's balance is the cash left after paying the position's cost)."""
        qty, cost = self.positions.get(account, (0, 0))
        self.feed(AccountRisk(account=account, balance=margin - cost,
                              positions={self.symbol: (qty, cost)} if qty else {}), at_ns)

    def _position(self, ev: Trade) -> None:
        mult = self.specs[ev.symbol].atoms_per_tick_lot
        self.last_price = ev.price
        for account, side in ((ev.taker_account, ev.taker_side),
                              (ev.maker_account, -ev.taker_side)):
            qty, cost = self.positions.get(account, (0, 0))
            self.positions[account] = (qty + side * ev.qty, cost + side * ev.qty * ev.price * mult)
