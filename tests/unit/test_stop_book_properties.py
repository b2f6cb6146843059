"""The stop book against a plain model: whatever adds, moves, cancels and price ticks come, a stop
fires exactly when the price reaches its *current* trigger, once, in the order the price crossed
the triggers (a moved or cancelled stop's old heap entries never fire anything)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nodes.matching.book import Order
from nodes.matching.stops import StopBook, direction, is_triggered

TYPES = ("stop_market", "take_profit_market")
op = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 12), st.sampled_from(TYPES), st.sampled_from((1, -1)),
              st.integers(90, 110), st.sampled_from(("mark", "last"))),
    st.tuples(st.just("move"), st.integers(1, 12), st.integers(90, 110)),
    st.tuples(st.just("cancel"), st.integers(1, 12)),
    st.tuples(st.just("price"), st.sampled_from(("mark", "last")), st.integers(85, 115)),
)


def stop(order_id, otype, side, trigger, by) -> Order:
    return Order(order_id, "a", side, 0, 1, 1, "IOC", otype, False, False, "cancel_taker", "", 0,
                 trigger, by)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=120))
# an id cancelled and then reused by a stop in another heap: the old entry must not fire it
@example(ops=[("add", 1, "stop_market", 1, 90, "mark"), ("add", 2, "stop_market", 1, 90, "mark"),
              ("cancel", 2), ("add", 2, "stop_market", 1, 90, "last"), ("price", "mark", 90)])
def test_stops_fire_at_their_current_trigger_exactly_once(ops):
    book = StopBook()
    model: dict[int, Order] = {}  # waiting stops, by id
    fired_ever: set[int] = set()
    for o in ops:
        if o[0] == "add" and o[1] not in model and o[1] not in fired_ever:
            order = stop(*o[1:])
            model[order.order_id] = order
            book.add(order)
        elif o[0] == "move" and o[1] in model:
            book.move(model[o[1]], o[2])
        elif o[0] == "cancel" and o[1] in model:
            assert book.remove(o[1]) is model.pop(o[1])
        elif o[0] == "price":
            _, by, price = o
            fired = book.pop_triggered(by, price)
            expected = {i for i, s in model.items()
                        if s.trigger_by == by and is_triggered(s.type, s.side, s.trigger_price, price)}
            assert {s.order_id for s in fired} == expected
            assert len(fired) == len(expected), "a stop fired twice"
            for d in (1, -1):  # within a direction, in the order the price crossed the triggers
                keys = [s.trigger_price * d for s in fired if direction(s.type, s.side) == d]
                assert keys == sorted(keys)
            for i in expected:
                fired_ever.add(i)
                del model[i]
        assert set(book.orders) == set(model)
