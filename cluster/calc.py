"""`perpx calc`: the offline risk calculator, on the very same formulas the risk node uses.

Decimal strings in and out. Prices are rounded to the tick in the conservative direction (a long's
liquidation and bankruptcy prices up, a short's down) and the exact value is given beside.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from cluster.config import SymbolSpec, Topology
from cluster.rules.ladder import maintenance_margin, tier_for
from cluster.rules.units import PPM, UnitError, from_units, parse_decimal, rate_to_ppm, to_units
from cluster.rules.funding import funding_payment, funding_rate
from cluster.rules.prices import bankruptcy_price, liquidation_price, round_price

EXACT_PLACES = 10


def exact(value: Fraction) -> str:
    """A Fraction as a decimal string: exact when it terminates, else to 10 places ("~" prefix)."""
    num, den = value.numerator, value.denominator
    d = den
    for p in (2, 5):
        while d % p == 0:
            d //= p
    q = Decimal(num) / Decimal(den)
    if d == 1:
        return format(q.normalize(), "f")
    return "~" + format(q.quantize(Decimal(1).scaleb(-EXACT_PLACES)), "f")


def _money(topo: Topology, atoms) -> str:
    return exact(Fraction(atoms) * Fraction(topo.atom))


def _spec(topo: Topology, symbol: str) -> SymbolSpec:
    if symbol not in topo.symbols:
        raise UnitError("unknown_symbol", f"unknown symbol {symbol!r}; known: {', '.join(sorted(topo.symbols))}")
    return topo.symbols[symbol]


def _atoms(topo: Topology, text: str, what: str) -> Fraction:
    return Fraction(parse_decimal(text, what)) / Fraction(topo.atom)


def mmr(topo: Topology, symbol: str, notional: str) -> dict:
    spec = _spec(topo, symbol)
    atoms = to_units(notional, topo.atom, "notional", "amount_not_whole_atoms")
    if atoms < 0:
        raise UnitError("negative_notional", "notional must be >= 0")
    tier = tier_for(spec.tiers, atoms)
    return {
        "symbol": symbol, "notional": from_units(atoms, topo.atom), "tier": tier.number,
        "mmr": exact(Fraction(tier.mmr_ppm, PPM)),
        "maintenance_amount": from_units(tier.amount, topo.atom),
        "maintenance_margin": from_units(maintenance_margin(spec.tiers, atoms), topo.atom),
        "max_leverage": tier.max_leverage,
        "tier_range": [from_units(tier.floor, topo.atom), from_units(tier.cap, topo.atom)],
    }


def liq_price(topo: Topology, *, symbol: str, side: str, qty: str, entry: str, wallet: str,
              mode: str = "isolated", fee_rate: str | None = None, funding_rate_: str | None = None,
              funding_periods: int = 0, stop: str | None = None, stop_gap: str = "0.005",
              other_mm: str = "0", other_upnl: str = "0", other_fees: str = "0") -> dict:
    spec = _spec(topo, symbol)
    s = {"long": 1, "short": -1}[side]
    lots = to_units(qty, spec.lot_size, "qty", "qty_off_lot")
    if lots <= 0:
        raise UnitError("qty_not_positive", "qty must be > 0")
    tick = Fraction(spec.tick_size)
    entry_ticks = Fraction(parse_decimal(entry, "entry")) / tick
    if entry_ticks <= 0:
        raise UnitError("price_not_positive", "entry must be > 0")
    mult = spec.atoms_per_tick_lot
    cost = s * lots * entry_ticks * mult
    wb = _atoms(topo, wallet, "wallet")
    fee_ppm = rate_to_ppm(fee_rate, "fee rate") if fee_rate is not None else spec.forced_fee_ppm
    if mode == "cross":
        extra_mm, extra_upnl = _atoms(topo, other_mm, "other-mm"), _atoms(topo, other_upnl, "other-upnl")
        extra_fees = _atoms(topo, other_fees, "other-fees")
    else:
        extra_mm = extra_upnl = extra_fees = Fraction(0)
    funding_total = 0
    if funding_rate_ is not None and funding_periods:
        rate = Fraction(parse_decimal(funding_rate_, "funding rate"))
        per_period = funding_payment(abs(cost), rate, s)  # at entry notional, each period
        funding_total = per_period * funding_periods
    wb_after = wb + funding_total
    lp, tier = liquidation_price(side=s, qty=lots, cost=cost, wallet=wb_after, tiers=spec.tiers,
                                 mult=mult, fee_ppm=fee_ppm, other_mm=extra_mm, other_upnl=extra_upnl,
                                 other_fees=extra_fees)
    bp = bankruptcy_price(side=s, qty=lots, cost=cost, wallet=wb_after + extra_upnl, mult=mult)

    def price_out(p: Fraction | None) -> tuple[str | None, str | None]:
        if p is None:
            return None, None
        return from_units(round_price(p, s), spec.tick_size), exact(p * tick)

    lp_r, lp_x = price_out(lp)
    bp_r, bp_x = price_out(bp)
    out = {
        "symbol": symbol, "side": side, "mode": mode, "qty": qty, "entry": entry, "wallet": wallet,
        "fee_rate": exact(Fraction(fee_ppm, PPM)),
        "funding_paid": _money(topo, -funding_total) if funding_total <= 0 else None,
        "funding_received": _money(topo, funding_total) if funding_total > 0 else None,
        "wallet_after_funding": _money(topo, wb_after),
        "liquidation_price": lp_r, "liquidation_price_exact": lp_x,
        "bankruptcy_price": bp_r, "bankruptcy_price_exact": bp_x,
        "tier": tier.number, "mmr": exact(Fraction(tier.mmr_ppm, PPM)),
        "maintenance_amount": from_units(tier.amount, topo.atom), "max_leverage": tier.max_leverage,
        "distance_pct": exact((entry_ticks - lp) / entry_ticks * 100 * s) if lp is not None else None,
    }
    if stop is not None:
        stop_ticks = Fraction(parse_decimal(stop, "stop")) / tick
        info: dict = {"stop": stop, "warning": None}
        if lp is None:
            info["stop_to_liquidation_pct"] = None
        else:
            gap = (stop_ticks - lp) * s  # > 0: the stop fires before liquidation
            info["stop_to_liquidation_pct"] = exact(gap / lp * 100)
            if gap <= 0:
                info["warning"] = "stop_beyond_liquidation"
            elif gap / lp < Fraction(parse_decimal(stop_gap, "stop gap")):
                info["warning"] = "stop_too_close_to_liquidation"
        out["stop"] = info
    return out


def funding(topo: Topology, *, premium_index: str, interest_rate: str, cap: str, notional: str,
            side: str) -> dict:
    cap_value = parse_decimal(cap, "cap")
    if cap_value < 0:  # the rate is clamped to [-cap, cap]: a negative cap would invert it
        raise UnitError("negative_cap", "cap must be >= 0 (the rate is clamped to [-cap, cap])")
    rate = funding_rate(parse_decimal(premium_index, "premium index"),
                        parse_decimal(interest_rate, "interest rate"), cap_value)
    s = {"long": 1, "short": -1}[side]
    payment = funding_payment(_atoms(topo, notional, "notional"), rate, s)
    return {"funding_rate": exact(rate), "side": side, "notional": notional,
            "payment": _money(topo, payment),
            "direction": "pays" if payment < 0 else "receives" if payment > 0 else "none",
            "rounding": "payers round up, receivers round down, to the atom"}
