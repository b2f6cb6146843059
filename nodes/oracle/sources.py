"""Which spot venues count for the index, and the index they give.

A venue is *stale* when its last price is older than `stale_after_ns`; an *outlier* when it is more
than `band_ppm` away from the median of the other fresh venues. Both are excluded. The index is the
weighted median of the healthy venues: the lowest price at which the cumulative weight reaches half
of the total, no venue counting for half or more of it (see weighted_median).
"""

from __future__ import annotations

import msgspec

from cluster.rules.units import PPM, ceil_div



class SourceReport(msgspec.Struct, frozen=True, kw_only=True):
    healthy: dict[str, int]  # venue -> price
    stale: dict[str, int]  # venue -> age in ms (never seen: -1)
    outliers: dict[str, int]  # venue -> deviation from the others' median, ppm


def median(values: list[int]) -> int:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) // 2


def weighted_median(prices: dict[str, int], weights: dict[str, int]) -> int:
    """The lowest price at which the cumulative weight reaches half of the total.

    Quorum policy: no single venue sets the index. With three or more venues each one counts for
    strictly less than half of the healthy weight (its weight is capped just below the sum of the
    others'; weights are doubled so that "just below" is an integer), so the index always lies
    within the other venues' prices: one venue alone moves it at most to its neighbour's price.
    (Two stale venues once left alpha, weight 3 of the healthy 5, as the whole index: its +2.9%
    moved the mark +2.9%.) With one or two venues nothing can do that; a topology that allows it
    (min_sources below 3) declares that policy."""
    items = sorted((p, v) for v, p in prices.items())
    if not items:
        raise ValueError("no prices")
    doubled = {v: 2 * weights.get(v, 1) for _, v in items}
    if len(items) >= 3:
        total = sum(doubled.values())
        doubled = {v: min(w, total - w - 1) for v, w in doubled.items()}
    total = sum(doubled.values())
    running = 0
    for price, venue in items:
        running += doubled[venue]
        if 2 * running >= total:
            return price
    raise AssertionError("unreachable: the running weight reaches the total")


def classify(feeds: dict[str, tuple[int, int]], venues: list[str], now_ns: int,
             stale_after_ns: int, band_ppm: int) -> SourceReport:
    fresh: dict[str, int] = {}
    stale: dict[str, int] = {}
    for venue in venues:
        seen = feeds.get(venue)
        if seen is None:
            stale[venue] = -1
        elif now_ns - seen[1] > stale_after_ns:
            # rounded up: the age quoted in the explanation must show it is past the limit
            stale[venue] = ceil_div(now_ns - seen[1], 1_000_000)
        else:
            fresh[venue] = seen[0]
    healthy: dict[str, int] = {}
    outliers: dict[str, int] = {}
    for venue, price in fresh.items():
        others = [p for v, p in fresh.items() if v != venue]
        if len(others) >= 2:
            ref = median(others)
            deviation = abs(price - ref) * PPM // ref
            if deviation > band_ppm:
                outliers[venue] = deviation
                continue
        healthy[venue] = price
    return SourceReport(healthy=healthy, stale=stale, outliers=outliers)
