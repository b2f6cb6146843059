"""The `portfolio` margin mode (#24): the account-level switch and its refusals, the requirement
risk applies, the liquidator's trigger on the same requirement (RISK-ANALYTICS 1.6's hedged
BTC/ETH account, which binds at decor50), hash / snapshot / replay with the flag, and the
explanation of a regime shift that moves a portfolio account's requirement."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.rules.ladder import maintenance_margin
from cluster.rules.margin import fee_due
from cluster.protocol import (
    Ack, AccountRisk, Error, GetAccount, IndexMark, PlaceOrder, Regime, Reply, Routed,
    SetAccountMarginMode, SetLeverage, SetMarginMode, SetPortfolioAccess, Withdraw,
)
from cluster.rules import stress as sg
from cluster.rules.units import ceil_div
from nodes.liquidator.monitor import MaintenanceMonitor
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO, Pipeline

USD = 1_000_000
BTC, ETH = "BTC-PERP", "ETH-PERP"
P_BTC, P_ETH = 300_000, 200_000  # 30,000.0 and 2,000.00 in ticks; 100 atoms per tick-lot each
LONG_BTC, SHORT_ETH = 20_000, -22_500  # 20 BTC (600k) long, 225 ETH (450k) short
PARAMS = sg.load_params()

# The hand numbers (RISK-ANALYTICS 1.6 and the README's example, in atoms):
STRESS = 69_247_382_623  # decor50: K = ceil(sqrt(WS' rho WS)) with WS = 72,000 / -54,000 USD
STRESS_IM = 86_559_228_279  # ceil(STRESS x 12,500 / 10,000)
LADDER_MM = 4_700 * USD + 4_135 * USD  # BTC 1 % of 600k - 1,300; ETH 1 % of 450k - 365
LADDER_IM = 30_000 * USD + 22_500 * USD  # each leg at 20x
FORCED_FEE = 1_200 * USD + 1_350 * USD  # 0.2 % of 600k, 0.3 % of 450k
ADDON = 200 * USD + 225 * USD  # 20 BTC one $10 level away, 225 ETH one $1 level away


def body(replies, cls):
    for r in replies:
        b = r.body if type(r) is Reply else getattr(r, "event", None)
        if type(b) is cls:
            return b
    raise AssertionError(f"no {cls.__name__} in {replies}")


# ------------------------------------------------------------------ the rule


def test_the_hedged_example_binds_at_decor50_for_both_requirements():
    legs = [sg.Leg(symbol=BTC, qty=LONG_BTC, mark=P_BTC, mult=100),
            sg.Leg(symbol=ETH, qty=SHORT_ETH, mark=P_ETH, mult=100)]
    pm = sg.portfolio_margin(PARAMS, legs, LADDER_MM, LADDER_IM)
    assert (pm.maintenance, pm.maintenance_source) == (STRESS, "stress")
    assert (pm.initial, pm.initial_source) == (STRESS_IM, "stress")
    assert STRESS_IM == ceil_div(STRESS * 12_500, 10_000)
    assert pm.stress.binding_regime == "decor50"
    assert sg.binding_move(pm.stress) == {BTC: -850, ETH: 406}
    # a ladder above the grid is the floor of both, unless the file says otherwise
    assert sg.portfolio_margin(PARAMS, legs, STRESS + 1, STRESS_IM + 1).maintenance == STRESS + 1
    assert sg.portfolio_initial(PARAMS, STRESS_IM + 1, STRESS) == (STRESS_IM + 1, "ladder")
    loose = msgspec.structs.replace(PARAMS, floor_at_ladder=False)
    assert sg.portfolio_initial(loose, STRESS_IM + 1, STRESS) == (STRESS_IM, "stress")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from((BTC, ETH, "SOL-PERP")), st.integers(-10**6, 10**6)
                          .filter(bool), st.integers(1, 10**6)), min_size=1, max_size=4),
       st.integers(0, 10**12), st.integers(0, 10**12))
def test_the_unexplained_fast_path_gives_the_same_requirements(positions, ladder_mm, ladder_im):
    """Risk checks margin without the explanation (8x faster); the numbers must be the same."""
    legs = [sg.Leg(symbol=s, qty=q, mark=m, mult=100, bids=[(m - 1, abs(q) // 2)], asks=[])
            for s, q, m in positions]
    full = sg.portfolio_margin(PARAMS, legs, ladder_mm, ladder_im)
    fast = sg.portfolio_margin(PARAMS, legs, ladder_mm, ladder_im, explain=False)
    assert (fast.maintenance, fast.maintenance_source, fast.initial, fast.initial_source) == (
        full.maintenance, full.maintenance_source, full.initial, full.initial_source)
    assert fast.stress.binding == full.stress.binding
    assert [g.loss for g in fast.stress.regimes] == [g.loss for g in full.stress.regimes]


def test_an_initial_factor_below_one_is_refused():
    with pytest.raises(sg.StressError) as err:
        sg.parse_params({**msgspec.to_builtins(PARAMS), "im_factor_bps": 9_999})
    assert err.value.reason == "bad_params" and "9999" in str(err.value)


# ------------------------------------------------------------------ risk


def allow(pipe: Pipeline, *names: str, admin: str = "mm") -> None:
    """An admin allows the portfolio mode (a Pipeline's Routed carries no key table: risk's
    admin-scope check is tested with one below)."""
    for name in names:
        ack = body(pipe.request(admin, SetPortfolioAccess(account=name, enabled=True)), Ack)
        assert ack.action == "portfolio_access_changed" and ack.detail["enabled"] == 1


def hedged(deposit_usd: int, name: str = "alice") -> Pipeline:
    """`name` long 20 BTC and short 225 ETH at the marks, taker on both (fees 300 + 270)."""
    pipe = Pipeline({name: deposit_usd * USD, "mm": 10_000_000 * USD, "carol": 100_000 * USD})
    pipe.mark(BTC, P_BTC)
    pipe.mark(ETH, P_ETH)
    for symbol, qty, price in ((BTC, LONG_BTC, P_BTC), (ETH, SHORT_ETH, P_ETH)):
        side = 1 if qty > 0 else -1
        pipe.request("mm", PlaceOrder(symbol=symbol, side=-side, qty=abs(qty), price=price))
        pipe.request(name, PlaceOrder(symbol=symbol, side=side, qty=abs(qty), price=price))
    pos = pipe.risk.accounts[name].positions
    assert (pos[BTC].qty, pos[ETH].qty) == (LONG_BTC, SHORT_ETH)
    return pipe


def test_switch_to_portfolio_applies_the_grid_to_the_account():
    pipe = hedged(100_000)
    acct = pipe.risk.accounts["alice"]
    equity = pipe.risk.equity(acct)
    assert equity == 100_000 * USD - 300 * USD - 270 * USD
    cross = body(pipe.request("alice", GetAccount()), type(pipe.risk.account_view("alice")))
    assert (cross.margin_mode, cross.maintenance_margin, cross.position_margin) == (
        "cross", LADDER_MM, LADDER_IM)
    allow(pipe, "alice")
    ack = body(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Ack)
    assert ack.action == "account_margin_mode_changed"
    d = ack.detail
    assert (d["from"], d["to"], d["initial_margin"], d["maintenance_margin"]) == (
        "cross", "portfolio", STRESS_IM, STRESS)
    assert (d["binding_regime"], d["worst_move_bps.BTC-PERP"], d["worst_move_bps.ETH-PERP"]) == (
        "decor50", -850, 406)
    assert d["available"] == equity - STRESS_IM
    view = pipe.risk.account_view("alice")
    assert (view.margin_mode, view.maintenance_margin, view.position_margin, view.available) == (
        "portfolio", STRESS, STRESS_IM, equity - STRESS_IM)
    assert view.portfolio["binding_regime"] == "decor50"
    risk_msgs = [m for m in pipe.log if type(m) is AccountRisk and m.account == "alice"]
    assert risk_msgs[-1].portfolio is True  # the liquidator is told with the switch
    # what the account can take out now ends at the portfolio IM, not the ladder's
    refused = body(pipe.request("alice", Withdraw(account="alice", amount=equity - STRESS_IM + 1)),
                   Error)
    assert (refused.reason, refused.detail["available"]) == (
        "withdrawal_exceeds_available", equity - STRESS_IM)
    # and back to cross: the summed ladder again
    assert type(body(pipe.request("alice", SetAccountMarginMode(mode="cross")), Ack)) is Ack
    assert pipe.risk.account_view("alice").position_margin == LADDER_IM


def test_switch_refused_while_it_would_leave_the_account_under_its_initial_requirement():
    pipe = hedged(80_000)  # equity 79,430 < 86,559.23 (portfolio IM); > 52,500 (ladder IM)
    allow(pipe, "alice")
    before = pipe.risk.state_hash()
    err = body(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Error)
    assert err.reason == "margin_mode_change_insufficient_margin"
    equity = 79_430 * USD
    d = err.detail
    assert (d["equity"], d["position_margin"], d["available"], d["required"]) == (
        equity, STRESS_IM, equity - STRESS_IM, STRESS_IM - equity)
    assert (d["position_margin_now"], d["initial_source"], d["binding_regime"]) == (
        LADDER_IM, "stress", "decor50")
    assert pipe.risk.accounts["alice"].portfolio is False
    assert pipe.risk.state_hash() == before  # a refusal changes nothing
    audit = [e for e in pipe.audit if e.rule == "risk.margin_mode_change_insufficient_margin"]
    assert audit and audit[-1].numbers["required"] == STRESS_IM - equity


def test_isolated_margin_and_portfolio_mode_exclude_each_other():
    pipe = Pipeline({"bob": 100_000 * USD, "mm": 0})
    allow(pipe, "bob")
    assert type(body(pipe.request("bob", SetMarginMode(symbol=ETH, mode="isolated")), Ack)) is Ack
    err = body(pipe.request("bob", SetAccountMarginMode(mode="portfolio")), Error)
    assert (err.reason, err.detail["symbols"], err.detail["count"]) == (
        "portfolio_with_isolated_symbols", ETH, 1)
    assert pipe.risk.accounts["bob"].portfolio is False
    assert type(body(pipe.request("bob", SetMarginMode(symbol=ETH, mode="cross")), Ack)) is Ack
    assert type(body(pipe.request("bob", SetAccountMarginMode(mode="portfolio")), Ack)) is Ack
    err = body(pipe.request("bob", SetMarginMode(symbol=BTC, mode="isolated")), Error)
    assert (err.reason, err.detail["margin_mode"]) == ("isolated_in_portfolio_mode", "portfolio")
    assert pipe.risk.accounts["bob"].mode(BTC) == "cross"


def _history(risk: RiskEngine) -> None:
    risk.handle(IndexMark(symbol=BTC, index=P_BTC, mark=P_BTC, last=0, seq=1, ts_ns=1), 0)
    risk.handle(Routed(ref=1, account="a", body=SetPortfolioAccess(account="a", enabled=True)), 0)
    risk.handle(Routed(ref=1, account="a", body=SetAccountMarginMode(mode="portfolio")), 0)
    risk.handle(Routed(ref=2, account="a", body=PlaceOrder(symbol=BTC, side=1, qty=10,
                                                           price=P_BTC)), 0)


def test_the_flag_is_in_the_hash_the_snapshot_and_a_replay():
    one = RiskEngine(TOPO.symbols, {"a": 100_000 * USD})
    _history(one)
    assert one.accounts["a"].portfolio is True
    replayed = RiskEngine(TOPO.symbols, {"a": 100_000 * USD})
    _history(replayed)
    assert replayed.state_hash() == one.state_hash()
    restored = RiskEngine(TOPO.symbols, {})
    restored.restore(one.snapshot())
    assert restored.accounts["a"].portfolio is True
    assert restored.state_hash() == one.state_hash()
    one.accounts["a"].portfolio = False
    assert one.state_hash() != replayed.state_hash()


def test_a_regime_shift_is_explained_only_where_it_moves_the_requirement():
    """The IM buffer of a high-volatility regime raises the summed ladder IM: carol (one long at
    2x, where the ladder IM binds) gets a record; alice (hedged, where the grid binds) none."""
    pipe = hedged(100_000)
    pipe.request("carol", SetLeverage(symbol=BTC, leverage=2))
    pipe.request("mm", PlaceOrder(symbol=BTC, side=-1, qty=1_000, price=P_BTC))
    pipe.request("carol", PlaceOrder(symbol=BTC, side=1, qty=1_000, price=P_BTC))
    allow(pipe, "alice", "carol")
    for name in ("alice", "carol"):
        assert type(body(pipe.request(name, SetAccountMarginMode(mode="portfolio")), Ack)) is Ack
    carol = pipe.risk.accounts["carol"]
    assert pipe.risk.portfolio_margin(carol).initial_source == "ladder"
    pipe.audit.clear()
    pipe.send(Regime(symbol=BTC, regime="high_volatility", realized_vol_ppm=50_000,
                     threshold_ppm=40_000))
    records = [e for e in pipe.audit if e.rule == "risk.portfolio_requirement"]
    assert [e.subject for e in records] == ["carol"]
    n = records[0].numbers
    assert (n["from_regime"], n["regime"]) == ("normal", "high_volatility")
    assert (n["from_initial_margin"], n["initial_margin"]) == (15_000 * USD, 22_500 * USD)
    assert (n["initial_source"], n["maintenance_margin"], n["binding_regime"]) == (
        "ladder", 3_600 * USD, "calm")  # one leg: every regime loses its full scan, 12 %
    assert n["worst_move_bps.BTC-PERP"] == -1200
    # the same regime again is no shift, and moves nothing
    pipe.audit.clear()
    pipe.send(Regime(symbol=BTC, regime="high_volatility", changed=False))
    assert not [e for e in pipe.audit if e.rule == "risk.portfolio_requirement"]


# ------------------------------------------------------------------ the liquidator's trigger


class Book:
    def __init__(self, bids: dict[int, int], asks: dict[int, int]) -> None:
        self.bids, self.asks = bids, asks


def monitor_with(balance: int, portfolio: bool = True):
    books = {BTC: Book({P_BTC - 100: 20_000}, {}), ETH: Book({}, {P_ETH + 100: 22_500})}
    m = MaintenanceMonitor(TOPO.symbols, PARAMS, books=books)
    m.on_mark(BTC, P_BTC)
    m.on_mark(ETH, P_ETH)
    m.on_account(AccountRisk(account="alice", balance=balance, positions={
        BTC: (LONG_BTC, LONG_BTC * P_BTC * 100), ETH: (SHORT_ETH, SHORT_ETH * P_ETH * 100)},
        portfolio=portfolio))
    return m, books


def test_the_trigger_is_the_portfolio_requirement_to_the_atom():
    value = LONG_BTC * P_BTC * 100 + SHORT_ETH * P_ETH * 100  # 150k net, at mark
    assert FORCED_FEE == fee_due(600_000 * USD, TOPO.symbols[BTC].forced_fee_ppm) + \
        fee_due(450_000 * USD, TOPO.symbols[ETH].forced_fee_ppm)
    assert LADDER_MM == maintenance_margin(TOPO.symbols[BTC].tiers, 600_000 * USD) + \
        maintenance_margin(TOPO.symbols[ETH].tiers, -450_000 * USD)
    trigger = STRESS + ADDON + FORCED_FEE  # 72,222.382623 USD of equity
    m, _ = monitor_with(trigger - value + 1)
    assert m.check(0) == [] and m.assess("alice") == (trigger + 1, STRESS + ADDON, FORCED_FEE)
    m, _ = monitor_with(trigger - value)
    (alert,) = m.check(0)
    assert (alert.account, alert.equity, alert.maintenance_margin, alert.forced_fee) == (
        "alice", trigger, STRESS + ADDON, FORCED_FEE)
    # the same account in cross margin is far from its trigger (the summed ladder)
    m, _ = monitor_with(trigger - value, portfolio=False)
    assert m.check(0) == [] and m.assess("alice")[1] == LADDER_MM
    m, _ = monitor_with(LADDER_MM + FORCED_FEE - value, portfolio=False)
    assert len(m.check(0)) == 1


def test_a_thinner_book_raises_the_requirement_without_a_mark_move():
    m, books = monitor_with(STRESS + ADDON + FORCED_FEE + 1_000 * USD
                            - (LONG_BTC * P_BTC + SHORT_ETH * P_ETH) * 100)
    assert m.check(0) == []
    books[ETH].asks = {P_ETH + 100: 12_500, P_ETH + 2_000: 10_000}  # 100 ETH now $20 away
    m.on_book(ETH)
    (alert,) = m.check(1)
    assert alert.maintenance_margin == STRESS + 200 * USD + 125 * USD + 2_000 * USD


# ------------------------------------------------------------------ the whole path


def test_a_decorrelated_fall_liquidates_the_portfolio_twin_exactly_at_its_requirement():
    """Risk, matching and the liquidator wired as in the cluster: alice (portfolio) and bob
    (cross) hold the same hedge; BTC falls $50 a step while ETH stands still (the move the
    hedge does not cover). Alice is liquidated at the first step where her equity is at or
    below the grid's requirement (with the mirrored book's add-on) + the forced fee, not one
    step earlier; bob, on the summed ladder, is not liquidated at all."""
    from tests.unit.liquidation_world import World

    w = World({"alice": 100_000 * USD, "bob": 100_000 * USD, "mm": 10_000_000 * USD},
              insurance=1_000_000 * USD)
    w.mark(P_BTC, BTC)
    w.mark(P_ETH, ETH)
    for name in ("alice", "bob"):
        w.place("mm", -1, LONG_BTC, P_BTC, BTC)
        w.place(name, 1, LONG_BTC, P_BTC, BTC)
        w.place("mm", 1, -SHORT_ETH, P_ETH, ETH)
        w.place(name, -1, -SHORT_ETH, P_ETH, ETH)
    for request in (SetPortfolioAccess(account="alice", enabled=True),
                    SetAccountMarginMode(mode="portfolio")):
        w.ref += 1
        w._to_risk(Routed(ref=w.ref, account="alice", body=request))
    assert w.risk.accounts["alice"].portfolio and not w.risk.accounts["bob"].portfolio
    w.place("mm", 1, 2 * LONG_BTC, P_BTC - 100, BTC)  # the books both would close into
    w.place("mm", -1, -2 * SHORT_ETH, P_ETH + 100, ETH)

    def due(mark: int) -> tuple[bool, dict]:
        """The rule, from the rules package and the risk ledger's equity (not the monitor)."""
        acct = w.risk.accounts["alice"]
        book = {BTC: w.liq.books[BTC], ETH: w.liq.books[ETH]}
        legs = [sg.Leg(symbol=s, qty=p.qty, mark=w.risk.marks[s], mult=100,
                       bids=sorted(book[s].bids.items(), reverse=True),
                       asks=sorted(book[s].asks.items())) for s, p in sorted(acct.positions.items())]
        ladder = sum(maintenance_margin(TOPO.symbols[s].tiers, w.risk._position_value(s, p))
                     for s, p in acct.positions.items())
        fee = sum(fee_due(w.risk._position_value(s, p), TOPO.symbols[s].forced_fee_ppm)
                  for s, p in acct.positions.items())
        pm = sg.portfolio_margin(PARAMS, legs, ladder, 0)
        equity = w.risk.equity(acct)
        return equity <= pm.maintenance + fee, {"equity": equity, "mm": pm.maintenance, "fee": fee}

    mark, expected = P_BTC, None
    for _ in range(60):
        if w.liq.active or any(e.rule == "liquidation.trigger" for e in w.audit):
            break
        mark -= 500
        w.cancel_all("mm", BTC)
        w.place("mm", 1, 2 * LONG_BTC, mark - 100, BTC)
        # the state the liquidator will judge: book requoted, risk at the new mark
        w._to_risk(IndexMark(symbol=BTC, index=mark, mark=mark, last=0, seq=0, ts_ns=w.now))
        now_due, numbers = due(mark)
        w.mark(mark, BTC)
        triggered = [e for e in w.audit if e.rule == "liquidation.trigger"]
        assert bool(triggered) == now_due, (mark, numbers, triggered)
        if now_due:
            expected = numbers
    assert expected is not None, "BTC fell 60 steps and alice was never due"
    (trigger,) = [e for e in w.audit if e.rule == "liquidation.trigger"]
    n = trigger.numbers
    assert n["account"] == "alice" and n["portfolio"] == 1
    assert (n["equity"], n["maintenance_margin"], n["forced_fee"]) == (
        expected["equity"], expected["mm"], expected["fee"])
    assert n["binding_regime"] == "decor50" and n["maintenance_source"] == "stress"
    assert mark < P_BTC - 500  # not at the first step: the hedge held for a while
    assert not [e for e in w.audit if e.node == "liquidator" and e.numbers.get("account") == "bob"]
    assert w.problems == []
    # the reduction is sized on the grid's requirement of what would be left (not the summed
    # ladder's, which would close 8x as much here): the smallest chunk after which the equity,
    # less the chunk's forced fee and its slippage to the bid, is above it
    (plan,) = [e.numbers for e in w.audit if e.rule == "liquidation.plan"]
    spec = TOPO.symbols[BTC]
    per_lot, slip = mark * 100, 100 * 100  # the bid is 100 ticks under the mark

    def healthy(x: int) -> bool:
        left = LONG_BTC - x
        legs = [sg.Leg(symbol=BTC, qty=left, mark=mark, mult=100, bids=[(mark - 100, 2 * LONG_BTC)]),
                sg.Leg(symbol=ETH, qty=SHORT_ETH, mark=P_ETH, mult=100,
                       asks=[(P_ETH + 100, -2 * SHORT_ETH)])]
        values = (left * per_lot, SHORT_ETH * P_ETH * 100)
        ladder = maintenance_margin(spec.tiers, values[0]) + maintenance_margin(
            TOPO.symbols[ETH].tiers, values[1])
        fee = fee_due(values[0], spec.forced_fee_ppm) + fee_due(
            values[1], TOPO.symbols[ETH].forced_fee_ppm)
        need = sg.portfolio_margin(PARAMS, legs, ladder, 0).maintenance + fee
        return expected["equity"] - x * per_lot * spec.forced_fee_ppm // 1_000_000 - x * slip > need

    smallest = next(x for x in range(1, LONG_BTC) if healthy(x))
    assert plan["needed"] == plan["chunk"] == smallest
    assert [e.numbers["qty"] for e in w.audit if e.rule == "liquidation.reduce"] == [smallest]
    assert [e.decision for e in w.audit if e.rule == "liquidation.end"] == ["restored"]
    assert due(mark)[0] is False and 0 < w.position("alice") < LONG_BTC
    README_FIGURES["fall_to"] = f"liquidates it at {mark // 10:,}"
    README_FIGURES["chunk"] = f"(on the hedged example: {Decimal(smallest) / 1000} BTC"


README_FIGURES = {
    "requirements": f"asks {Decimal(STRESS) / USD:,.2f} maintenance and {Decimal(STRESS_IM) / USD:,.2f}"
                    f" initial in\n  portfolio mode, against {LADDER_MM // USD:,} and {LADDER_IM // USD:,}",
}


def test_the_readme_quotes_these_figures():
    """The README's portfolio-mode paragraph, against the numbers the tests above derive."""
    from pathlib import Path

    if "fall_to" not in README_FIGURES:
        test_a_decorrelated_fall_liquidates_the_portfolio_twin_exactly_at_its_requirement()
    text = (Path(__file__).parents[2] / "README.md").read_text()
    for name, figure in README_FIGURES.items():
        assert figure in text, (name, figure)
