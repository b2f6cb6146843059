"""The tiered maintenance ladder ("tax bracket" MMR), shared by the config loader, risk, liquidator
and the calculator.

Tier n covers notional in (floor[n], cap[n]] (tier 1 also covers 0); cap[n] = floor[n+1], the last
cap is the ladder's cap. The maintenance amount is derived, never typed in:

    amount[1] = 0
    amount[n] = amount[n-1] + floor[n] * (mmr[n] - mmr[n-1])

so MM = notional * mmr[tier] - amount[tier] is continuous across tier boundaries. All integers:
notional and amounts in atoms, rates in ppm. MM rounds up (a requirement rounds against the account).
"""

from __future__ import annotations

import msgspec

from cluster.rules.units import PPM


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    number: int  # 1-based
    floor: int  # atoms, exclusive (0 is inclusive for tier 1)
    cap: int  # atoms, inclusive
    max_leverage: int
    mmr_ppm: int
    amount: int  # maintenance amount, atoms


class LadderError(ValueError):
    pass


def build_ladder(rows: list[tuple[int, int, int, int | None]], cap: int) -> tuple[Tier, ...]:
    """Tiers from (floor atoms, max leverage, mmr ppm, stated amount or None) rows, checked.

    A stated amount must equal the derived one, and the derivation must be exact in atoms.
    """
    if not rows:
        raise LadderError("a ladder needs at least one tier")
    if rows[0][0] != 0:
        raise LadderError("the first tier must start at notional 0")
    tiers: list[Tier] = []
    amount = 0
    for i, (floor, lev, mmr, stated) in enumerate(rows):
        nxt = rows[i + 1][0] if i + 1 < len(rows) else cap
        if nxt <= floor:
            raise LadderError(f"tier {i + 1}: floors must increase and stay below the cap")
        if i:
            prev = tiers[-1]
            if mmr < prev.mmr_ppm or lev > prev.max_leverage:
                raise LadderError(f"tier {i + 1}: mmr must not fall and max leverage must not rise")
            step, rem = divmod(floor * (mmr - prev.mmr_ppm), PPM)
            if rem:
                raise LadderError(f"tier {i + 1}: maintenance amount is not a whole number of atoms")
            amount = prev.amount + step
        if not 1 <= lev or not 0 < mmr < PPM:
            raise LadderError(f"tier {i + 1}: need leverage >= 1 and 0 < mmr < 1")
        if mmr * lev > PPM:
            raise LadderError(f"tier {i + 1}: mmr {mmr} ppm above the initial margin rate 1/{lev}")
        if stated is not None and stated != amount:
            raise LadderError(f"tier {i + 1}: stated maintenance amount {stated} != derived {amount}")
        tiers.append(Tier(number=i + 1, floor=floor, cap=nxt, max_leverage=lev, mmr_ppm=mmr,
                          amount=amount))
    return tuple(tiers)


def tier_for(tiers: tuple[Tier, ...], notional: int) -> Tier:
    """The tier whose (floor, cap] contains |notional|; past the cap, the last tier.

    A scan from the bottom, not a bisect: almost every order and position is in the first tier or
    two, and this runs several times per order (a cached floors tuple cost more, in hashing tiers).
    """
    notional = abs(notional)
    for tier in tiers:
        if notional <= tier.cap:
            return tier
    return tiers[-1]


def maintenance_margin(tiers: tuple[Tier, ...], notional: int) -> int:
    tier = tier_for(tiers, notional)
    notional = abs(notional)
    return -((-notional * tier.mmr_ppm) // PPM) - tier.amount
