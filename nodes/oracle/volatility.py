"""Realized volatility of the index over a time window, and the regime it implies.

Each sample is a relative index move in ppm; realized vol over the window is sqrt(sum of squared
moves) in ppm (not annualized). The regime turns "high_volatility" above the threshold and back to
"normal" only below 80% of it, so it does not flap at the boundary.
"""

from __future__ import annotations

from collections import deque
from math import isqrt

from cluster.rules.units import PPM
HYSTERESIS_PPM = 800_000


class RealizedVol:
    __slots__ = ("window_ns", "threshold_ppm", "_samples", "_sum", "_prev", "regime")

    def __init__(self, window_s: int, threshold_ppm: int) -> None:
        self.window_ns = window_s * 1_000_000_000
        self.threshold_ppm = threshold_ppm
        self._samples: deque[tuple[int, int]] = deque()  # (ts_ns, squared move in ppm^2)
        self._sum = 0
        self._prev = 0
        self.regime = "normal"

    def add(self, price: int, now_ns: int) -> str | None:
        """Take one index observation; return the new regime when it changes."""
        if self._prev:
            move = (price - self._prev) * PPM // self._prev
            self._samples.append((now_ns, move * move))
            self._sum += move * move
        self._prev = price
        horizon = now_ns - self.window_ns
        while self._samples and self._samples[0][0] < horizon:
            self._sum -= self._samples.popleft()[1]
        vol = self.value()
        if self.regime == "normal" and vol > self.threshold_ppm:
            self.regime = "high_volatility"
            return self.regime
        if self.regime == "high_volatility" and vol * PPM < self.threshold_ppm * HYSTERESIS_PPM:
            self.regime = "normal"
            return self.regime
        return None

    def value(self) -> int:
        return isqrt(self._sum)
