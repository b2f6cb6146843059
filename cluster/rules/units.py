"""Exact conversion between human decimal strings and the integer units of the wire.

A value that is not a whole number of units is an error, never rounded silently.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

PPM = 1_000_000
# A decimal as people and programs write it, in ASCII: Python's Decimal also reads fullwidth or
# other scripts' digits ('３００００'), underscores ('3_0000') and surrounding spaces (' 30000 ').
PLAIN_DECIMAL = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
DECIMAL_TEXT = re.compile(PLAIN_DECIMAL + r"(?:[eE][+-]?[0-9]+)?")  # str(Decimal) may use E


class UnitError(ValueError):
    """A human value that does not map exactly onto integer units. `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_decimal(text: str | int | Decimal, what: str = "value") -> Decimal:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise UnitError("not_a_number", f"{what} {text!r} is not a decimal number") from None
    if not value.is_finite():
        raise UnitError("not_a_number", f"{what} {text!r} is not finite")
    if not DECIMAL_TEXT.fullmatch(str(text)):
        raise UnitError("not_a_number", f"{what} {text!r} is not a decimal number: ASCII digits "
                        "0-9 with an optional sign and '.'")
    return value


def to_units(text: str | int | Decimal, unit: Decimal, what: str, reason: str) -> int:
    """`text` as a whole number of `unit`s, or UnitError(reason) when it is not one."""
    value = parse_decimal(text, what)
    try:
        units, remainder = divmod(value, unit)
    except InvalidOperation:  # the quotient has more digits than the decimal context holds
        raise UnitError("out_of_range", f"{what} {value} is out of range") from None
    if remainder != 0:
        raise UnitError(reason, f"{what} {value} is not a multiple of {unit}")
    return int(units)


def from_units(units: int, unit: Decimal) -> str:
    """Exact decimal string of `units` x `unit`, without exponent or trailing zeros."""
    exact = Decimal(units)
    with localcontext() as ctx:  # the default 28 digits would round a large number: never
        ctx.prec = len(exact.as_tuple().digits) + len(unit.as_tuple().digits) + 2
        value = (exact * unit).normalize()
    return format(value, "f")


def rate_to_ppm(text: str | int | Decimal, what: str) -> int:
    return to_units(text, Decimal("0.000001"), what, "rate_not_whole_ppm")


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for a positive denominator (charges round up)."""
    return -((-numerator) // denominator)
