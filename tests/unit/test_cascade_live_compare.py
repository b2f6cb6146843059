"""perf/cascade_live.py's comparison: the simulator's liquidations against live audit records, and
the cause it names for each difference, judged by the venue's trigger rule at both sides' marks.
The simulated side is the real simulator run on a small snapshot; the live side is written here."""

from __future__ import annotations

import pytest

from cluster import cascade as cz
from cluster.rules.stress import load_params
from perf.cascade_live import Marks, compare, live_liquidations, paused

SYMBOL = "BTC-PERP"
MARK = 100_000
QTY = 100  # lots; mult 10: a notional of 1e8 atoms at the mark
T_SNAPSHOT, T_SHOCK = 1_000, 2_000


def margin_for_trigger(move_ppm: int) -> int:
    """Isolated margin whose trigger (equity <= 0.5 % MM, no fee) is `move_ppm` below the mark."""
    notional = QTY * MARK * 10
    return -notional * move_ppm // 1_000_000 + notional * (1_000_000 + move_ppm) // 200_000_000


def isolated_long(move_ppm: int) -> cz.AccountSnap:
    cost = QTY * MARK * 10
    return cz.AccountSnap(balance=10**9, positions={SYMBOL: (QTY, cost)},
                          isolated={SYMBOL: margin_for_trigger(move_ppm) - cost})


@pytest.fixture(scope="module")
def snap() -> cz.Snapshot:
    sym = cz.SymbolSnap(mult=10, mark=MARK, tiers=[(0, 100, 5_000)], ladder_cap=10**18,
                        bids=[(MARK - 500 * i, 40) for i in range(1, 30)],
                        asks=[(MARK + 500 * i, 40) for i in range(1, 5)])
    accounts = {"near": isolated_long(-50_000), "edge": isolated_long(-83_000),
                "far": isolated_long(-120_000),
                "maker": cz.AccountSnap(balance=10**12,
                                        positions={SYMBOL: (-3 * QTY, -3 * QTY * MARK * 10)})}
    return cz.Snapshot(symbols={SYMBOL: sym}, accounts=accounts, insurance_fund=10**11)


@pytest.fixture(scope="module")
def sim(snap) -> dict:
    params = cz.CascadeParams(shock_symbol=SYMBOL, shock_bps=-800, close="venue")
    return cz.simulate(snap, params, load_params())


def trigger(liq_id: int, account: str, ts: int, mark: int) -> list[dict]:
    n = {"account": account, "symbol": SYMBOL, "isolated": 1, "mark": mark, "equity": 1,
         "maintenance_margin": 2, "forced_fee": 0, "position": QTY}
    return [{"ts_ns": ts, "rule": "liquidation.trigger", "subject": f"liq-{liq_id}",
             "decision": "liquidate", "numbers": n},
            {"ts_ns": ts + 1, "rule": "liquidation.backstop", "subject": f"liq-{liq_id}",
             "decision": "done", "numbers": {"qty": QTY}},
            {"ts_ns": ts + 2, "rule": "liquidation.end", "subject": f"liq-{liq_id}",
             "decision": "closed", "numbers": {}}]


def run(snap, sim, records: list[dict], live_marks: list[int]) -> dict:
    marks = [(T_SHOCK + 10 * (i + 1), SYMBOL, m, m, "normal") for i, m in enumerate(live_marks)]
    both = Marks(snap, sim, marks, T_SNAPSHOT, T_SHOCK, marks[0][0] if marks else 0,
                 {SYMBOL: MARK})
    return compare(snap, sim, live_liquidations(records), paused(records), both, T_SHOCK)


def causes(result: dict) -> dict[str, str]:
    return {d["key"]: d["cause"] for d in result["differences"]}


def test_the_simulator_liquidates_only_the_account_whose_trigger_the_shock_passes(sim):
    assert [liq["key"] for liq in sim["liquidations"]] == ["near:BTC-PERP"]


def test_the_same_liquidations_match_with_the_path_named(snap, sim):
    result = run(snap, sim, trigger(1, "near", T_SHOCK + 50, 92_000), [92_000, 91_900])
    assert result["matched_keys"] == ["near:BTC-PERP"] and not result["differences"]
    row = result["rows"][0]
    # the snapshot has no backstop account: the fund took in the simulation what the live
    # backstop took, and the note names both paths
    assert "simulated book 0 / backstop 0 / fund" in row["path_note"]
    assert "backstop took another share" in row["path_note"]
    assert row["trigger_marks"][SYMBOL]["from_snapshot_mark"] == "-5.00%"


def test_a_live_index_below_the_shocked_level_explains_a_live_only_liquidation(snap, sim):
    records = trigger(1, "near", T_SHOCK + 50, 92_000) + trigger(2, "edge", T_SHOCK + 90, 91_500)
    result = run(snap, sim, records, [92_000, 91_500])  # -8.5 %: past edge's -8.3 %
    assert causes(result) == {"edge:BTC-PERP": "live_index_below_shock"}
    assert not result["unexplained"]


def test_a_live_liquidation_the_live_marks_cannot_explain_is_unexplained(snap, sim):
    records = trigger(1, "near", T_SHOCK + 50, 92_000) + trigger(2, "edge", T_SHOCK + 90, 92_000)
    result = run(snap, sim, records, [92_000, 91_950])  # never below -8.05 %
    assert causes(result) == {"edge:BTC-PERP": "unexplained"}
    assert result["unexplained"] == ["edge:BTC-PERP"]


def test_a_liquidation_between_the_snapshot_and_the_shock_is_the_market_s(snap, sim):
    records = trigger(1, "far", T_SHOCK - 500, 88_000) + trigger(2, "near", T_SHOCK + 50, 92_000)
    result = run(snap, sim, records, [92_000])
    assert causes(result) == {"far:BTC-PERP": "market_before_shock"}


def test_a_shock_the_live_index_never_followed_explains_a_simulated_only_one(snap, sim):
    result = run(snap, sim, [], [99_000, 96_000])  # the live index stopped at -4 %
    assert causes(result) == {"near:BTC-PERP": "live_index_above_shock"}
    assert result["accounts_simulated"] == ["near"] and result["accounts_live"] == []
