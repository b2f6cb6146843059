"""Surveillance features per account x symbol x window: exact integers, updated per event.

    feats = Features(symbols)
    feats.handle(msg, now_ns)          # an EngineBatch of the private feed, a Notice, AccountRisk...
    feats.values(now_ns)               # {(account, symbol): {feature: int}} over the rolling window

Windows. Every counter lives in 10 s buckets kept for the rolling window (10 minutes, RTS 9's "max
OTR in 10-minute buckets"), and in a session total that never expires: `values(now, "10m")` sums (or
takes the maximum over) the buckets still in the window, `values(now, "session")` the totals. A
bucket that leaves the window is subtracted when its key is next touched or read, never by a rescan.

Counters (summed) and peaks (maximum over the window's buckets), per account x symbol:
  orders, amends, cancels      messages the member sent (RTS 9 counts each; venue-decided cancels
                               - IOC remainders, self-trade prevention - are not the member's)
  order_qty, fills, fill_qty   lots accepted; own fills (maker or taker) and their lots
  maker_qty                    the lots of own fills as the maker (passive: the peer group's basis)
  cxl_1ms/10ms/100ms           user cancels of an order less than 1/10/100 ms after it was accepted
  spoof_cxl_qty                lots cancelled on side S within SPOOF_WINDOW_NS of an own fill on -S
                               (MAR 2016/522 5(e): the trade on the other side, then the removal)
  spoof_fill_qty               the lots of those opposite fills (each fill counted once)
  lev_changes                  leverage settings changed (risk's Notice)
  burst_100ms      peak        cancels in any 100 ms
  touch_1s         peak        top-of-book changes the account's commands made in any 1 s
  layer_milli      peak        own lots resting away from the touch on one side per own lot at the
                               touch on the other side (x1000; while the account has one there)
  levels           peak        price levels the account occupies on one side
  two_sided        peak        the smaller side of the account's resting lots as it placed or moved
                               an order (> 0: it quoted both sides at once; the peer group's basis)
  depth_share_ppm  peak        own lots within 1 % of mid / all lots within 1 % of mid
  lev_jump_milli   peak        new / old leverage (x1000) of a raise
  lev_then_order   peak        lots of an order placed within LEVERAGE_LEAD_NS after a raise, times
                               that raise (new / old leverage): the raise and the size it bought,
                               one behaviour (50 lots after a tripling: 150; after no raise: 0)
  sweep_lots       peak        lots of one order that traded as it arrived (an aggressive order:
                               its size as sent, what it took from the book when that was more,
                               e.g. an amend): the push that starts a momentum ignition, seen as it
                               happens, before any reversal; an order larger than the book's side
                               empties it and counts whole
  ignition_ppm     peak        own share of the symbol's traded lots over an aggressive episode x
                               the mid's move in the episode's direction (ppm), counted once the
                               account trades the other way within REVERSAL_NS (momentum ignition)
Derived (from the above, at read time):
  otr_num_milli    (orders + amends + cancels) / fills - 1, x1000 (zero fills: the message count);
                   0 below OTR_MIN_MESSAGES messages in the window (no ratio over a handful)
  otr_vol_milli    order_qty / fill_qty - 1, x1000 (zero fills: order_qty); the same minimum
  cxl_lt_1ms_ppm / cxl_lt_10ms_ppm / cxl_lt_100ms_ppm   share of orders cancelled that fast
  spoof_milli      spoof_cxl_qty / spoof_fill_qty, x1000: large orders pulled after small trades
  passive_ppm      maker_qty / fill_qty (ppm; 0 without fills): not ranked, it picks the peer group
  liq_cluster      other accounts whose liquidation price (this symbol) is within 10 bps of its own
  liq_cohort_lots  the lots of those accounts' positions that were opened within COHORT_NS of this
                   account's own (their opening fills' times), when they are at least COHORT_MIN: a
                   group entering together and sizing its margin to one liquidation price, forced
                   sells that would hit the book at once
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque

from cluster.book_mirror import BookMirror
from cluster.config import SymbolSpec
from cluster.rules.prices import liquidation_price
from cluster.protocol import (
    AccountRisk, BookDelta, BookLevels, EngineBatch, FundingRate, IndexMark, Notice, OrderAccepted,
    OrderAmended, OrderCancelled, OrdersCancelled, Regime, Trade,
)

MS = 1_000_000
BUCKET_NS = 10_000 * MS
WINDOW_BUCKETS = 60  # 10 minutes of 10 s buckets
BURST_NS = 100 * MS
TOUCH_NS = 1_000 * MS
SPOOF_WINDOW_NS = 1_000 * MS
LEVERAGE_LEAD_NS = 60_000 * MS
EPISODE_NS = 5_000 * MS
REVERSAL_NS = 10_000 * MS
LIQ_BUCKET_BPS = 10
# Positions opened this close in time are one entry (liq_cohort_lots): a group acting together
COHORT_NS = 1_000 * MS
# A cohort is a group: at least this many other accounts. Two accounts opening in the same second
# near one liquidation price is a coincidence a busy book makes (on the evaluation's tuning seeds,
# every normal account that alerted on a cohort had one other member, 75-138 lots)
COHORT_MIN = 2
# An order-to-trade ratio needs this many messages (orders, amends, cancels) in the window before it
# counts: 2-4 unfilled retail orders, or a market maker's first quotes before anyone has traded
# with it, are no ratio (by the zero-trade rule they would read as the lots ordered, 40-100, the
# most extreme values in the population); every abusive ratio in the evaluation has far more.
OTR_MIN_MESSAGES = 10
LIFETIMES = ((1 * MS, "cxl_1ms"), (10 * MS, "cxl_10ms"), (100 * MS, "cxl_100ms"))

COUNTERS = ("orders", "amends", "cancels", "order_qty", "fills", "fill_qty", "maker_qty",
            "cxl_1ms", "cxl_10ms", "cxl_100ms", "spoof_cxl_qty", "spoof_fill_qty", "lev_changes")
PEAKS = ("burst_100ms", "touch_1s", "layer_milli", "levels", "depth_share_ppm",
         "lev_jump_milli", "lev_then_order", "sweep_lots", "ignition_ppm", "two_sided")
# What the ranking compares across the population (each higher = more suspicious).
RANKED = ("otr_num_milli", "otr_vol_milli", "cxl_lt_1ms_ppm", "cxl_lt_10ms_ppm",
          "cxl_lt_100ms_ppm", "burst_100ms", "touch_1s", "spoof_milli", "layer_milli", "levels",
          "depth_share_ppm", "lev_changes", "lev_jump_milli", "lev_then_order", "sweep_lots",
          "ignition_ppm", "liq_cluster", "liq_cohort_lots")
WINDOWS = ("10m", "session")


def derived(c: dict[str, int]) -> dict[str, int]:
    """The ratio features of one key's counters (RTS 9 OTR, cancel-lifetime shares, spoof ratio)."""
    messages = c["orders"] + c["amends"] + c["cancels"]
    fills, fill_qty, orders, ordered = c["fills"], c["fill_qty"], c["orders"], c["order_qty"]
    pulled, opposite = c["spoof_cxl_qty"], c["spoof_fill_qty"]
    enough = messages >= OTR_MIN_MESSAGES
    return {
        "otr_num_milli": 0 if not enough else (
            messages * 1000 // fills - 1000 if fills else messages * 1000),
        "otr_vol_milli": 0 if not enough else (
            ordered * 1000 // fill_qty - 1000 if fill_qty else ordered * 1000),
        "cxl_lt_1ms_ppm": c["cxl_1ms"] * 1_000_000 // orders if orders else 0,
        "cxl_lt_10ms_ppm": c["cxl_10ms"] * 1_000_000 // orders if orders else 0,
        "cxl_lt_100ms_ppm": c["cxl_100ms"] * 1_000_000 // orders if orders else 0,
        "spoof_milli": pulled * 1000 // opposite if opposite else 0,
        "passive_ppm": c["maker_qty"] * 1_000_000 // fill_qty if fill_qty else 0,
    }


class Counters:
    """One account x symbol: bucketed counters and peaks, and session totals."""

    __slots__ = ("buckets", "sums", "session", "session_peaks", "last_ns")

    def __init__(self) -> None:
        self.last_ns = 0  # the latest event that changed this key (what an alert is timed from)
        self.buckets: deque = deque()  # (bucket number, counts dict, peaks dict), oldest first
        self.sums = dict.fromkeys(COUNTERS, 0)  # over the buckets held
        self.session = dict.fromkeys(COUNTERS, 0)
        self.session_peaks = dict.fromkeys(PEAKS, 0)

    def _bucket(self, now_ns: int):
        number = now_ns // BUCKET_NS
        self.expire(number)
        if not self.buckets or self.buckets[-1][0] != number:
            self.buckets.append((number, {}, {}))
        return self.buckets[-1]

    def expire(self, number: int) -> None:
        """Drop the buckets older than the window ending at bucket `number`."""
        buckets, sums = self.buckets, self.sums
        while buckets and buckets[0][0] <= number - WINDOW_BUCKETS:
            for name, n in buckets.popleft()[1].items():
                sums[name] -= n

    def add(self, name: str, amount: int, now_ns: int) -> None:
        self.last_ns = now_ns
        counts = self._bucket(now_ns)[1]
        counts[name] = counts.get(name, 0) + amount
        self.sums[name] += amount
        self.session[name] += amount

    def peak(self, name: str, value: int, now_ns: int) -> None:
        peaks = self._bucket(now_ns)[2]
        if value > peaks.get(name, 0):
            peaks[name] = value
            self.last_ns = now_ns
        if value > self.session_peaks[name]:
            self.session_peaks[name] = value

    def read(self, now_ns: int, window: str) -> dict[str, int]:
        if window == "session":
            out = dict(self.session)
            out.update(self.session_peaks)
            return out
        self.expire(now_ns // BUCKET_NS)
        out = dict(self.sums)
        out.update(dict.fromkeys(PEAKS, 0))
        for _, _, peaks in self.buckets:
            for name, v in peaks.items():
                if v > out[name]:
                    out[name] = v
        return out


class Levels:
    """Lots by price on one side, with the prices kept sorted: the touch and a range's lots
    without scanning every level (a book may hold tens of thousands)."""

    __slots__ = ("qty", "prices")

    def __init__(self) -> None:
        self.qty: dict[int, int] = {}
        self.prices: list[int] = []

    def add(self, price: int, lots: int) -> None:
        """Change the lots at `price` by `lots` (a level at zero goes)."""
        self.put(price, self.qty.get(price, 0) + lots)

    def put(self, price: int, lots: int) -> None:
        if lots > 0:
            if price not in self.qty:
                insort(self.prices, price)
            self.qty[price] = lots
        elif price in self.qty:
            del self.qty[price]
            del self.prices[bisect_left(self.prices, price)]

    def between(self, low: int, high: int) -> int:
        """Lots at prices in [low, high]."""
        prices, qty = self.prices, self.qty
        return sum(qty[p] for p in prices[bisect_left(prices, low):bisect_right(prices, high)])


class SortedBook(BookMirror):
    """The L2 copy (BookMirror's sequence checks), with each side's prices kept sorted."""

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol, empty_at_start=True)
        self.sides = {1: Levels(), -1: Levels()}

    def load(self, snapshot) -> None:
        super().load(snapshot)
        for sign, levels in ((1, self.bids), (-1, self.asks)):
            side = self.sides[sign] = Levels()
            side.qty = dict(levels)
            side.prices = sorted(levels)

    def apply(self, delta: BookDelta) -> bool:
        before = self.book_seq
        ok = super().apply(delta)
        if ok and self.book_seq != before:  # applied (not an older one skipped)
            self.sides[1 if delta.side > 0 else -1].put(delta.price, delta.qty)
        return ok

    def best(self, side: int) -> int:
        prices = self.sides[side].prices
        return (prices[-1] if side > 0 else prices[0]) if prices else 0


class OpenOrder:
    __slots__ = ("account", "symbol", "side", "price", "remaining", "ts_ns")

    def __init__(self, account: str, symbol: str, side: int, price: int, remaining: int,
                 ts_ns: int) -> None:
        self.account, self.symbol, self.side = account, symbol, side
        self.price, self.remaining, self.ts_ns = price, remaining, ts_ns


class Episode:
    """An account's run of aggressive trades in one direction (momentum ignition)."""

    __slots__ = ("direction", "start_ns", "start_mid", "best_mid", "own", "total", "closed_ns",
                 "score")

    def __init__(self, direction: int, start_ns: int, start_mid: int) -> None:
        self.direction, self.start_ns, self.start_mid = direction, start_ns, start_mid
        self.best_mid = start_mid  # the furthest the mid went in the episode's direction
        self.own = self.total = 0
        self.closed_ns = 0  # when the episode's window ended (0: still open)
        self.score = 0


class Features:
    def __init__(self, symbols: dict[str, SymbolSpec]) -> None:
        self.specs = symbols
        self.keys: dict[tuple[str, str], Counters] = {}
        self.open: dict[int, OpenOrder] = {}
        # each key's resting lots by side and price
        self.own: dict[tuple[str, str], dict[int, Levels]] = {}
        self.books = {s: SortedBook(s) for s in sorted(symbols)}
        self.cancel_times: dict[tuple[str, str], deque] = {}
        self.touch_times: dict[tuple[str, str], deque] = {}
        # (account, symbol, side) -> (last fill ts, lots of the run of fills to it not yet counted
        # against a cancel)
        self.last_fill: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.leverage: dict[tuple[str, str], int] = {}
        self.raised_at: dict[tuple[str, str], int] = {}
        self.raise_milli: dict[tuple[str, str], int] = {}  # the latest raise, new / old x1000
        self.episodes: dict[tuple[str, str], Episode] = {}
        self.marks: dict[str, int] = {}
        self.last_price: dict[str, int] = {}
        self.liq: dict[tuple[str, str], int] = {}  # liquidation price, ticks
        self.positions: dict[tuple[str, str], int] = {}  # signed lots, from risk's AccountRisk
        # signed lots from the fills seen, and when that position was opened (from flat or by a
        # flip): the fill's time, exact, where risk's AccountRisk may come later (a position risk
        # moves without a trade on the feed, ADL or a backstop, is not seen here)
        self.net: dict[tuple[str, str], int] = {}
        self.opened: dict[tuple[str, str], int] = {}
        self.market: dict[str, dict[str, int]] = {s: {} for s in sorted(symbols)}
        self.events = 0
        self.engine_batches = 0  # commands seen on the private feed
        self.last_event_ns = 0

    # ------------------------------------------------------------------ input

    def counters(self, key: tuple[str, str]) -> Counters:
        c = self.keys.get(key)
        if c is None:
            c = self.keys[key] = Counters()
        return c

    def handle(self, msg, now_ns: int) -> None:
        t = type(msg)
        self.events += 1
        self.last_event_ns = now_ns
        if t is EngineBatch:
            self.engine_batches += 1
            self._batch(msg.events, msg.ts_ns or now_ns)
        elif t is Notice:
            self._notice(msg, now_ns)
        elif t is AccountRisk:
            self._account_risk(msg)
        elif t is BookLevels:
            book = self.books.get(msg.symbol)
            if book is not None:
                book.offer(msg)
        elif t is IndexMark:
            self.marks[msg.symbol] = msg.mark
            if msg.symbol in self.market:
                self.market[msg.symbol]["basis_ppm"] = (
                    (msg.mark - msg.index) * 1_000_000 // msg.index if msg.index else 0)
        elif t is FundingRate:
            if msg.symbol in self.market:
                self.market[msg.symbol]["funding_e9"] = msg.rate_e9
        elif t is Regime:
            if msg.symbol in self.market:
                self.market[msg.symbol]["realized_vol_ppm"] = msg.realized_vol_ppm

    def _batch(self, events: list, now: int) -> None:
        """One command's events, in the engine's order."""
        actor = placed = first_fill = accepted = None
        swept = 0
        tops_before = {}
        mids_before = {}
        for ev in events:
            t = type(ev)
            symbol = ev.symbol
            if symbol not in self.books:
                continue
            if symbol not in tops_before:
                tops_before[symbol] = self._top(symbol)
                mids_before[symbol] = self.mid(symbol)
            if t is BookDelta:
                self.books[symbol].apply(ev)
                continue
            if t is Trade:
                self._trade(ev, now, mids_before[symbol])
                if actor is None:
                    actor = (ev.taker_account, symbol)
                if first_fill is None:
                    first_fill = ev
                if ev.taker_order_id == first_fill.taker_order_id and symbol == first_fill.symbol:
                    swept += ev.qty  # the aggressor's order's fills (a command could hold others)
                continue
            if not ev.account:
                continue
            key = (ev.account, symbol)
            if actor is None:
                actor = key
            if t is OrderAccepted:
                self._accepted(ev, key, now)
                placed, accepted = key, ev
            elif t is OrderCancelled:
                self._cancelled(ev.order_id, ev.reason, key, now)
            elif t is OrdersCancelled:
                for order_id, _ in ev.orders:
                    self._cancelled(order_id, ev.reason, key, now)
            elif t is OrderAmended:
                self._amended(ev, key, now)
                placed = key
        for symbol, before in tops_before.items():
            self._close_episodes(symbol, now)
            if actor is not None and actor[1] == symbol and self._top(symbol) != before:
                times = self.touch_times.setdefault(actor, deque())
                self._slide(times, now, TOUCH_NS)
                self.counters(actor).peak("touch_1s", len(times), now)
        if placed is not None:  # the shape the account chose, as it placed or moved an order
            self._resting_shape(placed, now)
        if first_fill is not None:  # one command: one aggressor's order, as large as it was sent
            if accepted is not None and accepted.order_id == first_fill.taker_order_id:
                swept = max(swept, accepted.qty)  # more than the book held: the side emptied
            self.counters((first_fill.taker_account, first_fill.symbol)).peak(
                "sweep_lots", swept, now)

    @staticmethod
    def _slide(times: deque, now: int, width: int) -> None:
        """Add `now` to a sliding window of timestamps `width` wide (ending at now, inclusive)."""
        times.append(now)
        while times[0] <= now - width:
            times.popleft()

    def _top(self, symbol: str) -> tuple:
        book = self.books[symbol]
        bid, ask = book.best(1), book.best(-1)
        return bid, book.bids.get(bid, 0), ask, book.asks.get(ask, 0)

    def mid(self, symbol: str) -> int:
        """The book's mid in ticks; with a side empty (swept), the last trade, else the mark."""
        bid, _, ask, _ = self._top(symbol)
        if bid and ask:
            return (bid + ask) // 2
        return self.last_price.get(symbol) or self.marks.get(symbol, 0)

    def _accepted(self, ev: OrderAccepted, key, now: int) -> None:
        c = self.counters(key)
        c.add("orders", 1, now)
        c.add("order_qty", ev.qty, now)
        if ev.status == "new" and ev.price:
            order = OpenOrder(ev.account, ev.symbol, ev.side, ev.price, ev.qty, now)
            self.open[ev.order_id] = order
            self._own(order, ev.qty)
        raised = self.raised_at.get(key)
        if raised is not None and now - raised <= LEVERAGE_LEAD_NS:
            jump = self.raise_milli.get(key, 1000)
            c.peak("lev_then_order", ev.qty * jump // 1000, now)

    def _own(self, order: OpenOrder, lots: int) -> None:
        """Add `lots` (negative: take) to the account's resting lots at the order's price."""
        key = (order.account, order.symbol)
        sides = self.own.get(key)
        if sides is None:
            sides = self.own[key] = {1: Levels(), -1: Levels()}
        sides[order.side].add(order.price, lots)

    def _forget(self, order_id: int) -> OpenOrder | None:
        order = self.open.pop(order_id, None)
        if order is not None:
            self._own(order, -order.remaining)
        return order

    def _cancelled(self, order_id: int, reason: str, key, now: int) -> None:
        order = self._forget(order_id)
        if reason not in ("user", "mass_cancel"):
            return  # the venue's decision (IOC rest, self-trade prevention), not a member message
        c = self.counters(key)
        c.add("cancels", 1, now)
        times = self.cancel_times.setdefault(key, deque())
        self._slide(times, now, BURST_NS)
        c.peak("burst_100ms", len(times), now)
        if order is None:
            return
        age = now - order.ts_ns
        for limit, name in LIFETIMES:
            if age < limit:
                c.add(name, 1, now)
        fill_key = (key[0], key[1], -order.side)
        filled = self.last_fill.get(fill_key)
        if filled is not None and now - filled[0] <= SPOOF_WINDOW_NS:
            c.add("spoof_cxl_qty", order.remaining, now)
            if filled[1]:  # the fills' lots count once, however many orders they are cancelled with
                c.add("spoof_fill_qty", filled[1], now)
                self.last_fill[fill_key] = (filled[0], 0)

    def _amended(self, ev: OrderAmended, key, now: int) -> None:
        if ev.reason == "user":
            self.counters(key).add("amends", 1, now)
        order = self.open.get(ev.order_id)
        if order is not None:
            self._own(order, -order.remaining)
            order.price, order.remaining = ev.price or order.price, ev.remaining
            self._own(order, order.remaining)
            if not ev.remaining:
                self._forget(ev.order_id)

    def _trade(self, ev: Trade, now: int, mid_before: int) -> None:
        symbol = ev.symbol
        self.last_price[symbol] = ev.price
        for account, order_id, remaining, side, passive in (
                (ev.maker_account, ev.maker_order_id, ev.maker_remaining, -ev.taker_side, True),
                (ev.taker_account, ev.taker_order_id, ev.taker_remaining, ev.taker_side, False)):
            key = (account, symbol)
            c = self.counters(key)
            c.add("fills", 1, now)
            c.add("fill_qty", ev.qty, now)
            if passive:
                c.add("maker_qty", ev.qty, now)
            fill_key = (account, symbol, side)
            last = self.last_fill.get(fill_key)
            recent = last[1] if last is not None and now - last[0] <= SPOOF_WINDOW_NS else 0
            self.last_fill[fill_key] = (now, recent + ev.qty)  # lots filled, not yet counted
            order = self.open.get(order_id)
            if order is not None:
                self._own(order, remaining - order.remaining)
                order.remaining = remaining
                if not remaining:
                    self._forget(order_id)
            self._reversal(key, side, now)
            before = self.net.get(key, 0)
            after = before + side * ev.qty
            if not after:
                del self.net[key]
                self.opened.pop(key, None)
            else:
                self.net[key] = after
                if after * before <= 0:  # from flat, or through it
                    self.opened[key] = now
        for ep_key, ep in self.episodes.items():
            if ep_key[1] == symbol and not ep.closed_ns:
                ep.total += ev.qty
        key = (ev.taker_account, symbol)
        ep = self.episodes.get(key)
        if ep is None or (ep.closed_ns and ep.direction == ev.taker_side):
            # a new aggressive run (one in the same direction replaces a closed, unreversed one)
            ep = self.episodes[key] = Episode(ev.taker_side, now, mid_before)
            ep.total = ev.qty
        if not ep.closed_ns and ep.direction == ev.taker_side:
            ep.own += ev.qty

    def _close_episodes(self, symbol: str, now: int) -> None:
        """Episodes of `symbol`: follow the mid while open; once the window has passed, their
        share x the furthest move in their direction, awaiting a reversal."""
        mid = self.mid(symbol)
        for key, ep in self.episodes.items():
            if key[1] != symbol or ep.closed_ns:
                continue
            if (mid - ep.best_mid) * ep.direction > 0 and now - ep.start_ns <= EPISODE_NS:
                ep.best_mid = mid
            if now - ep.start_ns < EPISODE_NS:
                continue
            ep.closed_ns = now
            move = (ep.best_mid - ep.start_mid) * ep.direction
            move_ppm = move * 1_000_000 // ep.start_mid if ep.start_mid else 0
            ep.score = max(0, move_ppm) * ep.own // max(ep.total, 1)

    def _reversal(self, key, side: int, now: int) -> None:
        ep = self.episodes.get(key)
        if ep is None or not ep.closed_ns or side != -ep.direction:
            return
        if now - ep.closed_ns <= REVERSAL_NS and ep.score:
            self.counters(key).peak("ignition_ppm", ep.score, now)
        del self.episodes[key]

    def _resting_shape(self, key, now: int) -> None:
        """Layering and depth shape of one account's resting orders after it placed or amended
        one (what it chose, not what fills later left of it)."""
        sides = self.own.get(key)
        if sides is None:
            return
        symbol = key[1]
        book = self.books[symbol]
        at_touch = {side: sides[side].qty.get(book.best(side), 0) for side in (1, -1)}
        c = self.counters(key)
        for side in (1, -1):
            levels = sides[side]
            if at_touch[-side]:  # the order to trade on the other side is at its touch
                away = sum(levels.qty.values()) - at_touch[side]
                c.peak("layer_milli", away * 1000 // at_touch[-side], now)
            c.peak("levels", len(levels.prices), now)
        # resting on both sides at once: a quoter (two-sided market making, or bait and spoof)
        c.peak("two_sided", min(sum(sides[1].qty.values()), sum(sides[-1].qty.values())), now)
        mid = self.mid(symbol)
        band = mid // 100  # 1 % of mid
        near = sides[1].between(mid - band, mid + band) + sides[-1].between(mid - band, mid + band)
        if near and mid:
            c.peak("depth_share_ppm", near * 1_000_000 // max(self._depth(symbol, mid), near), now)

    def _depth(self, symbol: str, mid: int) -> int:
        """The book's lots within 1 % of mid (a bisect and the levels in the band)."""
        band = mid // 100
        book = self.books[symbol]
        return book.sides[1].between(mid - band, mid) + book.sides[-1].between(mid, mid + band)

    def _notice(self, msg: Notice, now: int) -> None:
        if msg.rule != "risk.leverage_changed":
            return
        symbol = msg.numbers.get("symbol")
        before, after = msg.numbers.get("from"), msg.numbers.get("to")
        if symbol not in self.specs or type(before) is not int or type(after) is not int:
            return
        key = (msg.subject, symbol)
        c = self.counters(key)
        c.add("lev_changes", 1, now)
        self.leverage[key] = after
        if before > 0 and after > before:
            c.peak("lev_jump_milli", after * 1000 // before, now)
            self.raised_at[key] = now
            self.raise_milli[key] = after * 1000 // before

    def _account_risk(self, msg: AccountRisk) -> None:
        """Liquidation prices of the account's positions, for the clustering features; its
        position sizes, for open interest and a cohort's lots."""
        for symbol in self.specs:
            qty = msg.positions.get(symbol, (0, 0))[0]
            if qty:
                self.positions[(msg.account, symbol)] = qty
            else:
                self.positions.pop((msg.account, symbol), None)
        for symbol in [s for (a, s) in self.liq if a == msg.account]:
            if symbol not in msg.positions:
                del self.liq[(msg.account, symbol)]
        wallet = msg.balance + sum(cost for s, (_, cost) in msg.positions.items()
                                   if s not in msg.isolated)
        for symbol, (qty, cost) in sorted(msg.positions.items()):
            spec = self.specs.get(symbol)
            if spec is None or not qty:
                continue
            own_wallet = msg.isolated[symbol] + cost if symbol in msg.isolated else wallet
            price, _ = liquidation_price(side=1 if qty > 0 else -1, qty=abs(qty), cost=cost,
                                         wallet=own_wallet, tiers=spec.tiers,
                                         mult=spec.atoms_per_tick_lot, fee_ppm=spec.forced_fee_ppm)
            if price is None or price <= 0:
                self.liq.pop((msg.account, symbol), None)
            else:
                self.liq[(msg.account, symbol)] = int(price)

    # ------------------------------------------------------------------ output

    def liq_clusters(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per account x symbol: (how many other accounts' liquidation prices are within
        LIQ_BUCKET_BPS of its own (of the mark), the lots of those whose positions were opened
        within COHORT_NS of its own when they are COHORT_MIN or more): a window around each, not
        fixed buckets, so a cluster is never split by a bucket edge."""
        by_symbol: dict[str, list[tuple[int, str]]] = {}
        for (account, symbol), price in self.liq.items():
            by_symbol.setdefault(symbol, []).append((price, account))
        out = {}
        for symbol, entries in by_symbol.items():
            entries.sort()
            prices = [p for p, _ in entries]
            ref = self.marks.get(symbol) or self.specs[symbol].initial_price or prices[0]
            width = max(1, ref * LIQ_BUCKET_BPS // 10_000)
            for price, account in entries:
                low, high = bisect_left(prices, price - width), bisect_right(prices, price + width)
                opened = self.opened.get((account, symbol))
                members = cohort = 0
                if opened is not None:
                    for _, other in entries[low:high]:
                        at = self.opened.get((other, symbol))
                        if other != account and at is not None and abs(at - opened) <= COHORT_NS:
                            members += 1
                            cohort += abs(self.positions.get((other, symbol), 0))
                out[(account, symbol)] = (high - low - 1, cohort if members >= COHORT_MIN else 0)
        return out

    def market_sample(self, symbol: str) -> dict[str, int]:
        """The symbol's crowding inputs now: funding, basis, realized vol (the oracle's) and open
        interest (long lots) per lot of depth within 2 % of mid."""
        out = dict(self.market.get(symbol, {}))
        oi = sum(q for (a, s), q in self.positions.items() if s == symbol and q > 0)
        mid = self.mid(symbol)
        band = mid // 50
        book = self.books[symbol]
        depth = book.sides[1].between(mid - band, mid) + book.sides[-1].between(mid, mid + band)
        out["oi_per_depth_milli"] = oi * 1000 // max(depth, 1)
        return out

    def values(self, now_ns: int, window: str = "10m") -> dict[tuple[str, str], dict[str, int]]:
        """Every active key's features (counters, peaks and derived) over `window`."""
        clusters = self.liq_clusters()
        out = {}
        for key in sorted(set(self.keys) | set(clusters)):
            c = self.keys.get(key)
            raw = c.read(now_ns, window) if c is not None else {
                **dict.fromkeys(COUNTERS, 0), **dict.fromkeys(PEAKS, 0)}
            if c is not None and window == "10m" and not any(raw[n] for n in COUNTERS) and \
                    not any(raw[n] for n in PEAKS) and key not in clusters:
                continue  # nothing of it in the window
            raw.update(derived(raw))
            raw["liq_cluster"], raw["liq_cohort_lots"] = clusters.get(key, (0, 0))
            out[key] = raw
        return out
