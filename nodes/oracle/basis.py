"""The mark's basis: a moving average of (book mid - index), Binance's "Price 2" term
(PERP-MECHANICS.md 1.1: 60 points, one every 5 s, over 5 minutes).

A sample is taken once per interval whatever the book looks like: the mid's distance from the
index while the book is quoted on both sides, 0 (no evidence of a basis) while it is not. So a
quote placed away from the index on a thin book moves the mark by 1/60 of its distance per 5 s,
not at once; the venue's own prices need minutes of agreement before they move the mark.
"""

from __future__ import annotations

from collections import deque

SAMPLE_EVERY_NS = 5_000_000_000
POINTS = 60


class BasisAverage:
    __slots__ = ("samples", "total", "next_ns", "every_ns")

    def __init__(self, points: int = POINTS, every_ns: int = SAMPLE_EVERY_NS) -> None:
        self.samples: deque[int] = deque(maxlen=points)
        self.total = 0
        self.next_ns = 0
        self.every_ns = every_ns

    def offer(self, mid: int | None, index: int, now_ns: int) -> None:
        """The book's mid (None when not quoted on both sides) and the index at `now_ns`; kept
        when a sample is due, on the interval's grid so that the cadence does not drift."""
        if now_ns < self.next_ns:
            return
        sample = mid - index if mid is not None else 0
        if len(self.samples) == self.samples.maxlen:
            self.total -= self.samples[0]
        self.samples.append(sample)
        self.total += sample
        self.next_ns = (now_ns // self.every_ns + 1) * self.every_ns

    def value(self) -> int:
        """The mean over the whole window in ticks, rounded half away from zero: a sample not yet
        taken (the oracle's first minutes) counts as 0, no evidence of a basis, like a one-sided
        book. Divided by the samples so far instead, one quote in a fresh venue moved the mark by
        1/n of its distance (1/2 to 1/4 in a chaos run's first seconds), not the 1/60 promised."""
        n = self.samples.maxlen or 1
        magnitude = (2 * abs(self.total) + n) // (2 * n)
        return magnitude if self.total >= 0 else -magnitude
