"""Units: human decimal strings <-> integer units, exact both ways (never rounded)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from cluster.protocol import MAX_UNITS
from cluster.rules.units import UnitError, from_units, to_units

UNIT_SIZES = st.sampled_from([Decimal(u) for u in ("0.1", "0.5", "0.001", "0.000001", "1", "25",
                                                   "0.0000000001")])


@given(st.integers(-(2**140), 2**140), UNIT_SIZES)
def test_from_units_is_exact_however_large(units, size):
    text = from_units(units, size)
    assert Fraction(text) == units * Fraction(size)
    assert "E" not in text and "e" not in text


@given(st.integers(-MAX_UNITS, MAX_UNITS), UNIT_SIZES)
def test_every_wire_value_round_trips(units, size):
    assert to_units(from_units(units, size), size, "x", "off_unit") == units


def test_a_large_notional_keeps_its_last_atom():
    assert from_units(2**124 + 1, Decimal("0.000001")) == "21267647932558653966460912964485.513217"


def test_a_value_past_the_decimal_context_is_refused_naming_it():
    """divmod past the context's 28 digits: a clear reason and the value, not a bare exception."""
    try:
        to_units("1" + "0" * 40, Decimal("0.001"), "price", "bad_tick")
    except UnitError as exc:
        assert exc.reason == "out_of_range" and str(exc) == f"price 1{'0' * 40} is out of range"
    else:
        raise AssertionError("accepted")
