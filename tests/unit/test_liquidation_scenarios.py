"""Deterministic liquidation scenarios through risk + matching + the liquidator engine.

Money is checked after every event by the harness; each scenario checks the path it must take.
"""

from __future__ import annotations

from cluster import config
from cluster.protocol import Deleveraged, Report
from cluster.rules.units import ceil_div
from tests.unit.liquidation_world import USD, World

BTC = "BTC-PERP"
MULT = 100  # atoms per tick-lot on BTC-PERP
TIER4_FLOOR = 10_000_000 * USD  # BTC ladder: tier 5 starts above 10M notional
TIER3_FLOOR = 1_000_000 * USD
FORCED_FEE_PPM = config.load().symbols[BTC].forced_fee_ppm


def kinds(world) -> list[str]:
    return [r.kind for r in world.results]


def open_long(world, account, lots, price=300_000, leverage=None):
    if leverage:
        world.risk.accounts[account].leverage[BTC] = leverage
        world.risk.accounts["mm"].leverage[BTC] = leverage
    world.place("mm", -1, lots, price)
    world.place(account, 1, lots, price)
    assert world.position(account) == lots


def crossed_at_20x(deposits: dict[str, int], trades: list[tuple[str, int, int]], **fund) -> World:
    """A world at mark 30,000 in which `trades` (account, side, lots) rest and fill in order at
    30,000, every trading account but the market maker at 20x."""
    w = World(deposits, **fund)
    w.mark(300_000)
    for acct in {a for a, _, _ in trades} - {"mm"}:
        w.risk.accounts[acct].leverage[BTC] = 20
    for acct, side, lots in trades:
        w.place(acct, side, lots, 300_000)
    return w


def test_deep_book_reduces_incrementally_down_through_two_tiers():
    w = World({"whale": 1_500_000 * USD, "mm": 100_000_000 * USD}, insurance=100_000 * USD)
    w.mark(300_000)
    open_long(w, "whale", 400_000, leverage=10)  # 400 BTC = 12M notional: tier 5
    fund = w.risk.fund_equity()
    for mark in range(290_000, 252_000, -1_000):  # the mark walks down 1,000 ticks at a time
        w.cancel_all("mm")
        w.place("mm", 1, 500_000, mark - 100)  # a deep bid just under the mark
        w.mark(mark)
    assert set(kinds(w)) == {"cancel", "reduce"}, kinds(w)  # incremental only
    triggers = [e.numbers for e in w.audit if e.rule == "liquidation.trigger"]
    assert triggers[0]["mark"] == 270_000 and triggers[0]["tier"] == 5
    assert {5, 4, 3} <= {t["tier"] for t in triggers}  # down through two tier boundaries
    # each chunk closes only what is needed (or what gets it down one tier), within the caps
    plans = [e.numbers for e in w.audit if e.rule == "liquidation.plan"]
    for plan in plans:
        assert plan["chunk"] == min(plan["needed"], plan["cap_position"], plan["cap_depth"])
    first_tier_bound = 400_000 - TIER4_FLOOR // (270_000 * MULT)
    assert 0 < plans[0]["needed"] <= first_tier_bound
    first = [r for r in w.results if r.kind == "reduce"][0]
    assert first.qty == plans[0]["chunk"] and first.notional == first.qty * 269_900 * MULT
    assert first.fee == ceil_div(first.notional * FORCED_FEE_PPM, 1_000_000)  # the forced fee
    assert first.fund_delta == first.fee
    reduces = [r for r in w.results if r.kind == "reduce"]
    assert w.risk.fund_equity() - fund == sum(r.fee for r in reduces)
    assert {e.decision for e in w.audit if e.rule == "liquidation.end"} == {"restored"}
    assert 0 < w.position("whale") * 253_000 * MULT <= TIER3_FLOOR


def test_thin_book_partial_fills_then_backstop_then_insurance():
    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD, "bs": 5_000 * USD},
              insurance=1_000_000 * USD, backstops=["bs"])
    w.mark(300_000)
    open_long(w, "alice", 10_000, leverage=20)  # 10 BTC, 300,000 notional, 15,000 IM
    w.mark(290_000)  # still fine; the band now admits a bid at 280,500
    w.cancel_all("mm")
    w.place("mm", 1, 1_000, 280_500)  # one thin bid: 1 BTC, above the bankruptcy price
    w.mark(281_000)  # equity ~ 20,000 - 19,000 - fees: just above bankruptcy (28,015)
    path = kinds(w)
    assert path[0] == "cancel" and path[-2:] == ["backstop", "insurance"], path
    reduces = [r for r in w.results if r.kind == "reduce"]
    # each IOC may take half of the depth left within the bankruptcy price: 1,000 lots halve down
    assert [r.qty for r in reduces] == [500, 250, 125, 62, 31, 16, 8, 4, 2, 1]
    assert all(r.notional == r.qty * 280_500 * MULT for r in reduces)
    assert all(r.fee == ceil_div(r.notional * FORCED_FEE_PPM, 1_000_000) == r.fund_delta
               for r in reduces)
    backstop, insurance = w.results[-2], w.results[-1]
    bankruptcy = backstop.counterparties[0][2]
    # the backstop carries what 5,000 USD of margin carries at 20x at the bankruptcy price
    assert backstop.qty == 5_000 * USD * 20 // (bankruptcy * MULT)
    assert 3_500 < backstop.qty < 3_600  # about 3.57 BTC
    assert backstop.counterparties[0][:2] == ("bs", backstop.qty) and 0 < backstop.qty
    assert insurance.counterparties == [("insurance", insurance.qty, bankruptcy)]
    assert sum(r.qty for r in reduces) + backstop.qty + insurance.qty == 10_000
    assert w.position("alice") == 0 and w.position("bs") == backstop.qty
    assert w.position("insurance") == insurance.qty
    # everyone took it at the bankruptcy price: alice's account ends at (about) zero, not below
    assert 0 <= w.risk.accounts["alice"].balance < 10 * USD


def test_small_insurance_fund_means_adl_in_rank_order():
    w = crossed_at_20x({"alice": 20_000 * USD, "b": 30_000 * USD, "c": 200_000 * USD, "mm": 0},
                       [("b", -1, 5_000), ("c", -1, 5_000), ("alice", 1, 10_000)],
                       insurance=1_000 * USD, floor=1_000 * USD)
    assert (w.position("b"), w.position("c")) == (-5_000, -5_000)
    # the mark gaps below alice's bankruptcy price (~28,015): no bids, no backstop, and a
    # takeover would cost the fund more than it has above its floor -> auto-deleveraging
    w.mark(279_000)
    assert kinds(w) == ["cancel", "backstop", "adl"], kinds(w)
    dl = [g.event for g in w.gateway if type(g) is Report and type(g.event) is Deleveraged]
    # b holds the same profit on far less margin: higher PnL% x leverage, first in the queue
    assert [(d.account, d.rank) for d in dl] == [("b", 1), ("c", 2)]
    assert dl[0].score_ppm > dl[1].score_ppm
    assert (w.position("alice"), w.position("b"), w.position("c")) == (0, 0, 0)
    adl = w.results[-1]
    assert adl.counterparties == [("b", 5_000, dl[0].price), ("c", 5_000, dl[0].price)]


def test_no_liquidation_on_a_stale_or_degraded_mark():
    from cluster.protocol import IndexMark

    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD}, insurance=1_000_000 * USD)
    w.mark(300_000)
    open_long(w, "alice", 10_000, leverage=20)
    w.now += 1_000_000_000
    # at 28,200 alice is under MM + forced fee (equity ~1,850 against ~1,520 + 564)
    msg = IndexMark(symbol=BTC, index=282_000, mark=282_000, last=0, seq=0, ts_ns=w.now,
                    mode="degraded")
    w._to_risk(msg)
    w.liq.on_mark(msg)
    w._route(w.liq.tick(w.now))
    assert w.results == []
    assert [(e.rule, e.numbers["reason"]) for e in w.audit if e.rule == "liquidation.paused"] == [
        ("liquidation.paused", "oracle_degraded")]
    w.mark(282_000)  # a normal mark again: the liquidation starts
    assert w.results and w.results[0].kind == "cancel"


def test_a_restarted_liquidator_learns_from_risk_who_is_under_water():
    """Risk tells the liquidator about an account only when it changes; a liquidator restarted
    after an account went under water asks risk for everyone with a position, and acts."""
    from cluster.protocol import AccountRiskRequest
    from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf
    from tests.unit.pipeline import TOPO

    w = World({"whale": 1_500_000 * USD, "mm": 100_000_000 * USD, "idle": 1_000 * USD},
              insurance=100_000 * USD)
    w.mark(300_000)
    open_long(w, "whale", 400_000, leverage=10)
    w.place("mm", 1, 500_000, 269_900)
    w.liq = LiquidationEngine(TOPO.symbols, LiquidatorConf(), id_base=10**6)  # a restart
    w.mark(270_000)  # under water now, but the new liquidator knows nobody: nothing happens
    assert not [e for e in w.audit if e.rule == "liquidation.trigger"]
    w._to_risk(AccountRiskRequest())  # what its service sends when it starts
    assert set(w.liq.monitor.accounts) == {"whale", "mm"}  # those with a position, not "idle"
    w.mark(270_000)
    triggers = [e.numbers for e in w.audit if e.rule == "liquidation.trigger"]
    assert [(t["account"], t["mark"]) for t in triggers][:1] == [("whale", 270_000)], w.steps()


def test_a_position_opened_at_max_leverage_is_not_born_liquidatable():
    """An isolated 125x BTC long holds IM = 0.8% of notional; the trigger is MM (0.4%) + the
    forced fee. With the forced fee at 0.5% the venue accepted this position and liquidated it at
    once, the mark above its entry; the loader now refuses such a ladder, and the default one
    leaves the position alone until the mark reaches its liquidation price."""
    w = World({"alice": 1_000 * USD, "mm": 10_000_000 * USD}, insurance=1_000_000 * USD)
    w.mark(300_000)
    w.risk.accounts["alice"].modes[BTC] = "isolated"
    open_long(w, "alice", 1_000, leverage=125)  # 1 BTC, 30,000 notional: tier 1
    w.mark(300_010)  # a tick in its favour
    assert w.results == [], kinds(w)
    view = w.risk.account_view("alice").positions[0]
    assert view.mode == "isolated" and view.liquidation_price < 300_000
    w.mark(view.liquidation_price - 1)
    assert kinds(w)[:1] == ["cancel"]


def test_each_liquidation_reports_only_what_its_own_fills_did_to_the_fund():
    """Two liquidation IOCs in the book at once, and a mark move while they wait: each step's
    fund delta is its own forced fee. It used to be the fund's change between placing and
    finishing the IOC, which counted the other one's fee (and the fund's mark-to-market) too."""
    from cluster.protocol import IndexMark, LiquidationStep, NewOrder, OrderAccepted, Trade
    from nodes.risk.ledger import RiskEngine

    risk = RiskEngine(config.load().symbols, {"a": 5_000 * USD, "b": 5_000 * USD,
                                              "mm": 10_000_000 * USD},
                      insurance_fund=1_000_000 * USD)

    def mark(price):
        risk.handle(IndexMark(symbol=BTC, index=price, mark=price, last=0, seq=0, ts_ns=0), 0)

    def trade(trade_id, taker, taker_oid, side, qty, price):
        return risk.handle(Trade(seq=trade_id, trade_id=trade_id, symbol=BTC, price=price, qty=qty,
                                 taker_side=side, taker_order_id=taker_oid, taker_account=taker,
                                 taker_remaining=0, maker_order_id=1_000 + trade_id,
                                 maker_account="mm", maker_remaining=0), 0)

    mark(300_000)
    trade(1, "a", 901, 1, 1_000, 300_000)  # a and b: long 1 BTC each
    trade(2, "b", 902, 1, 1_000, 300_000)
    iocs = {}
    for lid, account in ((11, "a"), (12, "b")):
        out = risk.handle(LiquidationStep(liquidation_id=lid, kind="reduce", account=account,
                                          symbol=BTC, qty=1_000, price=290_000), 0)
        order = next(m for d, m in out if d == "matching" and type(m) is NewOrder)
        risk.handle(OrderAccepted(seq=3, ref=order.ref, order_id=order.order_id, account=account,
                                  symbol=BTC, side=-1, price=order.price, qty=1_000), 0)
        iocs[account] = order.order_id
    mark(295_000)  # moves nothing the fund holds, but it lands between placing and filling
    results = {}
    for n, account in enumerate(("a", "b")):
        out = trade(10 + n, account, iocs[account], -1, 1_000, 295_000)
        results[account] = next(m for d, m in out if type(m).__name__ == "LiquidationResult")
    for account, result in results.items():
        assert result.fee == ceil_div(result.notional * FORCED_FEE_PPM, 1_000_000) > 0
        assert result.fund_delta == result.fee, (account, result)


def test_a_backstop_takes_only_what_its_margin_carries_after_the_loss_at_mark():
    """The mark gaps well below alice's bankruptcy price and no one bids: the backstop takes her
    long at the bankruptcy price, which is a loss at once against the mark. It used to size its
    take on initial margin alone (5,000 USD at 20x: 3.57 BTC), whose loss at mark (~7,200 USD)
    left the backstop itself bankrupt; it now takes what its margin carries after that loss, and
    the insurance fund takes the rest."""
    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD, "bs": 5_000 * USD},
              insurance=1_000_000 * USD, backstops=["bs"])
    w.risk.accounts["bs"].leverage[BTC] = 20
    w.mark(300_000)
    open_long(w, "alice", 10_000, leverage=20)  # 10 BTC, bankrupt at ~28,015
    w.cancel_all("mm")
    w.mark(260_000)  # a 13% gap: far below the bankruptcy price, and no bids
    assert kinds(w) == ["cancel", "backstop", "insurance"], kinds(w)
    backstop = w.results[1]
    bankruptcy = backstop.counterparties[0][2]
    loss = (bankruptcy - 260_000) * backstop.qty * MULT
    assert 0 < backstop.qty < 5_000 * USD * 20 // (bankruptcy * MULT)  # less than IM alone
    bs = w.risk.accounts["bs"]
    equity = w.risk.equity(bs)
    assert equity == 5_000 * USD - loss > 0
    view = w.risk.account_view("bs").positions[0]
    assert equity > view.maintenance_margin + ceil_div(
        backstop.qty * 260_000 * MULT * FORCED_FEE_PPM, 1_000_000)  # not liquidatable itself
    assert not [r for r in w.results if r.account == "bs"]


def test_defect_14_a_losing_position_is_never_in_the_adl_queue():
    """Issue 17 defect 14: a short with -1,000 USD of uPnL was shown in ADL quantile 5, though ADL
    takes only profitable positions. Losing (and flat-PnL) positions now show quantile 0, and
    the quantiles spread over the profitable ones only."""
    w = World({"long": 100_000 * USD, "loser": 100_000 * USD, "winner": 100_000 * USD,
               "even": 100_000 * USD, "mm": 10_000_000 * USD}, insurance=1_000_000 * USD)
    w.mark(300_000)
    w.place("mm", 1, 1_000, 300_000)
    w.place("loser", -1, 1_000, 300_000)  # short 1 BTC at 30,000
    w.place("mm", 1, 1_000, 310_000 - 50)
    w.mark(310_000)
    w.place("mm", 1, 1_000, 310_000)
    w.place("even", -1, 1_000, 310_000)  # short 1 BTC at 31,000: no PnL at the mark
    w.place("mm", 1, 1_000, 320_000)
    w.mark(320_000)
    w.place("mm", 1, 1_000, 320_000)
    w.place("winner", -1, 1_000, 320_000)
    w.mark(310_000)  # loser -1,000 USD, even 0, winner +1,000 USD
    assert (w.position("loser"), w.position("even"), w.position("winner")) == (-1_000,) * 3
    quantile = {a: w.risk.adl_quantile(a, BTC) for a in ("loser", "even", "winner")}
    assert quantile == {"loser": 0, "even": 0, "winner": 5}, quantile
    view = {p.symbol: p.adl_quantile for p in w.risk.account_view("loser").positions}
    assert view == {BTC: 0}


def test_defect_13_adl_without_a_counterparty_ends_with_the_fund_and_never_loops():
    """Issue 17 defect 13: alice's bankrupt long could go only to ADL (a small fund at its floor,
    no bids, no backstop), and the one short, b's, is at a loss (sold at 27,000, mark 27,900), so
    ADL found no one. The liquidation ended "incomplete", the account was still under water, and
    every tick started it again (20 liquidations in 2 s), the position staying with alice. Now the
    fund takes what ADL could not, at the bankruptcy price, even below its floor, and says so."""
    w = World({"alice": 20_000 * USD, "b": 1_000_000 * USD, "x": 1_000_000 * USD, "mm": 0},
              insurance=1_000 * USD, floor=1_000 * USD)
    for acct in ("alice", "b", "x"):
        w.risk.accounts[acct].leverage[BTC] = 20
    w.mark(270_000)
    w.place("b", -1, 10_000, 270_000)
    w.place("x", 1, 10_000, 270_000)  # b short 10 BTC at 27,000
    for mark in range(280_000, 300_001, 10_000):
        w.mark(mark)
    w.place("x", -1, 10_000, 300_000)
    w.place("alice", 1, 10_000, 300_000)  # x passes its long to alice at 30,000
    assert (w.position("alice"), w.position("b"), w.position("x")) == (10_000, -10_000, 0)
    fund_before = w.risk.insurance_fund
    for _ in range(20):  # two seconds of marks below alice's bankruptcy price (~28,015)
        w.mark(279_000)
    triggers = [e for e in w.audit if e.rule == "liquidation.trigger"
                and e.numbers["account"] == "alice"]
    assert len(triggers) == 1, [e.decision for e in w.audit if e.rule == "liquidation.end"]
    assert kinds(w) == ["cancel", "backstop", "adl", "insurance"], kinds(w)
    adl, last = w.results[-2], w.results[-1]
    assert adl.qty == 0 and adl.reason == "no_taker"
    bankruptcy = last.counterparties[0][2]
    assert last.counterparties == [("insurance", 10_000, bankruptcy)]
    assert 279_000 < bankruptcy < 281_000
    assert (w.position("alice"), w.position("insurance"), w.position("b")) == (0, 10_000, -10_000)
    plan = [e for e in w.audit if e.rule == "liquidation.plan"][-1]
    assert plan.decision == "insurance_below_floor"
    assert plan.numbers["fund_after"] < plan.numbers["floor"]
    assert plan.numbers["takeover_loss_at_mark"] == (bankruptcy - 279_000) * 10_000 * MULT
    assert [e.decision for e in w.audit if e.rule == "liquidation.end"] == ["closed"]
    # the fund's equity carries the loss at the mark: below its floor (here, below zero)
    assert w.risk.fund_equity() < 0 <= w.risk.accounts["alice"].balance
    assert w.risk.insurance_fund != fund_before


def _risk_with_a_long(deposit_usd: int):
    """Risk alone: `a` long 1 BTC at 30,000 (bought from mm), mark 30,000."""
    from cluster.protocol import IndexMark, Trade
    from nodes.risk.ledger import RiskEngine

    risk = RiskEngine(config.load().symbols, {"a": deposit_usd * USD, "mm": 10_000_000 * USD},
                      insurance_fund=1_000_000 * USD)
    risk.handle(IndexMark(symbol=BTC, index=300_000, mark=300_000, last=0, seq=0, ts_ns=0), 0)
    risk.handle(Trade(seq=1, trade_id=1, symbol=BTC, price=300_000, qty=1_000, taker_side=1,
                      taker_order_id=901, taker_account="a", taker_remaining=0,
                      maker_order_id=902, maker_account="mm", maker_remaining=0), 0)
    return risk


def test_a_takeover_past_the_bankruptcy_price_leaves_the_deficit_with_the_fund():
    """Risk carries out a step at the liquidator's price; if that price is past the account's
    bankruptcy (the liquidator decided on an older state), the cross wallet, left with no
    position, would be negative: the fund makes it whole and the step's fund delta says so."""
    from cluster.protocol import LiquidationResult, LiquidationStep

    risk = _risk_with_a_long(5_000)  # bankrupt at about 25,000
    fund = risk.fund_equity()
    wallet = risk.accounts["a"].balance + 300_000 * 1_000 * MULT  # its cash, the long sold at 30,000
    out = risk.handle(LiquidationStep(liquidation_id=7, kind="insurance", account="a", symbol=BTC,
                                      qty=1_000, price=240_000), 0)
    result = next(m for _, m in out if type(m) is LiquidationResult)
    deficit = wallet - 60_000 * 1_000 * MULT  # sold at 24,000: 6,000 USD below the entry
    assert deficit < 0
    assert risk.accounts["a"].balance == 0 and risk.accounts["a"].positions.get(BTC) is None
    gain_at_mark = (300_000 - 240_000) * 1_000 * MULT  # the fund took the long below the mark
    assert result.fund_delta == gain_at_mark + deficit == risk.fund_equity() - fund


def test_a_liquidation_order_is_kept_inside_the_band_or_not_sent():
    """The bankruptcy price of a well-margined long lies far under the mark: its IOC goes at the
    band's lower edge (it still never sells under bankruptcy). A bankruptcy price past the band's
    far edge (a gap) cannot be met inside the band: nothing is sent, and the step says why."""
    from cluster.protocol import LiquidationResult, LiquidationStep, NewOrder

    risk = _risk_with_a_long(8_000)  # 3.75x: bankrupt near 22,000, the band ends at 28,500
    out = risk.handle(LiquidationStep(liquidation_id=8, kind="reduce", account="a", symbol=BTC,
                                      qty=1_000, price=220_000), 0)
    order = next(m for _, m in out if type(m) is NewOrder)
    assert (order.side, order.price, order.tif, order.reduce_only) == (-1, 285_000, "IOC", True)
    out = risk.handle(LiquidationStep(liquidation_id=9, kind="reduce", account="a", symbol=BTC,
                                      qty=1_000, price=316_000), 0)
    assert not [m for _, m in out if type(m) is NewOrder]
    result = next(m for _, m in out if type(m) is LiquidationResult)
    assert (result.qty, result.position_after) == (0, 1_000)
    assert result.reason == "bankruptcy_price_outside_band: 316000 vs 285000..315000"


def test_an_adl_transfer_does_not_undo_a_trade_still_on_its_way_to_risk():
    """Risk tells matching of a position moved outside the book while matching's trades for the
    same account may still be on their way to risk. Found by the liquidation property test (a
    whale's reduce fill and another account's ADL in flight together): risk's absolute quantity
    overwrote the fill in matching, and the two disagreed by its 1,935 lots."""
    from cluster.protocol import LiquidationStep, PlaceOrder, Routed, Trade

    w = World({"a": 30_000 * USD, "b": 30_000 * USD, "c": 30_000 * USD})
    w.mark(300_000)
    w.place("b", 1, 1_000, 300_000)
    w.place("a", -1, 1_000, 300_000, tif="IOC")  # b long 1,000, a short 1,000
    w.mark(310_000)  # b is in profit: first in a's ADL queue
    w.place("b", -1, 500, 310_000)
    # c's IOC buys b's 500 in matching; the trade has not reached risk yet
    w.ref += 1
    to_matching = [m for d, m in w.risk.handle(Routed(ref=w.ref, account="c", body=PlaceOrder(
        symbol=BTC, side=1, qty=500, price=310_000, tif="IOC")), w.now) if d == "matching"]
    in_flight = [ev for m in to_matching for ev in w.matching.handle(m)]
    assert [ev.qty for ev in in_flight if type(ev) is Trade] == [500]
    assert w.matching.position("b", BTC) == 500
    # ADL closes a's short against b's long as risk sees it (1,000)
    step = LiquidationStep(liquidation_id=1, kind="adl", account="a", symbol=BTC, price=310_000,
                           qty=1_000)
    for dest, msg in w.risk.handle(step, w.now):
        if dest == "matching":
            w.matching.handle(msg)
    for ev in in_flight:
        w.risk.handle(ev, w.now)
    assert w.position("b") == -500
    for name in ("a", "b", "c"):
        assert w.matching.position(name, BTC) == w.position(name), name


def test_two_takeovers_at_once_never_take_the_fund_below_its_floor():
    """Found by `make chaos` experiment 8: two liquidations at once each checked the fund's
    takeover against the same balance, and together took it below its floor with no ADL. A
    takeover the liquidator has asked for counts against the fund until risk answers it."""
    w = crossed_at_20x({"alice": 20_000 * USD, "bob": 20_000 * USD, "c": 500_000 * USD, "mm": 0},
                       [("c", -1, 20_000), ("alice", 1, 10_000), ("bob", 1, 10_000)],
                       insurance=3_000 * USD, floor=1_000 * USD)
    assert (w.position("alice"), w.position("bob"), w.position("c")) == (10_000, 10_000, -20_000)
    # a gap under both bankruptcy prices (~28,015): no bids, no backstop. Each takeover alone
    # costs the fund ~1,150 of its 2,000 above the floor; both together would cost ~2,300.
    w.mark(279_000)
    plans = [(e.subject, e.decision) for e in w.audit
             if e.rule.startswith("liquidation") and e.numbers.get("floor") is not None
             and e.decision in ("insurance", "adl")]
    assert sorted(d for _, d in plans) == ["adl", "insurance"], plans
    assert w._fund_equity() >= 1_000 * USD, w._fund_equity()  # its cash + the long it took at mark
    assert (w.position("alice"), w.position("bob")) == (0, 0)


def test_adl_stops_at_the_first_taker_that_covers_it_and_leaves_the_rest_of_the_queue_alone():
    """Mutation survivor (#26: `_adl_takers` break -> return): the queue is walked only until the
    bankrupt quantity is placed; later profitable positions are not touched, and the takers
    found so far are what the step uses."""
    w = crossed_at_20x({"alice": 20_000 * USD, "b": 30_000 * USD, "c": 200_000 * USD,
                        "mm": 10_000_000 * USD},
                       [("b", -1, 10_000), ("alice", 1, 10_000), ("c", -1, 5_000), ("mm", 1, 5_000)],
                       insurance=1_000 * USD, floor=1_000 * USD)
    assert (w.position("b"), w.position("c"), w.position("mm")) == (-10_000, -5_000, 5_000)
    w.mark(279_000)  # alice bankrupt, no bids, a fund too small: ADL
    assert kinds(w)[-1] == "adl", kinds(w)
    dl = [g.event for g in w.gateway if type(g) is Report and type(g.event) is Deleveraged]
    assert [(d.account, d.rank, d.qty) for d in dl] == [("b", 1, -10_000)]  # b covers it all
    assert (w.position("alice"), w.position("b"), w.position("c")) == (0, 0, -5_000)
    assert w.results[-1].counterparties == [("b", 10_000, dl[0].price)]


def test_an_isolated_liquidation_price_on_a_whole_tick_is_shown_exactly():
    """Mutation survivor (#26: `_prices_for` isolated other_mm 0 -> 1): an isolated position's
    liquidation price counts nothing of the account's other positions. With its wallet set so
    that the exact price is a whole tick (from the trigger's definition: wallet + qty x mult x
    (P - entry) = MM(P) + forced fee(P), tier 1), the view shows that tick; one atom more of
    'other' margin would move it a tick up."""
    from cluster.rules.units import PPM

    spec = config.load().symbols[BTC]
    t1 = spec.tiers[0]
    w = World({"alice": 100_000 * USD, "mm": 10_000_000 * USD})
    w.mark(300_000)
    w.risk.accounts["alice"].modes[BTC] = "isolated"
    w.risk.accounts["alice"].leverage[BTC] = 10
    open_long(w, "alice", 100)
    pos = w.risk.accounts["alice"].positions[BTC]
    assert pos.isolated and pos.cost == 100 * MULT * 300_000
    liq = 280_000
    scale = 100 * MULT
    rate = t1.mmr_ppm + spec.forced_fee_ppm
    assert liq * scale * (PPM - rate) % PPM == 0  # a whole-atom wallet puts it on the tick
    wallet = pos.cost - liq * scale * (PPM - rate) // PPM - t1.amount
    pos.iso_cash = wallet - pos.cost
    view = w.risk.account_view("alice")
    (shown,) = view.positions
    assert shown.liquidation_price == liq, (shown.liquidation_price, liq)


def test_a_long_taken_over_by_the_fund_when_its_loss_fits_above_the_floor():
    """Mutation survivor (#26: the backstop's loss estimate `(1 if qty > 0 else -1)` made 2): the
    fund takes a bankrupt long over when its loss at the mark leaves the fund above its floor,
    here with half the loss to spare (a doubled estimate would send it to ADL)."""
    deposits = {"alice": 20_000 * USD, "b": 30_000 * USD, "mm": 0}
    trades = [("b", -1, 10_000), ("alice", 1, 10_000)]
    (pos,) = crossed_at_20x(deposits, trades).risk.account_view("alice").positions
    loss = (pos.bankruptcy_price - 279_000) * 10_000 * MULT  # taken over at bankruptcy, worth the mark
    assert loss > 0
    floor = 10_000 * USD
    w = crossed_at_20x(deposits, trades, insurance=floor + loss * 3 // 2, floor=floor)
    w.mark(279_000)  # a gap below the bankruptcy price, no bids, no backstop accounts
    assert kinds(w) == ["cancel", "backstop", "insurance"], kinds(w)
    assert w.position("insurance") == 10_000 and w.position("b") == -10_000


def test_a_bid_exactly_at_the_bankruptcy_price_is_depth_the_liquidator_uses():
    """Mutation survivor (#26: `_depth_within` bids `>= limit` made `>`): the reduction IOC is
    limited at the bankruptcy price, so a bid exactly there fills it and counts as depth."""
    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD}, insurance=1_000_000 * USD)
    w.mark(300_000)
    open_long(w, "alice", 10_000, leverage=20)
    (pos,) = w.risk.account_view("alice").positions
    w.mark(290_000)
    w.cancel_all("mm")
    w.place("mm", 1, 1_000, pos.bankruptcy_price)  # one bid, exactly at the bankruptcy price
    w.mark(pos.bankruptcy_price + 500)  # under water, the bid inside the band
    reduces = [r for r in w.results if r.kind == "reduce"]
    assert reduces and all(r.notional == r.qty * pos.bankruptcy_price * MULT for r in reduces), \
        kinds(w)
