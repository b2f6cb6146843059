"""The order lifecycle as risk keeps it: matching's answers move risk's copy of each order from
state to state, each move a named function below (`ORDER_EVENTS` routes each event to its own).

    state      what risk holds                                     entered by
    pending    reserved, sent to matching, `pending[ref]` set       Admission._place
    open       `accepted`: resting, or a stop not yet triggered     _accepted
    amending   open, with an amend's extra margin held (`hold`)     Admission._amend
    gone       reserve released, removed from `orders`             _forget

    event              from                   to         transition
    OrderAccepted      pending                open       _accepted (a reduce-only order sized
                                                         down is re-priced: _order_changed)
                       pending (duplicate)    gone       _accepted -> _drop_pending
    OrderRejected      pending                gone       _rejected -> _forget
                       amending               open       _rejected -> _release_hold
                       pending (duplicate)    gone       _rejected -> _drop_pending
    OrderCancelled     pending/open/amending  gone       _cancelled -> _forget
                       pending (duplicate)    gone       _cancelled -> _drop_pending
    OrdersCancelled    any (each order)       gone       _mass_cancelled -> _forget
    OrderAmended       open/amending          open       _amended -> _release_hold, _order_changed
    OrderTriggered     open (stop)            open       _triggered -> _order_changed (now a
                                                         market or limit order, priced from mark)
    Trade (a fill)     open                   open/gone  Settlement._trade (recount / _forget)

A liquidation's IOC (`liq_orders`, nodes/risk/liquidation.py) is not an account order: its reject
or cancel ends the liquidation step instead. An event for an order risk does not hold (already
gone) changes nothing and is still reported to the account, as matching sent it.
"""

from __future__ import annotations

from cluster.protocol import (
    MARKET_TYPES, OrderAccepted, OrderAmended, OrderCancelled, OrderRejected, OrdersCancelled,
    OrderTriggered, Report,
)
from nodes.risk.accounts import OpenOrder


class OrderLifecycle:
    """Matching's answers move risk's copy of each order through its lifecycle."""

    def _engine_event(self, ev, out: list) -> None:
        """An order event from matching: its transition, then the event to the account."""
        transition = ORDER_EVENTS.get(type(ev))
        if transition is None or not transition(self, ev, out):
            return
        out.append(("gateway", Report(ref=getattr(ev, "ref", 0), account=ev.account, event=ev)))

    # Each transition returns whether the event goes on to the account as matching sent it.

    def _accepted(self, ev: OrderAccepted, out: list) -> bool:
        if ev.duplicate:
            self._drop_pending(ev.ref)
        else:
            self.pending.pop(ev.ref, None)
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.accepted = True
                if ev.qty != order.qty:  # reduce-only sized down
                    order.qty = order.remaining = ev.qty
                    self._order_changed(order)
        return True

    def _rejected(self, ev: OrderRejected, out: list) -> bool:
        if ev.order_id in self.liq_orders:
            self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
        elif ev.duplicate:
            self._drop_pending(ev.ref)
        else:
            self.pending.pop(ev.ref, None)
            order = self.orders.get(ev.order_id)
            if order is not None and not order.accepted:  # the new order itself was refused
                self._forget(order)
            elif order is not None and order.hold:  # an amend refused: release its hold
                self._release_hold(order)
        return True

    def _cancelled(self, ev: OrderCancelled, out: list) -> bool:
        if ev.duplicate:  # the answer to a resubmitted client order id, not a cancel
            self._drop_pending(ev.ref)
        else:
            if ev.ref:  # an order cancelled at once is answered with the cancel alone (no ack)
                self.pending.pop(ev.ref, None)
            order = self.orders.get(ev.order_id)
            if order is not None:
                self._forget(order)
            if ev.order_id in self.liq_orders:
                self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
        return True

    def _mass_cancelled(self, ev: OrdersCancelled, out: list) -> bool:
        symbols = set()
        for order_id, _ in ev.orders:
            order = self.orders.get(order_id)
            if order is not None:
                self._forget(order, reprice=False)
                symbols.add(order.symbol)
        acct = self.accounts.get(ev.account)
        for symbol in sorted(symbols) if acct is not None else ():
            self._reprice(acct, symbol)
        if ev.ref < 0:  # a liquidation's "cancel" step
            out.append(("gateway", Report(ref=0, account=ev.account, event=ev)))
            self._liquidation_result(out, -ev.ref, "cancel", ev.account, ev.symbol,
                                     reason=f"cancelled {len(ev.orders)} orders")
            return False
        return True

    def _amended(self, ev: OrderAmended, out: list) -> bool:
        order = self.orders.get(ev.order_id)
        if order is not None:
            order.price, order.qty, order.remaining = ev.price, ev.qty, ev.remaining
            if ev.trigger_price:  # a waiting stop moved: its worst fill price moved with it
                order.trigger_price = ev.trigger_price
            self._release_hold(order)  # the amend's answer: the terms now price it
            self._order_changed(order)
        return True

    def _triggered(self, ev: OrderTriggered, out: list) -> bool:
        order = self.orders.get(ev.order_id)
        if order is not None:
            order.type = "market" if order.type in MARKET_TYPES else "limit"
            # matching prices a triggered market order from the mark at that moment
            self._order_changed(order, ref=self._price(order.symbol) or ev.observed_price)
        return True

    def _release_hold(self, order: OpenOrder) -> None:
        if order.hold:
            self.accounts[order.account].order_margin -= order.hold
            order.reserve -= order.hold
            order.hold = 0

    def _order_changed(self, order: OpenOrder, ref: int = 0) -> None:
        """Its price, trigger, type or size changed: re-index it and re-price its symbol."""
        acct = self.accounts[order.account]
        self._index_worst(order, add=False)
        order.worst = self._worst_price(order.symbol, order.side, order.type, order.price,
                                        order.trigger_price, order.slippage_ppm, ref)
        self._index_worst(order, add=True)
        acct.recount(order)
        self._reprice(acct, order.symbol)

    def _drop_pending(self, ref: int) -> None:
        order_id = self.pending.pop(ref, None)
        order = self.orders.get(order_id) if order_id is not None else None
        if order is not None:
            self._forget(order)

    def _forget(self, order: OpenOrder, reprice: bool = True) -> None:
        acct = self.accounts[order.account]
        acct.order_margin -= order.reserve
        order.reserve = 0
        self._index_worst(order, add=False)
        acct.remove_order(order, self.specs[order.symbol].atoms_per_tick_lot)
        del self.orders[order.order_id]
        if reprice and order.closing:  # the lots it was to close pass to the next order
            self._reprice(acct, order.symbol)


ORDER_EVENTS = {  # matching's order event -> its transition
    OrderAccepted: OrderLifecycle._accepted, OrderRejected: OrderLifecycle._rejected,
    OrderCancelled: OrderLifecycle._cancelled, OrdersCancelled: OrderLifecycle._mass_cancelled,
    OrderAmended: OrderLifecycle._amended, OrderTriggered: OrderLifecycle._triggered,
}
