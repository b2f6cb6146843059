"""The stop book against a plain model: whatever adds, moves, cancels and price ticks come, a stop
fires exactly when the price reaches its *current* trigger, once, in the order the price crossed
the triggers (a moved or cancelled stop's old heap entries never fire anything).

The expectation is written here from the rule, not from nodes/matching/stops.py: a buy stop and a
sell take-profit wait for the price to rise to the trigger; a sell stop and a buy take-profit for
it to fall to it (README, "Matching rules")."""

from __future__ import annotations

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from nodes.matching.book import Order
from nodes.matching.stops import StopBook

TYPES = ("stop_market", "stop_limit", "take_profit_market", "take_profit_limit")
# (type, side) -> does it fire on a rise to the trigger? (False: on a fall to it)
FIRES_ON_RISE = {("stop_market", 1): True, ("stop_limit", 1): True,
                 ("stop_market", -1): False, ("stop_limit", -1): False,
                 ("take_profit_market", 1): False, ("take_profit_limit", 1): False,
                 ("take_profit_market", -1): True, ("take_profit_limit", -1): True}

add = st.tuples(st.just("add"), st.integers(1, 12), st.sampled_from(TYPES), st.sampled_from((1, -1)),
                st.integers(90, 110), st.sampled_from(("mark", "last")))
move = st.tuples(st.just("move"), st.integers(1, 12), st.integers(90, 110))
cancel = st.tuples(st.just("cancel"), st.integers(1, 12))
price = st.tuples(st.just("price"), st.sampled_from(("mark", "last")), st.integers(85, 115))
# sampled_from keeps the mix even where one_of would favour the first alternative
op = st.sampled_from([add, add, add, move, cancel, price, price]).flatmap(lambda s: s)


def stop(order_id, otype, side, trigger, by) -> Order:
    return Order(order_id, "a", side, 0, 1, 1, "IOC", otype, False, False, "cancel_taker", "", 0,
                 trigger, by)


def model_fires(s: Order, price: int) -> bool:
    rise = FIRES_ON_RISE[(s.type, s.side)]
    return price >= s.trigger_price if rise else price <= s.trigger_price


@settings(max_examples=200, deadline=None)
@given(st.lists(op, min_size=30, max_size=120))
# an id cancelled and then reused by a stop in another heap: the old entry must not fire it
@example(ops=[("add", 1, "stop_market", 1, 90, "mark"), ("add", 2, "stop_market", 1, 90, "mark"),
              ("cancel", 2), ("add", 2, "stop_market", 1, 90, "last"), ("price", "mark", 90)])
def test_stops_fire_at_their_current_trigger_exactly_once(ops):
    book = StopBook()
    model: dict[int, Order] = {}  # waiting stops, by id
    fired_ever: set[int] = set()
    moved = fired_total = 0
    for o in ops:
        if o[0] == "add" and o[1] not in model and o[1] not in fired_ever:
            order = stop(*o[1:])
            model[order.order_id] = order
            book.add(order)
        elif o[0] == "move" and o[1] in model:
            book.move(model[o[1]], o[2])
            assert model[o[1]].trigger_price == o[2]
            moved += 1
        elif o[0] == "cancel" and o[1] in model:
            assert book.remove(o[1]) is model.pop(o[1])
        elif o[0] == "price":
            _, by, price = o
            fired = book.pop_triggered(by, price)
            expected = {i for i, s in model.items() if s.trigger_by == by and model_fires(s, price)}
            assert [s.order_id for s in fired if s.order_id in expected] == \
                [s.order_id for s in fired], "a stop fired that the price did not reach"
            assert {s.order_id for s in fired} == expected
            assert len(fired) == len(expected), "a stop fired twice"
            # in the order the price crossed them: rising triggers lowest first, falling highest
            # first (a rise and a fall never both cross waiting stops in the venue; here they can)
            rising = [s.trigger_price for s in fired if FIRES_ON_RISE[(s.type, s.side)]]
            falling = [s.trigger_price for s in fired if not FIRES_ON_RISE[(s.type, s.side)]]
            assert rising == sorted(rising) and falling == sorted(falling, reverse=True)
            fired_total += len(fired)
            for i in expected:
                fired_ever.add(i)
                del model[i]
        assert set(book.orders) == set(model)
    event("stops fired" if fired_total else "no stop fired")
    event("a waiting stop moved" if moved else "no stop moved")
