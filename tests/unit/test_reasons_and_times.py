"""What a refusal, a cancel or an explanation says is part of the venue's interface: clients and
operators branch on the reason codes and read the numbers and times. Each test here pins one that
a mutation run (#26) showed no test read."""

from __future__ import annotations

import pytest

from cluster import config
from cluster.rules.ladder import LadderError, build_ladder
from cluster.protocol import (
    Cancel, IndexMark, MarkPrice, NewOrder, OrderAccepted, OrderCancelled, OrderRejected,
    PlaceOrder, SetLeverage,
)
from cluster.rules.units import UnitError, parse_decimal, rate_to_ppm
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


# ---------------------------------------------------------------- found by the seed-27 sample


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662"])  # Python's Decimal takes both
def test_a_decimal_in_the_wrong_form_says_what_a_decimal_is(text):
    with pytest.raises(UnitError) as refused:
        parse_decimal(text, "price")
    assert refused.value.reason == "not_a_number"
    assert str(refused.value) == (f"price {text!r} is not a decimal number: ASCII digits 0-9 with "
                                  "an optional sign and '.'")


def test_a_rate_finer_than_a_ppm_names_the_rate():
    with pytest.raises(UnitError) as refused:
        rate_to_ppm("0.0000005", "taker fee")
    assert str(refused.value).startswith("taker fee ")


def test_an_amend_that_would_take_names_the_maker_and_its_price():
    from cluster.protocol import Amend

    eng = MatchingEngine(SPECS)
    eng.handle(MarkPrice(symbol="BTC-PERP", mark=1000))
    eng.handle(order(1, "m", -1, 5, 1002))
    eng.handle(order(2, "a", 1, 5, 999, post_only=True))
    (refused,) = [e for e in eng.handle(Amend(account="a", symbol="BTC-PERP", order_id=2,
                                              price=1003)) if type(e) is OrderRejected]
    assert refused.reason == "post_only_would_take"
    assert refused.detail == {"price": 1003, "maker_order_id": 1, "maker_price": 1002}


@pytest.mark.parametrize("side, fills", [(1, [(1000, 3), (1010, 2)]), (-1, [(990, 3), (980, 2)])])
def test_a_market_order_before_any_mark_is_protected_from_the_best_opposite_price(side, fills):
    """No mark yet: the reference is the best price on the side the order takes from, moved by
    its slippage (1%: 1,000 -> 1,010 for a buy, 990 -> 980.1 -> 981 for a sell) - the level past
    it is left alone."""
    from cluster.protocol import Trade

    eng = MatchingEngine(SPECS)
    for oid, price in enumerate((1000, 1010, 1011) if side > 0 else (990, 980, 979), 1):
        eng.handle(order(oid, "m", -side, 3 if oid == 1 else 2, price))
    events = eng.handle(order(9, "t", side, 10, type="market", tif="IOC", max_slippage_ppm=10_000))
    expected = fills if side > 0 else [(990, 3)]  # the sell's limit 981 stops before 980
    assert [(e.price, e.qty) for e in events if type(e) is Trade] == expected
    (cancel,) = [e for e in events if type(e) is OrderCancelled]
    assert cancel.reason == "market_protection"


def _liquidator_on(balance: int, positions: dict, marks: dict, fund: int = 10**15):
    """A liquidator that knows one cross account `a` and the marks, ticked once: (engine, out)."""
    from cluster.protocol import AccountRisk
    from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf

    eng = LiquidationEngine(SPECS, LiquidatorConf())
    eng.on_account(AccountRisk(account="a", balance=balance, positions=positions,
                               insurance_fund=fund))
    for symbol, mark in marks.items():
        eng.on_mark(IndexMark(symbol=symbol, index=mark, mark=mark, last=0, seq=1, ts_ns=NOW))
    return eng, eng.tick(NOW)


NOW = 1_796_000_000_000_000_000
LOTS, MULT = 1_000, SPECS["BTC-PERP"].atoms_per_tick_lot
COST = 300_000 * LOTS * MULT  # 1 BTC long bought at 30,000
# bankrupt where the wallet's cash buys back the cost: exactly 28,500.0 plus one atom's worth
ONE_ATOM_PAST = -(285_000 * LOTS * MULT + 1)


def result(kind: str, position_after: int, reason: str = ""):
    from cluster.protocol import LiquidationResult

    return LiquidationResult(liquidation_id=1, kind=kind, account="a", symbol="BTC-PERP", qty=0,
                             notional=0, fee=0, fund_delta=0, position_after=position_after,
                             reason=reason)


def test_a_long_bankrupt_one_atom_past_a_tick_is_priced_at_the_next_tick_up():
    """The wallet is one atom short of making 28,500.0 the bankruptcy price: the exact price is
    28,500.0 + 1/100,000 ticks, and a long's rounds up (against it): 285,001, not 285,000."""
    eng, out = _liquidator_on(ONE_ATOM_PAST, {"BTC-PERP": (LOTS, COST)}, {"BTC-PERP": 286_000})
    assert [type(m).__name__ for d, m in out if d == "risk"] == ["LiquidationStep"]
    out = eng.on_result(result("cancel", LOTS), NOW)
    (plan,) = [m for d, m in out if d == "audit" and m.rule == "liquidation.plan"]
    assert plan.decision == "book_exhausted" and plan.numbers["bankruptcy_price"] == 285_001
    (step,) = [m for d, m in out if d == "risk"]
    assert (step.kind, step.price, step.qty) == ("backstop", 285_001, LOTS)


def test_a_takeover_risk_cannot_carry_out_ends_the_liquidation_incomplete():
    """No backstop took it, the fund's takeover comes back undone (no price): the liquidation
    ends 'incomplete' and the alert stands (it is not started again on every tick)."""
    eng, _ = _liquidator_on(ONE_ATOM_PAST, {"BTC-PERP": (LOTS, COST)}, {"BTC-PERP": 286_000})
    eng.on_result(result("cancel", LOTS), NOW)
    out = eng.on_result(result("backstop", LOTS, "no_taker"), NOW)
    assert [m.kind for d, m in out if d == "risk"] == ["insurance"]
    out = eng.on_result(result("insurance", LOTS, "no_price"), NOW)
    assert [(m.rule, m.decision) for d, m in out if d == "audit"][-1] == (
        "liquidation.end", "incomplete")
    assert not [m for d, m in out if d == "risk"] and not eng.active and "a" in eng.monitor.below
    assert eng.tick(NOW) == []


def test_a_liquidation_of_a_symbol_with_no_mark_is_paused_saying_so():
    """A cross account whose largest position (ETH, valued at cost without a mark) has no mark
    yet: the liquidation waits, and says the reason is no_mark."""
    eth_cost = 2 * COST  # larger than the BTC position
    eng, out = _liquidator_on(-(COST + eth_cost), {"BTC-PERP": (LOTS, COST),
                                                   "ETH-PERP": (500, eth_cost)},
                              {"BTC-PERP": 280_000})
    (paused,) = [m for d, m in out if d == "audit"]
    assert (paused.rule, paused.decision) == ("liquidation.paused", "paused")
    assert paused.numbers["symbol"] == "ETH-PERP" and paused.numbers["reason"] == "no_mark"


def test_a_liquidation_with_depth_within_bankruptcy_plans_a_reduction():
    from tests.unit.liquidation_world import USD as ATOMS_PER_USD, World

    w = World({"alice": 20_000 * ATOMS_PER_USD, "mm": 10_000_000 * ATOMS_PER_USD},
              insurance=1_000_000 * ATOMS_PER_USD)
    w.mark(300_000)
    w.risk.accounts["alice"].leverage["BTC-PERP"] = 20
    w.place("mm", -1, 10_000, 300_000)
    w.place("alice", 1, 10_000, 300_000, tif="IOC")
    w.mark(290_000)  # 10,000 USD of equity left: not yet
    w.place("mm", 1, 20_000, 282_000)  # a bid above alice's bankruptcy price (280,000)
    w.mark(281_500)
    plans = [d for rule, d in w.steps() if rule == "liquidation.plan"]
    assert plans and plans[0] == "reduce"
    assert ("liquidation.reduce", "done") in w.steps()
