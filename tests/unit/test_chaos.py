"""The chaos experiment format and its pure checker: verdicts with evidence from a metrics series."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import chaos
from cluster.chaos import FAIL, NO_DATA, PASS

ROOT = Path(__file__).resolve().parents[2]


def series(n: int = 100, **overrides) -> list[dict]:
    """100 ms samples over n/10 s: 4 orders per sample, all answered in 2 ms, oracle normal."""
    out = []
    for i in range(n):
        s = {"t": round(i * 0.1, 1), "sent": 4, "answered": 4, "rejected": 0, "unknown": 0,
             "lat_ms": [2.0, 2.0, 2.0, 2.0], "oracle_mode.BTC-PERP": "normal",
             "insurance_fund": 1_000}
        for key, fn in overrides.items():
            s[key] = fn(s["t"], s[key] if key in s else None)
        out.append(s)
    return out


def hyp(**fields) -> dict:
    return chaos.check_hypothesis({"name": "h", "value": 0, **fields}, 0)


def test_aggregate_answered_ratio_fails_in_the_fault_window_with_the_counts():
    # During 3..6 s the venue answers only one order in four.
    samples = series(answered=lambda t, v: 1 if 3 <= t < 6 else v)
    h = hyp(metric="answered_ratio", op=">=", value=0.99, phase="during")
    v = chaos.evaluate(h, samples, fault_s=3.0, heal_s=6.0)
    assert v["verdict"] == FAIL
    assert v["observed"] == 0.25
    assert "sent 120" in v["evidence"] and "answered 30" in v["evidence"]
    outside = chaos.evaluate(hyp(metric="answered_ratio", op=">=", value=0.99, phase="outside"),
                             samples, 3.0, 6.0)
    assert outside["verdict"] == PASS and outside["observed"] == 1.0


def test_p99_outside_the_fault_window_ignores_the_fault_but_not_the_tail_after_it():
    slow_in_fault = series(lat_ms=lambda t, v: [400.0] * 4 if 3 <= t < 6 else v)
    h = hyp(metric="p99_ms", op="<=", value=50, phase="outside")
    assert chaos.evaluate(h, slow_in_fault, 3.0, 6.0)["verdict"] == PASS
    # one slow sample after the heal is 4 of 280 latencies outside: over 1%
    slow_after = series(lat_ms=lambda t, v: [400.0] * 4 if t == 7.0 else v)
    v = chaos.evaluate(h, slow_after, 3.0, 6.0)
    assert v["verdict"] == FAIL and v["observed"] == 400.0 and "worst_ms" in v["evidence"]


def test_recovers_within_measures_the_time_from_the_heal():
    degraded = series(**{"oracle_mode.BTC-PERP":
                         lambda t, v: "degraded" if 3 <= t < 7.5 else v})
    ok = hyp(metric="oracle_mode.BTC-PERP", check="recovers", within="2s", value="normal")
    v = chaos.evaluate(ok, degraded, 3.0, 6.0)
    assert v["verdict"] == PASS and v["observed"] == 1.5
    tight = hyp(metric="oracle_mode.BTC-PERP", check="recovers", within="1s", value="normal")
    v = chaos.evaluate(tight, degraded, 3.0, 6.0)
    assert v["verdict"] == FAIL and "1.5s after the heal" in v["evidence"]
    never = series(**{"oracle_mode.BTC-PERP": lambda t, v: "degraded" if t >= 3 else v})
    v = chaos.evaluate(ok, never, 3.0, 6.0)
    assert v["verdict"] == FAIL and "still 'degraded'" in v["evidence"]


def test_always_and_ever_name_the_first_sample_that_decided():
    samples = series(**{"oracle_mode.BTC-PERP": lambda t, v: "carry" if 4 <= t < 5 else v})
    always = hyp(metric="oracle_mode.BTC-PERP", check="always", value="normal", phase="during")
    v = chaos.evaluate(always, samples, 3.0, 6.0)
    assert v["verdict"] == FAIL and "first at t=4.0s: 'carry'" in v["evidence"]
    ever = hyp(metric="oracle_mode.BTC-PERP", check="ever", op="in",
               value=["carry", "book", "degraded"], phase="during")
    v = chaos.evaluate(ever, samples, 3.0, 6.0)
    assert v["verdict"] == PASS and "t=4.0s" in v["evidence"]
    assert chaos.evaluate(ever, series(), 3.0, 6.0)["verdict"] == FAIL


def test_delta_of_a_counter_over_a_phase():
    drained = series(insurance_fund=lambda t, v: v - 700 if t >= 4 else v)
    h = hyp(metric="insurance_fund", check="delta", op=">=", value=-500, phase="all")
    v = chaos.evaluate(h, drained, 3.0, 6.0)
    assert v["verdict"] == FAIL and v["observed"] == -700 and "from 1000 to 300" in v["evidence"]
    assert chaos.evaluate(h, series(), 3.0, 6.0)["verdict"] == PASS


def test_no_data_is_not_a_pass():
    h = hyp(metric="mark_gap_ppm.BTC-PERP", check="always", op="<=", value=100)
    assert chaos.evaluate(h, series(), 3.0, 6.0)["verdict"] == NO_DATA
    f = hyp(metric="acked_orders_lost", op="==", value=0)
    assert chaos.evaluate(f, series(), 3.0, 6.0, finals={})["verdict"] == NO_DATA
    assert chaos.evaluate(f, series(), 3.0, 6.0, finals={"acked_orders_lost": 2})["verdict"] == FAIL
    nothing_sent = series(sent=lambda t, v: 0, answered=lambda t, v: 0)
    v = chaos.evaluate(hyp(metric="answered_ratio", op=">=", value=0.9), nothing_sent, 3.0, 6.0)
    assert v["verdict"] == NO_DATA
    assert not chaos.passed([v]) and not chaos.passed([])


def test_a_value_of_another_type_fails_rather_than_raises():
    h = hyp(metric="oracle_mode.BTC-PERP", check="always", op=">=", value=3)
    assert chaos.evaluate(h, series(), 3.0, 6.0)["verdict"] == FAIL


@pytest.mark.parametrize("fields, message", [
    ({"metric": "answered_ratio", "op": "=~"}, "op '=~'"),
    ({"metric": "answered_ratio", "phase": "later"}, "phase 'later'"),
    ({"metric": "oracle_mode.BTC-PERP", "check": "aggregate"}, "not a window aggregate"),
    ({"metric": "oracle_mode.BTC-PERP", "check": "recovers"}, "needs `within`"),
    ({"metric": "answered_ratio", "op": "in"}, "needs a list"),
])
def test_a_bad_hypothesis_is_refused_by_name(fields, message):
    with pytest.raises(chaos.ExperimentError, match=message):
        chaos.check_hypothesis({"name": "h", "value": 0, **fields}, 0)


def test_an_experiment_waiting_for_a_fault_is_loaded_but_not_run(tmp_path, monkeypatch):
    # (every fault the shipped experiments name exists now: a made-up one waits)
    monkeypatch.setitem(chaos.FEATURES, "teleport", "a node moved to another host mid-run")
    path = tmp_path / "teleport.toml"
    path.write_text('name = "x"\nrequires = ["teleport"]\nend = "5s"\n'
                    '[[step]]\nat = "1s"\naction = "teleport"\nnode = "matching"\n'
                    '[[hypothesis]]\nname = "h"\nmetric = "acked_orders_lost"\nvalue = 0\n')
    exp = chaos.load(path)
    assert exp["waiting_for"] == ["teleport"] and exp["scenario"] is None


def test_a_failover_experiment_is_runnable_now(tmp_path):
    """#19 landed: the `failover` action is a timeline step, not a wait."""
    path = tmp_path / "failover.toml"
    path.write_text('name = "x"\nrequires = ["failover"]\nend = "5s"\n'
                    '[[step]]\nat = "1s"\naction = "failover"\nnode = "matching"\n'
                    'op = "pause-primary"\nduration = "2s"\n'
                    '[[hypothesis]]\nname = "h"\nmetric = "acked_orders_lost"\nvalue = 0\n')
    exp = chaos.load(path)
    assert exp["waiting_for"] == [] and exp["scenario"] is not None
    from netsim import scenario
    assert scenario.to_command({"action": "failover", "node": "risk", "op": "kill-primary"}) == (
        "fault", {"node": "risk", "op": "kill", "primary": True})
    cmd, args = scenario.to_command({"action": "failover", "node": "risk", "op": "pause-standby",
                                     "duration": "3s"})
    assert args == {"node": "risk", "op": "pause", "standby": True, "seconds": 3.0}


def test_a_bad_step_in_the_timeline_is_refused_when_loaded(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('end = "5s"\n[[step]]\nat = "1s"\naction = "set"\nlink = "nowhere->x"\n'
                    'latency = "1ms"\n'
                    '[[hypothesis]]\nname = "h"\nmetric = "answered_ratio"\nvalue = 0\n')
    with pytest.raises(chaos.ExperimentError, match="nowhere"):
        chaos.load(path)


def test_every_shipped_experiment_loads():
    paths = sorted((ROOT / "experiments").glob("*.toml"))
    assert paths
    for path in paths:
        exp = chaos.load(path)
        assert exp["hypotheses"], path


def test_recovers_can_count_from_the_first_fault():
    down = series(nodes_running=lambda t, v: 5 if 3 <= t < 4.2 else 6)
    h = hyp(metric="nodes_running", check="recovers", after="fault", within="1s", value=6)
    v = chaos.evaluate(h, down, 3.0, 6.0)
    assert v["verdict"] == FAIL and v["observed"] == 1.2 and "after the fault" in v["evidence"]
    from_heal = hyp(metric="nodes_running", check="recovers", within="1s", value=6)
    assert chaos.evaluate(from_heal, down, 3.0, 6.0)["verdict"] == PASS


def test_a_sample_that_overlaps_the_fault_is_not_before_it():
    # the fault starts 33 ms into the 5.0 s sample: that sample's orders may have met it
    assert not chaos.in_phase(5.0, "before", fault_s=5.033, heal_s=7.0)
    assert chaos.in_phase(5.0, "during", fault_s=5.033, heal_s=7.0)
    assert chaos.in_phase(4.9, "before", fault_s=5.0, heal_s=7.0)
    assert chaos.in_phase(7.0, "after", fault_s=5.0, heal_s=7.0)
