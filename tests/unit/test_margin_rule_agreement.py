"""One margin rule (cluster/rules/margin.py) for risk and the liquidator. For random accounts (cross
and isolated positions in both symbols, any entry and mark, the portfolio mode):
- the liquidator's monitor, reading only what risk sends it (AccountRisk) and the marks, values
  every margin balance and its maintenance as risk values them from its own state;
- it triggers on exactly the side of risk's liquidation price where the account is past it: one
  tick beyond the price risk shows the trader, the monitor liquidates; one tick short, it does not.
The second is two independent computations (risk's closed form over Fractions, the monitor's
integer valuation at a mark) meeting at the same rule; and the rounding helpers round against the
account."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cluster.protocol import IndexMark
from cluster.rules.ladder import maintenance_margin
from cluster.rules.margin import fee_due, initial_margin, triggered
from cluster.rules.units import PPM
from nodes.liquidator.monitor import MaintenanceMonitor
from nodes.risk.accounts import Position
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

USD = 1_000_000
SYMBOLS = sorted(TOPO.symbols)

position = st.fixed_dictionaries({
    "lots": st.one_of(st.integers(1, 5_000), st.integers(5_000, 3_000_000)),
    "side": st.sampled_from((1, -1)),
    "entry_ppm": st.integers(-200_000, 200_000),  # entry off the symbol's initial price
    "isolated": st.booleans(),
    "iso_cash": st.integers(0, 2_000_000 * USD)})
account = st.fixed_dictionaries({
    "balance": st.integers(-1_000 * USD, 5_000_000 * USD),
    "positions": st.dictionaries(st.sampled_from(SYMBOLS), position, min_size=1),
    "marks_ppm": st.fixed_dictionaries({s: st.integers(-300_000, 300_000) for s in SYMBOLS}),
    "portfolio": st.booleans()})


def build(a: dict) -> tuple[RiskEngine, MaintenanceMonitor]:
    risk = RiskEngine(TOPO.symbols, {"x": a["balance"]}, max_mark_age_ns=10**18)
    for seq, s in enumerate(SYMBOLS, 1):
        mark = TOPO.symbols[s].initial_price * (PPM + a["marks_ppm"][s]) // PPM
        risk.handle(IndexMark(symbol=s, index=mark, mark=mark, last=mark, seq=seq, ts_ns=1), 0)
    acct = risk.accounts["x"]
    for s, p in a["positions"].items():
        spec = TOPO.symbols[s]
        entry = spec.initial_price * (PPM + p["entry_ppm"]) // PPM
        pos = acct.positions[s] = Position("isolated" if p["isolated"] else "cross")
        acct.modes[s] = pos.mode
        pos.qty = p["side"] * p["lots"]
        pos.cost = pos.qty * entry * spec.atoms_per_tick_lot
        pos.iso_cash = p["iso_cash"] if p["isolated"] else 0
    acct.portfolio = a["portfolio"] and not any(p.isolated for p in acct.positions.values())
    monitor = MaintenanceMonitor(TOPO.symbols)  # no books: no liquidity add-on (risk has none)
    monitor.on_account(risk.account_risk("x"))
    for s in SYMBOLS:
        monitor.on_mark(s, risk.marks[s])
    return risk, monitor


@settings(max_examples=150, deadline=None)
@given(account)
def test_the_monitor_values_accounts_as_risk_does(a):
    risk, monitor = build(a)
    acct = risk.accounts["x"]
    cross = [s for s, p in acct.positions.items() if not p.isolated]
    if cross:
        equity, mm, fee = monitor.assess("x")
        assert equity == risk.cross_equity(acct)
        if len(cross) == len(acct.positions):  # risk's maintenance counts every position
            assert mm == risk.maintenance_margin(acct)
        assert fee == sum(fee_due(risk._position_value(s, acct.positions[s]),
                                  TOPO.symbols[s].forced_fee_ppm) for s in cross)
    for s, pos in acct.positions.items():
        if pos.isolated:
            equity, mm, _ = monitor.assess_isolated("x", s)
            assert equity == risk.isolated_equity(s, pos)
            assert mm == maintenance_margin(TOPO.symbols[s].tiers, risk._position_value(s, pos))


@settings(max_examples=150, deadline=None)
@given(account)
def test_the_monitor_triggers_one_tick_past_risks_liquidation_price_and_not_before(a):
    a = {**a, "portfolio": False}  # risk's liquidation price is the ladder's (no grid)
    risk, monitor = build(a)
    acct = risk.accounts["x"]
    prices = {s: risk._prices_for(acct, s, pos)[0] for s, pos in acct.positions.items()}
    assume(any(liq >= 2 for liq in prices.values()))  # 0: no price liquidates it
    for s, pos in sorted(acct.positions.items()):
        liq, side = prices[s], 1 if pos.qty > 0 else -1
        if liq < 2:
            continue
        key = f"x:{s}" if pos.isolated else "x"
        # a long's price rounds up and a short's down: one tick further is past the exact price
        for mark, past in ((liq - side, True), (liq + side, False)):
            monitor.on_mark(s, mark)
            monitor.check(0)
            assert (key in monitor.below) is past, (s, pos.qty, liq, mark)
        monitor.on_mark(s, risk.marks[s])
        monitor.check(0)


@given(st.integers(-10**15, 10**15), st.integers(-1_000, 10_000))
def test_a_fee_rounds_against_the_account(notional, rate_ppm):
    exact = Fraction(abs(notional) * rate_ppm, PPM)
    fee = fee_due(notional, rate_ppm)
    assert exact <= fee < exact + 1  # a charge up; a rebate (rate < 0) toward zero


@given(st.integers(-10**15, 10**15), st.integers(1, 125), st.integers(PPM, 3 * PPM))
def test_initial_margin_rounds_up(notional, leverage, buffer_ppm):
    exact = Fraction(abs(notional) * buffer_ppm, leverage * PPM)
    assert exact <= initial_margin(notional, leverage, buffer_ppm) < exact + 1


def test_the_trigger_is_at_or_below_the_requirement():
    assert triggered(100, 90, 10) and triggered(99, 90, 10) and not triggered(101, 90, 10)


@settings(max_examples=150, deadline=None)
@given(account)
def test_the_cascade_simulators_trigger_price_is_risks_liquidation_price(a):
    """cluster/cascade.py's R-map places each position's liquidation where the venue's trigger
    is: the price risk shows the trader (rounded the same way), for cross accounts with several
    positions too (whose trigger counts the others' forced fees, not their maintenance alone:
    the simulator's old count put a BTC+ETH account's threshold further from the mark)."""
    from cluster import cascade as cz
    from cluster.rules.prices import round_price

    risk, _ = build({**a, "portfolio": False})
    acct = risk.accounts["x"]
    snap = cz.Snapshot(symbols={s: cz.SymbolSnap(
        mult=spec.atoms_per_tick_lot, mark=risk.marks[s],
        tiers=[(t.floor, t.max_leverage, t.mmr_ppm) for t in spec.tiers],
        ladder_cap=spec.tiers[-1].cap, forced_fee_ppm=spec.forced_fee_ppm)
        for s, spec in TOPO.symbols.items()},
        accounts={"x": cz.AccountSnap(
            balance=acct.balance, positions={s: (p.qty, p.cost) for s, p in acct.positions.items()},
            isolated={s: p.iso_cash for s, p in acct.positions.items() if p.isolated})},
        insurance_fund=0)
    specs = {s: cz.spec_of(s, sym) for s, sym in snap.symbols.items()}
    for s, pos in acct.positions.items():
        lp = cz.trigger_price(snap, specs, snap.accounts["x"], s)
        shown = round_price(lp, 1 if pos.qty > 0 else -1) if lp is not None else 0
        assert shown == risk._prices_for(acct, s, pos)[0], (s, pos.qty, pos.isolated)
