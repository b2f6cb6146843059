"""The price band and the market-order protection price: one definition for matching (which
enforces them) and risk (which reserves and liquidates against them).

- The band: a limit price must lie within mark ± mark x band_ppm (the width rounded down, so the
  band is never wider than configured). No mark yet: no band.
- The protection price of a market order: the reference (mark, else best opposite) moved by the
  client's max slippage (else the symbol's protection) toward the order's worse side, rounded
  toward the reference, never below one tick.
"""

from __future__ import annotations

from cluster.rules.units import PPM


def band_limits(mark: int, band_ppm: int) -> tuple[int, int]:
    """(lowest, highest) price the band allows around `mark`."""
    width = mark * band_ppm // PPM
    return mark - width, mark + width


def protection_price(reference: int, side: int, slippage_ppm: int) -> int:
    """The worst price a market order on `side` may fill at."""
    move = reference * slippage_ppm // PPM
    return reference + move if side > 0 else max(1, reference - move)
