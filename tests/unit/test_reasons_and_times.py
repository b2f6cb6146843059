"""What a refusal, a cancel or an explanation says is part of the venue's interface: clients and
operators branch on the reason codes and read the numbers and times. Each test here pins one that
a mutation run (#26) showed no test read."""

from __future__ import annotations

import pytest

from cluster import config
from cluster.ladder import LadderError, build_ladder
from cluster.protocol import (
    Cancel, IndexMark, MarkPrice, NewOrder, OrderAccepted, OrderCancelled, OrderRejected,
    PlaceOrder, SetLeverage,
)
from cluster.units import UnitError, parse_decimal, rate_to_ppm
from nodes.matching.engine import MatchingEngine
from tests.unit.test_money_defects import BTC, P0, first, fresh

SPECS = config.load().symbols


def test_an_explanation_carries_the_time_of_the_input_that_caused_it():
    """A mark that re-prices a resting bid: the explanation is stamped with the mark's time."""
    pipe = fresh(alice=300, bob=1_000_000)
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=125))
    first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0)), OrderAccepted)
    now = 1_796_000_000_123_456_789
    pipe.pump(pipe.risk.handle(IndexMark(symbol=BTC, index=285_900, mark=285_900, last=0, seq=1,
                                         ts_ns=now), now))
    why = [a for a in pipe.audit if a.rule == "risk.reserve_repriced"]
    assert why and {a.ts_ns for a in why} == {now}


def test_an_insufficient_margin_refusal_names_the_initial_margin():
    pipe = fresh(alice=1_750, bob=1_000_000)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=314_000))
    pipe.mark(BTC, 290_000)
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=125))
    answer = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, type="market",
                                                    max_slippage_ppm=100_000)),
                   OrderRejected, OrderAccepted, OrderCancelled)
    assert answer.reason == "insufficient_margin"
    assert answer.detail["initial_margin"] == 255_200_000  # 1 BTC at 31,900 / 125


def order(oid, account, side, qty, price=0, **kw):
    return NewOrder(order_id=oid, account=account, symbol="BTC-PERP", side=side, qty=qty,
                    price=price, **kw)


def test_a_cancelled_untriggered_stop_says_who_cancelled_it():
    eng = MatchingEngine(SPECS)
    eng.handle(MarkPrice(symbol="BTC-PERP", mark=1000))
    eng.handle(order(1, "a", 1, 4, type="stop_market", trigger_price=1005))
    (done,) = [e for e in eng.handle(Cancel(account="a", symbol="BTC-PERP", order_id=1))
               if type(e) is OrderCancelled]
    assert done.reason == "user"


def test_a_self_trade_cancel_says_self_trade_prevention():
    eng = MatchingEngine(SPECS)
    eng.handle(MarkPrice(symbol="BTC-PERP", mark=1000))
    eng.handle(order(1, "a", -1, 5, 1000))
    events = eng.handle(order(2, "a", 1, 5, 1000, stp="cancel_maker"))
    assert [(e.order_id, e.reason) for e in events if type(e) is OrderCancelled] == [
        (1, "self_trade_prevention")]


@pytest.mark.parametrize("text", ["inf", "-Infinity", "nan"])
def test_a_number_that_is_not_finite_is_not_a_number(text):
    with pytest.raises(UnitError) as refused:
        parse_decimal(text, "price")
    assert refused.value.reason == "not_a_number"


def test_a_rate_finer_than_a_ppm_says_so():
    assert rate_to_ppm("0.0005", "fee") == 500
    with pytest.raises(UnitError) as refused:
        rate_to_ppm("0.0000005", "fee")
    assert refused.value.reason == "rate_not_whole_ppm"


def test_a_ladder_error_names_the_tier_it_is_about():
    with pytest.raises(LadderError, match=r"^tier 2: mmr"):
        build_ladder([(0, 100, 4_000, None), (1_000_000, 50, 30_000, None)], cap=5_000_000)


def test_a_reduce_only_stop_exactly_the_position_size_is_not_resized():
    """Triggered with remaining == room: nothing to size down, so no resize report."""
    from cluster.protocol import OrderAmended, OrderTriggered, SetPosition

    eng = MatchingEngine(SPECS)
    eng.handle(MarkPrice(symbol="BTC-PERP", mark=1000))
    eng.handle(SetPosition(account="a", symbol="BTC-PERP", qty=4))
    eng.handle(order(6, "a", -1, 4, type="take_profit_market", trigger_price=1020,
                     reduce_only=True))
    eng.handle(order(7, "z", 1, 10, 1000))
    events = eng.handle(MarkPrice(symbol="BTC-PERP", mark=1020))
    assert any(type(e) is OrderTriggered and e.order_id == 6 for e in events)
    assert [e for e in events if type(e) is OrderAmended] == []
    assert eng.position("a", "BTC-PERP") == 0


def test_a_liquidation_step_that_traded_nothing_has_an_average_price_of_zero():
    from tests.unit.liquidation_world import USD as ATOMS_PER_USD, World

    w = World({"alice": 20_000 * ATOMS_PER_USD, "mm": 10_000_000 * ATOMS_PER_USD},
              insurance=1_000_000 * ATOMS_PER_USD)
    w.mark(300_000)
    w.risk.accounts["alice"].leverage["BTC-PERP"] = 20
    w.risk.accounts["mm"].leverage["BTC-PERP"] = 20
    w.place("mm", -1, 10_000, 300_000)
    w.place("alice", 1, 10_000, 300_000)
    w.place("alice", 1, 100, 200_000)  # an open order: the liquidation cancels it first
    w.mark(281_000)
    cancels = [e for e in w.audit if e.rule == "liquidation.cancel" and e.decision == "done"]
    assert cancels and cancels[0].numbers["qty"] == 0 and cancels[0].numbers["avg_price"] == "0"
