"""Surveillance ranking: robust z by hand, score = sum of the top contributors, deterministic ties,
drift alarms; and the core end to end on a spoofer among market makers."""

from __future__ import annotations

from nodes.surveillance.ranking import DriftBank, Drift, WARMUP, rank, robust_z
from perf.surveillance_sim import MS, Venue


def test_robust_z_with_mad():
    # median 3, deviations [2,1,0,1,7] -> MAD 1; z(10) = 0.6745 * 7 / 1 = 4.7215 -> 4721 milli
    assert robust_z([1, 2, 3, 4, 10]) == [-1349, -674, 0, 674, 4721]


def test_robust_z_falls_back_to_mean_absolute_deviation():
    # median 0 (lower median), MAD 0; mean |dev| = 10/5 = 2; z(10) = 10 / (1.253314 * 2) = 3.9894
    assert robust_z([0, 0, 0, 0, 10]) == [0, 0, 0, 0, 3989]
    assert robust_z([5, 5, 5]) == [0, 0, 0]


def values(**rows):
    return {(name, "S"): feats for name, feats in rows.items()}


def test_score_is_the_sum_of_the_top_three_and_says_why():
    base = {"f1": 1, "f2": 1, "f3": 1, "f4": 1}
    rows = {f"n{i}": dict(base) for i in range(6)}
    rows["bad"] = {"f1": 11, "f2": 6, "f3": 3, "f4": 2}
    items = rank(values(**rows), features=("f1", "f2", "f3", "f4"))
    top = items[0]
    assert top["account"] == "bad"
    # MAD 0 on every feature: (x - 1) / (1.253314 * mean|dev|); mean|dev| = (x - 1) / 7
    z = 7 * 1_000_000_000 // 1_253_314  # 5585 milli each, whatever the size
    assert [r[0] for r in top["reasons"]] == ["f1", "f2", "f3"]  # equal z: by name
    assert [r[1] for r in top["reasons"]] == [11, 6, 3]
    assert all(abs(r[2] - z) <= 1 for r in top["reasons"])
    assert top["score"] == sum(r[2] for r in top["reasons"])


def test_ties_are_broken_by_account_then_symbol():
    rows = {name: {"f": 0} for name in ("zed", "amy", "bob")}
    items = rank(values(**rows), features=("f",))
    assert [it["account"] for it in items] == ["amy", "bob", "zed"]


def test_drift_alarm_on_a_shifted_centre_not_on_noise():
    d = Drift()
    noise = [100, 102, 98, 101, 99] * (WARMUP // 5)
    assert not any(d.feed(x) for x in noise)  # the warm-up: mu0 100, sigma from the MAD
    assert (d.mu0, d.sigma) == (100, 1)  # MAD 1 x 1.4826, floored
    assert not any(d.feed(x) for x in noise[:10])
    alarms = [d.feed(110) for _ in range(5)]
    assert alarms[-1] == "cusum_up"


def test_drift_items_are_ranked_with_their_run_length():
    bank = DriftBank(features=("f",))
    for _ in range(WARMUP):
        assert bank.feed({("a", "S"): {"f": 5}, ("b", "S"): {"f": 5}}) == []
    items = []
    for _ in range(3):
        items = bank.feed({("a", "S"): {"f": 50}, ("b", "S"): {"f": 50}})
    assert items and items[0]["kind"] == "drift" and items[0]["feature"] == "f"
    assert dict((r[0], r[1]) for r in items[0]["reasons"])["run_length"] == 3


def test_spoofer_among_market_makers_is_first_with_reasons():
    v = Venue()
    mid = 300_000
    t = 0
    for round_ in range(20):  # 5 makers requote both sides; a taker trades each round
        t = round_ * 500 * MS
        for m in range(5):
            name = f"mm{m}"
            b = v.place(name, 1, 10, mid - 10 - m, t)
            a = v.place(name, -1, 10, mid + 10 + m, t)
            v.cancel(name, b, t + 200 * MS)
            v.cancel(name, a, t + 200 * MS)
        v.place(f"tk{round_ % 3}", 1 if round_ % 2 else -1, 2, 0, t + 100 * MS)
        if round_ % 4 == 0:  # the spoofer: a large bid away, a small ask at the touch, cancel
            big = v.place("spoof", 1, 200, mid - 60, t + 50 * MS)
            v.place("spoof", -1, 2, mid + 5, t + 50 * MS)
            v.place("tk9", 1, 2, 0, t + 60 * MS)
            v.cancel("spoof", big, t + 150 * MS)
    alerts = v.core.tick(t + MS)
    top = v.core.queue[0]
    assert top["account"] == "spoof"
    assert {r[0] for r in top["reasons"]} & {"spoof_milli", "layer_milli"}
    assert [a["account"] for a in alerts if a["kind"] == "account"][0] == "spoof"
    assert alerts[0]["suggest"]
    # explain lists every ranked feature of the account against the population
    rows = v.core.explain("spoof", t + MS)
    assert {r["feature"] for r in rows} >= {"spoof_milli", "otr_num_milli", "liq_cluster"}


def test_crowding_index_long_side_when_carry_is_high_and_volatility_low():
    from nodes.surveillance.crowding import MIN_HISTORY, Crowding

    c = Crowding()
    calm = {"funding_e9": 100_000, "basis_ppm": 200, "realized_vol_ppm": 5_000,
            "oi_per_depth_milli": 500}
    for i in range(MIN_HISTORY):  # an ordinary market, with a little noise
        assert c.feed("S", {k: v + (i % 3) for k, v in calm.items()}) is None
    crowded = {"funding_e9": 400_000, "basis_ppm": 900, "realized_vol_ppm": 2_000,
               "oi_per_depth_milli": 1_500}
    item = c.feed("S", crowded)
    # medians (lower) of the 21 samples: the calm value + 1; the MADs are 1, under each floor.
    # funding +299,999 e-9 / 10,000: capped at 10; basis +699 / 100: 6.99; vol -3,001 / 1,000:
    # -3.001 (counts +3.001); OI / depth +999 / 100: 9.99
    assert item["side"] == "long" and item["score"] == 10_000 + 6_990 + 3_001 + 9_990
    assert [r[0] for r in item["reasons"]][:2] == ["funding_e9", "basis_ppm"]
    mirrored = {**crowded, "funding_e9": -200_000, "basis_ppm": -500}  # shorts pay to stay
    assert c.feed("S", mirrored)["side"] == "short"
    assert Crowding().feed("S", mirrored) is None  # no history: no index


def test_a_lasting_drift_is_alerted_once_and_stays_queued():
    from nodes.surveillance.core import SurveillanceCore
    from nodes.surveillance.features import RANKED

    class Population:  # the features' population, shifted at will
        specs: dict = {}
        keys: dict = {}
        level = 5

        def values(self, now):
            return {(a, "S"): {**dict.fromkeys(RANKED, 0), "lev_changes": self.level}
                    for a in ("a", "b", "c")}

    core = SurveillanceCore({})
    core.features = Population()
    core.drift = DriftBank(features=("lev_changes",))
    for t in range(WARMUP):
        assert core.tick(t) == []
    core.features.level = 50
    raised = [a for t in range(WARMUP, WARMUP + 10) for a in core.tick(t) if a["kind"] == "drift"]
    assert len(raised) == 1 and raised[0]["feature"] == "lev_changes"  # not one per tick
    assert [i["feature"] for i in core.queue if i["kind"] == "drift"] == ["lev_changes"]


# ---------------------------------------------------------------- peer groups and families


def styled(style: str, **features) -> dict:
    """A key's values with the counters its peer group is read from."""
    basis = {"quoter": {"two_sided": 5, "fill_qty": 10, "maker_qty": 10},
             "maker": {"two_sided": 0, "fill_qty": 10, "maker_qty": 5},
             "taker": {"two_sided": 0, "fill_qty": 10, "maker_qty": 4},
             "unfilled": {"two_sided": 0, "fill_qty": 0, "maker_qty": 0}}[style]
    return {**basis, **features}


def test_peer_group_by_two_sided_quoting_then_passive_share():
    from nodes.surveillance.ranking import peer_group

    assert peer_group(styled("quoter")) == "quoter"  # both sides at once, whatever it traded
    assert peer_group(styled("maker")) == "maker"  # exactly half its lots passive
    assert peer_group(styled("taker")) == "taker"  # 4 of 10
    assert peer_group(styled("unfilled")) == "unfilled"
    assert peer_group({}) == "unfilled"  # a key with only settings or a position


def test_a_value_normal_for_quoters_is_an_outlier_among_takers():
    from nodes.surveillance.ranking import PEER_MIN, peer_stats, rank

    assert PEER_MIN <= 8  # both groups have their own median and MAD
    rows = {f"q{i}": styled("quoter", f=v) for i, v in enumerate([10, 12, 14, 16, 18, 20, 22, 40])}
    rows.update({f"t{i}": styled("taker", f=1) for i in range(7)})
    rows["t7"] = styled("taker", f=20)
    stats = peer_stats(values(**rows), features=("f",))
    # quoters: lower median 16; |deviations| 6 4 2 0 2 4 6 24 -> MAD 4; z = 0.6745 (x - 16) / 4
    assert stats[("q7", "S")] == ("quoter", 8, {"f": (4047, 16, 4)})  # 24 x 0.6745 / 4 = 4.047
    assert stats[("q5", "S")][2]["f"] == (674, 16, 4)  # 20: 4 x 0.6745 / 4
    # takers: median 1, MAD 0: mean |dev| = 19 / 8; z = 19 / (1.253314 x 19 / 8) = 6.383
    assert stats[("t7", "S")] == ("taker", 8, {"f": (6383, 1, 0)})
    items = {it["account"]: it for it in rank(values(**rows), features=("f",))}
    assert items["t7"]["reasons"] == [("f", 20, 6383, 1, 0)]  # the peers' median and MAD
    assert (items["t7"]["peer_group"], items["t7"]["peers"]) == ("taker", 8)
    assert items["q5"]["reasons"] == [("f", 20, 674, 16, 4)]  # the same 20, among quoters


def test_a_group_smaller_than_peer_min_is_compared_with_everyone():
    from nodes.surveillance.ranking import peer_stats

    rows = {f"t{i}": styled("taker", f=0) for i in range(8)}
    rows["lone"] = styled("quoter", f=9)  # the only quoter: no median of its own group
    stats = peer_stats(values(**rows), features=("f",))
    # all 9: median 0, MAD 0, mean |dev| 1; z = 9 / 1.253314 = 7.1809
    assert stats[("lone", "S")] == ("all", 9, {"f": (7180, 0, 0)})
    assert stats[("t0", "S")][:2] == ("taker", 8)


def test_one_family_counts_once_in_the_score():
    rows = {f"n{i}": styled("unfilled", otr_num_milli=0, otr_vol_milli=0) for i in range(7)}
    rows["x"] = styled("unfilled", otr_num_milli=50_000, otr_vol_milli=30_000)
    [top, *_] = rank(values(**rows), features=("otr_num_milli", "otr_vol_milli"))
    # MAD 0; 1.253314 x mean |dev| (6,266 and 3,760) is under the floor 10,000: z = x / 10,000
    assert top["account"] == "x" and top["score"] == 5_000  # the family's largest, not 5 + 3
    assert top["reasons"] == [("otr_num_milli", 50_000, 5_000, 0, 0)]


def test_an_outlier_ranks_above_a_larger_sum_of_unremarkable_deviations():
    # per feature: six keys at 0..5, then a and b; lower median 3, MAD 2, z = 0.6745 (x - 3) / 2
    rows = {f"n{i}": styled("unfilled", f1=i, f2=i, f3=i) for i in range(6)}
    rows["a"] = styled("unfilled", f1=15, f2=6, f3=6)  # z 4.047 (an outlier), 1.011, 1.011
    rows["b"] = styled("unfilled", f1=6, f2=13, f3=13)  # z 1.011, 3.372, 3.372: none above 3.5
    items = rank(values(**rows), features=("f1", "f2", "f3"))
    a, b = (next(it for it in items if it["account"] == n) for n in "ab")
    assert (a["score"], a["alert_score"]) == (4047 + 1011 + 1011, 4047)
    assert (b["score"], b["alert_score"]) == (1011 + 3372 + 3372, 0)
    assert [it["account"] for it in items][:2] == ["a", "b"]  # a's outlier first, then by score
