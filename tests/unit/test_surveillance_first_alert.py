"""#23, time to first alert and clean-run false alerts: an order-to-trade ratio needs a minimum of
messages before it counts (a market maker's first quotes, a retail account's few unfilled orders
are no ratio), and the push of a momentum ignition alerts as it happens (sweep_lots), not only
once the reversal has come."""

from __future__ import annotations

import random

from nodes.surveillance.features import OTR_MIN_MESSAGES
from nodes.surveillance.ranking import rank
from perf.surveillance_agents import LEVELS, Market, QuoteStuffer
from perf.surveillance_sim import MS, Venue

S_NS = 1_000 * MS

S = "BTC-PERP"
MID = 300_000


def market(v: Venue, rounds: int = 10) -> int:
    """Six takers each buy or sell 2-6 lots from a maker that requotes 10 lots a side; the time
    after the last round."""
    t = 0
    for r in range(rounds):
        t = r * 500 * MS
        b = v.place("mm", 1, 10, MID - 10, t)
        a = v.place("mm", -1, 10, MID + 10, t)
        for k in range(6):
            v.place(f"tk{k}", 1 if (r + k) % 2 else -1, 2 + (r + k) % 5, 0, t + (k + 1) * MS)
        v.cancel("mm", b, t + 400 * MS)
        v.cancel("mm", a, t + 400 * MS)
    return t + 500 * MS


def alerted(v: Venue, now: int) -> set[str]:
    return {a["account"] for a in v.core.tick(now) if a["kind"] == "account"}


def test_a_few_unfilled_orders_are_no_ratio_until_there_are_enough():
    v = Venue()
    t = market(v)
    # a new quoter: 2 levels a side, 40 lots, nothing traded yet (its first second)
    for i, (side, price) in enumerate(((1, MID - 30), (-1, MID + 30), (1, MID - 40),
                                       (-1, MID + 40))):
        v.place("new", side, 10, price, t + i * MS)
    now = t + 10 * MS
    f = v.core.features.values(now)[("new", S)]
    assert (f["orders"], f["fills"], f["otr_num_milli"], f["otr_vol_milli"]) == (4, 0, 0, 0)
    # before: OTR by volume 40 (the zero-trade rule) against a population at 0: z 4.0, an alert
    assert "new" not in alerted(v, now)
    # a minimum, not a mute: it keeps quoting and cancelling without a trade, 10 messages
    oids = [v.place("new", 1, 10, MID - 50 - i, now + i * MS) for i in range(3)]
    for i, oid in enumerate(oids):
        v.cancel("new", oid, now + (5 + i) * MS)
    now += 20 * MS
    f = v.core.features.values(now)[("new", S)]
    assert f["orders"] + f["cancels"] == OTR_MIN_MESSAGES == 10
    assert (f["otr_num_milli"], f["otr_vol_milli"]) == (10_000, 70_000)
    assert "new" in alerted(v, now)


def test_sweep_lots_is_the_aggressors_order_only():
    v = Venue()
    for i in range(6):  # asks 300010 ... 300060, 3 lots each
        v.place("mm", -1, 3, MID + 10 * (i + 1), 0)
    v.place("i", 1, 10, MID + 100, MS, tif="IOC")  # takes 3 + 3 + 3 + 1 over 4 levels
    v.place("i", 1, 2, MID + 100, 2 * MS, tif="IOC")  # smaller: the peak stays
    v.place("r", 1, 4, MID - 10, 3 * MS)  # rests, takes nothing
    f = v.core.features.values(4 * MS)
    assert f[("i", S)]["sweep_lots"] == 10
    assert f[("mm", S)]["sweep_lots"] == 0  # the maker's lots were taken, it took none
    assert f[("r", S)]["sweep_lots"] == 0
    # 30 lots sent into the 6 left: the side emptied, the order counts as sent (the push)
    v.place("j", 1, 30, MID + 100, 5 * MS, tif="IOC")
    f = v.core.features.values(6 * MS)
    assert (f[("j", S)]["fill_qty"], f[("j", S)]["sweep_lots"]) == (6, 30)
    # an order that trades nothing on arrival is no push, however large
    v.place("k", 1, 50, MID - 20, 7 * MS)
    assert v.core.features.values(8 * MS)[("k", S)]["sweep_lots"] == 0


def test_the_ignition_push_alerts_before_the_reversal():
    v = Venue()
    t = market(v)
    for i in range(6):  # depth for the sweep: 6 levels of 40 lots
        v.place("mm", -1, 40, MID + 12 + 5 * i, t)
    v.place("ign", 1, 200, MID + 300, t + MS, tif="IOC")  # 200 lots in one aggressive order
    # no reversal yet (ignition_ppm is 0): the push itself is the outlier, within one ranking
    f = v.core.features.values(t + 2 * MS)[("ign", S)]
    assert (f["sweep_lots"], f["ignition_ppm"]) == (200, 0)
    alerts = [a for a in v.core.tick(t + 500 * MS) if a["account"] == "ign"]
    assert alerts and alerts[0]["reasons"][0][:2] == ("sweep_lots", 200)
    assert alerts[0]["suggest"]


def test_sweep_and_ignition_count_once_as_one_family():
    rows = {(f"n{i}", S): {"sweep_lots": 0, "ignition_ppm": 0} for i in range(7)}
    rows[("x", S)] = {"sweep_lots": 100, "ignition_ppm": 60}
    [top, *_] = rank(rows, features=("sweep_lots", "ignition_ppm"))
    # floors 20 lots and 20 ppm: z 5.0 and 3.0; the family's largest, not their sum
    assert top["account"] == "x" and top["score"] == 5_000
    assert top["reasons"] == [("sweep_lots", 100, 5_000, 0, 0)]


def test_the_stuffers_time_to_first_alert_counts_from_its_first_order():
    v = Venue()
    bid = v.place("mm", 1, 10, MID - 1, 0)
    v.place("mm", -1, 10, MID, 0)  # a 1-tick spread: no room to improve the bid
    rng = random.Random(1)
    stuffer = QuoteStuffer("x-stuffer", v, Market(v, rng), rng, level=LEVELS["hard"], start_ns=0)
    after = stuffer.act(1_000 * MS)
    assert stuffer.started_ns is None  # a burst that sent nothing is no abusive action yet
    assert ("x-stuffer", S) not in v.core.features.keys
    v.cancel("mm", bid, after - MS)
    v.place("mm", 1, 10, MID - 5, after - MS)  # the spread opens
    stuffer.act(after)
    assert stuffer.started_ns == after
    assert v.core.features.values(after + S_NS // 2)[("x-stuffer", S)]["orders"] > 0
