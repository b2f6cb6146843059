"""The matching engine's state hash moves with every piece of state that decides future outputs, so
a field added later cannot silently fall out of it (replay equality is in test_matching_properties)."""

from __future__ import annotations

from cluster.config import load
from cluster.protocol import Cancel, MarkPrice, NewOrder, SetPosition
from nodes.matching.book import Book, Order
from nodes.matching.engine import MatchingEngine
from tests.unit.changes import changed

SYMBOLS = load().symbols
SYMBOL = sorted(SYMBOLS)[0]
PRICE = SYMBOLS[SYMBOL].initial_price
BOOK_DERIVED = {"symbol", "bids", "asks", "reduce_only"}  # the key; hashed level by level; an index


def busy_engine() -> MatchingEngine:
    """Resting orders on both sides (one reduce-only, one with a client id), an untriggered stop, a
    trade, a finished order, a mark and positions."""
    engine = MatchingEngine(SYMBOLS)
    engine.handle(MarkPrice(symbol=SYMBOL, mark=PRICE))
    engine.handle(SetPosition(account="c", symbol=SYMBOL, qty=5))
    for cmd in (
        NewOrder(order_id=1, account="a", symbol=SYMBOL, side=1, qty=10, price=PRICE - 1,
                 client_order_id="a-1"),
        NewOrder(order_id=2, account="b", symbol=SYMBOL, side=-1, qty=10, price=PRICE + 1),
        NewOrder(order_id=3, account="c", symbol=SYMBOL, side=-1, qty=2, price=PRICE + 2,
                 reduce_only=True),
        NewOrder(order_id=4, account="a", symbol=SYMBOL, side=1, qty=1, type="stop_market",
                 trigger_price=PRICE + 50, tif="IOC"),
        NewOrder(order_id=5, account="d", symbol=SYMBOL, side=1, qty=3, price=PRICE + 1, tif="IOC"),
        NewOrder(order_id=6, account="d", symbol=SYMBOL, side=1, qty=1, price=PRICE - 5),
        Cancel(account="d", symbol=SYMBOL, order_id=6),
    ):
        events = engine.handle(cmd)
        assert not any(type(e).__name__ == "OrderRejected" for e in events), events
    return engine


def _orders(engine: MatchingEngine) -> list[Order]:
    return [engine.orders[i] for i in (1, 3, 4)]  # resting, resting reduce-only, stop


def test_equal_histories_give_equal_hashes():
    assert busy_engine().state_hash() == busy_engine().state_hash()


def test_every_field_of_every_live_order_is_in_the_hash():
    for index in range(3):
        for field in Order.__struct_fields__:
            engine = busy_engine()
            order = _orders(engine)[index]
            before = engine.state_hash()
            setattr(order, field, changed(getattr(order, field)))
            assert engine.state_hash() != before, f"Order.{field} of order {order.order_id}"


def test_every_book_fact_is_in_the_hash():
    for slot in Book.__slots__:
        if slot in BOOK_DERIVED:
            continue
        engine = busy_engine()
        book = engine.books[SYMBOL]
        before = engine.state_hash()
        setattr(book, slot, changed(getattr(book, slot)))
        assert engine.state_hash() != before, f"Book.{slot} is not in the state hash"


def test_counters_finished_orders_and_client_ids_are_in_the_hash():
    changes = [
        lambda e: setattr(e, "seq", e.seq + 1),
        lambda e: setattr(e, "trade_id", e.trade_id + 1),
        lambda e: e.done.add(12345, "filled"),  # decides duplicate_order_id and "too late"
        lambda e: e.done.add(6, "filled"),  # the same order, finished another way
        lambda e: e.coids.remember("a", "a-2", e.coids.get("a", "a-1")),
    ]
    for change in changes:
        engine = busy_engine()
        before = engine.state_hash()
        change(engine)
        assert engine.state_hash() != before


def test_a_remembered_reject_with_numbers_past_64_bits_still_hashes():
    from cluster.protocol import MAX_UNITS
    engine = busy_engine()
    events = engine.handle(NewOrder(order_id=9, account="a", symbol=SYMBOL, side=1, qty=MAX_UNITS,
                                    price=MAX_UNITS, client_order_id="huge"))
    assert events[0].reason == "qty_out_of_range"
    events = engine.handle(NewOrder(order_id=10, account="a", symbol=SYMBOL, side=1,
                                    qty=SYMBOLS[SYMBOL].max_qty, price=MAX_UNITS,
                                    client_order_id="huge2"))
    assert events[0].reason == "notional_too_large" and events[0].detail["notional"] >= 2**64
    assert len(engine.state_hash()) == 64
