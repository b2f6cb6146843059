"""The numbers of a venue event or refusal in the units a trader reads: prices instead of ticks,
contracts instead of lots, collateral instead of atoms.

The venue speaks integers (README "Units"); its explanations name the numbers that decided them
(`detail`), in those integers. Which unit a number is in follows from its name, except for a few
names whose unit depends on the rule (a `limit` is a count of orders for too_many_open_orders and
collateral for position_limit), which REASON_UNITS settles. A name with no known unit (counts,
leverage, ppm, ids) is shown as it is.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from cluster.audit import counterparties_of
from cluster.rules.units import from_units

TICKS, LOTS, ATOMS = "ticks", "lots", "atoms"

FIELD_UNITS: dict[str, str] = {
    **dict.fromkeys(("price", "mark", "min_price", "max_price", "maker_price", "trigger_price",
                     "protection_price", "best", "observed_price", "bankruptcy_price", "avg_price",
                     "index", "last_good_index", "book_mid"),
                   TICKS),
    **dict.fromkeys(("qty", "min_qty", "max_qty", "remaining", "position", "room", "filled",
                     "reserved_by_reduce_only", "position_after"), LOTS),
    **dict.fromkeys(("notional", "max_notional", "notional_after", "required", "available",
                     "equity", "position_margin", "order_margin", "fee", "amount", "balance",
                     "initial_margin", "isolated_margin", "isolated_cash", "isolated_equity", "removable",
                     "pending_close_cost",
                     "maintenance_margin", "forced_fee", "fund_delta", "insurance_fund",
                     # portfolio margin (#24): the grid's requirement and what it replaced
                     "stress_requirement", "liquidity_addon", "from_initial_margin",
                     "position_margin_now", "initial_margin_now", "initial_margin_after_fill",
                     "fee_and_loss"), ATOMS),
}
# Names whose unit depends on the rule that used them (elsewhere they are plain numbers).
REASON_UNITS: dict[str, dict[str, str]] = {
    "would_trigger_immediately": {"current": TICKS},
    "position_limit": {"limit": ATOMS},
    "balance_limit": {"limit": ATOMS, "requested": ATOMS},
    "withdrawal_exceeds_available": {"requested": ATOMS},
    "insufficient_available": {"requested": ATOMS},
    "isolated_margin_below_requirement": {"requested": ATOMS},
    "insufficient_margin": {"position_change": LOTS},
    "liquidation.plan": dict.fromkeys(("needed", "cap_position", "depth_within_bankruptcy",
                                       "cap_depth", "chunk"), LOTS),
}


class Units:
    """The unit sizes: the collateral's atom, and each symbol's tick and lot."""

    def __init__(self, atom: Decimal, ticks: dict[str, Decimal], lots: dict[str, Decimal],
                 collateral: str = "") -> None:
        self.atom, self.ticks, self.lots, self.collateral = atom, ticks, lots, collateral

    @classmethod
    def of(cls, topo) -> "Units":
        return cls(topo.atom, {s: spec.tick_size for s, spec in topo.symbols.items()},
                   {s: spec.lot_size for s, spec in topo.symbols.items()}, topo.collateral)

    def unit_size(self, unit: str, symbol: str) -> Decimal | None:
        if unit == ATOMS:
            return self.atom
        sizes = self.ticks if unit == TICKS else self.lots
        return sizes.get(symbol)

    def numbers(self, reason: str, detail: dict, symbol: str = "") -> dict[str, object]:
        """`detail` with each number of a known unit as a decimal string in that unit."""
        named = detail.get("symbol")
        if isinstance(named, str):  # the symbol the rule names decides the tick and lot
            symbol = named
        # a reason ("position_limit") or a journal rule ("risk.position_limit", "liquidation.plan")
        overrides = REASON_UNITS.get(reason) or REASON_UNITS.get(reason.partition(".")[2], {})
        out: dict[str, object] = {}
        for key, value in detail.items():
            if key.endswith(("_ppm", "_e9")) and isinstance(value, int) \
                    and not isinstance(value, bool):  # a rate reads as a percent: band 5%
                name, _, scale = key.rpartition("_")
                out[name] = percent(value, 10_000 if scale == "ppm" else 10_000_000)
                continue
            unit = overrides.get(key) or FIELD_UNITS.get(key)
            size = self.unit_size(unit, symbol) if unit else None
            out[key] = value
            if size is not None and isinstance(value, int) and not isinstance(value, bool):
                out[key] = from_units(value, size)
            elif size is not None and isinstance(value, str):  # an average: a decimal of units
                out[key] = average_text(value, size)
        return out

    def money(self, atoms: int) -> str:
        return f"{from_units(atoms, self.atom)} {self.collateral}".rstrip()

    def qty(self, lots: int, symbol: str) -> str:
        lot = self.lots.get(symbol)
        return str(from_units(lots, lot)) if lot is not None else f"{lots} lots"

    def fills(self, text: str, symbol: str) -> str:
        """Liquidation counterparties as journaled (cluster.audit.counterparties_text) in
        contracts and prices: 'acct 0.5 @ 26741.7, ...'; text in another form as it is."""
        tick, lot = self.ticks.get(symbol), self.lots.get(symbol)
        parties = counterparties_of(text)
        if parties is None or tick is None or lot is None:
            return text
        return ", ".join(f"{account} {from_units(lots, lot)} @ {from_units(ticks, tick)}"
                         for account, lots, ticks in parties)

    def event(self, event: dict) -> dict[str, object]:
        """An event (as a dict, see protocol.to_jsonable) with its numbers in trader's units: its own
        quantities and prices, and under "detail" those of the rule that decided it."""
        symbol, reason = event.get("symbol", ""), event.get("reason", "")
        own = {k: event[k] for k in EVENT_FIELDS if k in event}
        if event.get("type") == "Deleveraged":  # its qty is signed from the position
            own["position"] = own.pop("qty")
        human = self.numbers(reason, own, symbol)
        if event.get("detail"):
            human["detail"] = self.numbers(reason, event["detail"], symbol)
        if "orders" in event:  # a mass cancel: (order id, cancelled remaining)
            lot = self.lots.get(symbol)
            human["orders"] = [[oid, from_units(q, lot) if lot else q] for oid, q in event["orders"]]
        return human


EVENT_FIELDS = ("price", "qty", "remaining", "fee", "trigger_price", "observed_price")


def average_text(value: str, size: Decimal) -> str:
    """A journaled average in units ('3004.5', or a fraction such as '419471/2') times the unit
    size, as a decimal (cluster.calc.exact: exact when it ends, else '~' and 10 places); text
    that is neither is shown as it is."""
    from cluster.calc import exact

    try:
        return exact(Fraction(value) * Fraction(size))
    except (ValueError, ZeroDivisionError):
        return value


def percent(value: int, per_percent: int) -> str:
    """An integer rate (ppm: per_percent 10,000; e9: 10,000,000) as an exact percent: '5%'."""
    return f"{format((Decimal(value) / per_percent).normalize(), 'f')}%"


def describe(numbers: dict) -> str:
    """'key value, key value' for a person; a lone free-text `error` is shown as it is."""
    if set(numbers) == {"error"}:
        return str(numbers["error"])
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in numbers.items() if k != "symbol")
