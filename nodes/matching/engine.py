"""The matching engine: a pure, deterministic state machine over every symbol's book.

    engine.handle(command) -> list[event]

No clock, no IO, no randomness. Every command gets the next input sequence number `seq`; every
event it causes carries that `seq`. Rejections are events with a reason code and the numbers that
decided them, and leave the state unchanged.

Rules (see README "Matching rules"):
- price-time priority; trades at the maker's price;
- market orders are IOC limited at a protection price: reference (mark, else best opposite) moved
  by the order's or the symbol's max slippage, rounded inward (towards the reference);
- GTC limits rest, IOC/FOK never rest; FOK fills completely or not at all (checked before any fill);
- post-only is rejected, not repriced, if it would take; the reason names the order it would hit;
- reduce-only may only shrink the position: sized down to |position| minus the account's other
  resting reduce-only orders on that side, rejected when that is zero, and re-checked (sized down
  or cancelled, newest first) whenever the position shrinks or flips;
- self-trade prevention (always on), chosen by the taker: cancel_taker, cancel_maker, cancel_both;
- a stop triggered by a trade enters after the taker that traded has rested or been cancelled
  (it queues behind it, and may trade against it);
- amend: a quantity decrease at the same price keeps priority; a price change or quantity increase
  re-queues the order (and may trade, unless post-only, which rejects the amend instead); an
  untriggered stop or take-profit may also move its trigger (not to where it would fire at once);
- client order ids are idempotent per account: a repeat returns the original result, while the
  order is open and for the account's last COID_MEMORY ids after that (client_ids.py).
"""

from __future__ import annotations

import hashlib

import msgspec

from cluster.core import JournaledCore, Snapshottable
from cluster.config import SymbolSpec
from cluster.rules.bands import band_limits, protection_price
from cluster.protocol import (
    MARKET_TYPES, STOP_TYPES, Amend, BookDelta, Cancel, MarkPrice, MassCancel, NewOrder,
    OrderAccepted, OrderAmended, OrderCancelled, OrderRejected, OrdersCancelled, OrderTriggered,
    SetPosition, ShiftPosition, Trade,
)
from nodes.matching.book import Book, BookSide, Order
from nodes.matching.client_ids import ClientIds
from nodes.matching.finished import FinishedOrders
from nodes.matching.stops import StopBook, is_triggered

DONE_MEMORY = 100_000  # finished order ids remembered, to tell "too late" from "unknown"
COID_MEMORY = 10_000  # client order ids remembered per account, besides those of live orders


def _closing_room(position: int, side: int) -> int:
    """Lots an order on `side` can close of `position` (0 when flat or when it would grow it)."""
    return abs(position) if position and (position > 0) != (side > 0) else 0


class MatchingEngine(Snapshottable, JournaledCore):
    def __init__(self, symbols: dict[str, SymbolSpec], coid_memory: int = COID_MEMORY) -> None:
        self.specs = dict(symbols)
        self.books: dict[str, Book] = {name: Book(name) for name in sorted(symbols)}
        self.stops: dict[str, StopBook] = {name: StopBook() for name in sorted(symbols)}
        self.orders: dict[int, Order] = {}  # every live order (resting or untriggered)
        self.account_orders: dict[str, dict[int, Order]] = {}
        # client order id -> the first answer (replayed, marked duplicate, on a resubmission)
        self.coids = ClientIds(coid_memory, self.orders)
        self.done = FinishedOrders(DONE_MEMORY)
        self.seq = 0
        self.trade_id = 0
        self.derive()

    DERIVED = ("_dispatch",)

    def derive(self) -> None:
        self._dispatch = {
            NewOrder: self._new_order, Cancel: self._cancel, Amend: self._amend,
            MassCancel: self._mass_cancel, MarkPrice: self._mark, SetPosition: self._set_position,
            ShiftPosition: self._set_position,
        }

    # ------------------------------------------------------------------ entry point

    def handle(self, cmd) -> list:
        self.seq += 1
        out: list = []
        handler = self._dispatch.get(type(cmd))
        if handler is None:
            out.append(OrderRejected(
                seq=self.seq, ref=getattr(cmd, "ref", 0), order_id=0, account="", symbol="",
                reason="unknown_command", detail={"type": type(cmd).__name__},
            ))
            return out
        handler(cmd, out)
        return out

    # ------------------------------------------------------------------ new orders

    def _reject(self, cmd: NewOrder, out: list, reason: str, detail: dict | None = None) -> None:
        ev = OrderRejected(
            seq=self.seq, ref=cmd.ref, order_id=cmd.order_id, account=cmd.account,
            symbol=cmd.symbol, reason=reason, detail=detail or {},
            client_order_id=cmd.client_order_id,
        )
        if cmd.client_order_id:
            self.coids.remember(cmd.account, cmd.client_order_id, ev)
        out.append(ev)

    def _new_order(self, cmd: NewOrder, out: list) -> None:
        if cmd.client_order_id:
            prev = self.coids.get(cmd.account, cmd.client_order_id)
            if prev is not None:
                out.append(msgspec.structs.replace(prev, ref=cmd.ref, duplicate=True))
                return
        spec = self.specs.get(cmd.symbol)
        if spec is None:
            return self._reject(cmd, out, "unknown_symbol", {"symbol": cmd.symbol})
        oid = cmd.order_id
        if oid in self.orders or oid in self.done:
            return self._reject(cmd, out, "duplicate_order_id", {"order_id": oid})
        book = self.books[cmd.symbol]
        qty = cmd.qty
        if qty < spec.min_qty or qty > spec.max_qty:
            return self._reject(cmd, out, "qty_out_of_range",
                                {"qty": qty, "min_qty": spec.min_qty, "max_qty": spec.max_qty})
        otype = cmd.type
        is_market = otype in MARKET_TYPES
        if is_market:
            if cmd.price:
                return self._reject(cmd, out, "market_order_has_price", {"price": cmd.price})
            if cmd.post_only:
                return self._reject(cmd, out, "post_only_not_limit", {"type": otype})
        else:
            if cmd.price < 1:
                return self._reject(cmd, out, "price_required", {"price": cmd.price})
            if cmd.post_only and cmd.tif != "GTC":
                return self._reject(cmd, out, "post_only_not_gtc", {"tif": cmd.tif})
            notional = cmd.price * qty * spec.atoms_per_tick_lot
            if notional > spec.max_notional:
                return self._reject(cmd, out, "notional_too_large",
                                    {"notional": notional, "max_notional": spec.max_notional})
            if otype == "limit":
                bad = self._band_violation(book, spec, cmd.price)
                if bad:
                    return self._reject(cmd, out, "price_out_of_band", bad)
        if otype in STOP_TYPES:
            if cmd.trigger_price < 1:
                return self._reject(cmd, out, "trigger_price_required", {})
            ref_price = book.mark if cmd.trigger_by == "mark" else book.last
            if ref_price and is_triggered(otype, cmd.side, cmd.trigger_price, ref_price):
                return self._reject(cmd, out, "would_trigger_immediately", {
                    "trigger_price": cmd.trigger_price, "trigger_by": cmd.trigger_by,
                    "current": ref_price})
        elif cmd.trigger_price:
            return self._reject(cmd, out, "trigger_price_on_non_stop", {"type": otype})

        if cmd.reduce_only and otype not in STOP_TYPES:
            allowed = self._reduce_only_room(book, cmd.account, cmd.side)
            if allowed <= 0:
                return self._reject(cmd, out, "reduce_only_would_increase", {
                    "position": book.positions.get(cmd.account, 0), "side": cmd.side,
                    "reserved_by_reduce_only": self._reduce_only_total(book, cmd.account, cmd.side)})
            qty = min(qty, allowed)

        if not is_market and cmd.post_only:
            opp = book.opposite(cmd.side)
            best = opp.best()
            if best is not None and opp.crosses(best, cmd.price):
                maker = next(iter(opp.levels[best].orders.values()))
                return self._reject(cmd, out, "post_only_would_take", {
                    "price": cmd.price, "maker_order_id": maker.order_id, "maker_price": best})

        untriggered = otype in STOP_TYPES
        if cmd.tif != "GTC" and not is_market and not untriggered:
            best = (book.asks if cmd.side > 0 else book.bids).best()
            if best is None or (best > cmd.price if cmd.side > 0 else best < cmd.price):
                # A limit IOC/FOK that cannot trade at all: answered by its cancel alone, as
                # _execute + _emit_cancel would answer it, without building the order and the ack
                # that the cancel replaces (most IOCs on a busy venue miss).
                if cmd.tif == "IOC":
                    reason, detail = "ioc_remainder", {}
                else:
                    reason, detail = "fok_not_fillable", {"qty": qty}
                ev = OrderCancelled(seq=self.seq, ref=cmd.ref, order_id=oid, account=cmd.account,
                                    symbol=cmd.symbol, remaining=qty, reason=reason, detail=detail)
                if cmd.client_order_id:
                    self.coids.remember(cmd.account, cmd.client_order_id, ev)
                out.append(ev)
                self._finish(oid, "cancelled")
                return
        # Positional on purpose: msgspec matches 16 keywords ~7x slower (measured 490 vs 70 ns),
        # and this is the add path. The order follows Order's field declaration.
        order = Order(
            oid, cmd.account, cmd.side, cmd.price, qty, qty, cmd.tif, otype, cmd.reduce_only,
            cmd.post_only, cmd.stp, cmd.client_order_id, cmd.ref, cmd.trigger_price,
            cmd.trigger_by, cmd.max_slippage_ppm, cmd.symbol,
        )
        ack = OrderAccepted(
            seq=self.seq, ref=cmd.ref, order_id=oid, account=cmd.account, symbol=cmd.symbol,
            side=cmd.side, price=cmd.price, qty=qty,
            status="untriggered" if untriggered else "new", client_order_id=cmd.client_order_id,
        )
        if cmd.client_order_id:
            self.coids.remember(cmd.account, cmd.client_order_id, ack)
        out.append(ack)
        if untriggered:
            self.stops[cmd.symbol].add(order)
            self._track(order)
            return
        self._execute(book, spec, order, out)

    def _band_violation(self, book: Book, spec: SymbolSpec, price: int) -> dict | None:
        mark = book.mark
        if not mark:
            return None  # no mark yet: the band starts with the first mark
        low, high = band_limits(mark, spec.band_ppm)
        if low <= price <= high:
            return None
        return {"price": price, "mark": mark, "band_ppm": spec.band_ppm,
                "min_price": low, "max_price": high}

    # ------------------------------------------------------------------ matching

    def _protection_price(self, book: Book, spec: SymbolSpec, order: Order) -> int:
        """Limit for a market order: reference moved by max slippage, rounded towards it."""
        ref = book.mark or book.opposite(order.side).best() or 0
        if not ref:
            return 0
        return protection_price(ref, order.side, order.max_slippage_ppm or spec.protection_ppm)

    def _execute(self, book: Book, spec: SymbolSpec, order: Order, out: list) -> None:
        """Match `order` as taker, then rest it (GTC limit) or cancel what is left; only then fire
        the stops its trades reached. A stop triggered by this order's trade is a new order after
        it: it queues behind this order's remainder and may trade against it (fired before the
        remainder rested, a triggered sell below a resting buy's limit left the book crossed)."""
        if self._take(book, spec, order, out):
            self._fire_stops(book, "last", book.last, out)

    def _take(self, book: Book, spec: SymbolSpec, order: Order, out: list) -> bool:
        """The matching part of _execute: True if `order` traded."""
        is_market = order.type in MARKET_TYPES
        if is_market:
            order.price = self._protection_price(book, spec, order)
            if not order.price:
                self._emit_cancel(book.symbol, order, out, "no_liquidity", {})
                return False
        traded = False
        opp = book.asks if order.side > 0 else book.bids
        best = opp.best()
        if best is not None and ((best <= order.price) if order.side > 0 else (best >= order.price)):
            if order.tif == "FOK" and not self._fok_fillable(book, opp, order):
                self._emit_cancel(book.symbol, order, out, "fok_not_fillable",
                                  {"qty": order.remaining})
                return False
            touched, taker_gone = self._match(book, opp, order, out)
            traded = touched is not None
            if traded and book.reduce_only:
                self._recheck_after_trades(book, touched, out)
            if taker_gone:
                return traded
            if order.remaining == 0:
                self._finish(order.order_id, "filled")
                self._untrack(order)
                return traded
        elif order.tif == "FOK":
            self._emit_cancel(book.symbol, order, out, "fok_not_fillable", {"qty": order.remaining})
            return False
        if order.tif == "GTC" and not is_market:
            self._rest(book, order, out)
            return traded
        if is_market:
            best = opp.best()
            if best is None:
                reason, detail = "no_liquidity", {}
            else:
                reason, detail = "market_protection", {"protection_price": order.price, "best": best}
        else:
            reason, detail = ("ioc_remainder" if order.tif == "IOC" else "fok_not_fillable"), {}
        self._emit_cancel(book.symbol, order, out, reason, detail)
        return traded

    def _fok_fillable(self, book: Book, opp: BookSide, order: Order) -> bool:
        """Would the sweep fill all of `order`? Counts exactly what _match would take: a
        same-account maker per the STP mode, and a reduce-only maker at what it still closes
        once the earlier fills of this sweep have moved its position (as _reduce_only_fits)."""
        need = order.remaining
        moved: dict[str, int] = {}  # maker account -> position change so far in this sweep
        positions = book.positions
        for price in opp.sorted_prices():
            if not opp.crosses(price, order.price):
                return False
            for maker in opp.levels[price].orders.values():
                account = maker.account
                if account == order.account:
                    if order.stp != "cancel_maker":
                        return False  # matching would stop here
                    continue  # that maker is cancelled and the taker goes on
                take = maker.remaining
                if maker.reduce_only:
                    position = positions.get(account, 0) + moved.get(account, 0)
                    take = min(take, _closing_room(position, maker.side))
                take = min(take, need)
                moved[account] = moved.get(account, 0) + maker.side * take
                need -= take
                if need <= 0:
                    return True
        return False

    def _match(self, book: Book, opp: BookSide, order: Order, out: list) -> tuple[list[str] | None, bool]:
        """Fill against the opposite side.

        Returns the accounts whose position changed (None if no trade) and whether self-trade
        prevention cancelled the taker.
        """
        seq = self.seq
        symbol = book.symbol
        positions = book.positions
        taker_account = order.account
        taker_id = order.order_id
        side = order.side
        limit = order.price
        levels = opp.levels
        live = self.orders
        account_orders = self.account_orders
        done = self.done
        trade_id = self.trade_id
        taker_moved = 0
        touched: list[str] | None = None
        taker_gone = False
        while order.remaining and not taker_gone:
            best = opp.best()
            if best is None or ((best > limit) if side > 0 else (best < limit)):
                break
            level = levels[best]
            orders = level.orders
            level_before = level.qty
            moved_before = taker_moved
            while orders and order.remaining:
                maker = next(iter(orders.values()))
                maker_account = maker.account
                if maker_account == taker_account:
                    taker_gone = self._self_trade(book, order, maker, level, out)
                    if taker_gone:
                        break
                    continue
                if maker.reduce_only and not self._reduce_only_fits(book, maker, level, out):
                    continue  # the sweep already shrank that position: the order was pulled
                q = order.remaining if order.remaining < maker.remaining else maker.remaining
                maker.remaining -= q
                order.remaining -= q
                level.qty -= q
                trade_id += 1
                out.append(Trade(
                    seq=seq, trade_id=trade_id, symbol=symbol, price=best, qty=q,
                    taker_side=side, taker_order_id=taker_id, taker_account=taker_account,
                    taker_remaining=order.remaining, maker_order_id=maker.order_id,
                    maker_account=maker_account, maker_remaining=maker.remaining,
                ))
                taker_moved += q
                positions[maker_account] = positions.get(maker_account, 0) - side * q
                if touched is None:
                    touched = [taker_account]
                touched.append(maker_account)
                if maker.remaining == 0:
                    # The maker is done: the same bookkeeping as _finish + _untrack, inlined
                    # because a sweep retires many makers in a row.
                    mid = maker.order_id
                    del orders[mid]
                    del live[mid]
                    mine = account_orders[maker_account]
                    del mine[mid]
                    if not mine:
                        del account_orders[maker_account]
                    if maker.reduce_only:
                        self._drop_reduce_only(book, maker)
                    done.add(mid, "filled")
            if not orders:
                del levels[best]
            if taker_moved != moved_before:
                book.last = best  # a level emptied by self-trade cancels alone is no trade
            if level.qty != level_before:
                book.book_seq += 1
                out.append(BookDelta(seq=seq, symbol=symbol, book_seq=book.book_seq,
                                     side=opp.sign, price=best, qty=level.qty))
        if taker_moved:
            positions[taker_account] = positions.get(taker_account, 0) + side * taker_moved
            self.trade_id = trade_id
        return touched, taker_gone

    def _reduce_only_fits(self, book: Book, maker: Order, level, out: list) -> bool:
        """Before a resting reduce-only order fills: an earlier fill of the same sweep may have
        shrunk its position. Size it down to what still closes, or pull it (False)."""
        position = book.positions.get(maker.account, 0)
        room = _closing_room(position, maker.side)
        if maker.remaining <= room:
            return True
        if room == 0:
            del level.orders[maker.order_id]
            level.qty -= maker.remaining
            self._emit_cancel(book.symbol, maker, out, "reduce_only_position_changed",
                              {"position": position})
            return False
        by = maker.remaining - room
        maker.qty -= by
        maker.remaining -= by
        level.qty -= by
        out.append(OrderAmended(
            seq=self.seq, ref=0, order_id=maker.order_id, account=maker.account,
            symbol=book.symbol, price=maker.price, qty=maker.qty, remaining=maker.remaining,
            priority_kept=True, reason="reduce_only_resize"))
        return True

    def _self_trade(self, book: Book, taker: Order, maker: Order, level, out: list) -> bool:
        """Apply the taker's STP mode to a same-account maker. True when the taker is gone."""
        mode = taker.stp
        if mode in ("cancel_maker", "cancel_both"):
            del level.orders[maker.order_id]
            level.qty -= maker.remaining
            self._emit_cancel(book.symbol, maker, out, "self_trade_prevention",
                              {"taker_order_id": taker.order_id, "mode": mode})
        if mode in ("cancel_taker", "cancel_both"):
            self._emit_cancel(book.symbol, taker, out, "self_trade_prevention",
                              {"maker_order_id": maker.order_id, "mode": mode})
            return True
        return False

    def _emit_cancel(self, symbol: str, order: Order, out: list, reason: str, detail: dict) -> None:
        ev = OrderCancelled(
            seq=self.seq, ref=order.ref,
            order_id=order.order_id, account=order.account, symbol=symbol,
            remaining=order.remaining, reason=reason, detail=detail,
        )
        last = out[-1] if out else None
        if type(last) is OrderAccepted and last.order_id == order.order_id:
            # Accepted and cancelled with nothing in between (an IOC, FOK or market order that
            # could not trade at all): the cancel is the one answer, naming the order, as venues
            # answer such an order with its final state. Saves a report per order on every hop.
            out[-1] = ev
            if order.client_order_id:
                self.coids.remember(order.account, order.client_order_id, ev)
        else:
            out.append(ev)
        self._finish(order.order_id, "cancelled")
        self._untrack(order)

    def _rest(self, book: Book, order: Order, out: list) -> None:
        level = (book.bids if order.side > 0 else book.asks).add(order)
        self._track(order)
        if order.reduce_only:
            book.reduce_only.setdefault(order.account, {})[order.order_id] = order
        book.book_seq += 1
        out.append(BookDelta(seq=self.seq, symbol=book.symbol, book_seq=book.book_seq,
                             side=order.side, price=order.price, qty=level.qty))

    # ------------------------------------------------------------------ bookkeeping

    def _track(self, order: Order) -> None:
        oid = order.order_id
        self.orders[oid] = order
        acct = self.account_orders.get(order.account)
        if acct is None:
            acct = self.account_orders[order.account] = {}
        acct[oid] = order

    def _untrack(self, order: Order) -> None:
        oid = order.order_id
        if self.orders.pop(oid, None) is None:
            return  # a taker that never rested
        acct = self.account_orders[order.account]
        del acct[oid]
        if not acct:
            del self.account_orders[order.account]
        if order.reduce_only:
            self._drop_reduce_only(self.books[order.symbol], order)

    @staticmethod
    def _drop_reduce_only(book: Book, order: Order) -> None:
        ro = book.reduce_only.get(order.account)
        if ro is not None:
            ro.pop(order.order_id, None)
            if not ro:
                del book.reduce_only[order.account]

    def _finish(self, order_id: int, status: str) -> None:
        self.done.add(order_id, status)

    # ------------------------------------------------------------------ after trades

    def _recheck_after_trades(self, book: Book, touched: list[str], out: list) -> None:
        for account in dict.fromkeys(touched):
            if account in book.reduce_only:
                self._recheck_reduce_only(book, account, out)

    def _reduce_only_total(self, book: Book, account: str, side: int) -> int:
        orders = book.reduce_only.get(account)
        if not orders:
            return 0
        return sum(o.remaining for o in orders.values() if o.side == side)

    def _reduce_only_room(self, book: Book, account: str, side: int) -> int:
        room = _closing_room(book.positions.get(account, 0), side)
        return room - self._reduce_only_total(book, account, side) if room else 0

    def _recheck_reduce_only(self, book: Book, account: str, out: list) -> None:
        """Keep resting reduce-only orders within the position: oldest keep their size."""
        position = book.positions.get(account, 0)
        closing_side = -1 if position > 0 else 1
        room = abs(position)
        for order in list(book.reduce_only.get(account, {}).values()):
            if position == 0 or order.side != closing_side:
                self._pull(book, order, out, "reduce_only_position_changed",
                           {"position": position})
            elif order.remaining <= room:
                room -= order.remaining
            elif room > 0:
                self._shrink(book, order, order.remaining - room, out, "reduce_only_resize")
                room = 0
            else:
                self._pull(book, order, out, "reduce_only_position_changed", {"position": position})

    def _pull(self, book: Book, order: Order, out: list, reason: str, detail: dict) -> None:
        """Cancel a resting order from the book."""
        level_qty = (book.bids if order.side > 0 else book.asks).remove(order)
        self._emit_cancel(book.symbol, order, out, reason, detail)
        book.book_seq += 1
        out.append(BookDelta(seq=self.seq, symbol=book.symbol, book_seq=book.book_seq,
                             side=order.side, price=order.price, qty=level_qty))

    def _shrink(self, book: Book, order: Order, by: int, out: list, reason: str, ref: int = 0) -> None:
        """Reduce a resting order's quantity in place (priority kept)."""
        level = book.side(order.side).levels[order.price]
        order.qty -= by
        order.remaining -= by
        level.qty -= by
        out.append(OrderAmended(
            seq=self.seq, ref=ref, order_id=order.order_id, account=order.account,
            symbol=book.symbol, price=order.price, qty=order.qty, remaining=order.remaining,
            priority_kept=True, reason=reason,
        ))
        book.book_seq += 1
        out.append(BookDelta(seq=self.seq, symbol=book.symbol, book_seq=book.book_seq,
                             side=order.side, price=order.price, qty=level.qty))

    # ------------------------------------------------------------------ stops

    def _fire_stops(self, book: Book, trigger_by: str, price: int, out: list) -> None:
        if not price:
            return
        stops = self.stops[book.symbol]
        if not stops.orders:
            return
        spec = self.specs[book.symbol]
        for order in stops.pop_triggered(trigger_by, price):
            self._untrack(order)
            out.append(OrderTriggered(
                seq=self.seq, order_id=order.order_id, account=order.account, symbol=book.symbol,
                trigger_by=trigger_by, trigger_price=order.trigger_price, observed_price=price,
            ))
            order.type = "market" if order.type in MARKET_TYPES else "limit"
            if order.type == "market" and order.tif == "GTC":
                order.tif = "IOC"
            if order.reduce_only:
                room = self._reduce_only_room(book, order.account, order.side)
                if room <= 0:
                    self._emit_cancel(book.symbol, order, out, "reduce_only_would_increase",
                                      {"position": book.positions.get(order.account, 0)})
                    continue
                if order.remaining > room:  # sized down, and the owner told, as at placement
                    order.qty -= order.remaining - room
                    order.remaining = room
                    out.append(OrderAmended(
                        seq=self.seq, ref=0, order_id=order.order_id, account=order.account,
                        symbol=book.symbol, price=order.price, qty=order.qty,
                        remaining=order.remaining, priority_kept=True, reason="reduce_only_resize"))
            if order.type == "limit":
                bad = self._band_violation(book, spec, order.price)
                if bad:
                    self._emit_cancel(book.symbol, order, out, "price_out_of_band", bad)
                    continue
            self._execute(book, spec, order, out)

    def _mark(self, cmd: MarkPrice, out: list) -> None:
        book = self.books.get(cmd.symbol)
        if book is None:
            out.append(OrderRejected(seq=self.seq, ref=0, order_id=0, account="", symbol=cmd.symbol,
                                     reason="unknown_symbol", detail={"symbol": cmd.symbol}))
            return
        book.mark = cmd.mark
        self._fire_stops(book, "mark", cmd.mark, out)

    def _set_position(self, cmd: SetPosition | ShiftPosition, out: list) -> None:
        book = self.books.get(cmd.symbol)
        if book is None:
            out.append(OrderRejected(seq=self.seq, ref=0, order_id=0, account=cmd.account,
                                     symbol=cmd.symbol, reason="unknown_symbol",
                                     detail={"symbol": cmd.symbol}))
            return
        if type(cmd) is ShiftPosition:
            book.positions[cmd.account] = book.positions.get(cmd.account, 0) + cmd.change
        else:
            book.positions[cmd.account] = cmd.qty
        if cmd.account in book.reduce_only:
            self._recheck_reduce_only(book, cmd.account, out)

    # ------------------------------------------------------------------ cancel / amend

    def _find(self, cmd, out: list) -> Order | None:
        """The live order a cancel/amend names, or an OrderRejected and None."""
        oid = cmd.order_id
        if not oid and cmd.client_order_id:
            prev = self.coids.get(cmd.account, cmd.client_order_id)
            oid = 0 if prev is None or type(prev) is OrderRejected else prev.order_id
        order = self.orders.get(oid)
        if order is not None and order.account == cmd.account and order.symbol == cmd.symbol:
            return order
        if oid in self.done:
            reason, detail = "order_not_open", {"order_id": oid, "status": self.done.status(oid)}
        else:
            reason, detail = "unknown_order", {"order_id": oid}
        out.append(OrderRejected(seq=self.seq, ref=cmd.ref, order_id=oid, account=cmd.account,
                                 symbol=cmd.symbol, reason=reason, detail=detail,
                                 client_order_id=cmd.client_order_id))
        return None

    def _cancel(self, cmd: Cancel, out: list) -> None:
        order = self._find(cmd, out)
        if order is None:
            return
        order.ref = cmd.ref
        reason = cmd.reason or "user"
        if order.type in STOP_TYPES and self.stops[cmd.symbol].remove(order.order_id) is not None:
            self._emit_cancel(cmd.symbol, order, out, reason, {})  # still untriggered
        else:
            self._pull(self.books[cmd.symbol], order, out, reason, {})

    def _mass_cancel(self, cmd: MassCancel, out: list) -> None:
        if cmd.symbol and cmd.symbol not in self.books:
            out.append(OrderRejected(seq=self.seq, ref=cmd.ref, order_id=0, account=cmd.account,
                                     symbol=cmd.symbol, reason="unknown_symbol",
                                     detail={"symbol": cmd.symbol}))
            return
        live = list(self.account_orders.get(cmd.account, {}).values())
        cancelled: list[tuple[int, int]] = []
        deltas: list[BookDelta] = []
        for order in live:
            symbol = order.symbol
            if cmd.symbol and symbol != cmd.symbol:
                continue
            cancelled.append((order.order_id, order.remaining))
            if self.stops[symbol].remove(order.order_id) is None:
                book = self.books[symbol]
                level_qty = book.side(order.side).remove(order)
                book.book_seq += 1
                deltas.append(BookDelta(seq=self.seq, symbol=symbol, book_seq=book.book_seq,
                                        side=order.side, price=order.price, qty=level_qty))
            self._finish(order.order_id, "cancelled")
            self._untrack(order)
        out.append(OrdersCancelled(seq=self.seq, ref=cmd.ref, account=cmd.account,
                                   symbol=cmd.symbol, orders=cancelled, reason="mass_cancel"))
        out.extend(deltas)

    def _amend(self, cmd: Amend, out: list) -> None:
        order = self._find(cmd, out)
        if order is None:
            return
        spec = self.specs[cmd.symbol]
        book = self.books[cmd.symbol]
        new_price = cmd.price or order.price
        new_qty = cmd.qty or order.qty
        filled = order.qty - order.remaining

        def reject(reason: str, detail: dict) -> None:
            out.append(OrderRejected(seq=self.seq, ref=cmd.ref, order_id=order.order_id,
                                     account=cmd.account, symbol=cmd.symbol, reason=reason,
                                     detail=detail, client_order_id=cmd.client_order_id))

        untriggered = order.order_id in self.stops[cmd.symbol].orders
        trigger = cmd.trigger_price
        if trigger and trigger != order.trigger_price:
            if not untriggered:  # a limit, or a stop that already fired (and is one now)
                return reject("trigger_price_on_non_stop", {"type": order.type})
            ref_price = book.mark if order.trigger_by == "mark" else book.last
            if ref_price and is_triggered(order.type, order.side, trigger, ref_price):
                return reject("would_trigger_immediately", {
                    "trigger_price": trigger, "trigger_by": order.trigger_by,
                    "current": ref_price})
        if order.type in MARKET_TYPES and cmd.price:
            return reject("market_order_has_price", {"price": cmd.price})
        if not spec.min_qty <= new_qty <= spec.max_qty:  # as for a new order
            return reject("qty_out_of_range", {"qty": new_qty, "min_qty": spec.min_qty,
                                               "max_qty": spec.max_qty})
        if new_qty <= filled:
            return reject("amend_qty_not_above_filled", {"qty": new_qty, "filled": filled})
        if order.type not in MARKET_TYPES:
            notional = new_price * new_qty * spec.atoms_per_tick_lot
            if notional > spec.max_notional:
                return reject("notional_too_large", {"notional": notional,
                                                     "max_notional": spec.max_notional})
        if not untriggered:
            bad = self._band_violation(book, spec, new_price)
            if bad:
                return reject("price_out_of_band", bad)
        new_remaining = new_qty - filled
        if order.reduce_only and not untriggered and new_remaining > order.remaining:
            room = self._reduce_only_room(book, order.account, order.side) + order.remaining
            if new_remaining > room:
                return reject("reduce_only_would_increase", {
                    "remaining": new_remaining, "room": room,
                    "position": book.positions.get(order.account, 0)})
        if order.post_only and new_price != order.price:
            opp = book.opposite(order.side)
            best = opp.best()
            if best is not None and opp.crosses(best, new_price):
                maker = next(iter(opp.levels[best].orders.values()))
                return reject("post_only_would_take", {
                    "price": new_price, "maker_order_id": maker.order_id, "maker_price": best})

        order.ref = cmd.ref
        if untriggered:
            order.price, order.qty, order.remaining = new_price, new_qty, new_remaining
            if trigger and trigger != order.trigger_price:
                self.stops[cmd.symbol].move(order, trigger)
            out.append(OrderAmended(seq=self.seq, ref=cmd.ref, order_id=order.order_id,
                                    account=order.account, symbol=cmd.symbol, price=new_price,
                                    qty=new_qty, remaining=new_remaining, priority_kept=True,
                                    trigger_price=order.trigger_price))
            return
        if new_price == order.price and new_qty <= order.qty:
            if new_qty == order.qty:
                out.append(OrderAmended(seq=self.seq, ref=cmd.ref, order_id=order.order_id,
                                        account=order.account, symbol=cmd.symbol, price=new_price,
                                        qty=new_qty, remaining=order.remaining, priority_kept=True))
                return
            return self._shrink(book, order, order.qty - new_qty, out, "user", ref=cmd.ref)
        # Loses priority: out of its level, then in again as if new (it may trade).
        side = book.side(order.side)
        level_qty = side.remove(order)
        book.book_seq += 1
        out.append(BookDelta(seq=self.seq, symbol=cmd.symbol, book_seq=book.book_seq,
                             side=order.side, price=order.price, qty=level_qty))
        self._untrack(order)
        order.price, order.qty, order.remaining = new_price, new_qty, new_remaining
        out.append(OrderAmended(seq=self.seq, ref=cmd.ref, order_id=order.order_id,
                                account=order.account, symbol=cmd.symbol, price=new_price,
                                qty=new_qty, remaining=new_remaining, priority_kept=False))
        self._execute(book, spec, order, out)

    # ------------------------------------------------------------------ queries and checks

    def depth(self, symbol: str, n: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        book = self.books[symbol]
        return book.book_seq, book.bids.depth(n), book.asks.depth(n)

    def position(self, account: str, symbol: str) -> int:
        return self.books[symbol].positions.get(account, 0)

    def state(self) -> dict:
        """Canonical, order-independent view of all state that decides future outputs: every
        field of every live order (a resting order's STP mode, flags and client id matter when an
        amend makes it a taker again), the client ids' first answers in memory order, and the
        finished orders remembered (they decide "too late" and duplicate order ids)."""
        books = {}
        for name, book in self.books.items():
            books[name] = {
                "book_seq": book.book_seq, "mark": book.mark, "last": book.last,
                "bids": [(p, list(book.bids.levels[p].orders.values()))
                         for p in book.bids.sorted_prices()],
                "asks": [(p, list(book.asks.levels[p].orders.values()))
                         for p in book.asks.sorted_prices()],
                "positions": sorted((a, q) for a, q in book.positions.items() if q),
                "stops": [o for _, o in sorted(self.stops[name].orders.items())],
            }
        done = self.done
        return {"seq": self.seq, "trade_id": self.trade_id, "books": books,
                "coids": list(self.coids.items()),
                "done": sorted((i, done.statuses[slot]) for slot, i in enumerate(done.ids)
                               if i is not None)}

    def state_hash(self) -> str:
        # JSON, not msgpack: a remembered reject's numbers may exceed 64 bits.
        return hashlib.sha256(msgspec.json.encode(self.state())).hexdigest()

    def validate_internal_state(self) -> None:
        """Raise AssertionError if any structural invariant is broken (tests call it every step)."""
        for name, book in self.books.items():
            assert not book.crossed(), f"{name}: crossed book at rest"
            for side in (book.bids, book.asks):
                for price, level in side.levels.items():
                    assert level.orders, f"{name}: empty level {price} kept"
                    assert level.qty == sum(o.remaining for o in level.orders.values()), \
                        f"{name}: level {price} qty {level.qty} != sum of orders"
                    for o in level.orders.values():
                        assert o.remaining > 0 and o.price == price and o.side == side.sign
                        assert self.orders.get(o.order_id) is o
            for account, ros in book.reduce_only.items():
                pos = book.positions.get(account, 0)
                total = sum(o.remaining for o in ros.values())
                assert total <= abs(pos), f"{name}: reduce-only {total} > |position| {pos}"
                for o in ros.values():
                    assert o.side == (-1 if pos > 0 else 1), f"{name}: reduce-only on growing side"
        resting = sum(len(l.orders) for b in self.books.values()
                      for s in (b.bids, b.asks) for l in s.levels.values())
        waiting = sum(len(s.orders) for s in self.stops.values())
        assert len(self.orders) == resting + waiting, "order index out of step with the books"
        assert sum(len(v) for v in self.account_orders.values()) == len(self.orders)
