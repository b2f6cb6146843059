"""What an order reserves, and keeping it exact.

Per account, symbol and side, the open orders are priced together, oldest first:
- closing capacity: the lots of an opposite position close first, shared oldest order
  first (so 20 sells against a 1-lot long cannot each count the same lot as a close);
- initial margin of the side's opening value at the leverage of the tier of |position| +
  that whole opening value (ten small orders sit in the tier of their sum), x the buffer;
- the taker fee; and the loss at once of filling at the worst price against the mark
  (a buy above it, a sell below it), on what opens and on what closes a cross position.
A close of an isolated position is paid from its own margin: its fee and loss are checked
against the isolated equity (`close_cost`), not held on the cross wallet.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

import msgspec

from cluster.config import SymbolSpec
from cluster.protocol import MARKET_TYPES, Cancel, NewOrder
from cluster.rules.bands import protection_price
from cluster.rules.margin import fee_due, initial_margin
from nodes.risk.accounts import AccountState, OpenOrder


BLANK_ORDER = NewOrder(order_id=0, account="", symbol="", side=1, qty=1)


class Reservations:
    """The margin each open order holds, kept exact as positions, marks and settings move."""

    def _worst_price(self, symbol: str, side: int, otype: str, price: int, trigger: int,
                     slippage_ppm: int = 0, ref: int = 0) -> int:
        """The worst price an order can fill at: its limit, or for a market order the protection
        price matching gives it (reference moved by the client's max slippage, else the
        symbol's protection; inward rounding, never below 1 tick)."""
        if otype not in MARKET_TYPES:
            return price
        ref = ref or trigger or self._price(symbol)
        return protection_price(ref, side, slippage_ppm or self.specs[symbol].protection_ppm)

    def _costs(self, order: OpenOrder, spec: SymbolSpec, mark: int, isolated: bool) -> int:
        """Fill in the order's fee and loss terms from its im/opening/closing; its reserve."""
        mult = spec.atoms_per_tick_lot
        worst = order.worst
        fee_ppm = spec.taker_fee_ppm if spec.taker_fee_ppm > 0 else 0
        fee_open = fee_due(worst * order.opening * mult, fee_ppm)
        fee_close = fee_due(worst * order.closing * mult, fee_ppm)
        gap = order.side * (worst - mark) if mark else 0
        per_lot = gap * mult if gap > 0 else 0
        order.fee_close = fee_close
        order.close_cost = fee_close + per_lot * order.closing  # checked when isolated
        if isolated:
            order.base = order.im + fee_open
            order.lossq = order.opening
        else:
            order.base = order.im + fee_open + fee_close
            order.lossq = order.opening + order.closing
        return order.base + per_lot * order.lossq + order.hold

    def _price_new(self, acct: AccountState, order: OpenOrder,
                   exclude: OpenOrder | None = None) -> tuple[int, int]:
        """(reserve, tier notional) of `order` priced as the newest order on its side, after every
        other open order of the account on that side (`exclude`: the order an amend replaces).
        O(1): the side's totals are kept by add_order/remove_order and _reprice."""
        symbol, side = order.symbol, order.side
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        qty_others, open_others, im_others = acct.side_totals(symbol, side)
        if exclude is not None:
            qty_others -= exclude.remaining
            open_others -= exclude.worst * exclude.opening * mult
            im_others -= exclude.im
        pos = acct.positions.get(symbol)
        pqty = pos.qty if pos is not None else 0
        value = abs(self._position_value(symbol, pos)) if pqty else 0
        capacity = abs(pqty) - qty_others if pqty and (pqty > 0) != (side > 0) else 0
        remaining = order.remaining
        order.closing = closing = min(remaining, capacity) if capacity > 0 else 0
        order.opening = 0 if order.reduce_only else remaining - closing
        total_open = open_others + order.worst * order.opening * mult
        tier_notional = value + total_open
        lev = self.effective_leverage(acct, symbol, tier_notional)
        im = initial_margin(total_open, lev, spec.im_buffer_ppm[self.regimes[symbol]]) - im_others
        order.im = im if im > 0 else 0
        mark = self.marks.get(symbol) or self.last.get(symbol, 0)
        return self._costs(order, spec, mark, pos is not None and pos.isolated), tier_notional

    def reserve_for(self, acct: AccountState, order: OpenOrder) -> int:
        """What `order` would reserve were it placed now, after the account's other orders."""
        probe = OpenOrder(msgspec.structs.replace(
            BLANK_ORDER, order_id=order.order_id, account=order.account, symbol=order.symbol,
            side=order.side, qty=order.qty, type=order.type, price=order.price,
            trigger_price=order.trigger_price, reduce_only=order.reduce_only,
            max_slippage_ppm=order.slippage_ppm))
        probe.remaining, probe.worst = order.remaining, order.worst
        return self._price_new(acct, probe, exclude=order)[0]

    def _reprice(self, acct: AccountState, symbol: str) -> None:
        """Re-derive every open order's reserve in `symbol` after the position, leverage, buffer
        or an order changed (fills, amends, triggers, transfers). Per account and symbol only."""
        orders = acct._by_symbol.get(symbol)
        if not orders:
            acct.sides.pop((symbol, 1), None)
            acct.sides.pop((symbol, -1), None)
            return
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        pos = acct.positions.get(symbol)
        pqty = pos.qty if pos is not None else 0
        value = abs(self._position_value(symbol, pos)) if pqty else 0
        isolated = pos is not None and pos.isolated
        mark = self.marks.get(symbol) or self.last.get(symbol, 0)
        buffer = spec.im_buffer_ppm[self.regimes[symbol]]
        change = 0
        for side in (1, -1):
            mine = [o for o in orders.values() if o.side == side]  # oldest first
            if not mine:
                acct.sides.pop((symbol, side), None)
                continue
            capacity = abs(pqty) if pqty and (pqty > 0) != (side > 0) else 0
            total_qty = total_open = 0
            for o in mine:
                o.closing = o.remaining if o.remaining < capacity else capacity
                capacity -= o.closing
                o.opening = 0 if o.reduce_only else o.remaining - o.closing
                total_qty += o.remaining
                total_open += o.worst * o.opening * mult
            lev = self.effective_leverage(acct, symbol, value + total_open)
            prefix = im_before = 0
            for o in mine:  # each order's share: the growth of the side's IM it causes
                prefix += o.worst * o.opening * mult
                im = initial_margin(prefix, lev, buffer)
                o.im = im - im_before
                im_before = im
                new = self._costs(o, spec, mark, isolated)
                change += new - o.reserve
                o.reserve = new
            acct.sides[(symbol, side)] = [total_qty, total_open, im_before]
        acct.order_margin += change

    def _index_worst(self, order: OpenOrder, add: bool) -> None:
        """Keep `order` in its symbol's index by worst price (what a mark move re-prices)."""
        levels, prices = self._by_worst[order.symbol][order.side]
        level = levels.get(order.worst)
        if add:
            if level is None:
                level = levels[order.worst] = {}
                insort(prices, order.worst)
            level[order.order_id] = order
        elif level is not None:
            level.pop(order.order_id, None)
            if not level:
                del levels[order.worst]
                del prices[bisect_left(prices, order.worst)]

    def _mark_moved(self, symbol: str, before: int, mark: int, now_ns: int, out: list) -> None:
        """Re-price the loss-against-mark term of the orders it changed for: the buys whose worst
        price is above the lower of the two marks, the sells below the higher. Resting orders sit
        on their side of the mark, so a tick touches few orders, whatever the book holds.

        An account that can no longer cover what its re-priced orders now hold has those orders
        cancelled (newest first, until the rest is covered): filled, they would leave it
        below its trigger (a 125x bid filled after a 4.7% fall left its account at -1,125)."""
        low, high = (min(before, mark), max(before, mark)) if before else (mark, mark)
        mult = self.specs[symbol].atoms_per_tick_lot
        (buy_levels, buy_prices), (sell_levels, sell_prices) = (self._by_worst[symbol][1],
                                                                self._by_worst[symbol][-1])
        touched = [buy_levels[p] for p in buy_prices[bisect_right(buy_prices, low):]]
        touched += [sell_levels[p] for p in sell_prices[:bisect_left(sell_prices, high)]]
        grown: dict[str, list[OpenOrder]] = {}
        for level in touched:
            for o in level.values():
                gap = o.side * (o.worst - mark)
                per_lot = gap * mult if gap > 0 else 0
                o.close_cost = o.fee_close + per_lot * o.closing
                new = o.base + per_lot * o.lossq + o.hold
                if new != o.reserve:
                    self.accounts[o.account].order_margin += new - o.reserve
                    if new > o.reserve and o.accepted:
                        grown.setdefault(o.account, []).append(o)
                    o.reserve = new
        for name in sorted(grown):
            acct = self.accounts[name]
            available = self.available(acct)
            if available >= 0:
                continue
            for o in sorted(grown[name], key=lambda o: -o.order_id):
                out.append(("matching", Cancel(account=name, symbol=symbol, order_id=o.order_id,
                                                   reason="margin_repriced")))
                self._explain(out, now_ns, "risk.reserve_repriced", name, "cancel", {
                    "symbol": symbol, "order_id": o.order_id, "mark": mark, "mark_before": before,
                    "worst_price": o.worst, "reserve": o.reserve, "available": available})
                available += o.reserve
                if available >= 0:
                    break
