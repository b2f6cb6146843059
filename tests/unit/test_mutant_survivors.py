"""Issue #26: tests that kill the survivors of the sampled `make mutate` run (seed 28). Each test
names the mutant(s) it kills; expected values are worked out by hand from the README's rules."""

from __future__ import annotations

from cluster.protocol import (
    Ack, Cancel, Error, LiquidationResult, LiquidationStep, OrderAccepted, OrderCancelled,
    OrderRejected, PlaceOrder, Reply, SetAccountMarginMode, SetLeverage, SetMarginMode,
)
from tests.unit.pipeline import Pipeline

USD = 1_000_000
BTC = "BTC-PERP"
P0 = 300_000  # 30,000.0 in ticks of 0.1; 1,000 lots = 1 BTC; 100 atoms per tick-lot


def bodies(messages):
    """What the gateway carries: a Reply's body, a Report's event (other messages as they are)."""
    return [m.body if type(m) is Reply else getattr(m, "event", m) for m in messages]


def first(replies, *classes):
    return next(b for b in bodies(replies) if type(b) in classes)


# A buy of 1 lot limited at 29,000.0 (290,000 ticks) while the mark is 30,000.0 reserves, at the
# default 20x: IM 1 x 290,000 x 100 / 20 = 1,450,000 atoms, plus the taker fee 0.05% of the
# 29,000,000-atom value = 14,500: 1,464,500. It is below the mark, so it holds no loss term. When
# the mark drops to 28,900.0 it would fill 1,000 ticks above the mark: 1,000 x 100 = 100,000 more.
RESERVE_AT_P0 = 1_450_000 + 14_500
RESERVE_AT_289 = RESERVE_AT_P0 + 100_000


def resting_buy(deposit: int) -> tuple[Pipeline, int]:
    pipe = Pipeline({"alice": deposit})
    pipe.mark(BTC, P0)
    placed = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1, price=290_000)),
                   OrderAccepted, OrderRejected)
    assert type(placed) is OrderAccepted, placed
    assert pipe.risk.accounts["alice"].order_margin == RESERVE_AT_P0
    return pipe, placed.order_id


def repriced_cancels(pipe: Pipeline) -> list:
    start = len(pipe.log)
    pipe.mark(BTC, 289_000)
    return [m for m in pipe.log[start:] if type(m) is Cancel and m.reason == "margin_repriced"]


def test_a_mark_move_that_leaves_available_exactly_zero_keeps_the_order():
    """Kills reservations _mark_moved__mutmut_63 (`available >= 1`): 0 available is covered."""
    pipe, order_id = resting_buy(RESERVE_AT_289)
    assert repriced_cancels(pipe) == []
    alice = pipe.risk.accounts["alice"]
    assert order_id in alice.orders and alice.order_margin == RESERVE_AT_289
    assert pipe.risk.available(alice) == 0


def test_a_mark_move_that_leaves_available_one_atom_short_cancels_the_order():
    pipe, order_id = resting_buy(RESERVE_AT_289 - 1)
    assert [c.order_id for c in repriced_cancels(pipe)] == [order_id]
    alice = pipe.risk.accounts["alice"]
    assert alice.orders == {} and alice.order_margin == 0
    why = [a for a in pipe.audit if getattr(a, "rule", "") == "risk.reserve_repriced"]
    assert [(a.decision, a.numbers["available"], a.numbers["reserve"]) for a in why] == [
        ("cancel", -1, RESERVE_AT_289)]


def test_switching_to_portfolio_with_available_exactly_zero_is_allowed():
    """Kills account_ops _set_account_mode__mutmut_49 (`available <= 0`): an account whose orders
    hold its whole balance (available 0) still covers its requirement, so the switch is made."""
    pipe, _ = resting_buy(RESERVE_AT_P0)
    answer = first(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Ack, Error)
    assert (type(answer), answer.action) == (Ack, "account_margin_mode_changed"), answer
    assert answer.detail["available"] == 0 and pipe.risk.accounts["alice"].portfolio


def test_a_liquidation_order_cut_short_by_the_book_still_reports_its_step():
    """Kills order_events _cancelled__mutmut_15 (the order id dropped from the call that finishes a
    liquidation order: a TypeError on every partly filled liquidation IOC). alice, isolated long
    1 BTC at 30,000.0 with 240 USD, is liquidated at mark 29,790.0; the book bids only 0.4 BTC
    there, so the IOC for 1 BTC fills 400 lots and the rest (600) is cancelled: the step must still
    be reported to the liquidator, with what was done."""
    pipe = Pipeline({"alice": 300 * USD, "bob": 1_000_000 * USD})
    pipe.mark(BTC, P0)
    assert type(first(pipe.request("alice", SetLeverage(symbol=BTC, leverage=125)),
                      Ack, Error)) is Ack
    pipe.request("alice", SetMarginMode(symbol=BTC, mode="isolated"))
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=P0))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0))
    assert pipe.risk.accounts["alice"].positions[BTC].qty == 1000
    pipe.mark(BTC, 297_900)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=400, price=297_900))
    start = len(pipe.log)
    pipe.pump(pipe._checked(LiquidationStep(liquidation_id=1, kind="reduce", account="alice",
                                            symbol=BTC, qty=1000, price=297_600)))
    cancelled = [b for b in bodies(pipe.log[start:]) if type(b) is OrderCancelled]
    assert [(c.account, c.remaining, c.reason) for c in cancelled] == [
        ("alice", 600, "ioc_remainder")]
    # 400 lots at 29,790.0: 400 x 297,900 x 100 = 11,916,000,000 atoms; the forced fee (0.2%)
    # 23,832,000 goes to the fund (the position's margin, 240 - 84 of loss, covers it)
    results = [m for m in pipe.log[start:] if type(m) is LiquidationResult]
    assert [(r.liquidation_id, r.kind, r.qty, r.notional, r.fee, r.fund_delta, r.position_after,
             r.reason) for r in results] == [
        (1, "reduce", 400, 11_916_000_000, 23_832_000, 23_832_000, 600, "ioc_remainder")]
    assert pipe.risk.liq_orders == {}
