"""Labelled counters and histograms in a node's heartbeat stats (a flat dict of ints, shown in
status.json and exported by the REST facade's /metrics, nodes/rest/metrics.py).

A labelled counter is the key "family|label[|label...]"; a histogram is one counter per bucket,
"family|label...|LE" (not cumulative: a value counts in the first bucket whose upper bound LE it
does not exceed, "inf" past the last), and its sum in "family_sum|label...". One function writes
each shape, the exporter reads them back with `split`, so the encoding is defined here only.
"""

from __future__ import annotations

SEP = "|"
INF = "inf"
# gateway request latency, admission to first answer, in microseconds
LATENCY_BOUNDS_US = (250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000,
                     500_000, 1_000_000, 2_500_000)


def labeled(family: str, *labels: str) -> str:
    return SEP.join((family, *labels))


def count(stats: dict, family: str, *labels: str, by: int = 1) -> None:
    key = labeled(family, *labels)
    stats[key] = stats.get(key, 0) + by


def observe(stats: dict, family: str, label: str, value: int, bounds: tuple[int, ...]) -> None:
    """One value into the histogram `family{label}` (a few buckets: a linear scan is cheapest)."""
    for bound in bounds:
        if value <= bound:
            count(stats, family, label, str(bound))
            break
    else:
        count(stats, family, label, INF)
    count(stats, family + "_sum", label, by=value)


def power_of_two_keys(family: str, largest: int) -> list[str]:
    """Keys of a histogram of sizes 1..largest in power-of-two buckets, indexed by
    (size - 1).bit_length(): the hot path (a socket's drained batch) does one dict update."""
    keys, bound = [], 1
    while bound < largest:
        keys.append(labeled(family, str(bound)))
        bound *= 2
    keys.append(labeled(family, str(largest)))
    return keys


def split(key: str) -> tuple[str, list[str]] | None:
    """(family, labels) of a labelled key; None for a plain counter."""
    if SEP not in key:
        return None
    family, *labels = key.split(SEP)
    return family, labels
