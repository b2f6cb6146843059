"""Issue #26: tests that kill the survivors of the sampled `make mutate` run (seed 28). Each test
names the mutant(s) it kills; expected values are worked out by hand from the README's rules."""

from __future__ import annotations

from cluster.protocol import (
    Ack, Cancel, Error, LiquidationResult, LiquidationStep, OrderAccepted, OrderCancelled,
    OrderRejected, PlaceOrder, Reply, SetAccountMarginMode, SetLeverage, SetMarginMode,
    SetPortfolioAccess,
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
    """Kills account_ops _set_account_mode__mutmut_49 (`available <= 0`; the check is now in
    _switch_account_mode, `available >= 0` -> `> 0`): an account whose orders hold its whole
    balance (available 0) still covers its requirement, so the switch is made."""
    pipe, _ = resting_buy(RESERVE_AT_P0)
    # an admin allows the mode first (#24; a Pipeline's Routed carries no key table)
    assert type(first(pipe.request("alice", SetPortfolioAccess(account="alice", enabled=True)),
                      Ack, Error)) is Ack
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


def test_a_gap_deep_in_tier_5_first_closes_only_what_takes_the_position_down_one_tier():
    """Kills liquidator _needed__mutmut_19 (the tier bound dropped). The whale, long 400 BTC at
    30,000.0 at 10x with 1,500,000 USD (less the 6,000 taker fee), is at mark 26,700.0: 10.68M
    notional, tier 5 (above 10M). Equity 1,494,000 - 1,320,000 = 174,000 is far under its MM, so
    getting back above maintenance would take far more than going down one tier, which is the
    lots above 10M at mark: 400,000 - floor(10,000,000 USD / 26.7 USD a lot) = 400,000 - 374,531
    = 25,469. The first chunk closes exactly that, into the bid at 26,600.0."""
    from tests.unit.liquidation_world import World
    from tests.unit.test_liquidation_scenarios import open_long
    w = World({"whale": 1_500_000 * USD, "mm": 100_000_000 * USD}, insurance=100_000 * USD)
    w.mark(300_000)
    open_long(w, "whale", 400_000, leverage=10)
    w.mark(280_000)
    w.place("mm", 1, 500_000, 266_000)  # inside the band at 28,000.0
    w.mark(267_000)
    plan = next(e.numbers for e in w.audit if e.rule == "liquidation.plan")
    # bankruptcy: 30,000 - 1,494,000 / 400 = 26,265.0
    assert (plan["bankruptcy_price"], plan["needed"], plan["chunk"]) == (262_650, 25_469, 25_469)
    first = next(r for r in w.results if r.kind == "reduce")
    assert (first.qty, first.notional, first.position_after) == (
        25_469, 25_469 * 266_000 * 100, 374_531)


def test_an_adl_in_flight_does_not_count_against_the_fund_for_another_takeover():
    """Kills liquidator _advance__mutmut_286 (an ADL's loss recorded as committed fund money) and
    __mutmut_220 (the `committed_to_other_takeovers` explanation key renamed). alice (20 BTC long
    with 40,000 USD less a 300 fee) and bob (10 BTC, 20,000 less 150) both went bankrupt at
    28,015.0; the mark gaps to 27,900.0 with no bids. The fund has 3,000 USD, floor 1,000.
    alice's takeover would cost 115 x 20 = 2,300: 700 left < floor -> ADL, which the fund does not
    pay. bob's costs 1,150 and nothing else is committed: 1,850 left -> the fund takes it."""
    from tests.unit.test_liquidation_scenarios import crossed_at_20x
    w = crossed_at_20x({"alice": 40_000 * USD, "bob": 20_000 * USD, "c": 800_000 * USD, "mm": 0},
                       [("c", -1, 30_000), ("alice", 1, 20_000), ("bob", 1, 10_000)],
                       insurance=3_000 * USD, floor=1_000 * USD)
    w.mark(279_000)
    plans = [(e.decision, e.numbers["takeover_loss_at_mark"],
              e.numbers["committed_to_other_takeovers"], e.numbers["fund_after"])
             for e in w.audit if e.rule == "liquidation.plan" and "fund_after" in e.numbers]
    assert plans == [("adl", 2_300 * USD, 0, 700 * USD), ("insurance", 1_150 * USD, 0, 1_850 * USD)]
    assert [(r.account, r.kind, r.qty) for r in w.results if r.qty] == [
        ("alice", "adl", 20_000), ("bob", "insurance", 10_000)]
    # the fund paid 10 BTC x 28,015.0 for bob's long, worth 27,900.0 each: 3,000 - 1,150 left
    assert w.risk.insurance_fund == 3_000 * USD - 10_000 * 280_150 * 100
    assert w._fund_equity() == 1_850 * USD


def short_btc_long_eth():
    """alice (cross, 2,000 USD) short 1 BTC at 30,000.0 and long 20 ETH at 2,000.00, both at
    50x, against mm: the world both no-bankruptcy-price tests gap ETH in."""
    from tests.unit.liquidation_world import World
    eth = "ETH-PERP"
    w = World({"alice": 2_000 * USD, "mm": 10_000_000 * USD}, insurance=100_000 * USD)
    w.mark(P0)
    w.mark(200_000, eth)
    for symbol in (BTC, eth):
        w.risk.accounts["alice"].leverage[symbol] = 50
    w.place("mm", 1, 1000, P0)
    w.place("alice", -1, 1000, P0)
    w.place("mm", -1, 2000, 200_000, eth)
    w.place("alice", 1, 2000, 200_000, eth)
    return w


def test_a_short_with_no_solvable_bankruptcy_price_is_still_bought_back_in_the_book():
    """Kills liquidator _bankruptcy__mutmut_50 (a short with no bankruptcy price limited at 1 tick
    instead of no limit). alice (cross, 2,000 USD) is short 1 BTC at 30,000.0 and long 20 ETH at
    2,000.00, both at 50x; ETH gaps to 200.00: a 36,000 loss on ETH, more than her 2,000 (less
    fees) plus everything the short could ever gain (30,000 at a price of 0). No price of BTC
    brings her equity to zero, so the short's close has no bound: it buys what the book offers
    (the ask at 30,000.0, inside the band). Limited at 1 tick it could never fill."""
    w = short_btc_long_eth()
    eth = "ETH-PERP"
    assert (w.position("alice"), w.position("alice", eth)) == (-1000, 2000)
    w.place("mm", -1, 1000, P0)  # the ask the short is closed into
    w.mark(20_000, eth)
    plan = next(e.numbers for e in w.audit if e.rule == "liquidation.plan")
    assert plan["symbol"] == BTC and plan["bankruptcy_price"] > 315_000  # above the band's edge
    first = next(r for r in w.results if r.kind == "reduce")
    # the chunk: 25% of the position (cap_position), bought at the ask
    assert (first.qty, first.notional, first.position_after) == (250, 250 * P0 * 100, -750)


# ------------------------------------------------------------------ matching

def _matching(mark: int | None = 1000):
    from cluster import config
    from cluster.protocol import MarkPrice
    from nodes.matching.engine import MatchingEngine
    eng = MatchingEngine(config.load().symbols)
    if mark:
        eng.handle(MarkPrice(symbol=BTC, mark=mark))
    return eng


def test_a_market_order_with_no_mark_and_an_empty_book_is_cancelled_for_no_liquidity():
    """Kills matching _take__mutmut_13 (the cancel written to nowhere: the order vanished with no
    answer, or the engine raised). With no mark and no opposite order there is no price to
    protect a market order with: it is cancelled at once, all of it, and the book stays empty."""
    from cluster.protocol import NewOrder
    eng = _matching(mark=None)
    ev = eng.handle(NewOrder(order_id=1, account="t", symbol=BTC, side=1, qty=7, type="market"))
    cancels = [e for e in ev if type(e) is OrderCancelled]
    assert [(c.order_id, c.account, c.remaining, c.reason) for c in cancels] == [
        (1, "t", 7, "no_liquidity")]
    assert eng.depth(BTC, 5)[1:] == ([], [])
    eng.validate_internal_state()


def test_a_resting_reduce_only_order_pulled_mid_sweep_says_what_the_position_became():
    """Kills matching _reduce_only_fits__mutmut_31 (the detail's `position` key renamed). a is
    long 5 and rests a plain sell of 8 at 1,000 and a reduce-only sell of 5 at 1,001. A buy of 13
    takes the 8 first: a is now short 3, so the reduce-only sell would open, not close: it is
    cancelled, and its detail tells the reader the position that made it so (-3)."""
    from cluster.protocol import NewOrder, SetPosition, Trade
    eng = _matching()
    eng.handle(SetPosition(account="a", symbol=BTC, qty=5))
    eng.handle(NewOrder(order_id=1, account="a", symbol=BTC, side=-1, qty=8, price=1000))
    eng.handle(NewOrder(order_id=2, account="a", symbol=BTC, side=-1, qty=5, price=1001,
                        reduce_only=True))
    ev = eng.handle(NewOrder(order_id=3, account="t", symbol=BTC, side=1, qty=13, price=1001))
    assert [(e.price, e.qty, e.maker_order_id) for e in ev if type(e) is Trade] == [(1000, 8, 1)]
    pulled = [e for e in ev if type(e) is OrderCancelled and e.order_id == 2]
    assert [(c.remaining, c.reason, c.detail) for c in pulled] == [
        (5, "reduce_only_position_changed", {"position": -3})]
    eng.validate_internal_state()


# ------------------------------------------------------------------ cluster rules

def test_an_interval_with_no_premium_sample_pays_the_interest_rate_alone():
    """Kills funding PremiumAverage.value__mutmut_5 (an empty average worth 1, i.e. a premium of
    100%: the rate capped at 0.75%). The oracle hears spot prices but never a book, so no impact
    price and no premium sample: at the funding time the rate is P + clamp(I - P) with P = 0,
    the interest rate 0.01% = 100,000 e9."""
    from tests.unit.test_oracle import SEC as NS, feed, specs
    from cluster.protocol import FundingRate
    from nodes.oracle.index import Oracle
    oracle = Oracle(specs(funding_interval_s=10))
    feed(oracle, [300_000] * 5, 1_000 * NS + NS // 2)
    oracle.publish(1_000 * NS + NS // 2)
    feed(oracle, [300_000] * 5, 1_010 * NS)
    funding = [m for m in oracle.publish(1_010 * NS) if type(m) is FundingRate]
    assert [f.rate_e9 for f in funding] == [100_000]


def test_a_long_with_margin_equal_to_its_notional_has_no_liquidation_price():
    """Kills prices liquidation_price__mutmut_26 (`price < 0`: a price of exactly 0 returned as a
    liquidation price). A 1x long of 1 BTC bought at 30,000.0 with 30,000 USD of margin has equity
    = its value at any mark P, which is above MM + forced fee for every P > 0: the trigger solves
    to P = 0 exactly, so there is no liquidation price. One atom less margin: a positive one."""
    from cluster import config
    from cluster.rules.prices import liquidation_price
    spec = config.load().symbols[BTC]
    cost = 1000 * P0 * 100  # 30,000 USD
    args = dict(side=1, qty=1000, cost=cost, tiers=spec.tiers, mult=100,
                fee_ppm=spec.forced_fee_ppm)
    price, tier = liquidation_price(wallet=cost, **args)
    assert (price, tier.number) == (None, 1)
    price, tier = liquidation_price(wallet=cost - 1, **args)
    assert price is not None and 0 < price < 1 and tier.number == 1  # 1 atom short: P = tiny


def test_a_bad_ladder_row_is_refused_naming_its_tier_and_the_numbers():
    """Kills ladder build_ladder__mutmut_58 (no message) and __mutmut_70 (the wrong tier named).
    What a config author reads: which tier, which rule, and for a stated amount the derived one:
    tier 2 from 50,000 USD at 0.5% after 0.4% carries 50,000 x 0.1% = 50 USD = 50,000,000 atoms."""
    import pytest
    from cluster.rules.ladder import LadderError, build_ladder
    with pytest.raises(LadderError, match=r"^tier 1: need leverage >= 1 and 0 < mmr < 1$"):
        build_ladder([(0, 0, 4_000, None)], 10**15)
    with pytest.raises(LadderError,
                       match=r"^tier 2: stated maintenance amount 123 != derived 50000000$"):
        build_ladder([(0, 125, 4_000, None), (50_000 * USD, 100, 5_000, 123)], 10**15)


def test_a_non_finite_number_is_refused_with_a_message_naming_the_field():
    """Kills units parse_decimal__mutmut_14 (the message dropped)."""
    import pytest
    from cluster.rules.units import UnitError, parse_decimal
    for text in ("inf", "-Infinity", "NaN"):
        with pytest.raises(UnitError, match=r"^price '[-A-Za-z]+' is not finite$") as err:
            parse_decimal(text, "price")
        assert err.value.reason == "not_a_number"


def test_a_deposit_past_the_balance_limit_is_refused_and_explained_at_its_time():
    """Kills account_ops _transfer__mutmut_29 (the refusal's explanation without a timestamp:
    `perpx explain` orders and filters records by it)."""
    from cluster.audit import Explanation
    from cluster.protocol import Deposit, Routed
    from nodes.risk.ledger import RiskEngine
    from tests.unit.pipeline import TOPO
    risk = RiskEngine(TOPO.symbols, {"admin": 0, "alice": 2**62 - 5})
    out = risk.handle(Routed(ref=1, account="admin", body=Deposit(account="alice", amount=6)),
                      1_234_567)
    refused = [b for b in bodies([m for _, m in out]) if type(b) is Error]
    detail = {"account": "alice", "amount": 6, "balance": 2**62 - 5, "limit": 2**62}
    assert [(e.reason, e.detail) for e in refused] == [("balance_limit", detail)]
    why = [m for _, m in out if type(m) is Explanation]
    assert [(e.ts_ns, e.rule, e.decision, e.numbers) for e in why] == [
        (1_234_567, "risk.balance_limit", "reject", detail)]
    assert risk.accounts["alice"].balance == 2**62 - 5


def test_a_takeover_of_a_short_with_no_bankruptcy_price_is_made_at_the_mark():
    """Found with _bankruptcy__mutmut_50: with no solvable bankruptcy price a short's limit is
    "no limit" (10**15 ticks), right for the book (risk clamps it to the band) but not as a
    takeover price: the fund took alice's last lot at 10**15 ticks, a 100,000,000,000 USD
    transfer (alice's wallet -1e17 atoms), and planned it as a loss at mark of 0. The fund (or a
    backstop, or ADL counterparties) takes it at the mark, 30,000.0: 1 x 300,000 x 100 atoms."""
    w = short_btc_long_eth()
    eth = "ETH-PERP"
    w.place("mm", -1, 1000, P0)
    w.mark(20_000, eth)
    takeovers = [r for r in w.results if r.kind in ("backstop", "insurance", "adl") and r.qty]
    assert [(r.kind, r.qty, r.notional, r.counterparties) for r in takeovers] == [
        ("insurance", 1, 1 * P0 * 100, [("insurance", 1, P0)])]
    assert w.position("alice") == 0
    assert w.risk.accounts["alice"].balance > -40_000 * USD  # ETH's loss, not 1e11 USD
