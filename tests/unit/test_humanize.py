"""The CLI's terminal form of venue events: numbers in trader's units, chosen by name and rule."""

from __future__ import annotations

from cluster import render
from cluster.cli import to_jsonable
from cluster.config import load
from cluster.humanize import Units, describe
from cluster.protocol import (
    Deleveraged, Fill, OrderAccepted, OrderAmended, OrderCancelled, OrderRejected,
    OrdersCancelled, OrderTriggered,
)

TOPO = load()
UNITS = Units.of(TOPO)
SYMBOL = "BTC-PERP"
TICK, LOT = TOPO.symbols[SYMBOL].tick_size, TOPO.symbols[SYMBOL].lot_size


def test_units_follow_the_name_and_the_rule():
    assert str(TICK) == "0.1" and str(LOT) == "0.001" and str(TOPO.atom) == "0.000001"
    band = UNITS.numbers("price_out_of_band", {"price": 300005, "band_ppm": 50000,
                                               "min_price": 285000}, SYMBOL)
    assert band == {"price": "30000.5", "band": "5%", "min_price": "28500"}  # rates in percent
    # a `limit` is orders for one rule and collateral for another
    assert UNITS.numbers("too_many_open_orders", {"open_orders": 200, "limit": 200}, SYMBOL) == \
        {"open_orders": 200, "limit": 200}
    assert UNITS.numbers("position_limit", {"notional_after": 5_000_000, "limit": 2_000_000,
                                            "tier": 3}, SYMBOL) == \
        {"notional_after": "5", "limit": "2", "tier": 3}
    # `current` is a price when a stop would trigger at once, a leverage elsewhere
    assert UNITS.numbers("would_trigger_immediately", {"current": 300000}, SYMBOL) == \
        {"current": "30000"}
    assert UNITS.numbers("leverage_change_insufficient_margin", {"current": 20}, SYMBOL) == \
        {"current": 20}
    # the symbol named in the detail decides the tick (an unknown one leaves ticks alone)
    assert UNITS.numbers("x", {"symbol": "NOPE", "price": 7}) == {"symbol": "NOPE", "price": 7}
    assert UNITS.numbers("x", {"symbol": SYMBOL, "price": 7})["price"] == "0.7"
    # portfolio margin's figures are collateral, not raw atoms (#24)
    assert UNITS.numbers("margin_mode_change_insufficient_margin", {
        "stress_requirement": 1_500_000, "position_margin_now": 250_000, "binding": "crash"},
        SYMBOL) == {"stress_requirement": "1.5", "position_margin_now": "0.25", "binding": "crash"}
    assert UNITS.numbers("requirement_changed", {"from_initial_margin": 2_000_000,
                                                 "liquidity_addon": 1}, SYMBOL) == \
        {"from_initial_margin": "2", "liquidity_addon": "0.000001"}


def test_describe_reads_as_a_sentence_and_keeps_free_text_as_it_is():
    assert describe({"required": "1.5", "available": "0.25"}) == "required 1.5, available 0.25"
    assert describe({"error": "Expected `int` >= 1"}) == "Expected `int` >= 1"
    assert describe({}) == ""


def _line(event) -> str:
    ev = to_jsonable(event)
    ev["human"] = UNITS.event(ev)
    return render.event(ev)


def test_every_order_event_has_a_terminal_line_in_trader_units():
    common = dict(seq=1, account="a", symbol=SYMBOL)
    lines = {
        "ACCEPTED   order 7  sell 0.01 BTC-PERP @ 30000.5  new  client id c-1":
            OrderAccepted(ref=1, order_id=7, side=-1, price=300005, qty=10, client_order_id="c-1",
                          **common),
        "ACCEPTED   order 8  buy 0.002 BTC-PERP at market  new":
            OrderAccepted(ref=1, order_id=8, side=1, price=0, qty=2, **common),
        "REJECTED   BTC-PERP  insufficient_margin\n           required 1.5, available 0.25":
            OrderRejected(ref=1, order_id=0, reason="insufficient_margin",
                          detail={"required": 1_500_000, "available": 250_000}, **common),
        "CANCELLED  order 7  ioc_remainder  remaining 0.004":
            OrderCancelled(ref=1, order_id=7, remaining=4, reason="ioc_remainder", **common),
        "CANCELLED  2 orders in BTC-PERP  mass_cancel  (1, 2)":
            OrdersCancelled(ref=1, orders=[(1, 5), (2, 6)], reason="mass_cancel", **common),
        "FILL       order 7  sell 0.003 BTC-PERP @ 30000.5  maker  fee -0.02  remaining 0":
            Fill(trade_id=3, order_id=7, side=-1, price=300005, qty=3, remaining=0,
                 liquidity="maker", fee=-20_000, **common),
        "AMENDED    order 7  price 30000.5  qty 0.01  remaining 0.008  priority kept  (user)":
            OrderAmended(ref=1, order_id=7, price=300005, qty=10, remaining=8, priority_kept=True,
                         **common),
        "TRIGGERED  order 7  mark 30100 reached the trigger 30050":
            OrderTriggered(order_id=7, trigger_by="mark", trigger_price=300500,
                           observed_price=301000, **common),
        "ADL        BTC-PERP  -0.005 closed at 29000  rank 1":
            Deleveraged(liquidation_id=1, account="a", symbol=SYMBOL, qty=-5, price=290000,
                        rank=1, score_ppm=10),
    }
    for expected, event in lines.items():
        assert _line(event) == expected


def test_a_repeated_client_id_says_the_answer_is_the_original():
    event = OrderRejected(seq=1, ref=1, order_id=0, account="a", symbol=SYMBOL, reason="x",
                          duplicate=True)
    assert _line(event).endswith("(the answer to an earlier request with this client id)")


def test_an_applied_setting_names_its_symbol_and_numbers():
    from cluster.protocol import Ack
    ack = Ack(action="leverage_changed", detail={"symbol": SYMBOL, "from": 20, "to": 5,
                                                 "available": 1_250_000})
    data = to_jsonable(ack)
    data["human"] = UNITS.numbers(ack.action, ack.detail)
    assert render.ack(data) == "LEVERAGE_CHANGED  BTC-PERP  from 20, to 5, available 1.25"


def test_an_average_reads_as_a_decimal_price_never_a_fraction():
    # the liquidator journals an average in ticks as an exact fraction: 419471/2 ticks of 0.1
    assert UNITS.numbers("liquidation.ioc", {"avg_price": "419471/2"}, SYMBOL) == \
        {"avg_price": "20973.55"}
    assert UNITS.numbers("liquidation.ioc", {"avg_price": "300335"}, SYMBOL) == \
        {"avg_price": "30033.5"}
    assert UNITS.numbers("liquidation.ioc", {"avg_price": "1000000/3"}, SYMBOL) == \
        {"avg_price": "~33333.3333333333"}
    assert UNITS.numbers("liquidation.ioc", {"avg_price": "n/a"}, SYMBOL) == {"avg_price": "n/a"}
