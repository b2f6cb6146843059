"""Liquidation / bankruptcy prices and funding against published worked examples."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from cluster import config
from cluster.rules.ladder import Tier
from cluster.rules.funding import funding_payment, funding_rate
from cluster.rules.prices import bankruptcy_price, liquidation_price, round_price

USD = 1_000_000
TOPO = config.load()


def one_tier(mmr_ppm: int, amount_usd: str) -> tuple[Tier, ...]:
    """A single tier with a stated maintenance amount, to reproduce a venue example exactly."""
    return (Tier(number=1, floor=0, cap=10**30, max_leverage=1, mmr_ppm=mmr_ppm,
                 amount=int(Decimal(amount_usd) * USD)),)


def in_usd(price_ticks: Fraction, tick: str) -> Decimal:
    value = price_ticks * Fraction(Decimal(tick))
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"))


# Binance's own example (WB 1,535,443.01; BTC long 109.488 @ 32,481.98 mark 31,967.27 MMR 2.5%
# cum 16,300; ETH long 3,683.979 @ 1,456.84 mark 1,335.18 MMR 10% cum 135,365).
WB = Fraction(Decimal("1535443.01")) * USD


def position(qty: str, entry: str, tick: str, lot: str):
    lots = Fraction(Decimal(qty)) / Fraction(Decimal(lot))
    ticks = Fraction(Decimal(entry)) / Fraction(Decimal(tick))
    mult = int(Fraction(Decimal(tick)) * Fraction(Decimal(lot)) * USD)
    return lots, lots * ticks * mult, mult


def test_binance_isolated_btc():
    lots, cost, mult = position("109.488", "32481.98", "0.1", "0.001")
    price, _ = liquidation_price(side=1, qty=lots, cost=cost, wallet=WB,
                                 tiers=one_tier(25_000, "16300"), mult=mult, fee_ppm=0)
    assert in_usd(price, "0.1") == Decimal("18778.73")


def test_binance_isolated_eth():
    lots, cost, mult = position("3683.979", "1456.84", "0.01", "0.001")
    price, _ = liquidation_price(side=1, qty=lots, cost=cost, wallet=WB,
                                 tiers=one_tier(100_000, "135365"), mult=mult, fee_ppm=0)
    assert in_usd(price, "0.01") == Decimal("1114.78")


def test_binance_cross_eth():
    lots, cost, mult = position("3683.979", "1456.84", "0.01", "0.001")
    btc_mm = Fraction(Decimal("71200.811444")) * USD
    btc_upnl = Fraction(Decimal("109.488")) * (Fraction(Decimal("31967.27")) - Fraction(Decimal("32481.98"))) * USD
    price, _ = liquidation_price(side=1, qty=lots, cost=cost, wallet=WB,
                                 tiers=one_tier(100_000, "135365"), mult=mult, fee_ppm=0,
                                 other_mm=btc_mm, other_upnl=btc_upnl)
    assert in_usd(price, "0.01") == Decimal("1153.26")


def test_short_liquidation_above_entry_and_fee_brings_it_closer():
    spec = TOPO.symbols["BTC-PERP"]
    lots, cost, mult = 1000, -1000 * 300_000 * 100, spec.atoms_per_tick_lot  # short 1 BTC @ 30,000
    wallet = 3_000 * USD
    no_fee, tier = liquidation_price(side=-1, qty=lots, cost=cost, wallet=wallet, tiers=spec.tiers,
                                     mult=mult, fee_ppm=0)
    with_fee, _ = liquidation_price(side=-1, qty=lots, cost=cost, wallet=wallet, tiers=spec.tiers,
                                    mult=mult, fee_ppm=spec.forced_fee_ppm)
    assert tier.number == 1
    # (3,000 + 0 + 30,000) / (1 x (0.004 + 1)) = 32,868.52...
    assert in_usd(no_fee, "0.1") == Decimal("32868.53")
    assert 300_000 < with_fee < no_fee
    assert round_price(no_fee, -1) == 328685  # a short's price rounds down


def test_tier_is_chosen_at_the_liquidation_price():
    spec = TOPO.symbols["BTC-PERP"]
    # 10 BTC long @ 30,000 (notional 300,000: tier 3 at entry); 20,000 margin
    price, tier = liquidation_price(side=1, qty=10_000, cost=10_000 * 300_000 * 100,
                                    wallet=20_000 * USD, tiers=spec.tiers, mult=100, fee_ppm=0)
    notional = 10_000 * 100 * price
    assert tier.floor < notional <= tier.cap
    assert tier.number == 3


def test_fully_collateralised_long_has_no_liquidation_price():
    price, tier = liquidation_price(side=1, qty=1000, cost=1000 * 300_000 * 100,
                                    wallet=40_000 * USD, tiers=TOPO.symbols["BTC-PERP"].tiers,
                                    mult=100, fee_ppm=0)
    assert price is None
    # the tier named is the position's first one, not whichever tier also found no price
    # (#26 mutation survivor: the fallback's `tier.number == 1` made 2)
    assert tier.number == 1


def test_bybit_bankruptcy_example():
    # 1 BTC long @ 10,000 at 50x: margin 200 -> bankruptcy 9,800
    price = bankruptcy_price(side=1, qty=1000, cost=1000 * 100_000 * 100, wallet=200 * USD, mult=100)
    assert price == 98_000  # ticks of 0.1
    short = bankruptcy_price(side=-1, qty=1000, cost=-1000 * 100_000 * 100, wallet=200 * USD,
                             mult=100)
    assert short == 102_000


@pytest.mark.parametrize("premium, interest, cap, expected", [
    ("0.0001", "0.0001", "0.0075", "0.0001"),
    ("0.0003", "0.0001", "0.0075", "0.0001"),  # I - P within the clamp: F = I
    ("0.001", "0.0001", "0.0075", "0.0005"),  # clamp(-0.0009) = -0.0005
    ("-0.002", "0.0001", "0.0075", "-0.0015"),
    ("0.02", "0.0001", "0.0075", "0.0075"),  # capped
])
def test_funding_rate(premium, interest, cap, expected):
    assert funding_rate(Decimal(premium), Decimal(interest), Decimal(cap)) == Fraction(Decimal(expected))


def test_funding_payers_round_up_receivers_down():
    rate = Fraction(1, 10_000)
    notional = 12_345_678  # atoms: 0.01% = 1,234.5678
    assert funding_payment(notional, rate, side=1) == -1235
    assert funding_payment(notional, rate, side=-1) == 1234
    assert funding_payment(notional, -rate, side=1) == 1234
