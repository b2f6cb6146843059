"""The order lifecycle as risk keeps it: matching's answers move risk's copy of each order from
state to state, each move a named function below (`ORDER_EVENTS` routes each event to its own).

    state        what risk holds                                     entered by
    pending      reserved, sent to matching, `pending[ref]` set       Admission._place
    open         `accepted`: resting, or a stop not yet triggered     _accepted
    amending     open, with an amend's extra margin held (`hold`)     Admission._amend
                 until matching answers that amend (`pending[ref]`)
    gone         nothing: forgotten (reserve released), never held,   _forget
                 or another account's (a refusal names the id sent)
    liquidation  a liquidation step's IOC (`liq_orders`): not an      Liquidation._liquidation_step
                 account order; its reject or cancel ends the step

    event              from                   to           transition
    OrderAccepted      pending                open         _accepted (a reduce-only order sized
                                                           down is re-priced: _order_changed)
                       pending (duplicate)    gone         _accepted -> _drop_pending
                       liquidation            liquidation  _accepted (quiet: the IOC's ack)
    OrderRejected      pending                gone         _rejected -> _forget
                       amending               open         _rejected -> _release_hold (the
                                                           amend's own refusal; another
                                                           refusal leaves the hold held)
                       open                   open         _rejected (quiet: a cancel or an
                                                           amend that held nothing, refused)
                       gone                   gone         _rejected (quiet: see below)
                       liquidation            gone         _rejected -> _liquidation_order_done
                       pending (duplicate)    gone         _rejected -> _drop_pending
    OrderCancelled     pending/open/amending  gone         _cancelled -> _forget
                       liquidation            gone         _cancelled -> _liquidation_order_done
                       pending (duplicate)    gone         _cancelled -> _drop_pending
    OrdersCancelled    open/amending (each)   gone         _mass_cancelled -> _forget
    OrderAmended       open/amending          open         _amended -> _release_hold, _order_changed
    OrderTriggered     open (stop)            open         _triggered -> _order_changed (now a
                       amending (stop)        amending     market or limit order, priced from mark)
    Trade (a fill)     open                   open/gone    Settlement._trade (recount / _forget)

`ORDER_TABLE` is this table as data; `_step` looks an event up in it before anything changes, and an
event with no row raises IllegalTransition(state, event) by name: the risk shell counts and logs it
and journals the explanation record (`risk.order.illegal_transition`), and the event goes no
further. The quiet rows change nothing and still report the event to the account, as matching sent
it. Measured over the unit and e2e suites (liquidation, failover, recovery, stops, order path,
fuzz): the only events that named an order risk does not hold were refusals (`gone` +
OrderRejected: a cancel or amend of an order that filled or was cancelled meanwhile, an unknown
id, a mass cancel of an unknown symbol naming no order), which a client causes at will. An
acceptance, cancel, amend or trigger of an order risk does not hold means risk and matching
disagree about a live order (it appeared only where a test fed a node another node's inputs), so
it has no row. An event for another account's order is that account's: a refusal of a cancel
naming it no longer releases its amend's hold (it did, before the table).
"""

from __future__ import annotations

from cluster.core import allowed
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

    def _order_state(self, order_id: int, account: str) -> str:
        """The state of the order an event names, as risk holds it (an order of another account
        is not this event's: a cancel naming someone else's order id is refused to its sender)."""
        if order_id in self.liq_orders:
            return "liquidation"
        order = self.orders.get(order_id)
        if order is None or order.account != account:
            return "gone"
        if not order.accepted:
            return "pending"
        return "amending" if order.hold else "open"

    def _step(self, ev, order_id: int | None = None) -> str:
        """The state of the event's subject, checked against ORDER_TABLE before anything changes
        (IllegalTransition when it has no row). A duplicate's subject is the placement it
        answers (`pending[ref]`), not the order it names (the one that took the client id)."""
        event = type(ev).__name__
        if getattr(ev, "duplicate", False):
            event += " (duplicate)"
            state = "pending" if ev.ref in self.pending else "gone"
            subject = f"ref-{ev.ref}"
        else:
            order_id = ev.order_id if order_id is None else order_id
            state = self._order_state(order_id, ev.account)
            subject = f"order-{order_id}"
        allowed(ORDER_TABLE, state, event, machine="risk.order", subject=subject,
                numbers={"account": ev.account, "seq": ev.seq})
        return state

    # Each transition returns whether the event goes on to the account as matching sent it.

    def _accepted(self, ev: OrderAccepted, out: list) -> bool:
        state = self._step(ev)
        if ev.duplicate:
            self._drop_pending(ev.ref)
        else:
            self.pending.pop(ev.ref, None)
            if state == "pending":
                order = self.orders[ev.order_id]
                order.accepted = True
                if ev.qty != order.qty:  # reduce-only sized down
                    order.qty = order.remaining = ev.qty
                    self._order_changed(order)
        return True

    def _rejected(self, ev: OrderRejected, out: list) -> bool:
        state = self._step(ev)
        if state == "liquidation":
            self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
        elif ev.duplicate:
            self._drop_pending(ev.ref)
        else:
            answered = self.pending.pop(ev.ref, None)
            if state == "pending":  # the new order itself was refused
                self._forget(self.orders[ev.order_id])
            elif state == "amending" and answered == ev.order_id:  # its amend refused
                self._release_hold(self.orders[ev.order_id])
        return True

    def _cancelled(self, ev: OrderCancelled, out: list) -> bool:
        state = self._step(ev)
        if ev.duplicate:  # the answer to a resubmitted client order id, not a cancel
            self._drop_pending(ev.ref)
        else:
            if ev.ref:  # an order cancelled at once is answered with the cancel alone (no ack)
                self.pending.pop(ev.ref, None)
            if state in ("pending", "open", "amending"):
                self._forget(self.orders[ev.order_id])
            elif state == "liquidation":
                self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
        return True

    def _mass_cancelled(self, ev: OrdersCancelled, out: list) -> bool:
        states = [self._step(ev, order_id) for order_id, _ in ev.orders]  # all checked first
        symbols = set()
        for (order_id, _), state in zip(ev.orders, states):
            if state != "gone":
                order = self.orders[order_id]
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
        if self._step(ev) != "gone":
            if ev.ref:
                self.pending.pop(ev.ref, None)
            order = self.orders[ev.order_id]
            order.price, order.qty, order.remaining = ev.price, ev.qty, ev.remaining
            if ev.trigger_price:  # a waiting stop moved: its worst fill price moved with it
                order.trigger_price = ev.trigger_price
            self._release_hold(order)  # the amend's answer: the terms now price it
            self._order_changed(order)
        return True

    def _triggered(self, ev: OrderTriggered, out: list) -> bool:
        if self._step(ev) != "gone":
            order = self.orders[ev.order_id]
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


ORDER_TABLE = {  # state of the order an event names -> event -> state after
    "pending": {"OrderAccepted": "open", "OrderRejected": "gone", "OrderCancelled": "gone",
                "OrderAccepted (duplicate)": "gone", "OrderRejected (duplicate)": "gone",
                "OrderCancelled (duplicate)": "gone"},
    "open": {"OrderRejected": "open", "OrderCancelled": "gone", "OrdersCancelled": "gone",
             "OrderAmended": "open", "OrderTriggered": "open"},
    "amending": {"OrderRejected": "open", "OrderCancelled": "gone", "OrdersCancelled": "gone",
                 "OrderAmended": "open", "OrderTriggered": "amending"},
    "gone": {"OrderRejected": "gone"},
    "liquidation": {"OrderAccepted": "liquidation", "OrderRejected": "gone",
                    "OrderCancelled": "gone"},
}

ORDER_EVENTS = {  # matching's order event -> its transition
    OrderAccepted: OrderLifecycle._accepted, OrderRejected: OrderLifecycle._rejected,
    OrderCancelled: OrderLifecycle._cancelled, OrdersCancelled: OrderLifecycle._mass_cancelled,
    OrderAmended: OrderLifecycle._amended, OrderTriggered: OrderLifecycle._triggered,
}
