"""The auto-deleveraging rank (README, liquidation path): PnL% x effective leverage, i.e.
upnl / |cost| x |value| / margin balance; a position with no margin balance left is not ranked
(it has nothing to lever: a score there would divide by zero or flip its sign)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from cluster.rules.adl import score

USD = 1_000_000


def test_a_profitable_position_ranks_by_pnl_share_times_leverage():
    # long bought at 10,000 USD now worth 11,000, on 2,000 of margin: +10% x 5.5x
    assert score(100, 10_000 * USD, 11_000 * USD, 2_000 * USD) == Fraction(1, 10) * Fraction(11, 2)


@pytest.mark.parametrize("margin_balance", [0, -1, -500 * USD])
def test_no_margin_balance_left_ranks_zero(margin_balance):
    assert score(100, 10_000 * USD, 11_000 * USD, margin_balance) == 0
