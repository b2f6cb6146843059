"""An isolated position's resting closes keep the margin the close check counted on.

`close_beyond_isolated_margin` accepts a close of an isolated position when the position's equity
pays the close at its worst price. That margin must stay in the position while the close rests:
neither the release after a partial fill nor a transfer out may take it, or the rest of the close
fills past bankruptcy and the insurance fund pays for a trader's own accepted order (the margin
property's falsifying example: 248,523,112 atoms).
"""

from __future__ import annotations

from cluster.protocol import (
    Ack, AdjustIsolatedMargin, Error, OrderAccepted, PlaceOrder, SetLeverage, SetMarginMode,
)
from cluster.rules.units import ceil_div
from tests.unit.test_risk_examples import BTC, P0, SPEC, USD, body, cross, fresh

CLOSE = 290_000  # 29,000.0: 3.3% below the mark of 30,000


def isolated_long_with_extra_margin(pipe):
    """alice: isolated 50x long 1 BTC at 30,000 (IM 600 USD) plus 1,000 USD moved in."""
    pipe.request("alice", SetMarginMode(symbol=BTC, mode="isolated"))
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=50))
    cross(pipe, "alice", "mm", 1000)
    moved = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=1_000 * USD)))
    assert type(moved) is Ack
    pos = pipe.risk.accounts["alice"].positions[BTC]
    assert pipe.risk.isolated_equity(BTC, pos) == 1_600 * USD


def close_all_at_29000(pipe):
    """A close of the whole 1 BTC resting 3.3% below the mark: 1,000 USD of loss plus the fee,
    inside the 1,600 the position holds, so the close check accepts it."""
    accepted = body(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=CLOSE)))
    assert type(accepted) is OrderAccepted


def test_a_partial_fill_of_a_resting_isolated_close_keeps_what_the_rest_of_the_close_costs():
    pipe = fresh(alice=10_000, bob=10_000, mm=1_000_000)
    isolated_long_with_extra_margin(pipe)
    close_all_at_29000(pipe)
    a = pipe.risk.accounts["alice"]
    pos = a.positions[BTC]
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=100, price=CLOSE))  # 0.1 BTC of it
    assert pos.qty == 900
    # what stays: IM at mark of the 0.9 BTC left, and what closing it at 29,000 costs
    # (1,000 x 0.9 below the mark, plus the taker fee the close check counts on 26,100 USD)
    im_left = 900 * P0 * SPEC.atoms_per_tick_lot // 50
    rest_cost = 900 * (P0 - CLOSE) * SPEC.atoms_per_tick_lot + ceil_div(
        900 * CLOSE * SPEC.atoms_per_tick_lot * SPEC.taker_fee_ppm, 1_000_000)
    assert pipe.risk.isolated_equity(BTC, pos) == im_left + rest_cost  # was im_left alone
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=900, price=CLOSE))  # the rest
    assert BTC not in a.positions
    # the fund paid nothing (it paid 365,220,000 atoms before, and alice kept them): alice bore
    # her own loss: 10,000 - 15 taker fee at entry - 1,000 realized - 5.8 maker fee on the close
    assert pipe.risk.insurance_fund == 0
    assert a.balance == 10_000 * USD - 15 * USD - 1_000 * USD - 5_800_000
    held, owed = pipe.risk.conservation()
    assert held == owed


def test_isolated_margin_a_resting_close_counts_on_cannot_be_moved_out():
    pipe = fresh(alice=10_000, bob=10_000, mm=1_000_000)
    isolated_long_with_extra_margin(pipe)
    close_all_at_29000(pipe)
    a = pipe.risk.accounts["alice"]
    cost = 1000 * (P0 - CLOSE) * SPEC.atoms_per_tick_lot + ceil_div(
        1000 * CLOSE * SPEC.atoms_per_tick_lot * SPEC.taker_fee_ppm, 1_000_000)  # 1,014.5 USD
    # equity 1,600 - IM 600 - the close's 1,014.5: nothing can leave (1,000 could before)
    err = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=-1_000 * USD)))
    assert type(err) is Error and err.reason == "isolated_margin_below_requirement"
    assert err.detail["pending_close_cost"] == cost and err.detail["removable"] == 0
    assert err.detail["isolated_equity"] == 1_600 * USD
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=1000, price=CLOSE))
    assert BTC not in a.positions and pipe.risk.insurance_fund == 0
    assert a.balance == 10_000 * USD - 15 * USD - 1_000 * USD - 5_800_000


def test_without_a_resting_close_the_isolated_surplus_still_goes_back():
    """The other side of the rule: margin is kept only for closes that rest."""
    pipe = fresh(alice=10_000, bob=10_000, mm=1_000_000)
    isolated_long_with_extra_margin(pipe)
    a = pipe.risk.accounts["alice"]
    pos = a.positions[BTC]
    ack = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=-1_000 * USD)))
    assert type(ack) is Ack
    pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=1_000 * USD))
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=100, price=P0))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=100, price=P0))  # takes bob's bid
    # alice closed 0.1 BTC at the mark with nothing else resting: she keeps IM at mark only
    assert pos.qty == 900 and not a.orders
    assert pipe.risk.isolated_equity(BTC, pos) == 900 * P0 * SPEC.atoms_per_tick_lot // 50
