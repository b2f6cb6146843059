"""Ranking: robust z of each feature against the population, score = sum of the top contributors,
and EWMA/CUSUM drift alarms on each feature's population centre. Pure integers, deterministic.

Robust z (Iglewicz & Hoaglin's modified z), in milli-z, capped at +-Z_CAP:
    z = (x - median) / scale,  scale = max(MAD / 0.6745, FLOOR[feature])     when MAD > 0
                               scale = max(1.253314 MeanAD, FLOOR[feature])  when MAD = 0
rounded toward zero (0 when every value is the median and there is no floor). The floor is the
smallest difference of a feature that matters (an order-to-trade ratio of 10, ESMA's example; a
10 % share; one leverage doubling; ...): most features are zero for most accounts, where MAD and
MeanAD shrink toward nothing and any non-zero value would otherwise be an extreme outlier.
A key's score is the sum of its TOP_N largest positive z, each capped (bounded and explainable: one
feature cannot drown the others, and the reasons name the contributors). It alerts when its top
contributor is an outlier (z > 3.5). Items are ordered by score, then account, then symbol: ties
never depend on dict order.

Drift (RISK-ANALYTICS.md 2.3): every ranking tick feeds each feature's population median to a
CUSUM and an EWMA. The in-control centre mu0 and sigma come from the first WARMUP ticks (sigma from
the MAD, at least 1). CUSUM: S = max(0, S + x - mu0 - k), k = sigma/2, alarm when S > h = 5 sigma
(two-sided: also on mu0 - x). EWMA, lambda = 1/8 in fixed point: alarm when |z - mu0| exceeds
L sigma sqrt(lambda / (2 - lambda)) with L = 3. A drift alarm is a ranked item of its own.
"""

from __future__ import annotations

from math import isqrt
from nodes.surveillance.features import RANKED

TOP_N = 3
ALERT_MILLI = 3_500  # a top contributor above z = 3.5 (Iglewicz & Hoaglin's outlier cut) alerts
Z_CAP = 10_000
WARMUP = 30
EWMA_SHIFT = 3  # lambda = 1/8
EWMA_L_MILLI = 3_000
FIXED = 1_000  # the EWMA's fixed point
# The smallest difference that matters, per feature (in the feature's own unit).
FLOORS = {
    "otr_num_milli": 10_000, "otr_vol_milli": 10_000, "cxl_lt_1ms_ppm": 100_000,
    "cxl_lt_10ms_ppm": 100_000, "cxl_lt_100ms_ppm": 100_000, "burst_100ms": 5, "touch_1s": 10,
    "spoof_milli": 2_000, "layer_milli": 10_000, "levels": 2, "depth_share_ppm": 500_000,
    "lev_changes": 2, "lev_jump_milli": 1_000, "lev_then_order": 20, "ignition_ppm": 20,
    "liq_cluster": 1,
}


def median_low(values: list[int]) -> int:
    """The lower median (an existing value: exact in integers)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def robust_z(values: list[int], floor: int = 0) -> list[int]:
    """Milli-z of each value against the list (rounded toward zero, capped at +-Z_CAP)."""
    if not values:
        return []
    med = median_low(values)
    deviations = [abs(v - med) for v in values]
    mad = median_low(deviations)
    n = len(values)
    # scale x 1e7 in integers: MAD / 0.6745 = MAD x 1e7 / 6745000; 1.253314 MeanAD = 12533140 x
    # sum / n / 1e7 (exact: numerator and denominator scaled by n)
    if mad:
        num, den = 10_000 * mad * n, 6745 * n  # scale = num / den
    else:
        num, den = 1_253_314 * sum(deviations), 1_000_000 * n
    if floor * den > num:
        num, den = floor, 1
    if not num:
        return [0] * n
    return [max(-Z_CAP, min(Z_CAP, _div0((v - med) * 1000 * den, num))) for v in values]


def _div0(a: int, b: int) -> int:
    """a / b rounded toward zero."""
    q = abs(a) // b
    return q if a >= 0 else -q


def rank(values: dict[tuple[str, str], dict[str, int]], features=RANKED, top_n: int = TOP_N):
    """Ranked items, most anomalous first: {account, symbol, score, reasons: [(feature, value,
    z_milli)]}, the reasons being the top contributors (largest positive z first)."""
    keys = sorted(values)
    z_of: dict[str, list[int]] = {
        name: robust_z([values[k][name] for k in keys], FLOORS.get(name, 0)) for name in features}
    items = []
    for i, key in enumerate(keys):
        contributions = sorted(((z_of[name][i], name) for name in features if z_of[name][i] > 0),
                               key=lambda c: (-c[0], c[1]))[:top_n]
        score = sum(z for z, _ in contributions)
        items.append({
            "kind": "account", "account": key[0], "symbol": key[1], "score": score,
            "reasons": [(name, values[key][name], z) for z, name in contributions],
        })
    items.sort(key=lambda it: (-it["score"], it["account"], it["symbol"]))
    return items


def explain(values: dict[tuple[str, str], dict[str, int]], account: str, features=RANKED):
    """Every feature of one account's keys against the population: value, median, z."""
    keys = sorted(values)
    out = []
    for name in features:
        column = [values[k][name] for k in keys]
        zs = robust_z(column, FLOORS.get(name, 0))
        med = median_low(column) if column else 0
        for i, key in enumerate(keys):
            if key[0] == account:
                out.append({"symbol": key[1], "feature": name, "value": column[i],
                            "median": med, "z_milli": zs[i]})
    out.sort(key=lambda r: (r["symbol"], -r["z_milli"], r["feature"]))
    return out


class Drift:
    """CUSUM and EWMA on one series (a feature's population centre), integers only."""

    __slots__ = ("warm", "mu0", "sigma", "hi", "lo", "ewma", "run", "alarm")

    def __init__(self) -> None:
        self.warm: list[int] = []
        self.mu0 = self.sigma = 0
        self.hi = self.lo = 0  # the two CUSUM sums
        self.ewma = 0  # x FIXED
        self.run = 0  # ticks since the sums were last zero
        self.alarm = ""

    def feed(self, x: int) -> str:
        """One observation; the alarm ('cusum_up', 'cusum_down', 'ewma') or ''."""
        if len(self.warm) < WARMUP:
            self.warm.append(x)
            if len(self.warm) == WARMUP:
                self.mu0 = median_low(self.warm)
                mad = median_low([abs(v - self.mu0) for v in self.warm])
                self.sigma = max(1, mad * 14826 // 10000)
                self.ewma = self.mu0 * FIXED
            return ""
        k, h = self.sigma // 2, 5 * self.sigma
        self.hi = max(0, self.hi + x - self.mu0 - k)
        self.lo = max(0, self.lo + self.mu0 - x - k)
        self.run = self.run + 1 if (self.hi or self.lo) else 0
        self.ewma += (x * FIXED - self.ewma) >> EWMA_SHIFT
        # L sigma sqrt(lambda/(2-lambda)) with lambda = 1/8: sqrt(1/15), in FIXED units
        limit = EWMA_L_MILLI * self.sigma * isqrt(FIXED * FIXED // 15) // 1000
        if self.hi > h:
            self.alarm = "cusum_up"
        elif self.lo > h:
            self.alarm = "cusum_down"
        elif abs(self.ewma - self.mu0 * FIXED) > limit:
            self.alarm = "ewma"
        else:
            self.alarm = ""
        return self.alarm


class DriftBank:
    """One Drift per feature, fed the population median each ranking tick."""

    def __init__(self, features=RANKED) -> None:
        self.features = tuple(features)
        self.series = {name: Drift() for name in self.features}

    def feed(self, values: dict[tuple[str, str], dict[str, int]]) -> list[dict]:
        if not values:
            return []
        items = []
        for name in self.features:
            centre = median_low([v[name] for v in values.values()])
            d = self.series[name]
            alarm = d.feed(centre)
            if alarm:
                cusum = max(d.hi, d.lo)
                items.append({
                    "kind": "drift", "account": "", "symbol": "", "feature": name,
                    "score": cusum * 1000 // max(d.sigma, 1),
                    "reasons": [(name, centre, 0), ("mu0", d.mu0, 0), ("sigma", d.sigma, 0),
                                ("run_length", d.run, 0)], "alarm": alarm,
                })
        return items
