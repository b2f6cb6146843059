"""The cascade simulator's `venue` close policy: nodes/liquidator/engine.py decides every step
(cancel, reduction chunks, backstop, fund, ADL) and the simulator carries them out."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import cascade as cz
from cluster.cascade import CascadeParams, linear_band
from cluster.rules.stress import load_params
from tests.unit.test_cascade import two_symbol_snapshot

STRESS = load_params()
BTC = "BTC-PERP"
K = 1000


def run(snap, **kw):
    return cz.simulate(snap, CascadeParams(shock_symbol=BTC, **kw), STRESS)


def test_venue_reduces_only_what_restores_maintenance():
    """The liquidator closes what gets an account back above maintenance (a 10 % rate here, so
    a fraction of the position), in chunks of at most 25 % of it: the band's cascade is far
    smaller than with full closes, and no account is closed out entirely."""
    snap = linear_band(s_lots=5 * K, d_lots=5 * K, accounts=120)
    full = run(snap, shock_bps=-50)
    venue = run(snap, shock_bps=-50, close="venue")
    assert full["summary"]["accounts_liquidated"] == 120
    v = venue["summary"]
    assert v["money"]["before"] == v["money"]["after"]
    assert 0 < v["liquidations"]
    assert v["cascade_notional"] < full["summary"]["cascade_notional"]
    closed = [liq for liq in venue["liquidations"] if liq["qty"]]
    assert closed and all(0 < liq["qty"][BTC] < 5 * K for liq in closed)
    assert Fraction(v["amplification"][BTC]["amplification"]) < \
        Fraction(full["summary"]["amplification"][BTC]["amplification"])


@pytest.mark.parametrize("fund, expect", [(10**12, "insurance_qty"), (0, "adl_qty")])
def test_venue_backstop_path_follows_the_engine(fund, expect):
    """A book too thin to take the positions within their bankruptcy prices: the engine moves
    to the backstop (none in a snapshot), then the fund, or ADL when the fund is at its floor."""
    result = run(two_symbol_snapshot(fund, 0, bid_lots=5), shock_bps=-300, regime="crisis",
                 close="venue")
    s = result["summary"]
    assert s["money"]["before"] == s["money"]["after"]
    assert sum(liq[expect] for liq in result["liquidations"]) > 0
    if expect == "adl_qty":
        assert s["adl_volume"] > 0


def test_venue_output_is_byte_identical():
    snap = two_symbol_snapshot(10**9, 0, bid_lots=20)
    kw = dict(shock_bps=-400, regime="calm", close="venue", latency_rounds=1,
              recovery_ppm=200_000, permanent_ppm=500_000)
    assert cz.encode(run(snap, **kw)) == cz.encode(run(snap, **kw))


@settings(max_examples=25, deadline=None)
@given(st.integers(-3000, 3000).filter(bool), st.integers(0, 2), st.integers(0, 500_000),
       st.integers(0, 1_000_000), st.integers(1, 50), st.integers(0, 10**11))
def test_venue_money_conserved_on_any_run(shock, latency, recovery, permanent, depth, fund):
    snap = two_symbol_snapshot(fund, fund // 2, bid_lots=depth)
    result = run(snap, shock_bps=shock, regime="crisis", latency_rounds=latency,
                 recovery_ppm=recovery, permanent_ppm=permanent, close="venue", max_rounds=300)
    s = result["summary"]
    assert s["money"]["before"] == s["money"]["after"]
