"""Auto-deleveraging queue: who is closed first when a bankrupt position cannot be absorbed.

Score = PnL% x effective leverage (BitMEX's form): PnL% = unrealized PnL / |cost|, effective
leverage = |notional at mark| / margin balance. Only profitable positions on the opposite side of
the bankrupt one are candidates; the highest score goes first, ties by account name (deterministic).
The quantile (5 = front of the queue ... 1 = back; 0 = not in the queue, a position without
profit) is what venues show their users.
"""

from __future__ import annotations

from fractions import Fraction

from cluster.rules.units import PPM


def score(qty: int, cost: int, value: int, margin_balance: int) -> Fraction:
    if not qty or not cost or margin_balance <= 0:
        return Fraction(0)
    upnl = value - cost
    return Fraction(upnl, abs(cost)) * Fraction(abs(value), margin_balance)


def ranking(candidates: list[tuple[str, int, int, int, int]]) -> list[tuple[str, Fraction]]:
    """(account, score) for (account, qty, cost, value, margin balance), front of the queue first."""
    scored = [(account, score(qty, cost, value, mb)) for account, qty, cost, value, mb in candidates]
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def quantiles(ranked: list[tuple[str, Fraction]]) -> dict[str, int]:
    """Quantiles over the positions ADL can take (score > 0); any other position is 0: a
    position at a loss, or without PnL, is never deleveraged, so it is in no queue."""
    queue = [account for account, s in ranked if s > 0]
    n = len(queue)
    shown = {account: 0 for account, _ in ranked}
    shown.update({account: 5 - (5 * i) // n for i, account in enumerate(queue)})
    return shown
