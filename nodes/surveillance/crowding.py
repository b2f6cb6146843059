"""Per-symbol crowding index (RISK-ANALYTICS.md 2.5): funding, basis, realized volatility and open
interest against depth, each as a robust z against the symbol's own recent history.

    CI_long  =  z(funding) + z(basis) - z(realized vol) + z(OI / depth)
    CI_short = -z(funding) - z(basis) - z(realized vol) + z(OI / depth)

Carry (funding, basis) is what one side pays to stay levered; low realized volatility at the same
time is complacency; OI / depth is how much forced flow the book would have to absorb. A symbol
whose larger index is above CROWDED_MILLI is a ranked item of its own, with its components.
"""

from __future__ import annotations

from collections import deque

from nodes.surveillance.ranking import robust_z

HISTORY = 600  # samples kept per symbol (one per ranking tick: 5 minutes at 500 ms)
MIN_HISTORY = 20  # no index before this many samples
CROWDED_MILLI = 7_000
COMPONENTS = ("funding_e9", "basis_ppm", "realized_vol_ppm", "oi_per_depth_milli")
FLOORS = {"funding_e9": 10_000, "basis_ppm": 100, "realized_vol_ppm": 1_000,
          "oi_per_depth_milli": 100}


class Crowding:
    def __init__(self) -> None:
        self.history: dict[str, deque] = {}

    def feed(self, symbol: str, sample: dict[str, int]) -> dict | None:
        """One sample of the symbol's market; the item when it is crowded, else None."""
        hist = self.history.setdefault(symbol, deque(maxlen=HISTORY))
        hist.append(tuple(sample.get(name, 0) for name in COMPONENTS))
        if len(hist) < MIN_HISTORY:
            return None
        z = {name: robust_z([h[i] for h in hist], FLOORS[name])[-1]
             for i, name in enumerate(COMPONENTS)}
        common = z["oi_per_depth_milli"] - z["realized_vol_ppm"]
        long_ci = z["funding_e9"] + z["basis_ppm"] + common
        short_ci = -z["funding_e9"] - z["basis_ppm"] + common
        side, ci = ("long", long_ci) if long_ci >= short_ci else ("short", short_ci)
        if ci < CROWDED_MILLI:
            return None
        return {"kind": "crowding", "account": "", "symbol": symbol, "side": side, "score": ci,
                "reasons": [(name, sample.get(name, 0), z[name]) for name in COMPONENTS]}
