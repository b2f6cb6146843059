"""The runner's pure parts: audit records and probe orders into 100 ms samples."""

from __future__ import annotations

from cluster.chaos_run import audit_counters, build_samples

S = 1_000_000_000
START = 1_000 * S


def rec(t_s: float, rule: str, decision: str = "done", subject: str = "liq-1", node="liquidator",
        **numbers) -> tuple[int, dict]:
    return (START + int(t_s * S), {"node": node, "rule": rule, "subject": subject,
                                   "decision": decision, "numbers": numbers})


RECORDS = [
    rec(1.0, "oracle.carry", "carry", "BTC-PERP", node="oracle"),
    rec(1.0, "oracle.source_outlier", "outlier", "BTC-PERP", node="oracle"),
    rec(2.0, "liquidation.trigger", "liquidate"),
    rec(2.1, "liquidation.insurance", fund_delta=-500),
    rec(2.2, "liquidation.adl", subject="liq-2", fund_delta=0),
    rec(2.3, "liquidation.paused", "paused", "liq-3"),
    rec(3.0, "liquidation.reduce", subject="liq-2", fund_delta=30),
    rec(4.0, "failover.promoted", "promoted", "risk.b", node="risk", epoch=2),
    rec(7.0, "failover.fenced", "fenced", "risk", node="risk", epoch=1, refused_sends=12),
]


def test_audit_counters_count_up_to_a_time():
    assert audit_counters(RECORDS, START + int(1.5 * S)) == {
        "liquidations": 0, "liquidations_paused": 0, "adl_events": 0, "insurance_fund_delta": 0,
        "oracle_changes": 1, "oracle_outlier_exclusions": 1, "oracle_stale_exclusions": 0,
        "failover_promotions": 0, "primaries_fenced": 0, "fenced_refused_sends": 0}
    end = audit_counters(RECORDS, START + 10 * S)
    assert end["liquidations"] == 2 and end["adl_events"] == 1 and end["liquidations_paused"] == 1
    assert end["insurance_fund_delta"] == -470
    # #19: a promotion, then the resumed old primary fenced with what it held
    assert audit_counters(RECORDS, START + 5 * S)["failover_promotions"] == 1
    assert audit_counters(RECORDS, START + 5 * S)["primaries_fenced"] == 0
    assert (end["primaries_fenced"], end["fenced_refused_sends"]) == (1, 12)


def test_orders_are_bucketed_by_intended_time_and_series_carried_forward():
    orders = [{"t": 0.05, "latency_ms": 3.0}, {"t": 0.15, "latency_ms": 900.0, "unknown": 1},
              {"t": 0.16, "rejected": "reduce_only", "latency_ms": 2.0}, {"t": 0.25}]
    ticks = [{"t": 0.0, "oracle_mode.BTC-PERP": "normal"}, {"t": 0.12, "oracle_mode.BTC-PERP": "carry"}]
    samples = build_samples(START, ticks, orders, RECORDS, end_s=2.5)
    assert [s["sent"] for s in samples[:3]] == [1, 2, 1]
    assert [s["answered"] for s in samples[:3]] == [1, 2, 0]
    assert samples[1]["unknown"] == 1 and samples[1]["rejected"] == 1
    assert samples[1]["lat_ms"] == [900.0, 2.0]
    # a sample shows the latest value sampled at or before its time
    assert samples[1]["oracle_mode.BTC-PERP"] == "normal" and samples[2]["oracle_mode.BTC-PERP"] == "carry"
    assert samples[-1]["oracle_mode.BTC-PERP"] == "carry"
    assert samples[20]["liquidations"] == 1 and samples[0]["liquidations"] == 0


def test_a_rerun_starts_from_an_empty_run_directory(tmp_path):
    # a second run of the same experiment counted the first one's liquidations (the audit
    # journals survive `cluster up`): the fund moved twice as much as it did
    from cluster.chaos_run import fresh_run_dir

    exp = {"id": "08-x", "curve_point": "200ms"}
    old = tmp_path / "08-x-200ms" / "var" / "audit"
    old.mkdir(parents=True)
    (old / "liquidator.jsonl").write_text('{"rule": "liquidation.insurance"}\n')
    run_dir = fresh_run_dir(exp, tmp_path)
    assert run_dir == tmp_path / "08-x-200ms" and not run_dir.exists()
