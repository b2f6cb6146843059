"""Issue 17, defect 8: a restart of the oracle must not cancel a funding transfer. Funding times
are the epoch's multiples of the interval; the oracle keeps what it owes across a restart
(snapshot/restore: the next funding time, the premium samples, the last rate) and catches up a
funding time it missed; risk keeps a funding clock (the last funding time it settled per symbol)
so that each interval is paid exactly once, and explains a catch-up."""

from __future__ import annotations

import msgspec

from cluster.protocol import FundingRate, SpotTick
from nodes.oracle.index import Oracle
from tests.unit.pipeline import TOPO
from tests.unit.test_oracle import book, chain_oracle, specs
from tests.unit.test_risk_examples import BTC, P0, cross, fresh

SEC = 1_000_000_000
INTERVAL = TOPO.symbols[BTC].funding_interval_s * SEC  # 8 h
T = 2_000_000 * INTERVAL  # a funding time (a multiple of the interval since the epoch)
VENUES = ["alpha", "bravo", "charlie", "delta", "echo"]


def run(oracle: Oracle, start_ns: int, end_ns: int, step_ns: int = SEC) -> list:
    """Publish every `step_ns` over [start, end], the five venues at 30,000; what came out."""
    out = []
    for now in range(start_ns, end_ns + 1, step_ns):
        for venue in VENUES:
            oracle.on_spot(SpotTick(venue=venue, symbol=BTC, price=P0, seq=0, ts_ns=now), now)
        out += oracle.publish(now)
    return out


def premium_book(oracle: Oracle) -> None:
    """A book whose impact bid is 0.1% over the index: a premium the rate shows."""
    book(oracle, [(300_300, 100_000)], [(300_310, 100_000)])


def rates(out) -> list[FundingRate]:
    return [m for m in out if type(m) is FundingRate]


def positions():
    pipe = fresh(a=100_000, b=100_000)
    cross(pipe, "a", "b", 1_000)  # a long 1 BTC, b short
    return pipe


def test_defect_8_an_oracle_restart_around_a_funding_time_does_not_cancel_the_payment():
    pipe = positions()
    oracle = chain_oracle()
    premium_book(oracle)
    out = run(oracle, T - 60 * SEC, T - 1 * SEC)
    assert rates(out) == []
    saved = oracle.snapshot()  # the last snapshot before the oracle died at T - 1 s
    # the supervisor starts it again 2.5 s later: it resumes from its snapshot
    restarted = Oracle(specs(), chain_oracle().conf, restarted=True)
    restarted.restore(saved)
    premium_book(restarted)
    out = run(restarted, T + 1_500 * SEC // 1000, T + 11 * SEC)
    funding = rates(out)
    # the payment for T is caught up at once (before: none, and the next only at T + 8 h)
    assert [(r.funding_ts_ns, r.ts_ns) for r in funding] == [(T, T + 1_500_000_000)]
    # and at the rate the premium samples give, as if there had been no restart: the same
    # samples, kept across it (an oracle that never stopped, fed the same, publishes the same)
    twin = chain_oracle()
    premium_book(twin)
    run(twin, T - 60 * SEC, T - 1 * SEC)
    assert rates(run(twin, T + 1_500 * SEC // 1000, T + 1_500 * SEC // 1000))[0].rate_e9 == \
        funding[0].rate_e9 == 500_000
    for rate in funding:
        pipe.send(rate)
    paid = {n: [e.payment for e in pipe.risk.accounts[n].funding_history] for n in "ab"}
    assert paid == {"a": [-15_000_000], "b": [15_000_000]}  # 30,000 x 0.05%, once
    late = [e for e in pipe.audit if e.rule == "risk.funding_late"]
    assert len(late) == 1 and late[0].numbers["late_ms"] == 1_500
    assert late[0].numbers["funding_ts_ns"] == T
    # the next funding time is the epoch's next multiple, not 8 h after the restart
    assert rates(run(restarted, T + INTERVAL - SEC, T + INTERVAL - SEC)) == []
    nxt = rates(run(restarted, T + INTERVAL, T + INTERVAL))
    assert [r.funding_ts_ns for r in nxt] == [T + INTERVAL]


def test_defect_8_a_restart_that_lost_its_state_catches_up_and_risk_pays_each_interval_once():
    pipe = positions()
    oracle = chain_oracle()
    for rate in rates(run(oracle, T - 2 * SEC, T + 2 * SEC)):
        pipe.send(rate)  # T settled on time
    # a restart with no snapshot at T + 3 s: it cannot know T was published, so it says it again
    lost = Oracle(specs(), chain_oracle().conf, restarted=True)
    again = rates(run(lost, T + 3 * SEC, T + 3 * SEC))
    assert [r.funding_ts_ns for r in again] == [T]
    pipe.send(again[0])
    assert [len(pipe.risk.accounts[n].funding_history) for n in "ab"] == [1, 1]  # not twice
    ignored = [e for e in pipe.audit if e.rule == "risk.funding_already_settled"]
    assert len(ignored) == 1 and ignored[0].numbers["last_settled_ts_ns"] == T
    # an oracle down over a whole interval, its state lost: the gap is explained, not hidden
    pipe.send(FundingRate(symbol=BTC, rate_e9=100_000, mark=P0, ts_ns=T + 2 * INTERVAL,
                          funding_ts_ns=T + 2 * INTERVAL))
    missed = [e for e in pipe.audit if e.rule == "risk.funding_missed"]
    assert len(missed) == 1 and missed[0].numbers["missed"] == 1
    assert missed[0].numbers["first_missed_ts_ns"] == T + INTERVAL


def test_defect_8_the_funding_clock_is_in_risks_state_hash():
    a, b = positions(), positions()
    assert a.risk.state_hash() == b.risk.state_hash()
    a.send(FundingRate(symbol=BTC, rate_e9=0, mark=P0, ts_ns=T, funding_ts_ns=T))
    b.send(FundingRate(symbol=BTC, rate_e9=0, mark=P0, ts_ns=T, funding_ts_ns=T + INTERVAL))
    assert a.risk.state_hash() != b.risk.state_hash()  # same balances, different clocks


def test_oracle_snapshot_round_trips_what_a_restart_must_keep():
    oracle = chain_oracle()
    premium_book(oracle)
    run(oracle, T - 30 * SEC, T - 5 * SEC)
    copy = Oracle(specs(), chain_oracle().conf, restarted=True)
    copy.restore(oracle.snapshot())
    assert copy.snapshot() == oracle.snapshot()
    saved = msgspec.json.decode(oracle.snapshot())[BTC]
    assert saved["next_funding_ns"] == T and saved["premium"][3] == 26  # 26 samples kept


def test_defect_8_the_oracle_node_saves_its_state_and_a_restarted_one_resumes_from_it(tmp_path):
    from cluster import config
    from cluster.recording import RecordingShell
    from nodes.oracle import service as oracle_service

    topo = config.load(run_dir=str(tmp_path))
    first = RecordingShell(topo.nodes["oracle"])
    first.now_ns = lambda: T - 2 * SEC
    oracle_service.build(first, topo)
    save = [fn for ms, fn in first.timers if ms == oracle_service.SNAPSHOT_MS][0]
    save()
    assert (tmp_path / "state" / "oracle.snapshot").exists()
    # a first start ignores a snapshot left by an earlier run; a restart resumes from it
    again = RecordingShell(topo.nodes["oracle"])
    again.restarted = True
    oracle_service.build(again, topo)
    assert [e for _, e, _ in again.log.events] == ["oracle_state_restored"]
    fresh_start = RecordingShell(topo.nodes["oracle"])
    oracle_service.build(fresh_start, topo)
    assert fresh_start.log.events == []


def test_defect_8_a_starting_venue_owes_no_funding_time_before_its_start():
    # an oracle restarted without its state at T + 3 s says T again: a risk node that started at
    # T + 1 s (positions opened after T) must not charge it
    pipe = positions()
    pipe.risk.funding_clock.begin({BTC: INTERVAL}, T + 1 * SEC)
    lost = Oracle(specs(), chain_oracle().conf, restarted=True)
    for rate in rates(run(lost, T + 3 * SEC, T + 3 * SEC)):
        pipe.send(rate)
    assert [len(pipe.risk.accounts[n].funding_history) for n in "ab"] == [0, 0]
    assert [e.rule for e in pipe.audit if e.rule.startswith("risk.funding")] == [
        "risk.funding_already_settled"]
    # the risk node starts its clock at its start (a test shell's clock reads 0)
    from cluster.recording import RecordingShell
    from nodes.risk import service as risk_service

    shell = RecordingShell(TOPO.nodes["risk"])
    risk_service.build(shell, TOPO)
    shell.inbox([FundingRate(symbol=BTC, rate_e9=1, mark=P0, ts_ns=5, funding_ts_ns=0 - INTERVAL)])
    assert [e.rule for e in shell.explained] == ["risk.funding_already_settled"]
