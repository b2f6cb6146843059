"""Liquidation and bankruptcy prices: exact venue formulas over Fractions.

Units: prices in ticks, quantities in lots, money in atoms; `mult` = atoms per tick-lot. The inputs
may be ints (the risk node) or Fractions (the offline calculator: an entry price off the tick grid),
and the results are exact Fractions; callers round to the tick in the conservative direction.

Liquidation (the trigger): equity at mark <= MM + forced-execution fee on the notional at mark.
For a one-way position of Q lots on side s (+1 long, -1 short) with signed cost C (= s*Q*EP*mult),
effective wallet WB, tier (mmr, amount) and forced fee rate f:

    WB + s*Q*mult*P - C = Q*mult*P*(mmr + f) - amount
    P = (WB + amount - C) / (Q*mult*(mmr + f - s))

choosing the tier whose notional range holds Q*mult*P. Isolated: WB is the position's margin.
Cross: WB = cross wallet - the other positions' MM and forced fees (what the trigger counts for
them, cluster/rules/margin.py's trigger_margin) + their unrealized PnL. Bankruptcy (equity = 0):
P = (C - WB) / (s*Q*mult), where a cross WB counts the other positions at their unrealized PnL
only (at zero equity there is no maintenance left to keep).
Funding lives in cluster/rules/funding.py (the oracle computes rates, risk settles payments).
"""

from __future__ import annotations

import math
from fractions import Fraction

from cluster.rules.ladder import Tier
from cluster.rules.units import PPM


def liquidation_price(*, side: int, qty, cost, wallet, tiers: tuple[Tier, ...], mult: int,
                      fee_ppm: int, other_mm=0, other_upnl=0,
                      other_fees=0) -> tuple[Fraction | None, Tier]:
    """(price in ticks, tier at that price); None when no positive price liquidates (a long
    with more margin than its notional). Cross: `other_mm` and `other_fees` are the other
    positions' maintenance margin and forced fees (the trigger counts both)."""
    wb = Fraction(wallet) - other_mm - other_fees + other_upnl
    scale = Fraction(qty) * mult  # atoms per tick of price at this size
    fallback: tuple[Fraction | None, Tier] | None = None
    for tier in tiers:
        price = (wb + tier.amount - cost) / (scale * (Fraction(tier.mmr_ppm + fee_ppm, PPM) - side))
        notional = scale * price
        if price <= 0:
            if tier.number == 1:
                fallback = (None, tier)
            continue
        if (tier.floor < notional or tier.number == 1) and notional <= tier.cap:
            return price, tier
        if tier is tiers[-1] and notional > tier.cap:
            return price, tier  # beyond the ladder: the last tier applies
    if fallback is not None:
        return fallback
    return None, tiers[0]


def bankruptcy_price(*, side: int, qty, cost, wallet, mult: int) -> Fraction | None:
    price = (Fraction(cost) - Fraction(wallet)) / (side * Fraction(qty) * mult)
    return price if price > 0 else None


def round_price(price: Fraction, side: int) -> int:
    """Ticks, rounded so the position is never told it is safer than it is: a long's liquidation
    and bankruptcy prices round up, a short's round down."""
    return math.ceil(price) if side > 0 else math.floor(price)
