"""A stop that a taker's trade triggers is a new order after that taker: the taker's remainder rests
(or is cancelled) first, so the stop queues behind it at a shared price and may trade against it.

Before, the engine fired the stops between the taker's fills and its resting: the triggered stop
took time priority over the order that triggered it, and a triggered sell priced below the taker's
buy limit rested without seeing it, leaving the book crossed.
"""

from __future__ import annotations

from cluster import config
from cluster.protocol import MarkPrice, NewOrder, OrderTriggered, Trade
from nodes.matching.engine import MatchingEngine

S = "BTC-PERP"
SPECS = config.load().symbols


def order(oid, account, side, qty, price=0, **kw):
    return NewOrder(order_id=oid, account=account, symbol=S, side=side, qty=qty, price=price, **kw)


def engine_at(mark: int) -> MatchingEngine:
    eng = MatchingEngine(SPECS)
    eng.handle(MarkPrice(symbol=S, mark=mark))
    return eng


def test_a_stop_triggered_by_a_taker_queues_behind_the_takers_remainder():
    eng = engine_at(1000)
    eng.handle(order(1, "a", 1, 3, 1000))  # a bid the taker partly fills
    # a sell take-profit on the last price, at the price the taker will rest at
    eng.handle(order(2, "c", -1, 5, 1000, type="take_profit_limit", trigger_price=999,
                     trigger_by="last"))
    ev = eng.handle(order(3, "b", -1, 8, 1000))  # fills 3, rests 5 at 1000, fires order 2
    assert [(e.qty, e.maker_order_id) for e in ev if type(e) is Trade] == [(3, 1)]
    assert any(type(e) is OrderTriggered and e.order_id == 2 for e in ev)
    assert [(o.order_id, o.remaining) for o in eng.books[S].asks.levels[1000].orders.values()] \
        == [(3, 5), (2, 5)]  # old: [(2, 5), (3, 5)], the stop ahead of the order that fired it
    ev = eng.handle(order(4, "a", 1, 6, type="market", tif="IOC"))
    assert [(e.price, e.qty, e.maker_order_id) for e in ev if type(e) is Trade] \
        == [(1000, 5, 3), (1000, 1, 2)]
    eng.validate_internal_state()


def test_a_stop_triggered_by_a_taker_trades_against_its_resting_remainder():
    eng = engine_at(1000)
    eng.handle(order(1, "a", -1, 5, 1000))
    eng.handle(order(2, "c", -1, 5, 999, type="take_profit_limit", trigger_price=1000,
                     trigger_by="last"))
    ev = eng.handle(order(3, "b", 1, 10, 1001))  # fills 5 at 1000, rests 5 at 1001, fires order 2
    # the triggered sell at 999 meets the resting bid at 1001 (old: it rested at 999 under the bid
    # at 1001, a crossed book)
    assert [(e.price, e.qty, e.taker_order_id, e.maker_order_id) for e in ev if type(e) is Trade] \
        == [(1000, 5, 3, 1), (1001, 5, 2, 3)]
    book = eng.books[S]
    assert book.bids.best() is None and book.asks.best() is None
    assert book.positions == {"a": -5, "b": 10, "c": -5}
    eng.validate_internal_state()


def test_an_ioc_taker_is_answered_before_the_stops_its_trade_fires():
    eng = engine_at(1000)
    eng.handle(order(1, "a", -1, 2, 1000))
    eng.handle(order(2, "c", 1, 4, 1001, type="stop_limit", trigger_price=1000, trigger_by="last"))
    ev = eng.handle(order(3, "b", 1, 5, 1000, tif="IOC"))
    names = [type(e).__name__ for e in ev]
    cancel = names.index("OrderCancelled")
    assert ev[cancel].order_id == 3 and ev[cancel].remaining == 3
    assert cancel < names.index("OrderTriggered")  # the taker is done before the stop enters
    assert eng.books[S].bids.levels[1001].orders.keys() == {2}
    eng.validate_internal_state()
