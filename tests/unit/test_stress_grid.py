"""The portfolio stress grid against RISK-ANALYTICS.md section 1.6: the worked example's table
exactly, and the properties listed there (floor, regime monotonicity for same-sign books, PSD,
explanations that sum to the number)."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.rules import stress as sg
from cluster.rules.stress import Leg, StressError

PARAMS = sg.load_params()
SYMS = ("BTC-PERP", "ETH-PERP", "SOL-PERP")

# RISK-ANALYTICS 1.6, dollars: notionals, then calm / up50 / crisis / decor50, sum|WS|, floor, MM.
TABLE = {
    "A": ((600_000, 300_000, 300_000), (72_000, 36_000, 54_000),
          (150_814, 156_507, 162_000, 126_770), 162_000, 64_800, 162_000, "crisis"),
    "B": ((600_000, -450_000, 300_000), (72_000, -54_000, 54_000),
          (74_652, 73_338, 72_000, 91_074), 180_000, 72_000, 91_074, "decor50"),
}


def dollars(notionals) -> list[Leg]:
    return [Leg(symbol=s, qty=n, mark=1) for s, n in zip(SYMS, notionals)]


@pytest.mark.parametrize("account", sorted(TABLE))
def test_worked_example_table(account):
    notionals, ws, losses, sum_ws, floor, mm, binding = TABLE[account]
    r = sg.stress(PARAMS, dollars(notionals))
    assert tuple(r.weighted_sensitivity[s] for s in SYMS) == ws
    assert [g.name for g in r.regimes] == ["calm", "up50", "crisis", "decor50"]
    assert tuple(g.loss for g in r.regimes) == losses
    assert sum(abs(v) for v in r.weighted_sensitivity.values()) == sum_ws
    assert r.diversification_floor == floor
    assert r.requirement == mm and r.binding == binding == r.binding_regime


def test_worked_example_worst_moves_of_b():
    r = {g.name: g for g in sg.stress(PARAMS, dollars(TABLE["B"][0])).regimes}
    assert tuple(r["calm"].worst_move_bps[s] for s in SYMS) == (-1071, -810, -1562)
    assert tuple(r["decor50"].worst_move_bps[s] for s in SYMS) == (-913, 24, -1174)
    assert tuple(r["crisis"].worst_move_bps[s] for s in SYMS) == (-1200, -1200, -1800)


def test_worked_example_in_atoms_rounds_up_to_the_dollar_table():
    """The venue's units: BTC at 60,000.0 (tick 0.1, lot 0.001: 100 atoms per tick-lot of 1e-6).
    Rounding happens at the atom, so each figure is the table's dollar figure or just below."""
    legs = [Leg(symbol="BTC-PERP", qty=10_000, mark=600_000, mult=100),
            Leg(symbol="ETH-PERP", qty=-22_500, mark=200_000, mult=100),
            Leg(symbol="SOL-PERP", qty=20_000, mark=15_000, mult=1_000)]
    r = sg.stress(PARAMS, legs)
    assert [n // 10**6 for n in r.notional.values()] == [600_000, -450_000, 300_000]
    for g, dollars_ in zip(r.regimes, TABLE["B"][2]):
        assert dollars_ - 1 < g.loss / 10**6 <= dollars_
    assert r.binding == "decor50"


def test_hedge_is_the_regime_sensitive_leg():
    """The seed's "small hedge becomes the trigger": without the ETH short, B is a same-sign
    book, worst at crisis; with it, decorrelation binds and costs +22 % over calm."""
    longs = sg.stress(PARAMS, dollars((600_000, 0, 300_000)))
    hedged = sg.stress(PARAMS, dollars(TABLE["B"][0]))
    assert longs.binding == "crisis" and hedged.binding == "decor50"
    calm = hedged.regimes[0].loss
    assert (hedged.requirement - calm) * 100 // calm == 21  # +22.0 % (91,074 / 74,652)


def test_liquidity_addon_walks_the_book_and_charges_what_it_cannot_take():
    params = PARAMS
    leg = Leg(symbol="BTC-PERP", qty=5, mark=1000, mult=2,
              bids=[(999, 2), (990, 2)], asks=[(1001, 1)])
    a = sg.liquidity_addon(leg, params.scan("BTC-PERP"), 0)
    # 2 lots at 1 tick, 2 at 10, 1 lot unfilled at max(10, scan 12 % of 1000 = 120) ticks; x2 atoms
    assert (a.slippage, a.unfilled_qty, a.addon) == ((2 * 1 + 2 * 10 + 1 * 120) * 2, 1, 284)
    allowance = sg.liquidity_addon(leg, params.scan("BTC-PERP"), 100)  # 1 % of 10,000 atoms
    assert (allowance.allowance, allowance.addon) == (100, 184)
    r = sg.stress(params, [leg])
    assert r.requirement == max(r.worst_regime_loss, r.diversification_floor) + 284


def test_a_level_better_than_the_mark_costs_nothing():
    """After a fall the book may still bid above the new mark: selling a long into it is no
    slippage. Charged as |price - mark| (before), a $1,800 bid gap on 20 BTC read as 36,000."""
    long = Leg(symbol="BTC-PERP", qty=4, mark=1000, mult=2, bids=[(1010, 2), (995, 2)])
    assert sg.liquidity_addon(long, PARAMS.scan("BTC-PERP"), 0).slippage == 2 * 5 * 2
    short = Leg(symbol="ETH-PERP", qty=-4, mark=1000, mult=2, asks=[(990, 3), (1004, 1)])
    assert sg.liquidity_addon(short, PARAMS.scan("ETH-PERP"), 0).slippage == 1 * 4 * 2
    # what the book cannot take is charged at least the scan move, whatever the last level
    thin = Leg(symbol="BTC-PERP", qty=3, mark=1000, mult=1, bids=[(1010, 1)])
    a = sg.liquidity_addon(thin, PARAMS.scan("BTC-PERP"), 0)
    assert (a.unfilled_qty, a.slippage) == (2, 2 * 120)


def test_portfolio_requirement_never_below_the_ladder_unless_the_file_says_so():
    assert sg.portfolio_requirement(PARAMS, 100, 250) == (250, "stress")
    assert sg.portfolio_requirement(PARAMS, 300, 250) == (300, "ladder")
    # Explicit opt-out: a hedged book's stress (B: 91,074) under its legs' summed ladder
    # (say 100,000) is then what the account keeps, which is why the flag must be explicit.
    loose = sg.parse_params({**tomllib.loads(sg.DEFAULT_PARAMS.read_text()),
                             "floor_at_ladder": False})
    assert sg.portfolio_requirement(loose, 100_000, 91_074) == (91_074, "stress")


@pytest.mark.parametrize("change, reason", [
    ({"correlation_bps": {"BTC-PERP/ETH-PERP": 9900, "BTC-PERP/SOL-PERP": 9900,
                          "ETH-PERP/SOL-PERP": -9900}}, "not_psd"),
    ({"correlation_bps": {"BTC-PERP/ETH-PERP": 10001}}, "bad_params"),
    ({"correlation_bps": {"BTC-PERP/ETH-PERP": 1, "ETH-PERP/BTC-PERP": 1}}, "bad_params"),
    ({"scan_bps": {"BTC-PERP": 0}}, "bad_params"),
    ({"regimes": [{"name": "x", "toward": "Q", "weight_bps": 1}]}, "bad_params"),
    ({"unknown_key": 1}, "bad_params"),
])
def test_bad_parameter_files_are_refused_with_a_reason(change, reason):
    data = {**tomllib.loads(sg.DEFAULT_PARAMS.read_text()), **change}
    with pytest.raises(StressError) as exc:
        sg.parse_params(data)
    assert exc.value.reason == reason


# ------------------------------------------------------------------ properties

notional = st.integers(-10**12, 10**12)
corr = st.integers(-10_000, 10_000)


@st.composite
def psd_params(draw):
    """Random calm matrices that are PSD by construction: an EWMA-like Gram matrix of unit
    vectors (rho = cosines), in bps, kept only when the exact check agrees."""
    vecs = [[draw(st.integers(-20, 20)) for _ in range(3)] for _ in SYMS]
    for v in vecs:
        if not any(v):
            v[0] = 1
    from math import isqrt

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) * 10_000 // max(1, isqrt(sum(x * x for x in a) * sum(y * y for y in b)))

    corrs = {f"{SYMS[i]}/{SYMS[j]}": cos(vecs[i], vecs[j]) for i in range(3) for j in range(i + 1, 3)}
    data = {**tomllib.loads(sg.DEFAULT_PARAMS.read_text()), "correlation_bps": corrs,
            "scan_bps": {s: draw(st.integers(1, 10_000)) for s in SYMS}}
    try:
        return sg.parse_params(data)
    except StressError:  # truncation to bps can break PSD at the margin: draw again
        from hypothesis import reject
        reject()


@settings(max_examples=150, deadline=None)
@given(psd_params(), st.lists(notional, min_size=3, max_size=3))
def test_floor_psd_and_explanations_sum(params, ns):
    r = sg.stress(params, dollars(ns))
    sum_ws = sum(abs(v) for v in r.weighted_sensitivity.values())
    # (1) hedges never get more than c_max credit
    assert r.requirement >= sum_ws * (10_000 - params.max_diversification_bps) // 10_000
    for g in r.regimes:
        # (3) PSD: the quadratic form is never negative, so the clamp at 0 never fires
        ws = r.weighted_sensitivity
        raw = sum(params.rho_e8(params.regime(g.name), s, t) * ws[s] * ws[t] for s in ws for t in ws)
        assert raw >= 0 and g.q_e8 == raw
        # (5) the explanation sums to the number
        assert sum(g.contribution.values()) == g.loss
        # the regime's loss is at most every leg adverse at once (rho = 1, same signs)
        assert g.loss <= sum_ws
    assert r.requirement == max(r.worst_regime_loss, r.diversification_floor)


@settings(max_examples=150, deadline=None)
@given(psd_params(), st.lists(st.integers(0, 10**12), min_size=3, max_size=3), st.booleans())
def test_same_sign_books_are_worst_at_crisis(params, ns, short):
    """(2) regime monotonicity: for a same-sign book, raising correlations toward one never
    lowers the loss: calm <= up50 <= crisis."""
    r = sg.stress(params, dollars([-n if short else n for n in ns]))
    loss = {g.name: g.loss for g in r.regimes}
    assert loss["calm"] <= loss["up50"] <= loss["crisis"]
    assert loss["crisis"] == sum(abs(v) for v in r.weighted_sensitivity.values())


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**18))
def test_ceil_isqrt(n):
    r = sg.ceil_isqrt(n)
    assert (r - 1) ** 2 < n <= r * r or n == r == 0
