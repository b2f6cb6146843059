"""Example tests for each order type, with partial fills and cancels racing fills."""

from __future__ import annotations

import msgspec
import pytest

from cluster import config
from cluster.protocol import (
    Amend, Cancel, MarkPrice, MassCancel, NewOrder, OrderAccepted, OrderAmended, OrderCancelled,
    OrderRejected, OrdersCancelled, OrderTriggered, SetPosition, Trade,
)
from nodes.matching.engine import MatchingEngine

S = "BTC-PERP"
SPECS = config.load().symbols


@pytest.fixture
def eng():
    e = MatchingEngine(SPECS)
    e.handle(MarkPrice(symbol=S, mark=1000))
    return e


def order(oid, account, side, qty, price=0, **kw):
    return NewOrder(order_id=oid, account=account, symbol=S, side=side, qty=qty, price=price, **kw)


def kinds(events):
    return [type(e).__name__ for e in events]


def trades(events):
    return [(e.price, e.qty, e.maker_order_id) for e in events if type(e) is Trade]


def test_price_time_priority_and_partial_fills(eng):
    eng.handle(order(1, "m1", -1, 5, 1001))
    eng.handle(order(2, "m2", -1, 5, 1000))
    eng.handle(order(3, "m3", -1, 5, 1000))
    ev = eng.handle(order(4, "t", 1, 12, 1001))
    assert trades(ev) == [(1000, 5, 2), (1000, 5, 3), (1001, 2, 1)]
    assert eng.depth(S, 5)[2] == [(1001, 3)]
    eng.validate_internal_state()


def test_ioc_remainder_cancelled_and_fok_all_or_nothing(eng):
    eng.handle(order(1, "m", -1, 5, 1000))
    ev = eng.handle(order(2, "t", 1, 8, 1000, tif="IOC"))
    assert trades(ev) == [(1000, 5, 1)]
    assert ev[-1].reason == "ioc_remainder" and ev[-1].remaining == 3
    eng.handle(order(3, "m", -1, 5, 1000))
    ev = eng.handle(order(4, "t", 1, 6, 1000, tif="FOK"))
    assert trades(ev) == [] and ev[-1].reason == "fok_not_fillable"
    ev = eng.handle(order(5, "t", 1, 5, 1000, tif="FOK"))
    assert trades(ev) == [(1000, 5, 3)]


def test_an_order_that_cannot_trade_at_all_is_answered_by_its_cancel_alone(eng):
    eng.handle(order(1, "m", -1, 5, 1010))
    for oid, side, kw, reason, detail in ((2, 1, {"tif": "IOC"}, "ioc_remainder", {}),
                                          (3, 1, {"tif": "FOK"}, "fok_not_fillable", {"qty": 4}),
                                          (5, -1, {"tif": "IOC"}, "ioc_remainder", {}),
                                          (6, -1, {"tif": "FOK"}, "fok_not_fillable", {"qty": 4})):
        ev = eng.handle(order(oid, "t", side, 4, 1000, ref=40 + oid, **kw))
        assert ev == [OrderCancelled(seq=eng.seq, ref=40 + oid, order_id=oid, account="t",
                                     symbol=S, remaining=4, reason=reason, detail=detail)], kw
        again = eng.handle(Cancel(ref=50 + oid, account="t", symbol=S, order_id=oid))
        assert again[0].reason == "order_not_open" and again[0].detail["status"] == "cancelled"
    # an IOC that trades first is acknowledged, filled, then its remainder cancelled
    ev = eng.handle(order(4, "t", 1, 8, 1010, tif="IOC"))
    assert kinds(ev)[0] == "OrderAccepted" and kinds(ev)[-1] == "OrderCancelled"
    assert ev[-1].remaining == 3
    eng.validate_internal_state()


def test_a_resubmitted_client_order_id_of_an_unfilled_ioc_repeats_its_cancel(eng):
    first = eng.handle(order(1, "a", 1, 5, 990, tif="IOC", client_order_id="x2", ref=7))
    again = eng.handle(order(2, "a", 1, 5, 990, tif="IOC", client_order_id="x2", ref=8))
    assert kinds(first) == kinds(again) == ["OrderCancelled"]
    assert again[0].duplicate and not first[0].duplicate
    assert (again[0].order_id, again[0].ref) == (1, 8)
    ev = eng.handle(Cancel(account="a", symbol=S, client_order_id="x2"))
    assert ev[0].reason == "order_not_open" and ev[0].order_id == 1


def test_cancel_or_amend_by_an_unknown_client_order_id_is_rejected_not_raised(eng):
    eng.handle(order(1, "a", 1, 5, 990, client_order_id="known"))
    before = {k: v for k, v in eng.state().items() if k != "seq"}
    for cmd in (Cancel(ref=3, account="a", symbol=S, client_order_id="never-sent"),
                Amend(ref=4, account="a", symbol=S, client_order_id="never-sent", qty=2),
                Cancel(ref=5, account="b", symbol=S, client_order_id="known")):  # another account's
        ev = eng.handle(cmd)
        assert kinds(ev) == ["OrderRejected"] and ev[0].reason == "unknown_order", cmd
        assert ev[0].ref == cmd.ref and ev[0].client_order_id == cmd.client_order_id
    assert {k: v for k, v in eng.state().items() if k != "seq"} == before  # nothing changed
    assert eng.handle(Cancel(account="a", symbol=S, client_order_id="known"))[0].order_id == 1
    eng.validate_internal_state()


def test_client_ids_are_kept_for_live_orders_and_the_accounts_last_finished_ones():
    eng = MatchingEngine(SPECS, coid_memory=3)
    eng.handle(MarkPrice(symbol=S, mark=1000))
    eng.handle(order(1, "a", 1, 5, 990, client_order_id="live"))  # rests
    eng.handle(order(30, "b", 1, 1, 990, tif="IOC", client_order_id="c2"))  # b's own memory
    for i in range(2, 8):  # IOCs that cannot trade: finished at once
        eng.handle(order(i, "a", 1, 1, 990, tif="IOC", client_order_id=f"c{i}"))
    assert [(a, c) for a, c, _ in eng.coids.items()] == [
        ("a", "c6"), ("a", "c7"), ("a", "live"), ("b", "c2")]  # the live one went round
    for coid, oid in (("c7", 7), ("c6", 6)):  # remembered: the original answer again
        again = eng.handle(order(40 + oid, "a", 1, 1, 990, tif="IOC", client_order_id=coid))
        assert again[0].duplicate and again[0].order_id == oid
    fresh = eng.handle(order(50, "a", 1, 1, 990, tif="IOC", client_order_id="c2"))
    assert not fresh[0].duplicate and fresh[0].order_id == 50  # forgotten: a new order
    assert eng.handle(order(51, "b", 1, 1, 990, tif="IOC", client_order_id="c2"))[0].duplicate
    ev = eng.handle(Cancel(account="a", symbol=S, client_order_id="live"))
    assert kinds(ev) == ["OrderCancelled", "BookDelta"] and ev[0].order_id == 1
    eng.validate_internal_state()


def test_post_only_rejected_with_the_order_it_would_hit(eng):
    eng.handle(order(1, "m", -1, 5, 1000))
    ev = eng.handle(order(2, "t", 1, 1, 1000, post_only=True))
    assert kinds(ev) == ["OrderRejected"]
    assert ev[0].reason == "post_only_would_take"
    assert ev[0].detail == {"price": 1000, "maker_order_id": 1, "maker_price": 1000}


def test_market_order_stops_at_protection_price(eng):
    eng.handle(order(1, "m", -1, 5, 1010))
    eng.handle(order(2, "m", -1, 5, 1049))
    ev = eng.handle(order(3, "t", 1, 20, type="market", tif="IOC", max_slippage_ppm=20_000))
    assert trades(ev) == [(1010, 5, 1)]
    assert ev[-1].reason == "market_protection"
    assert ev[-1].detail == {"protection_price": 1020, "best": 1049}


def test_price_band_reject_names_the_band(eng):
    ev = eng.handle(order(1, "a", 1, 1, 1100))
    assert ev[0].reason == "price_out_of_band"
    assert ev[0].detail == {"price": 1100, "mark": 1000, "band_ppm": 50_000, "min_price": 950,
                            "max_price": 1050}


def test_reduce_only_sized_down_and_rechecked_when_position_shrinks(eng):
    eng.handle(SetPosition(account="a", symbol=S, qty=10))
    ev = eng.handle(order(1, "a", -1, 6, 1005, reduce_only=True))
    assert ev[0].qty == 6
    ev = eng.handle(order(2, "a", -1, 9, 1006, reduce_only=True))
    assert type(ev[0]) is OrderAccepted and ev[0].qty == 4  # 10 - 6 already reserved
    ev = eng.handle(order(3, "a", -1, 1, 1007, reduce_only=True))
    assert ev[0].reason == "reduce_only_would_increase"
    # the position shrinks by 7 elsewhere (a sells 7 to b): reduce-only orders shrink to 3
    eng.handle(order(4, "b", 1, 7, 995))
    ev = eng.handle(order(5, "a", -1, 7, 995))
    assert eng.position("a", S) == 3
    amended = [e for e in ev if type(e) is OrderAmended]
    cancelled = [e for e in ev if type(e) is OrderCancelled]
    assert [(e.order_id, e.remaining, e.reason) for e in amended] == [(1, 3, "reduce_only_resize")]
    assert [(e.order_id, e.reason) for e in cancelled] == [(2, "reduce_only_position_changed")]
    eng.validate_internal_state()


def test_self_trade_prevention_modes(eng):
    for mode, expect in (("cancel_taker", {2}), ("cancel_maker", {1}), ("cancel_both", {1, 2})):
        e = MatchingEngine(SPECS)
        e.handle(order(1, "a", -1, 5, 1000))
        ev = e.handle(order(2, "a", 1, 5, 1000, stp=mode))
        assert {x.order_id for x in ev if type(x) is OrderCancelled} == expect, mode
        assert trades(ev) == []


def test_amend_keeps_priority_on_decrease_and_loses_it_otherwise(eng):
    eng.handle(order(1, "m1", -1, 5, 1000))
    eng.handle(order(2, "m2", -1, 5, 1000))
    ev = eng.handle(Amend(account="m1", symbol=S, order_id=1, qty=3))
    assert ev[0].priority_kept is True
    assert trades(eng.handle(order(3, "t", 1, 1, 1000))) == [(1000, 1, 1)]
    ev = eng.handle(Amend(account="m1", symbol=S, order_id=1, qty=6))
    assert ev[1].priority_kept is False
    assert trades(eng.handle(order(4, "t", 1, 1, 1000))) == [(1000, 1, 2)]
    ev = eng.handle(Amend(account="m1", symbol=S, order_id=1, qty=1))
    assert ev[0].reason == "amend_qty_not_above_filled"


def test_cancel_racing_a_fill(eng):
    eng.handle(order(1, "m", -1, 5, 1000))
    eng.handle(order(2, "t", 1, 3, 1000))
    ev = eng.handle(Cancel(account="m", symbol=S, order_id=1))
    assert type(ev[0]) is OrderCancelled and ev[0].remaining == 2  # cancel after a partial fill
    eng.handle(order(3, "m", -1, 5, 1000))
    eng.handle(order(4, "t", 1, 5, 1000))
    ev = eng.handle(Cancel(account="m", symbol=S, order_id=3))  # too late: it filled
    assert ev[0].reason == "order_not_open" and ev[0].detail["status"] == "filled"
    assert eng.handle(Cancel(account="m", symbol=S, order_id=99))[0].reason == "unknown_order"


def test_client_order_id_is_idempotent(eng):
    first = eng.handle(order(1, "a", 1, 5, 990, client_order_id="x1", ref=7))
    again = eng.handle(order(2, "a", 1, 5, 990, client_order_id="x1", ref=8))
    assert kinds(again) == ["OrderAccepted"] and again[0].order_id == 1 and again[0].duplicate
    assert again[0].ref == 8 and first[0].ref == 7
    assert len(eng.orders) == 1
    ev = eng.handle(Cancel(account="a", symbol=S, client_order_id="x1"))
    assert ev[0].order_id == 1 and type(ev[0]) is OrderCancelled


def test_mass_cancel_is_one_event(eng):
    for i in range(1, 4):
        eng.handle(order(i, "a", 1, 1, 990 + i))
    eng.handle(order(4, "b", 1, 1, 990))
    ev = eng.handle(MassCancel(account="a", symbol=S))
    assert type(ev[0]) is OrdersCancelled and sorted(ev[0].orders) == [(1, 1), (2, 1), (3, 1)]
    assert list(eng.orders) == [4]


def test_stops_trigger_on_mark_and_on_last(eng):
    eng.handle(order(1, "m", -1, 10, 1010))
    ev = eng.handle(order(2, "a", 1, 4, type="stop_market", trigger_price=1005, trigger_by="mark"))
    assert ev[0].status == "untriggered"
    assert eng.handle(order(3, "a", 1, 4, type="stop_market", trigger_price=990))[0].reason \
        == "would_trigger_immediately"
    ev = eng.handle(MarkPrice(symbol=S, mark=1006))
    assert kinds(ev)[:1] == ["OrderTriggered"] and trades(ev) == [(1010, 4, 1)]
    # stop-limit on last: a trade at 1012 fires a buy stop at 1011, which then trades itself
    eng.handle(order(8, "m2", -1, 5, 1012))
    eng.handle(order(4, "b", 1, 2, 1015, type="stop_limit", trigger_price=1011, trigger_by="last"))
    ev = eng.handle(order(5, "c", 1, 7, 1012))
    triggered = [e for e in ev if type(e) is OrderTriggered]
    assert [(e.order_id, e.observed_price) for e in triggered] == [(4, 1012)]
    assert trades(ev) == [(1010, 6, 1), (1012, 1, 8), (1012, 2, 8)]
    # take-profit sell triggers when the price rises to it
    eng.handle(SetPosition(account="a", symbol=S, qty=4))
    eng.handle(order(6, "a", -1, 4, type="take_profit_market", trigger_price=1020, reduce_only=True))
    eng.handle(order(7, "z", 1, 10, 1000))
    ev = eng.handle(MarkPrice(symbol=S, mark=1020))
    assert any(type(e) is OrderTriggered and e.order_id == 6 for e in ev)
    assert eng.position("a", S) == 0
    eng.validate_internal_state()


def test_a_waiting_stop_moves_its_trigger_and_fires_at_the_new_one_only(eng):
    eng.handle(order(1, "m", -1, 10, 1030))
    eng.handle(order(2, "a", 1, 4, type="stop_market", trigger_price=1005))
    moved = eng.handle(Amend(account="a", symbol=S, order_id=2, trigger_price=1020))
    assert (type(moved[0]), moved[0].trigger_price, moved[0].priority_kept) == \
        (OrderAmended, 1020, True)
    assert not any(type(e) is OrderTriggered for e in eng.handle(MarkPrice(symbol=S, mark=1010)))
    ev = eng.handle(MarkPrice(symbol=S, mark=1021))
    assert [(e.order_id, e.trigger_price) for e in ev if type(e) is OrderTriggered] == [(2, 1020)]
    assert trades(ev) == [(1030, 4, 1)]
    eng.validate_internal_state()


def test_a_trigger_amend_is_refused_where_it_makes_no_sense(eng):
    eng.handle(order(1, "a", 1, 4, type="stop_limit", price=1040, trigger_price=1030))
    eng.handle(order(2, "a", 1, 4, 990))
    at_once = eng.handle(Amend(account="a", symbol=S, order_id=1, trigger_price=999))[0]
    assert (at_once.reason, at_once.detail["current"]) == ("would_trigger_immediately", 1000)
    not_stop = eng.handle(Amend(account="a", symbol=S, order_id=2, trigger_price=1030))[0]
    assert not_stop.reason == "trigger_price_on_non_stop"
    fired = eng.handle(MarkPrice(symbol=S, mark=1030))  # 1 fires and rests at 1040 (no asks)
    assert [type(e).__name__ for e in fired][:1] == ["OrderTriggered"] and 1 in eng.orders
    late = eng.handle(Amend(account="a", symbol=S, order_id=1, trigger_price=1200))[0]
    assert (late.reason, late.detail) == ("trigger_price_on_non_stop", {"type": "limit"})
    eng.validate_internal_state()


def test_a_stop_moved_many_times_keeps_its_heap_bounded(eng):
    eng.handle(order(1, "a", -1, 4, type="stop_market", trigger_price=900))
    for step in range(2_000):  # a trailing stop, moved up tick by tick
        eng.handle(Amend(account="a", symbol=S, order_id=1, trigger_price=901 + step % 90))
    assert eng.stops[S].heap_size() <= 2 * len(eng.stops[S].orders) + 65
    ev = eng.handle(MarkPrice(symbol=S, mark=900 + (1999 % 90) + 1))
    assert [e.order_id for e in ev if type(e) is OrderTriggered] == [1]


def test_unknown_command_is_rejected_not_raised(eng):
    ev = eng.handle(object())
    assert type(ev[0]) is OrderRejected and ev[0].reason == "unknown_command"


def test_price_heap_stays_bounded_under_price_churn(eng):
    """Levels created and emptied at ever new prices must not grow the best-price heap forever."""
    side = eng.books[S].bids
    for i in range(1, 5001):
        eng.handle(order(i, "a", 1, 1, 950 + i % 90))
        eng.handle(Cancel(account="a", symbol=S, order_id=i))
        if i % 7 == 0:
            eng.handle(order(10_000 + i, "b", 1, 1, 950 + i % 50))
    assert side.heap_size() <= 2 * len(side.levels) + 64
    eng.validate_internal_state()


def test_self_trade_cancels_alone_do_not_move_last_price(eng):
    eng.handle(order(1, "a", -1, 5, 1003))
    eng.handle(order(2, "b", -1, 5, 1004))
    eng.handle(order(3, "a", 1, 5, 1004, stp="cancel_maker"))
    assert eng.books[S].last == 1004  # traded with b at 1004; a's own 1003 was only cancelled
    eng.handle(order(4, "c", -1, 1, 1001))
    eng.handle(order(5, "c", 1, 1, 1001, stp="cancel_maker"))
    assert eng.books[S].last == 1004


def test_a_sweep_never_lets_a_reduce_only_maker_flip_its_position(eng):
    """Found by the property test: a long 13 rests a plain sell of 12 and a reduce-only sell of 2;
    one buy of 14 takes the 12 first, and the reduce-only may then close only the 1 left."""
    eng.handle(SetPosition(account="a", symbol=S, qty=13))
    eng.handle(order(1, "a", -1, 12, 1000))
    eng.handle(order(2, "a", -1, 2, 1000, reduce_only=True))
    ev = eng.handle(order(3, "b", 1, 14, 1000))
    assert trades(ev) == [(1000, 12, 1), (1000, 1, 2)]
    assert [(e.order_id, e.remaining, e.reason) for e in ev if type(e) is OrderAmended] == [
        (2, 1, "reduce_only_resize")]
    assert eng.position("a", S) == 0
    eng.validate_internal_state()


def test_an_amend_meets_the_quantity_rules_of_a_new_order():
    specs = {S: msgspec.structs.replace(SPECS[S], min_qty=5)}  # a venue with a 5-lot minimum
    eng = MatchingEngine(specs)
    eng.handle(MarkPrice(symbol=S, mark=1000))
    eng.handle(order(1, "m", -1, 8, 1001))
    small = eng.handle(Amend(account="m", symbol=S, order_id=1, qty=4))[0]
    assert (small.reason, small.detail["min_qty"]) == ("qty_out_of_range", 5)
    big = eng.handle(Amend(account="m", symbol=S, order_id=1, qty=SPECS[S].max_qty + 1))[0]
    assert big.reason == "qty_out_of_range"
    assert eng.orders[1].qty == 8


def test_defect_12_a_fok_never_fills_partially_behind_a_reduce_only_maker(eng):
    """Issue 17 defect 12: a long 1,000 rests a plain sell of 1,000 and, behind it, a reduce-only
    sell of 1,000. A FOK buy of 2,000 counted both makers at full size and was let in; the sweep
    took the plain sell, which flattened the position, pulled the reduce-only one, and the FOK
    ended with 1,000 of 2,000 filled. The check now counts what the sweep will take: 1,000."""
    eng.handle(SetPosition(account="a", symbol=S, qty=1_000))
    eng.handle(order(1, "a", -1, 1_000, 1000))
    eng.handle(order(2, "a", -1, 1_000, 1001, reduce_only=True))
    ev = eng.handle(order(3, "b", 1, 2_000, 1001, tif="FOK"))
    assert trades(ev) == []
    assert [(e.order_id, e.remaining, e.reason) for e in ev if type(e) is OrderCancelled] == [
        (3, 2_000, "fok_not_fillable")]
    assert eng.position("a", S) == 1_000 and eng.position("b", S) == 0
    assert eng.depth(S, 5)[2] == [(1000, 1_000), (1001, 1_000)]  # nothing taken, nothing pulled
    ev = eng.handle(order(4, "b", 1, 1_500, 1001, tif="FOK"))  # the same for any size above 1,000
    assert trades(ev) == [] and ev[-1].reason == "fok_not_fillable"
    ev = eng.handle(order(5, "b", 1, 1_000, 1001, tif="FOK"))  # what the sweep takes: filled whole
    assert trades(ev) == [(1000, 1_000, 1)]
    assert [(e.order_id, e.reason) for e in ev if type(e) is OrderCancelled] == [
        (2, "reduce_only_position_changed")]
    eng.validate_internal_state()


def test_defect_12_a_fok_counts_a_reduce_only_maker_at_what_it_still_closes(eng):
    """The resize case: a long 1,300 rests a plain sell of 1,200 and a reduce-only sell of 300; once
    the plain one fills, the reduce-only one closes only the 100 left. With another 200 for sale
    above, a FOK of 1,600 (1,700 counted at full size) is refused, and one of 1,500 fills whole."""
    eng.handle(SetPosition(account="a", symbol=S, qty=1_300))
    eng.handle(order(1, "a", -1, 1_200, 1000))
    eng.handle(order(2, "a", -1, 300, 1000, reduce_only=True))
    eng.handle(order(3, "c", -1, 200, 1001))
    ev = eng.handle(order(4, "b", 1, 1_600, 1001, tif="FOK"))
    assert trades(ev) == [] and ev[-1].reason == "fok_not_fillable"
    ev = eng.handle(order(5, "b", 1, 1_500, 1001, tif="FOK"))
    assert trades(ev) == [(1000, 1_200, 1), (1000, 100, 2), (1001, 200, 3)]
    assert [(e.order_id, e.remaining) for e in ev if type(e) is OrderAmended] == [(2, 100)]
    assert eng.position("a", S) == 0 and eng.position("b", S) == 1_500
    eng.validate_internal_state()


def test_a_triggered_stop_limit_outside_the_band_is_cancelled_not_traded(eng):
    """A stop-limit's price is not band-checked while it waits (the band moves with the mark); it
    is when it triggers: a buy stop at 1,010 limited at 1,061 triggers on a mark of 1,010, whose
    band ends at 1,060, and is cancelled with the band's numbers instead of buying at 1,040."""
    eng.handle(order(1, "m", -1, 5, 1040))
    ev = eng.handle(order(2, "t", 1, 5, 1061, type="stop_limit", trigger_price=1010))
    assert ev[0].status == "untriggered"
    ev = eng.handle(MarkPrice(symbol=S, mark=1010))
    assert kinds(ev) == ["OrderTriggered", "OrderCancelled"] and trades(ev) == []
    assert (ev[1].reason, ev[1].detail["max_price"], ev[1].detail["price"]) == (
        "price_out_of_band", 1060, 1061)
    # the same stop limited inside the band trades
    eng.handle(order(3, "t", 1, 5, 1060, type="stop_limit", trigger_price=1012))
    ev = eng.handle(MarkPrice(symbol=S, mark=1012))
    assert trades(ev) == [(1040, 5, 1)]
    eng.validate_internal_state()


@pytest.mark.parametrize("side, maker_price, slippage, protection", [
    (1, 1052, 0, 1051),  # 1,001 x 5% = 50.05: 1,051 (inward), not 1,052
    (-1, 950, 0, 951),
    (1, 1004, 2_000, 1003),  # 1,001 x 0.2% = 2.002: 1,003, not 1,004
    (-1, 998, 2_000, 999),
])
def test_the_market_protection_price_rounds_towards_the_mark(eng, side, maker_price, slippage,
                                                              protection):
    eng.handle(MarkPrice(symbol=S, mark=1010 if maker_price > 1050 else 1000))
    eng.handle(order(1, "m", -side, 5, maker_price))  # rests inside that mark's band
    eng.handle(MarkPrice(symbol=S, mark=1001))
    ev = eng.handle(order(2, "t", side, 5, type="market", tif="IOC", max_slippage_ppm=slippage))
    assert trades(ev) == []
    assert (ev[-1].reason, ev[-1].detail) == (
        "market_protection", {"protection_price": protection, "best": maker_price})
    eng.validate_internal_state()
