"""Experiment 10's exit bot, the pure parts: its exits into samples and the exit aggregates the
hypotheses read (how many exits were delayed, missed or throttled; their delays; how much worse
than the mark at the decision they filled)."""

from __future__ import annotations

import pytest

from cluster import chaos
from cluster.chaos_run import build_samples, exit_samples

EXITS = [  # as ExitBot records them (t: decision time, s)
    {"t": 0.05, "mark": 300_000, "attempts": 1, "throttled": 0, "filled": 1, "notional": 299_940,
     "slippage_ppm": 200, "missed": False, "delay_ms": 6.0, "delayed": False},
    {"t": 1.02, "mark": 318_000, "attempts": 9, "throttled": 2, "filled": 1, "notional": 300_000,
     "slippage_ppm": 56_604, "missed": False, "delay_ms": 1_100.0, "delayed": True},
    {"t": 1.04, "mark": 318_000, "attempts": 12, "throttled": 0, "filled": 0, "notional": 0,
     "missed": True, "delayed": False},
    {"t": 3.0, "mark": 300_000, "attempts": 1, "throttled": 0, "filled": 0, "notional": 0},
]  # the last one unfinished at the end of the run: not counted


def samples():
    return build_samples(0, [], [], [], 3.0, EXITS)


def test_exits_are_bucketed_by_decision_time():
    assert len(exit_samples(EXITS)) == 3
    s = samples()
    assert (s[0]["exits"], s[0]["exit_delay_ms"], s[0]["exit_slippage_ppm"]) == (1, [6.0], [200])
    tenth = s[10]
    assert (tenth["exits"], tenth["exits_missed"], tenth["exits_delayed"],
            tenth["exits_throttled"]) == (2, 1, 1, 1)
    assert tenth["exit_delay_ms"] == [1_100.0] and tenth["exit_slippage_ppm"] == [56_604]
    assert "exits" not in s[20] and "exits" not in s[30]


@pytest.mark.parametrize("metric, phase, want", [
    ("exits", "before", 1), ("exits_missed", "before", 0), ("exit_slippage_max_ppm", "before", 200),
    ("exits", "during", 2), ("exits_missed", "during", 1), ("exits_delayed", "during", 1),
    ("exits_throttled", "during", 1), ("exit_delay_max_ms", "during", 1_100.0),
    ("exit_slippage_p50_ppm", "during", 56_604), ("exit_slippage_max_ppm", "all", 56_604),
    ("exit_delay_p50_ms", "all", 6.0),
])
def test_exit_aggregates_over_a_phase(metric, phase, want):
    h = chaos.check_hypothesis({"name": "x", "metric": metric, "phase": phase, "op": "==",
                                "value": want}, 0)
    assert h["check"] == "aggregate"
    verdict = chaos.evaluate(h, samples(), fault_s=1.0, heal_s=2.0)
    assert (verdict["verdict"], verdict["observed"]) == (chaos.PASS, want), verdict


def test_a_missed_exit_fails_the_hypothesis_with_its_evidence():
    h = chaos.check_hypothesis({"name": "no exit missed", "metric": "exits_missed",
                                "op": "==", "value": 0}, 0)
    verdict = chaos.evaluate(h, samples(), fault_s=1.0, heal_s=2.0)
    assert verdict["verdict"] == chaos.FAIL and verdict["observed"] == 1
    assert "missed 1" in verdict["evidence"] and "exits 3" in verdict["evidence"]


def test_no_exit_in_the_phase_is_no_data_not_a_pass():
    h = chaos.check_hypothesis({"name": "x", "metric": "exits_missed", "phase": "after",
                                "op": "==", "value": 0}, 0)
    assert chaos.evaluate(h, samples(), fault_s=1.0, heal_s=2.0)["verdict"] == chaos.NO_DATA


@pytest.mark.parametrize("bad", [{"every": "250ms"}, {"account": "taker1", "qty": 0},
                                 {"account": "taker1", "slippage_ppm": 1_000_000},
                                 {"account": "taker1", "deadline": "0s"},
                                 {"account": "taker1", "sizes": 2}])
def test_a_bad_exits_section_is_refused(bad):
    with pytest.raises(chaos.ExperimentError, match="load.exits"):
        chaos._load_section({"exits": bad})


def test_experiments_10_and_10b_run_the_same_bot():
    ten = chaos.load("experiments/10-rate-limit-tightening.toml")
    control = chaos.load("experiments/10b-volatility-spike-limits-unchanged.toml")
    assert ten["load"]["exits"] == control["load"]["exits"]
    assert ten["load"]["positions"] == control["load"]["positions"]
    assert ten["scenario"]["steps"] == control["scenario"]["steps"]
    assert control["topology"]["nodes"]["gateway"]["rate_limits"]["scale"][
        "high_volatility"]["account_orders"] == 1_000_000


def test_makers_quote_around_the_mark_or_the_index():
    from cluster.chaos_run import Maker, Observer
    from cluster.protocol import IndexMark

    observer = Observer.__new__(Observer)
    observer.marks = {"BTC-PERP": IndexMark(symbol="BTC-PERP", index=276_662, mark=282_455,
                                            last=299_650, seq=1, ts_ns=1, sources=5,
                                            mode="normal")}
    by = {around: Maker(None, observer, chaos._load_section({"quote_around": around}))
          for around in ("mark", "index")}
    assert by["mark"]._mark("BTC-PERP") == 282_455 and by["index"]._mark("BTC-PERP") == 276_662
    assert by["mark"]._mark("ETH-PERP") is None
    assert chaos._load_section({})["quote_around"] == "mark"
    with pytest.raises(chaos.ExperimentError, match="quote_around"):
        chaos._load_section({"quote_around": "last"})
