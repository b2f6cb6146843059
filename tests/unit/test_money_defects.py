"""Issue #17's risk-core money defects, each reproduced with the issue's worked numbers where it
gives them. Every test here failed on 9903e1c (the numbers it failed with are in the comments) and
passes now. Expectations are plain arithmetic from the rules, not the engine's helpers."""

from __future__ import annotations

from cluster import calc
from cluster.rules.ladder import maintenance_margin
from cluster.protocol import (
    Ack, AmendOrder, Error, GetAccount, IndexMark, LiquidationStep, OrderAccepted, OrderAmended,
    OrderCancelled, OrderRejected, PlaceOrder, Reply, Routed, SetLeverage, SetMarginMode, Withdraw,
)
from cluster.rules.units import ceil_div
from tests.unit.pipeline import TOPO, Pipeline

USD = 1_000_000
BTC, ETH = "BTC-PERP", "ETH-PERP"
P0 = 300_000  # 30,000.0 in BTC ticks (0.1); 1,000 lots = 1 BTC; 100 atoms per tick-lot
E0 = 200_000  # 2,000.00 in ETH ticks (0.01); 100 lots = 1 ETH; 100 atoms per tick-lot


def answers(replies, cls):
    return [b for b in ((r.body if type(r) is Reply else r.event) for r in replies) if type(b) is cls]


def first(replies, *classes):
    for r in replies:
        b = r.body if type(r) is Reply else r.event
        if type(b) in classes:
            return b
    raise AssertionError(f"none of {classes} in {replies}")


def fresh(**deposits) -> Pipeline:
    pipe = Pipeline({"admin": 0, **{k: v * USD for k, v in deposits.items()}})
    pipe.mark(BTC, P0)
    pipe.mark(ETH, E0)
    return pipe


def trigger_gap(pipe: Pipeline, account: str, symbol: str | None = None) -> int:
    """Margin balance less what the liquidation trigger requires (MM + forced fee), written out:
    > 0 means above the trigger. `symbol` names an isolated position; else the cross wallet."""
    risk = pipe.risk
    acct = risk.accounts[account]
    balance, need = (0, 0) if symbol else (acct.balance, 0)
    for s, pos in acct.positions.items():
        if (symbol is None) == pos.isolated or (symbol and s != symbol):
            continue
        spec = TOPO.symbols[s]
        value = pos.qty * risk.marks[s] * spec.atoms_per_tick_lot
        balance += value + (pos.iso_cash if pos.isolated else 0)
        need += maintenance_margin(spec.tiers, value) + ceil_div(abs(value) * spec.forced_fee_ppm,
                                                                 1_000_000)
    return balance - need


def long_at_125x(mode: str) -> tuple[Pipeline, object]:
    """alice (300 USD) buys 1 BTC @ 30,000 at 125x from bob: IM 240 + taker fee 15."""
    pipe = fresh(alice=300, bob=1_000_000)
    assert type(first(pipe.request("alice", SetLeverage(symbol=BTC, leverage=125)), Ack, Error)) \
        is Ack
    pipe.request("alice", SetMarginMode(symbol=BTC, mode=mode))
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=P0))
    assert type(first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0)),
                      OrderAccepted, OrderRejected, OrderCancelled)) is not OrderRejected
    return pipe, pipe.risk.accounts["alice"]


def test_defect01_close_beyond_bankruptcy_isolated_is_refused_and_the_fund_pays_nothing():
    pipe, alice = long_at_125x("isolated")
    assert alice.positions[BTC].qty == 1000
    # bob bids at the band's edge (mark - 5%), alice sells into it: equity would be
    # 240 - 1,500 - 14.25 = -1,274.25, which the insurance fund paid on 9903e1c
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=1000, price=285_000))
    refused = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=285_000,
                                                     reduce_only=True)),
                    OrderRejected, OrderAccepted, OrderCancelled)
    assert pipe.risk.insurance_fund == 0, f"the fund paid {-pipe.risk.insurance_fund / USD} USD"
    assert (type(refused), refused.reason) == (OrderRejected, "close_beyond_isolated_margin")
    assert refused.detail["close_cost"] == 1_500 * USD + 14_250_000  # loss against mark + fee
    assert refused.detail["isolated_equity"] == 240 * USD
    assert refused.detail["bankruptcy_price"] == 297_600  # 30,000 - 240 per BTC
    assert alice.positions[BTC].qty == 1000
    # at the bankruptcy price itself the close is allowed: the fund pays nothing
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=1000, price=298_000))
    ok = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=298_000,
                                                reduce_only=True)), OrderRejected, OrderAccepted)
    assert type(ok) is OrderAccepted and BTC not in alice.positions
    assert pipe.risk.insurance_fund == 0 and alice.balance >= 0


def test_defect01_close_beyond_bankruptcy_cross_never_leaves_the_wallet_negative():
    pipe, alice = long_at_125x("cross")
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=1000, price=285_000))
    refused = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=285_000,
                                                     reduce_only=True)),
                    OrderRejected, OrderAccepted, OrderCancelled)
    # 9903e1c: filled, wallet 300 - 15 - 1,500 - 14.25 = -1,229.25 with no cover at all
    assert alice.balance + sum(p.cost for p in alice.positions.values()) >= 0, alice.balance / USD
    assert (type(refused), refused.reason) == (OrderRejected, "insufficient_margin")
    # what decided it: loss 1,500 + fee 14.25 against available 45 + the IM the close frees, 240
    assert refused.detail["required"] == 1_514_250_000
    assert (refused.detail["available"], refused.detail["released_margin"]) == (45 * USD, 240 * USD)


def isolated_at_10x(side: int) -> tuple[Pipeline, object]:
    """alice: isolated, 10x, 1 BTC @ 30,000 on `side` (IM 3,000 + fee 15 moved in)."""
    pipe = fresh(alice=10_000, bob=1_000_000)
    pipe.request("alice", SetMarginMode(symbol=BTC, mode="isolated"))
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=10))
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-side, qty=1000, price=P0))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=side, qty=1000, price=P0))
    return pipe, pipe.risk.accounts["alice"]


def test_defect02_partial_close_of_an_isolated_short_keeps_the_im_of_what_is_left():
    pipe, alice = isolated_at_10x(-1)
    pipe.mark(BTC, 315_000)  # two steps, each inside the band
    pipe.mark(BTC, 320_000)
    before = alice.balance
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=750, price=320_000))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=750, price=320_000, reduce_only=True))
    pos = alice.positions[BTC]
    assert pos.qty == -250
    equity = pos.iso_cash + pos.qty * 320_000 * 100
    # iso cash 33,000 - 24,000 - 12 (fee) = 8,988; the 0.25 BTC left is worth -8,000 at mark:
    # equity 988 of which its IM at mark, 800, stays; 188 goes back. (9903e1c: 1,116 went back
    # and left equity -128.)
    assert alice.balance - before == 188 * USD, (alice.balance - before) / USD
    assert equity == 800 * USD and trigger_gap(pipe, "alice", BTC) > 0


def test_defect02_partial_close_of_an_isolated_long_returns_what_the_rest_does_not_need():
    pipe, alice = isolated_at_10x(1)
    before = alice.balance
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=750, price=P0))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=750, price=P0, reduce_only=True))
    pos = alice.positions[BTC]
    # wallet 3,000 - 11.25 (fee) = 2,988.75; the 0.25 BTC left needs 750: 2,238.75 goes back
    # (9903e1c returned nothing to a long, ever)
    assert alice.balance - before == 2_238_750_000, (alice.balance - before) / USD
    assert pos.iso_cash + pos.qty * P0 * 100 == 750 * USD


def test_defect03_closing_orders_that_are_not_reduce_only_count_each_other():
    pipe = fresh(alice=2_000, bob=1_000_000)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=P0))
    pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0))  # long 1 BTC, IM 1,500
    results = [first(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000,
                                                      price=P0 + 10)), OrderAccepted, OrderRejected)
               for _ in range(20)]
    accepted = [r for r in results if type(r) is OrderAccepted]
    # the first closes the long; the second would open 1 BTC short (IM 1,500) on 470 available
    assert len(accepted) == 1, f"{len(accepted)} of 20 accepted"
    refusal = results[1]
    assert refusal.reason == "insufficient_margin"
    assert (refusal.detail["opening_qty"], refusal.detail["closing_qty"]) == (1000, 0)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=20_000, price=P0 + 10, tif="IOC"))
    assert BTC not in pipe.risk.accounts["alice"].positions or \
        pipe.risk.accounts["alice"].positions[BTC].qty == 0


def test_defect04_splitting_an_order_does_not_keep_tier1_leverage():
    pipe = fresh(alice=3_400, bob=10_000_000)
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=125))
    whole = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=13_000, price=P0)),
                  OrderAccepted, OrderRejected)
    assert (type(whole), whole.reason) == (OrderRejected, "insufficient_margin")  # tier 3: 50x
    parts = [first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1_300, price=P0)),
                   OrderAccepted, OrderRejected) for _ in range(10)]
    filled = sum(1_300 for p in parts if type(p) is OrderAccepted)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=13_000, price=P0, tif="IOC"))
    assert pipe.risk.accounts["alice"].positions[BTC].qty == filled
    # 9903e1c: all ten accepted and filled, equity 3,205 against MM 2,600 + forced fee 780
    assert trigger_gap(pipe, "alice") > 0, (filled, trigger_gap(pipe, "alice") / USD)
    assert filled < 13_000


def test_defect05_market_order_reserves_at_the_clients_max_slippage():
    pipe = fresh(alice=1_750, bob=1_000_000)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=314_000))  # +4.7%
    pipe.mark(BTC, 290_000)  # the ask stays, now 8.3% above the mark
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=125))
    answer = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, type="market",
                                                    max_slippage_ppm=100_000)),
                   OrderRejected, OrderAccepted, OrderCancelled)
    # 9903e1c reserved at the symbol's 5% (1,708.8) and filled at 31,400: equity -665.7
    assert trigger_gap(pipe, "alice") > 0, trigger_gap(pipe, "alice") / USD
    assert (type(answer), answer.reason) == (OrderRejected, "insufficient_margin")
    # worst 29,000 x 1.1 = 31,900: IM 255.2 + fee 15.95 + loss against mark 2,900
    assert answer.detail["worst_price"] == 319_000
    assert answer.detail["required"] == 255_200_000 + 15_950_000 + 2_900 * USD


def test_defect05_resting_bid_is_repriced_when_the_mark_falls():
    pipe = fresh(alice=300, bob=1_000_000)
    pipe.request("alice", SetLeverage(symbol=BTC, leverage=125))
    bid = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0)),
                OrderAccepted)
    assert pipe.risk.accounts["alice"].order_margin == 255 * USD  # IM 240 + fee 15
    pipe.mark(BTC, 285_900)  # -4.7%: the bid is now 1,410 above the mark
    order = pipe.risk.accounts["alice"].orders.get(bid.order_id)
    cancelled = answers(pipe.replies, OrderCancelled)
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=P0, tif="IOC"))
    # 9903e1c: the bid filled, equity 300 - 15 - 1,410 = -1,125
    assert trigger_gap(pipe, "alice") > 0, trigger_gap(pipe, "alice") / USD
    assert order is None and [c.reason for c in cancelled] == ["margin_repriced"]
    assert pipe.risk.accounts["alice"].order_margin == 0
    why = [a for a in pipe.audit if a.rule == "risk.reserve_repriced"]
    assert why and why[-1].numbers["reserve"] == (240 + 15 + 1_410) * USD


def test_defect05_a_bid_the_account_still_covers_is_repriced_not_cancelled():
    pipe = fresh(alice=5_000, bob=1_000_000)
    bid = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1000, price=P0 - 100)),
                OrderAccepted)
    order = pipe.risk.accounts["alice"].orders[bid.order_id]
    assert order.reserve == ceil_div(29_990 * USD, 20) + 14_995_000  # IM 1,499.5 + fee
    pipe.mark(BTC, 295_000)  # the bid is 490 above the new mark
    assert order.reserve == ceil_div(29_990 * USD, 20) + 14_995_000 + 490 * USD
    pipe.mark(BTC, 310_000)  # back above: the loss term goes away
    assert order.reserve == ceil_div(29_990 * USD, 20) + 14_995_000
    assert pipe.risk.accounts["alice"].order_margin == order.reserve


def test_defect06_an_amend_holds_its_margin_before_matching_answers():
    pipe = fresh(alice=2_000, bob=1_000_000)
    placed = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=100, price=P0)),
                   OrderAccepted)
    # the amend reaches risk, and before matching answers it, a withdrawal of 1,500
    pipe.ref += 1
    held = pipe._checked(Routed(ref=pipe.ref, account="alice", body=AmendOrder(
        symbol=BTC, order_id=placed.order_id, qty=1300)))
    withdrawal = first(pipe.request("admin", Withdraw(account="alice", amount=1_500 * USD)),
                       Ack, Error)
    pipe.replies.clear()
    pipe.pump(held)
    assert type(first(pipe.replies, OrderAmended, OrderRejected)) is OrderAmended
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=1300, price=P0, tif="IOC"))
    alice = pipe.risk.accounts["alice"]
    assert alice.positions[BTC].qty == 1300
    # 9903e1c: both went through, equity 492 against an IM of 1,950
    assert pipe.risk.equity(alice) >= pipe.risk.position_margin(alice), \
        pipe.risk.equity(alice) / USD
    assert (type(withdrawal), withdrawal.reason) == (Error, "withdrawal_exceeds_available")


def test_defect06_a_refused_amend_releases_what_it_held():
    pipe = fresh(alice=2_000, bob=1_000_000)
    placed = first(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=100, price=P0,
                                                    post_only=True)), OrderAccepted)
    alice = pipe.risk.accounts["alice"]
    before = alice.order_margin
    pipe.request("bob", PlaceOrder(symbol=BTC, side=-1, qty=100, price=P0 + 20))
    refused = first(pipe.request("alice", AmendOrder(symbol=BTC, order_id=placed.order_id,
                                                     qty=200, price=P0 + 20)), OrderRejected)
    assert refused.reason == "post_only_would_take"  # matching refused it after risk held it
    assert alice.order_margin == before == alice.orders[placed.order_id].reserve


def test_defect07_forced_fee_on_the_fill_closing_an_isolated_position_spares_the_cross_wallet():
    pipe, alice = long_at_125x("isolated")
    pipe.mark(BTC, 297_900)  # equity 240 - 210 = 30 <= MM 119.16 + fee 59.58: liquidatable
    cross_before = alice.balance
    pipe.request("bob", PlaceOrder(symbol=BTC, side=1, qty=1000, price=297_900))
    pipe.pump(pipe._checked(LiquidationStep(liquidation_id=1, kind="reduce", account="alice",
                                            symbol=BTC, qty=1000, price=297_600)))
    assert BTC not in alice.positions
    # the forced fee is capped at the 30 the position had: nothing of it comes from the cross
    # wallet (9903e1c: the fee, 59.58, was charged there after the 30 came back: -29.58)
    assert alice.balance >= cross_before, (alice.balance - cross_before) / USD
    assert alice.balance == cross_before and pipe.risk.insurance_fund == 30 * USD


def test_defect11_cross_liquidation_price_counts_the_other_positions_forced_fees():
    pipe = fresh(alice=8_000, bob=10_000_000)
    for symbol, price, qty in ((BTC, P0, 2_000), (ETH, E0, 2_000)):  # 2 BTC and 20 ETH long
        pipe.request("bob", PlaceOrder(symbol=symbol, side=-1, qty=qty, price=price))
        pipe.request("alice", PlaceOrder(symbol=symbol, side=1, qty=qty, price=price))
    assert {s: p.qty for s, p in pipe.risk.accounts["alice"].positions.items()} == {
        BTC: 2_000, ETH: 2_000}
    view = first(pipe.request("alice", GetAccount()), type(pipe.risk.account_view("alice")))
    shown = next(p for p in view.positions if p.symbol == BTC).liquidation_price
    risk = pipe.risk
    risk.marks[BTC] = shown + 1  # a long's price rounds up: one tick above it, no trigger
    above = trigger_gap(pipe, "alice")
    risk.marks[BTC] = shown - 1
    below = trigger_gap(pipe, "alice")
    # 9903e1c showed a price 120 ticks too low: the trigger fired above it
    assert above > 0, (shown, above / USD)
    assert below <= 0
    # `perpx calc liq-price --mode cross` gives the same price from the same inputs
    eth = risk.accounts["alice"].positions[ETH]
    btc = risk.accounts["alice"].positions[BTC]
    eth_value = eth.qty * E0 * 100
    out = calc.liq_price(TOPO, symbol=BTC, side="long", qty="2", entry="30000", mode="cross",
                         wallet=str((risk.accounts["alice"].balance + btc.cost + eth.cost) / USD),
                         other_mm=str(maintenance_margin(TOPO.symbols[ETH].tiers, eth_value) / USD),
                         other_fees=str(ceil_div(eth_value * 3_000, 1_000_000) / USD),
                         other_upnl=str((eth_value - eth.cost) / USD))
    assert out["liquidation_price"] == f"{shown / 10:.1f}"


def test_defect16_isolated_100x_eth_long_bought_above_mark_starts_above_its_trigger():
    # Found: an isolated position brought in IM + fee from the cross wallet, but not the loss at
    # once of a fill above the mark (risk reserved it, then left it in the cross wallet). A 100x
    # ETH long (IM 1%, trigger 0.5% MM + 0.3% forced fee) bought 1.2% above mark began at
    # equity 20.24 - 24 = -3.76 (9903e1c), and the liquidator fired at once.
    pipe = fresh(alice=1_000, bob=1_000_000)
    pipe.request("alice", SetMarginMode(symbol=ETH, mode="isolated"))
    pipe.request("alice", SetLeverage(symbol=ETH, leverage=100))
    pipe.request("bob", PlaceOrder(symbol=ETH, side=-1, qty=100, price=202_400))
    pipe.request("alice", PlaceOrder(symbol=ETH, side=1, qty=100, type="market"))
    pos = pipe.risk.accounts["alice"].positions[ETH]
    assert pos.qty == 100
    equity = pos.iso_cash + pos.qty * E0 * 100
    assert trigger_gap(pipe, "alice", ETH) > 0, equity / USD
    assert equity == 20_240_000  # IM at the fill price: the loss against mark came in with it
