"""Worked examples for the risk node: isolated vs cross, funding, settings, transfers, IM buffer."""

from __future__ import annotations

from cluster.protocol import (
    Ack, AdjustIsolatedMargin, AmendOrder, Deposit, Error, FundingRate, GetAccount, GetOrders,
    OrderAccepted, OrderAmended, OrderRejected, OrdersView, PlaceOrder, Regime, Reply, SetLeverage,
    SetMarginMode, Withdraw,
)
from cluster.rules.units import ceil_div
from cluster.rules.prices import liquidation_price, round_price
from tests.unit.pipeline import TOPO, Pipeline

USD = 1_000_000
BTC = "BTC-PERP"
SPEC = TOPO.symbols[BTC]
P0 = 300_000  # 30,000.0 in ticks


def body(replies, cls=None):
    for r in replies:
        b = r.body if type(r) is Reply else r.event
        if cls is None or type(b) is cls:
            return b
    raise AssertionError(f"no {cls} in {replies}")


def view(pipe, account):
    return body(pipe.request(account, GetAccount()))


def cross(pipe, buyer, seller, qty, price=P0):
    pipe.request(seller, PlaceOrder(symbol=BTC, side=-1, qty=qty, price=price))
    pipe.request(buyer, PlaceOrder(symbol=BTC, side=1, qty=qty, price=price))


def fresh(**deposits):
    pipe = Pipeline({"admin": 0, **{k: v * USD for k, v in deposits.items()}})
    pipe.mark(BTC, P0)
    return pipe


def test_isolated_long_brings_in_im_and_fee_and_a_crash_never_touches_the_cross_wallet():
    pipe = fresh(alice=10_000, mm=1_000_000)
    assert type(body(pipe.request("alice", SetMarginMode(symbol=BTC, mode="isolated")))) is Ack
    cross(pipe, "alice", "mm", 1000)  # alice buys 1 BTC @ 30,000, isolated at 20x
    notional = 30_000 * USD
    im = notional // 20
    fee = ceil_div(notional * SPEC.taker_fee_ppm, 1_000_000)
    a = pipe.risk.accounts["alice"]
    pos = a.positions[BTC]
    assert a.balance == 10_000 * USD - im - fee  # moved into the isolated margin
    assert pos.iso_cash + pos.cost == im  # isolated wallet = IM (the fee was paid from it)
    v = view(pipe, "alice")
    p = v.positions[0]
    assert (p.mode, p.tier, p.leverage, p.isolated_margin) == ("isolated", 1, 20, im)
    assert v.isolated_margin == im  # the account's isolated wallets: margin, not cash less cost
    assert p.entry_price == "300000"  # ticks, plain decimal text (no exponent)
    expected_lp, _ = liquidation_price(side=1, qty=1000, cost=pos.cost, wallet=im,
                                       tiers=SPEC.tiers, mult=100, fee_ppm=SPEC.forced_fee_ppm)
    assert p.liquidation_price == round_price(expected_lp, 1)
    assert p.bankruptcy_price == 285_000  # 30,000 - 1,500 margin per BTC
    # a crash far past bankruptcy: the cross wallet does not move
    before = a.balance
    pipe.mark(BTC, 250_000)
    assert a.balance == before
    assert pipe.risk.isolated_equity(BTC, pos) < 0
    # alice's own close past bankruptcy is refused (the insurance fund would pay for it): the
    # position is the liquidator's; the cross wallet still does not move
    pipe.request("mm", PlaceOrder(symbol=BTC, side=1, qty=1000, price=250_000))
    refused = body(pipe.request("alice", PlaceOrder(symbol=BTC, side=-1, qty=1000, price=250_000,
                                                    reduce_only=True)))
    assert (type(refused), refused.reason) == (OrderRejected, "close_beyond_isolated_margin")
    assert refused.detail["isolated_equity"] < 0 and refused.detail["bankruptcy_price"] == 285_000
    assert pos.qty == 1000 and a.balance == before and pipe.risk.insurance_fund == 0
    held, owed = pipe.risk.conservation()
    assert held == owed


def test_cross_loss_eats_the_common_wallet():
    pipe = fresh(bob=10_000, mm=1_000_000)
    cross(pipe, "bob", "mm", 1000)
    b = pipe.risk.accounts["bob"]
    start = pipe.risk.equity(b)
    pipe.mark(BTC, 290_000)  # -1,000 USD on 1 BTC
    assert pipe.risk.equity(b) == start - 1_000 * USD
    v = view(pipe, "bob")
    assert v.positions[0].mode == "cross" and v.positions[0].unrealized_pnl == -1_000 * USD


def test_isolated_margin_transfers_are_checked_with_numbers():
    pipe = fresh(alice=10_000, mm=1_000_000)
    pipe.request("alice", SetMarginMode(symbol=BTC, mode="isolated"))
    err = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=100 * USD)))
    assert type(err) is Error and err.reason == "no_isolated_position"
    cross(pipe, "alice", "mm", 1000)
    ack = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=500 * USD)))
    assert type(ack) is Ack and ack.detail["amount"] == 500 * USD
    assert ack.detail["isolated_margin"] == 1_500 * USD + 500 * USD  # IM at 20x, plus the 500
    err = body(pipe.request("alice", AdjustIsolatedMargin(symbol=BTC, amount=-2_000 * USD)))
    assert err.reason == "isolated_margin_below_requirement"
    assert err.detail["initial_margin"] == 1_500 * USD and err.detail["removable"] < 2_000 * USD
    err = body(pipe.request("alice", SetMarginMode(symbol=BTC, mode="cross")))
    assert err.reason == "mode_change_with_position_or_orders" and err.detail["position"] == 1000


def test_funding_longs_pay_shorts_receive_remainder_to_insurance():
    pipe = fresh(a=100_000, b=100_000, c=100_000)
    cross(pipe, "a", "b", 333)  # a long 0.333 BTC, b short
    cross(pipe, "a", "c", 111)  # a long 0.444, c short 0.111
    pipe.send(FundingRate(symbol=BTC, rate_e9=123_457, mark=P0))  # 0.0123457%
    # notional a: 0.444 x 30,000 = 13,320 -> 1.644447... pays 1.644448 (rounded up)
    # b: 9,990 -> receives 1.233335 (down); c: 3,330 -> receives 0.411111 (down)
    hist = {n: pipe.risk.accounts[n].funding_history[0].payment for n in "abc"}
    assert hist == {"a": -1_644_448, "b": 1_233_335, "c": 411_111}
    assert pipe.risk.insurance_fund == 1_644_448 - 1_233_335 - 411_111 == 2
    v = view(pipe, "a")
    assert v.funding[0].payment == -1_644_448 and v.positions[0].funding_paid == 1_644_448


def test_leverage_capped_by_tier_and_margin():
    pipe = fresh(whale=50_000_000, mm=50_000_000)
    err = body(pipe.request("whale", SetLeverage(symbol=BTC, leverage=126)))
    assert err.reason == "leverage_above_tier_max" and err.detail["max_leverage"] == 125
    cross(pipe, "whale", "mm", 20_000)  # 20 BTC = 600,000 notional: tier 3 (max 50x)
    err = body(pipe.request("whale", SetLeverage(symbol=BTC, leverage=100)))
    assert err.reason == "leverage_above_tier_max"
    assert (err.detail["tier"], err.detail["max_leverage"]) == (3, 50)
    ack = body(pipe.request("whale", SetLeverage(symbol=BTC, leverage=50)))
    assert ack.detail == {"symbol": BTC, "from": 20, "to": 50, "tier": 3,
                          "available": ack.detail["available"]}
    small = fresh(tiny=1_000, mm=1_000_000)
    small.request("tiny", SetLeverage(symbol=BTC, leverage=100))
    cross(small, "tiny", "mm", 2_000)  # 60,000 notional at 100x: IM 600
    err = body(small.request("tiny", SetLeverage(symbol=BTC, leverage=1)))
    assert err.reason == "leverage_change_insufficient_margin" and err.detail["required"] > 0


def test_deposits_and_withdrawals_need_admin_and_respect_requirements():
    pipe = fresh(alice=1_000, mm=1_000_000)
    ack = body(pipe.request("admin", Deposit(account="alice", amount=500 * USD)))
    assert ack.detail["balance"] == 1_500 * USD
    cross(pipe, "alice", "mm", 100)  # 3,000 notional: IM 150
    err = body(pipe.request("admin", Withdraw(account="alice", amount=1_500 * USD)))
    assert err.reason == "withdrawal_exceeds_available" and err.detail["available"] < 1_500 * USD
    ok = body(pipe.request("admin", Withdraw(account="alice", amount=1_000 * USD)))
    assert type(ok) is Ack
    held, owed = pipe.risk.conservation()
    assert held == owed and owed == 1_000_000 * USD + 500 * USD
    # every amount on the wire fits 2**62: a deposit that would take a balance past it is refused
    err = body(pipe.request("admin", Deposit(account="mm", amount=2**62)))
    assert err.reason == "balance_limit" and err.detail["limit"] == 2**62
    assert pipe.risk.conservation()[1] == 1_000_000 * USD + 500 * USD  # nothing changed


def test_im_buffer_follows_the_regime_and_is_explained():
    pipe = fresh(alice=1_000, mm=1_000_000)
    order = PlaceOrder(symbol=BTC, side=1, qty=600, price=P0)  # 18,000 notional: IM 900 at 20x
    rep = body(pipe.request("alice", order))
    assert type(rep).__name__ == "OrderAccepted"
    pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1, price=P0 - 10))
    pipe.audit.clear()
    pipe.send(Regime(symbol=BTC, regime="high_volatility", realized_vol_ppm=9_000,
                     threshold_ppm=5_000))
    change = [e for e in pipe.audit if e.rule == "risk.im_buffer"][0]
    assert change.numbers["from_ppm"] == 1_000_000 and change.numbers["to_ppm"] == 1_500_000
    assert change.numbers["realized_vol_ppm"] == 9_000
    rej = body(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=100, price=P0 - 20)))
    assert rej.reason == "insufficient_margin" and rej.detail["im_buffer_ppm"] == 1_500_000
    pipe.send(Regime(symbol=BTC, regime="degraded"))
    rej = body(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1, price=P0 - 20)))
    assert rej.reason == "symbol_reduce_only"
    # a restarted oracle does not know risk's regime: its repeat of its own state ends the
    # degraded mode (the change it never saw to send), and a repeat of the same state is nothing
    pipe.audit.clear()
    pipe.send(Regime(symbol=BTC, regime="normal", changed=False))
    assert pipe.risk.regimes[BTC] == "normal" and [e.rule for e in pipe.audit] == ["risk.im_buffer"]
    pipe.send(Regime(symbol=BTC, regime="normal", changed=False))
    assert len(pipe.audit) == 1
    ok = body(pipe.request("alice", PlaceOrder(symbol=BTC, side=1, qty=1, price=P0 - 20)))
    assert type(ok) is OrderAccepted


def test_an_amend_is_checked_for_margin_whether_it_names_the_order_by_id_or_client_id():
    pipe = fresh(a=1_000)
    acct = pipe.risk.accounts["a"]
    placed = body(pipe.request("a", PlaceOrder(symbol=BTC, side=1, qty=10, price=P0 - 1_000,
                                               client_order_id="mm-1")))
    assert type(placed) is OrderAccepted
    before = (acct.order_margin, pipe.risk.available(acct))
    for named in ({"order_id": placed.order_id}, {"client_order_id": "mm-1"}):
        refused = body(pipe.request("a", AmendOrder(symbol=BTC, qty=100_000, **named)))
        assert (type(refused), refused.reason) == (OrderRejected, "insufficient_margin"), named
        assert refused.detail["order_id"] == placed.order_id
        assert (acct.order_margin, pipe.risk.available(acct)) == before  # nothing changed
    # within what is available, by client id: applied, and the reservation follows it
    grown = body(pipe.request("a", AmendOrder(symbol=BTC, client_order_id="mm-1", qty=20)))
    assert type(grown) is OrderAmended and grown.qty == 20
    assert acct.order_margin > before[0] and pipe.risk.available(acct) >= 0
    acct.check_indexes()


def test_moving_a_stop_moves_what_it_reserves_and_is_checked_first():
    pipe = fresh(a=1_000)
    acct = pipe.risk.accounts["a"]
    stop = body(pipe.request("a", PlaceOrder(symbol=BTC, side=1, qty=10, type="stop_market",
                                             trigger_price=P0 + 3_000)))
    assert type(stop) is OrderAccepted and stop.status == "untriggered"
    held = acct.order_margin
    moved = body(pipe.request("a", AmendOrder(symbol=BTC, order_id=stop.order_id,
                                              trigger_price=P0 + 6_000)))
    assert type(moved) is OrderAmended and moved.trigger_price == P0 + 6_000
    order = acct.orders[stop.order_id]
    assert order.trigger_price == P0 + 6_000 and order.reserve == acct.order_margin
    assert acct.order_margin > held  # a buy stop higher up: a worse worst price, more margin
    assert order.reserve == pipe.risk.reserve_for(acct, order)
    # a trigger so high that the margin is not there: refused by risk, nothing changes
    far = body(pipe.request("a", AmendOrder(symbol=BTC, order_id=stop.order_id,
                                            qty=3_000, trigger_price=P0 * 3)))
    assert (type(far), far.reason) == (OrderRejected, "insufficient_margin")
    assert order.trigger_price == P0 + 6_000 and pipe.matching.orders[stop.order_id].trigger_price \
        == P0 + 6_000


def test_the_position_limit_holds_for_amends_and_for_stops_without_a_price():
    pipe = fresh(a=10**12)
    acct, limit = pipe.risk.accounts["a"], SPEC.tiers[-1].cap
    mult = SPEC.atoms_per_tick_lot
    small = [body(pipe.request("a", PlaceOrder(symbol=BTC, side=1, qty=1, price=P0 - 1_000 - i)))
             for i in range(20)]
    refused = None
    for placed in small:  # growing each to the largest order allowed: the limit stops it
        answer = body(pipe.request("a", AmendOrder(symbol=BTC, order_id=placed.order_id,
                                                   qty=SPEC.max_qty)))
        if type(answer) is OrderRejected:
            refused = answer
            break
    assert refused is not None and refused.reason == "position_limit", refused
    assert refused.detail["notional_after"] > limit == refused.detail["limit"]
    assert acct.pending_ticks_lots(BTC, 1) * mult <= limit
    acct.check_indexes()
    # a stop-market has no price: it counts at its trigger, so stops cannot pile past the limit
    pipe = fresh(a=10**12)
    acct = pipe.risk.accounts["a"]
    answers = [body(pipe.request("a", PlaceOrder(symbol=BTC, side=1, qty=SPEC.max_qty,
                                                 type="stop_market", trigger_price=P0 + 1_000)))
               for _ in range(25)]
    assert answers[-1].reason == "position_limit"
    assert acct.pending_ticks_lots(BTC, 1) * mult <= limit
    acct.check_indexes()


def test_open_orders_are_listed_with_their_terms_status_and_reservation():
    pipe = fresh(a=100_000)
    acct = pipe.risk.accounts["a"]
    limit = body(pipe.request("a", PlaceOrder(symbol=BTC, side=1, qty=10, price=P0 - 1_000,
                                              client_order_id="c-1")))
    stop = body(pipe.request("a", PlaceOrder(symbol=BTC, side=-1, qty=5, type="stop_market",
                                             trigger_price=P0 - 3_000, reduce_only=False)))
    view = body(pipe.request("a", GetOrders()))
    assert type(view) is OrdersView and view.account == "a"
    assert [(o.order_id, o.type, o.status, o.client_order_id) for o in view.orders] == [
        (limit.order_id, "limit", "new", "c-1"), (stop.order_id, "stop_market", "untriggered", "")]
    assert sum(o.reserved for o in view.orders) == acct.order_margin
    assert view.orders[1].trigger_price == P0 - 3_000 and view.orders[1].price == 0
    assert body(pipe.request("a", GetOrders(symbol="ETH-PERP"))).orders == []
    assert [o.order_id for o in body(pipe.request("a", GetOrders(symbol=BTC))).orders] == \
        [limit.order_id, stop.order_id]


def test_fills_carry_the_realized_pnl_of_what_they_close_before_the_fee():
    """REST income's REALIZED_PNL: bob buys 1 BTC at 30,000 and 1 at 30,100 (cost 60,100), sells
    0.5 at 30,300 (closes 1/4 of the cost: 15,025; realized 15,150 - 15,025 = +125), then flips
    to short with a 2 BTC sale at 29,900: 1.5 closed against the 45,075 left (-225), 0.5 opened
    (nothing realized). A short closed higher loses: bought back at 30,000, -50. The wallet moves
    by each realized PnL less each fee, to the atom."""
    from cluster.protocol import Fill

    pipe = fresh(bob=100_000, mm=1_000_000)
    b = pipe.risk.accounts["bob"]

    def fill_of(replies):
        return [r.event for r in replies if type(r) is not Reply and type(r.event) is Fill
                and r.event.account == "bob"][-1]

    realized = []
    for side, qty, price in ((1, 1000, 300_000), (1, 1000, 301_000), (-1, 500, 303_000),
                             (-1, 2000, 299_000), (1, 500, 300_000)):
        wallet = view(pipe, "bob").wallet_balance
        pipe.request("mm", PlaceOrder(symbol=BTC, side=-side, qty=qty, price=price))
        fill = fill_of(pipe.request("bob", PlaceOrder(symbol=BTC, side=side, qty=qty, price=price)))
        assert view(pipe, "bob").wallet_balance - wallet == fill.realized_pnl - fill.fee
        realized.append(fill.realized_pnl)
    assert realized == [0, 0, 125 * USD, -225 * USD, -50 * USD]
    assert b.positions.get(BTC) is None or b.positions[BTC].qty == 0
