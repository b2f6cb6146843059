"""Ranking: robust z of each feature within the key's peer group, score = sum of the top feature
families, and EWMA/CUSUM drift alarms on each feature's population centre. Pure integers,
deterministic.

Peer groups (a surveillance desk compares a market maker with market makers): each key's style in
the window, from its own counters: 'quoter' (it rested orders on both sides at once: market making,
and also bait-and-spoof), else 'maker' (at least half its traded lots passive), 'taker' (traded
otherwise), 'unfilled' (orders or settings, no trade). A group of fewer than PEER_MIN keys is
compared with everyone ('all'). Every reason names the group's median and MAD.

Robust z (Iglewicz & Hoaglin's modified z), in milli-z, capped at +-Z_CAP:
    z = (x - median) / scale,  scale = max(MAD / 0.6745, FLOOR[feature])     when MAD > 0
                               scale = max(1.253314 MeanAD, FLOOR[feature])  when MAD = 0
rounded toward zero (0 when every value is the median and there is no floor). The floor is the
smallest difference of a feature that matters (an order-to-trade ratio of 10, ESMA's example; a
10 % share; one leverage doubling; ...): most features are zero for most accounts, where MAD and
MeanAD shrink toward nothing and any non-zero value would otherwise be an extreme outlier.
Features that measure one behaviour form a family (FAMILY: order-to-trade by number and by
volume; the cancel-lifetime shares; layering's ratio and levels; the leverage features) whose z
is its largest member's, so that one fact is not counted twice. A key's score is the sum of its
TOP_N largest positive family z, each capped (bounded and explainable: one feature cannot drown
the others, and the reasons name the contributors). It alerts when its top contributor is an
outlier (z > 3.5, ALERT_MILLI). The queue is a review queue: keys with an outlier first, by the
part of the score from outliers (alert_score), then the others by score; then account, symbol:
ties never depend on dict order.

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
# Features that measure one behaviour count once in a score (their family's largest z): a fast
# market maker's order-to-trade ratios by number and by volume are one fact, not two.
FAMILY = {
    "otr_num_milli": "otr", "otr_vol_milli": "otr", "cxl_lt_1ms_ppm": "fleeting",
    "cxl_lt_10ms_ppm": "fleeting", "cxl_lt_100ms_ppm": "fleeting", "layer_milli": "layering",
    "levels": "layering", "lev_changes": "leverage", "lev_jump_milli": "leverage",
    "lev_then_order": "leverage", "sweep_lots": "ignition", "ignition_ppm": "ignition",
    "liq_cluster": "liq", "liq_cohort_lots": "liq",
}
PASSIVE_PPM = 500_000  # at least half its traded lots passive: a maker
PEER_MIN = 5  # the fewest keys a peer group's median and MAD are taken over (MAD: 2 outliers of 5)
ALL = "all"  # the peer group of keys whose own group is smaller than PEER_MIN
# The smallest difference that matters, per feature (in the feature's own unit).
FLOORS = {
    "otr_num_milli": 10_000, "otr_vol_milli": 10_000, "cxl_lt_1ms_ppm": 100_000,
    "cxl_lt_10ms_ppm": 100_000, "cxl_lt_100ms_ppm": 100_000, "burst_100ms": 5, "touch_1s": 10,
    "spoof_milli": 2_000, "layer_milli": 10_000, "levels": 2, "depth_share_ppm": 500_000,
    "lev_changes": 2, "lev_jump_milli": 1_000,
    "lev_then_order": 40,  # lots x the raise: twice the median order after one doubling
    "sweep_lots": 20,  # lots: twice the evaluation's median order
    "ignition_ppm": 20,
    "liq_cluster": 1,
    "liq_cohort_lots": 20,  # lots, as sweep_lots'
}


def median_low(values: list[int]) -> int:
    """The lower median (an existing value: exact in integers)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def robust_scale(values: list[int], floor: int = 0) -> tuple[int, int, int, int]:
    """(median, MAD, num, den): the robust z's centre, the median absolute deviation, and its
    scale as the exact fraction num / den (0 / 1: every value is the median, no floor)."""
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
    return med, mad, num, den


def robust_z(values: list[int], floor: int = 0) -> list[int]:
    """Milli-z of each value against the list (rounded toward zero, capped at +-Z_CAP)."""
    if not values:
        return []
    med, _, num, den = robust_scale(values, floor)
    return _z(values, med, num, den)


def _z(values: list[int], med: int, num: int, den: int) -> list[int]:
    """Milli-z of each value: (v - med) / (num / den), rounded toward zero, capped."""
    if not num:
        return [0] * len(values)
    return [max(-Z_CAP, min(Z_CAP, _div0((v - med) * 1000 * den, num))) for v in values]


def _div0(a: int, b: int) -> int:
    """a / b rounded toward zero."""
    q = abs(a) // b
    return q if a >= 0 else -q


def peer_group(v: dict[str, int]) -> str:
    """The key's trading style in the window, what it is compared with: 'quoter' when it rested
    orders on both sides at once (market making, or bait and spoof), else 'maker' when at least
    PASSIVE_PPM of its traded lots were passive (its resting orders were hit), 'taker' when it
    traded otherwise, 'unfilled' when it sent orders or changed settings but did not trade."""
    if v.get("two_sided", 0) > 0:
        return "quoter"
    fill_qty = v.get("fill_qty", 0)
    if not fill_qty:
        return "unfilled"
    return "maker" if v.get("maker_qty", 0) * 1_000_000 >= PASSIVE_PPM * fill_qty else "taker"


def peer_groups(values: dict[tuple[str, str], dict[str, int]]) -> dict[tuple[str, str], str]:
    """Each key's peer group; a group of fewer than PEER_MIN keys is too small for a median and
    a MAD that mean anything, so its keys are compared with everyone ('all')."""
    style = {key: peer_group(v) for key, v in values.items()}
    sizes: dict[str, int] = {}
    for name in style.values():
        sizes[name] = sizes.get(name, 0) + 1
    return {key: name if sizes[name] >= PEER_MIN else ALL for key, name in style.items()}


def peer_stats(values: dict[tuple[str, str], dict[str, int]], features=RANKED):
    """Per key: (its peer group, the group's size, {feature: (z_milli, median, MAD)}), each
    feature's robust z taken within the key's peer group (see peer_groups)."""
    keys = sorted(values)
    group_of = peer_groups(values)
    members: dict[str, list] = {ALL: keys}
    for key in keys:
        if group_of[key] != ALL:
            members.setdefault(group_of[key], []).append(key)
    out = {}
    for name, group in members.items():
        mine = [k for k in group if group_of[k] == name]
        if not mine:
            continue
        per_key: dict = {k: {} for k in mine}
        for feature in features:
            column = [values[k][feature] for k in group]
            med, mad, num, den = robust_scale(column, FLOORS.get(feature, 0))
            zs = dict(zip(group, _z(column, med, num, den)))
            for k in mine:
                per_key[k][feature] = (zs[k], med, mad)
        for k in mine:
            out[k] = (name, len(group), per_key[k])
    return out


def rank(values: dict[tuple[str, str], dict[str, int]], features=RANKED, top_n: int = TOP_N):
    """Ranked items, most anomalous first: {account, symbol, score, alert_score, peer_group, peers,
    reasons: [(feature, value, z_milli, peer median, peer MAD)]}. A family's z is its largest
    feature's (against the key's peer group); score = the sum of the top_n families' positive z,
    alert_score = the part of it from families above ALERT_MILLI. The queue holds the keys with
    an outlier first, by alert_score, then the rest by score (then account, symbol); the reasons
    are the top families' features, largest z first."""
    stats = peer_stats(values, features)
    items = []
    for key in sorted(values):
        group, size, zs = stats[key]
        best: dict[str, tuple[int, str]] = {}  # family -> (z, feature), the largest z first
        for name in sorted(features):
            z, family = zs[name][0], FAMILY.get(name, name)
            if z > 0 and z > best.get(family, (0, ""))[0]:
                best[family] = (z, name)
        top = sorted(best.values(), key=lambda c: (-c[0], c[1]))[:top_n]
        items.append({
            "kind": "account", "account": key[0], "symbol": key[1],
            "score": sum(z for z, _ in top),
            "alert_score": sum(z for z, _ in top if z > ALERT_MILLI),
            "peer_group": group, "peers": size,
            "reasons": [(name, values[key][name], z, zs[name][1], zs[name][2])
                        for z, name in top],
        })
    items.sort(key=lambda it: (-it["alert_score"], -it["score"], it["account"], it["symbol"]))
    return items


def explain(values: dict[tuple[str, str], dict[str, int]], account: str, features=RANKED):
    """Every feature of one account's keys against its peer group: value, the group's median
    and MAD, z."""
    stats = peer_stats(values, features)
    out = []
    for key in sorted(values):
        if key[0] != account:
            continue
        group, size, zs = stats[key]
        for name in features:
            z, med, mad = zs[name]
            out.append({"symbol": key[1], "feature": name, "value": values[key][name],
                        "peer_group": group, "peers": size, "median": med, "mad": mad,
                        "z_milli": z})
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
