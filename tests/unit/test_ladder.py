"""The maintenance ladder: derived amounts, tier boundaries, continuity, loader checks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster import config
from cluster.rules.ladder import LadderError, build_ladder, maintenance_margin, tier_for

USD = 1_000_000  # atoms
BTC = config.load().symbols["BTC-PERP"].tiers


def test_derived_amounts_match_the_published_btc_table():
    assert [t.amount // USD for t in BTC] == [
        0, 50, 1_300, 16_300, 266_300, 1_266_300, 2_516_300, 5_016_300, 25_016_300, 100_016_300]


@pytest.mark.parametrize("notional_usd, tier, mmr_ppm, mm_usd", [
    (0, 1, 4_000, 0),
    (50_000, 1, 4_000, 200),  # the cap belongs to the lower tier
    (60_000, 2, 5_000, 250),  # 60,000 x 0.5% - 50
    (264_000, 3, 10_000, 1_340),  # Binance's check value: MMR 1%
    (500_000, 3, 10_000, 3_700),  # 500,000 x 1% - 1,300
    (1_000_001, 4, 25_000, "8700.025"),
    (500_000_000, 10, 500_000, 149_983_700),
])
def test_tier_boundaries(notional_usd, tier, mmr_ppm, mm_usd):
    notional = notional_usd * USD
    t = tier_for(BTC, notional)
    assert (t.number, t.mmr_ppm) == (tier, mmr_ppm)
    assert maintenance_margin(BTC, notional) == int(Decimal(mm_usd) * USD)


def test_mm_is_continuous_at_every_cap():
    for lower, upper in zip(BTC, BTC[1:]):
        cap = lower.cap
        assert cap * lower.mmr_ppm // 1_000_000 - lower.amount == \
            cap * upper.mmr_ppm // 1_000_000 - upper.amount


@given(st.one_of(st.integers(-600_000_000 * USD, 600_000_000 * USD),
                 st.sampled_from([t.cap + d for t in BTC for d in (-1, 0, 1)])))
def test_every_notional_falls_in_its_tiers_range(notional):
    t = tier_for(BTC, notional)
    n = abs(notional)
    if n > BTC[-1].cap:
        assert t is BTC[-1]
    else:
        assert (t.floor < n or t.number == 1) and n <= t.cap


@given(st.integers(0, 600_000_000 * USD))
def test_mm_never_decreases_with_notional(notional):
    assert maintenance_margin(BTC, notional + USD) >= maintenance_margin(BTC, notional)


def test_loader_rejects_a_wrong_stated_amount_and_bad_shapes():
    rows = [(0, 125, 4_000, None), (50_000 * USD, 100, 5_000, 49 * USD)]
    with pytest.raises(LadderError, match="stated maintenance amount"):
        build_ladder(rows, 250_000 * USD)
    with pytest.raises(LadderError, match="start at notional 0"):
        build_ladder([(1, 10, 5_000, None)], 10 * USD)
    with pytest.raises(LadderError, match="mmr must not fall"):
        build_ladder([(0, 10, 5_000, None), (10 * USD, 10, 4_000, None)], 20 * USD)
    with pytest.raises(LadderError, match="above the initial margin rate"):
        build_ladder([(0, 125, 10_000, None)], 20 * USD)


@pytest.mark.parametrize("mmr_ppm, accepted",
                         [(0, False), (1, True), (999_999, True), (1_000_000, False)])
def test_mmr_bounds_are_exclusive_of_zero_and_one(mmr_ppm, accepted):
    """0 < mmr < 1, in ppm 1 .. 999,999 (a 1x tier, so 1/leverage does not bind first)."""
    if accepted:
        assert build_ladder([(0, 1, mmr_ppm, None)], 10 * USD)[0].mmr_ppm == mmr_ppm
    else:
        with pytest.raises(LadderError):
            build_ladder([(0, 1, mmr_ppm, None)], 10 * USD)
