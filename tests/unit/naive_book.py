"""A deliberately naive matching model: one flat list of resting orders, best order found by a full
scan every time. Slow and obvious; the fast engine must agree with it trade for trade.

Covers limit GTC/IOC/FOK, market with protection price (the symbol's or the order's slippage),
post-only, reduce-only (sizing and re-check), self-trade prevention, cancel, amend, mass cancel, the
price band, positions set from outside, and stops and take-profits (on the mark or the last trade
price; a triggered one is an order like any other then, checked again for reduce-only room and,
a limit, for the band).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

PPM = 1_000_000


MARKETS = ("market", "stop_market", "take_profit_market")
STOPS = ("stop_market", "stop_limit", "take_profit_market", "take_profit_limit")


def fires_on_rise(otype: str, side: int) -> bool:
    """A buy stop and a sell take-profit wait for the price to rise to the trigger."""
    return (side > 0) if otype.startswith("stop") else (side < 0)


def fires(otype: str, side: int, trigger: int, price: int) -> bool:
    return price >= trigger if fires_on_rise(otype, side) else price <= trigger


@dataclass
class NStop:
    id: int
    account: str
    side: int
    type: str
    price: int
    qty: int
    tif: str
    ro: bool
    po: bool
    stp: str
    trigger: int
    by: str
    slippage: int


@dataclass
class NOrder:
    id: int
    account: str
    side: int
    price: int
    qty: int
    remaining: int
    ro: bool
    po: bool
    stp: str
    time: int


class NaiveBook:
    def __init__(self, spec) -> None:
        self.spec = spec
        self.resting: list[NOrder] = []
        self.positions: dict[str, int] = {}
        self.mark = 0
        self.last = 0  # last trade price
        self.stops: list[NStop] = []  # waiting stops and take-profits
        self.clock = 0
        self.trades: list[tuple] = []  # (price, qty, taker_id, maker_id)
        self.cancelled: dict[int, int] = {}  # order id -> cancelled quantity (summed)

    # helpers
    def _band_ok(self, price: int) -> bool:
        if not self.mark:
            return True
        w = self.mark * self.spec.band_ppm // PPM
        return self.mark - w <= price <= self.mark + w

    def _crosses(self, maker_price: int, taker_side: int, limit: int) -> bool:
        return maker_price <= limit if taker_side > 0 else maker_price >= limit

    def _queue(self, taker_side: int, limit: int) -> list[NOrder]:
        c = [o for o in self.resting if o.side == -taker_side and self._crosses(o.price, taker_side, limit)]
        return sorted(c, key=lambda o: (taker_side * o.price, o.time))

    def _ro_total(self, account: str, side: int) -> int:
        return sum(o.remaining for o in self.resting if o.account == account and o.ro and o.side == side)

    def _ro_room(self, account: str, side: int) -> int:
        pos = self.positions.get(account, 0)
        if pos == 0 or (pos > 0) == (side > 0):
            return 0
        return abs(pos) - self._ro_total(account, side)

    def _ro_fill_room(self, m: NOrder) -> int:
        pos = self.positions.get(m.account, 0)
        return abs(pos) if pos and (pos > 0) != (m.side > 0) else 0

    def _cancel(self, o: NOrder, qty: int) -> None:
        self.cancelled[o.id] = self.cancelled.get(o.id, 0) + qty

    def _recheck(self, account: str) -> None:
        pos = self.positions.get(account, 0)
        closing = -1 if pos > 0 else 1
        room = abs(pos)
        for o in sorted([o for o in self.resting if o.account == account and o.ro], key=lambda o: o.time):
            if pos == 0 or o.side != closing:
                self._cancel(o, o.remaining)
                self.resting.remove(o)
            elif o.remaining <= room:
                room -= o.remaining
            elif room > 0:
                self._cancel(o, o.remaining - room)
                o.qty -= o.remaining - room
                o.remaining = room
                room = 0
            else:
                self._cancel(o, o.remaining)
                self.resting.remove(o)

    # commands
    def new(self, oid, account, side, qty, otype, price, tif, po, ro, stp, slippage=0,
            trigger=0, by="mark") -> str:
        s = self.spec
        self.clock += 1
        if qty < s.min_qty or qty > s.max_qty:
            return "rejected"
        market = otype in MARKETS
        if market and (price or po):
            return "rejected"
        if not market:
            if price < 1 or (po and tif != "GTC"):
                return "rejected"
            if price * qty * s.atoms_per_tick_lot > s.max_notional:
                return "rejected"
            if otype == "limit" and not self._band_ok(price):  # a stop-limit: when it triggers
                return "rejected"
        stop = otype in STOPS
        if stop:
            ref = self.mark if by == "mark" else self.last
            if trigger < 1 or (ref and fires(otype, side, trigger, ref)):
                return "rejected"
        elif trigger:
            return "rejected"
        if ro and not stop:
            room = self._ro_room(account, side)
            if room <= 0:
                return "rejected"
            qty = min(qty, room)
        if not market and po:
            if self._queue(side, price):
                return "rejected"
        if stop:
            self.stops.append(NStop(oid, account, side, otype, price, qty, tif, ro, po, stp,
                                    trigger, by, slippage))
            return "accepted"
        o = NOrder(oid, account, side, price, qty, qty, ro, po, stp, self.clock)
        self._execute(o, market, tif, slippage)
        return "accepted"

    def _fire(self, by: str, price: int) -> None:
        """Every waiting stop on `by` that `price` reaches, in the order the price crossed them."""
        if not price:
            return
        hit = [t for t in self.stops if t.by == by and fires(t.type, t.side, t.trigger, price)]
        for t in hit:
            self.stops.remove(t)
        rising = sorted((t for t in hit if fires_on_rise(t.type, t.side)), key=lambda t: (t.trigger, t.id))
        falling = sorted((t for t in hit if not fires_on_rise(t.type, t.side)),
                         key=lambda t: (-t.trigger, t.id))
        for t in rising + falling:
            market = t.type in MARKETS
            qty = t.qty
            if t.ro:
                room = self._ro_room(t.account, t.side)
                if room <= 0:
                    self.cancelled[t.id] = self.cancelled.get(t.id, 0) + qty
                    continue
                qty = min(qty, room)
            if not market and not self._band_ok(t.price):
                self.cancelled[t.id] = self.cancelled.get(t.id, 0) + qty
                continue
            self.clock += 1
            o = NOrder(t.id, t.account, t.side, 0 if market else t.price, qty, qty, t.ro, t.po,
                       t.stp, self.clock)
            self._execute(o, market, "IOC" if market and t.tif == "GTC" else t.tif, t.slippage)

    def set_position(self, account: str, qty: int) -> None:
        self.positions[account] = qty
        if any(r.account == account and r.ro for r in self.resting):
            self._recheck(account)

    def _execute(self, o: NOrder, market: bool, tif: str, slippage: int = 0) -> None:
        if market:
            opp = [r.price for r in self.resting if r.side == -o.side]
            best = (min(opp) if o.side > 0 else max(opp)) if opp else 0
            ref = self.mark or best
            if not ref:
                self._cancel(o, o.remaining)
                return
            move = ref * (slippage or self.spec.protection_ppm) // PPM
            o.price = ref + move if o.side > 0 else max(1, ref - move)
        if tif == "FOK":  # all or nothing, by trying it: on a copy, then for real if it fills
            trial = copy.deepcopy(self)
            trial_order = copy.deepcopy(o)
            trial._execute(trial_order, False, "IOC")
            if trial_order.remaining != 0:
                self._cancel(o, o.remaining)
                return
        touched = []
        while o.remaining:
            q = self._queue(o.side, o.price)
            if not q:
                break
            m = q[0]
            if m.ro and m.account != o.account:  # a reduce-only maker never outgrows its position
                room = self._ro_fill_room(m)
                if room == 0:
                    self._cancel(m, m.remaining)
                    self.resting.remove(m)
                    continue
                if room < m.remaining:
                    self._cancel(m, m.remaining - room)
                    m.qty -= m.remaining - room
                    m.remaining = room
            if m.account == o.account:
                if o.stp in ("cancel_maker", "cancel_both"):
                    self._cancel(m, m.remaining)
                    self.resting.remove(m)
                if o.stp in ("cancel_taker", "cancel_both"):
                    self._cancel(o, o.remaining)
                    o.remaining = -1  # gone
                    break
                continue
            x = min(o.remaining, m.remaining)
            o.remaining -= x
            m.remaining -= x
            self.trades.append((m.price, x, o.id, m.id))
            self.last = m.price
            self.positions[o.account] = self.positions.get(o.account, 0) + o.side * x
            self.positions[m.account] = self.positions.get(m.account, 0) - o.side * x
            touched += [o.account, m.account]
            if m.remaining == 0:
                self.resting.remove(m)
        for acct in dict.fromkeys(touched):
            if any(r.account == acct and r.ro for r in self.resting):
                self._recheck(acct)
        if o.remaining > 0:
            if tif == "GTC" and not market:
                self.resting.append(o)
            else:
                self._cancel(o, o.remaining)
        if touched:  # a stop the trade fires is a new order after the taker: it rests behind it
            self._fire("last", self.last)

    def cancel(self, oid: int, account: str) -> bool:
        for o in self.resting:
            if o.id == oid and o.account == account:
                self._cancel(o, o.remaining)
                self.resting.remove(o)
                return True
        for t in self.stops:
            if t.id == oid and t.account == account:
                self.stops.remove(t)
                return True
        return False

    def mass_cancel(self, account: str) -> None:
        for o in [o for o in self.resting if o.account == account]:
            self._cancel(o, o.remaining)
            self.resting.remove(o)
        self.stops = [t for t in self.stops if t.account != account]

    def amend(self, oid: int, account: str, price: int, qty: int) -> bool:
        o = next((o for o in self.resting if o.id == oid and o.account == account), None)
        if o is None:
            return self._amend_stop(oid, account, price, qty)
        s = self.spec
        new_price, new_qty = price or o.price, qty or o.qty
        filled = o.qty - o.remaining
        if new_qty > s.max_qty or new_qty <= filled:
            return False
        if new_price * new_qty * s.atoms_per_tick_lot > s.max_notional or not self._band_ok(new_price):
            return False
        new_rem = new_qty - filled
        if o.ro and new_rem > o.remaining:
            if new_rem > self._ro_room(account, o.side) + o.remaining:
                return False
        if o.po and new_price != o.price and self._queue(o.side, new_price):
            return False
        if new_price == o.price and new_qty <= o.qty:
            if new_qty < o.qty:
                self._cancel(o, o.qty - new_qty)
            o.remaining, o.qty = new_rem, new_qty
            return True
        self.resting.remove(o)
        self.clock += 1
        o.price, o.qty, o.remaining, o.time = new_price, new_qty, new_rem, self.clock
        self._execute(o, False, "GTC")
        return True

    def _amend_stop(self, oid: int, account: str, price: int, qty: int) -> bool:
        """A waiting stop: new price and quantity, checked as a new one would be, but not yet for
        the band or reduce-only room (those are checked when it triggers)."""
        t = next((t for t in self.stops if t.id == oid and t.account == account), None)
        if t is None:
            return False
        s = self.spec
        market = t.type in MARKETS
        new_price, new_qty = price or t.price, qty or t.qty
        if (market and price) or not s.min_qty <= new_qty <= s.max_qty:
            return False
        if not market and new_price * new_qty * s.atoms_per_tick_lot > s.max_notional:
            return False
        if t.po and new_price != t.price and self._queue(t.side, new_price):
            return False
        t.price, t.qty = new_price, new_qty
        return True

    def set_mark(self, mark: int) -> None:
        self.mark = mark
        self._fire("mark", mark)
