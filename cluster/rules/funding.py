"""Funding formulas shared by the oracle (rate), risk (payments) and the calculator.

F = P + clamp(I - P, -0.05%, +0.05%), then clamped to +-cap; a position pays notional x F when it
is long and F > 0 (and receives otherwise). Payers round up and receivers round down to the atom,
so every settlement leaves a remainder >= 0, which goes to the insurance fund.

The premium index P of an interval is the linearly weighted mean of samples
(1 x P1 + 2 x P2 + ... + n x Pn) / (1 + 2 + ... + n), each sample
P = (max(0, impact bid - index) - max(0, index - impact ask)) / index, where the impact prices are
the average fill prices of selling / buying the impact notional into the book.
"""

from __future__ import annotations

import math
from fractions import Fraction

FUNDING_CLAMP = Fraction(5, 10_000)  # 0.05%
E9 = 1_000_000_000


def funding_rate(premium, interest, cap) -> Fraction:
    premium, interest, cap = Fraction(premium), Fraction(interest), Fraction(cap)
    rate = premium + min(max(interest - premium, -FUNDING_CLAMP), FUNDING_CLAMP)
    return min(max(rate, -cap), cap)


def funding_payment(notional, rate, side: int) -> int:
    """Atoms a position receives (+) or pays (-) at one funding time: payers round up."""
    owed = side * abs(Fraction(notional)) * Fraction(rate)  # > 0: this position pays
    if owed > 0:
        return -math.ceil(owed)
    return math.floor(-owed)


def impact_price(levels: list[tuple[int, int]], notional, mult: int) -> Fraction | None:
    """Average price (ticks) of filling `notional` atoms against `levels` (best first), or None
    when the book is too thin."""
    need = Fraction(notional)
    got_value = Fraction(0)
    got_qty = Fraction(0)
    for price, qty in levels:
        value = price * qty * mult
        if value >= need:
            take = need / (price * mult)
            return (got_value + need) / ((got_qty + take) * mult)
        got_value += value
        got_qty += qty
        need -= value
    return None


def premium(impact_bid: Fraction, impact_ask: Fraction, index: int) -> Fraction:
    return (max(Fraction(0), impact_bid - index) - max(Fraction(0), index - impact_ask)) / index


class PremiumAverage:
    """Linearly weighted mean of the premium samples of one funding interval."""

    __slots__ = ("weighted", "weights", "n")

    def __init__(self) -> None:
        self.weighted = Fraction(0)
        self.weights = 0
        self.n = 0

    def add(self, sample: Fraction) -> None:
        self.n += 1
        self.weighted += self.n * sample
        self.weights += self.n

    def value(self) -> Fraction:
        return self.weighted / self.weights if self.weights else Fraction(0)


def to_e9(rate: Fraction) -> int:
    """A rate in units of 1e-9, rounded half to even."""
    return round(rate * E9)
