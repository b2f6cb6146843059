"""Margin: what a position is worth at mark, an account's equity, the fees it is charged, its initial
and maintenance requirements, and the liquidation trigger. Risk values accounts with these (orders,
transfers, views, liquidation prices) and the liquidator's monitor triggers on them, so the two
cannot disagree on when an account is liquidated.

Units: money in atoms, prices in ticks, quantities in lots, rates in ppm; `mult` = atoms per
tick-lot. A value is signed (a short is worth less than nothing); a requirement or a fee is taken on
the notional's size and rounds up: against the account.

Trigger: equity <= maintenance margin + forced-execution fee on the notional at mark, for the cross
wallet as a whole (its balance and every cross position) and for each isolated position on its own
margin. The maintenance margin is the ladder's (cluster/rules/ladder.py), or for a `portfolio`
account the stress grid's when higher (cluster/rules/stress.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.rules.ladder import Tier, maintenance_margin, tier_for
from cluster.rules.units import PPM


def position_value(qty: int, cost: int, mark: int, mult: int) -> int:
    """Signed value at mark; at cost while no price is known yet (mark 0)."""
    return qty * mark * mult if mark else cost


def mark_or_entry(mark: int, qty: int, cost: int, mult: int) -> int:
    """The price a position is valued at in ticks: the mark, or while none is known its entry
    price (rounded down, at least one tick). For the stress grid, which needs a price."""
    return mark or max(1, abs(cost) // (abs(qty) * mult))


def cross_equity(balance: int, values: Iterable[int]) -> int:
    """The cross wallet's margin balance: its cash and its cross positions at mark."""
    return balance + sum(values)


def isolated_equity(iso_cash: int, value: int) -> int:
    """An isolated position's margin balance: the cash put into it and the position at mark."""
    return iso_cash + value


def fee_due(notional: int, rate_ppm: int) -> int:
    """The fee on a notional (either sign) at `rate_ppm`, rounded up: against the account (a
    negative rate, a maker rebate, rounds toward zero). Trading, reserved and forced fees."""
    return -((-abs(notional) * rate_ppm) // PPM)


def effective_leverage(setting: int, tiers: tuple[Tier, ...], notional: int) -> int:
    """The account's leverage setting, capped by the ladder tier `notional` falls into."""
    cap = tier_for(tiers, notional).max_leverage
    return setting if setting < cap else cap


def initial_margin(notional: int, leverage: int, buffer_ppm: int) -> int:
    """IM on `notional` at `leverage`, times the regime's buffer, rounded up."""
    return -((-abs(notional) * buffer_ppm) // (leverage * PPM))


def trigger_margin(tiers: tuple[Tier, ...], value: int, fee_ppm: int) -> int:
    """What the liquidation trigger requires of one position worth `value` atoms at mark: its
    maintenance margin plus the forced-execution fee on its notional."""
    return maintenance_margin(tiers, value) + fee_due(value, fee_ppm)


def triggered(equity: int, maintenance: int, forced_fee: int) -> bool:
    """The liquidation trigger: a margin balance at or below maintenance + the forced fee."""
    return equity <= maintenance + forced_fee
