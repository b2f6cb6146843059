"""`perpx audit verify` replays a journal offline through the node's own build: the replay must
start from no input at all, as the live node did, or every snapshot looks damaged."""

from __future__ import annotations

from cluster import config, verify
from cluster.protocol import ClockTick, KeyTable
from cluster.recording import RecordingShell

STARTED_NS = 1_796_646_325_037_923_747  # a live risk node's first tick (journal input 1)


class LiveShell(RecordingShell):
    """risk as it runs: its clock reads STARTED_NS when it is built."""

    @staticmethod
    def now_ns() -> int:
        return STARTED_NS


def test_an_offline_replay_of_the_start_up_tick_reaches_the_live_state():
    """Before: the replayer's build ran risk's start-up ClockTick at time 0 before the journal's
    own (at STARTED_NS), so the funding clock began at 0 and `audit verify` called every run with a
    risk snapshot (60 s) NOT CONSISTENT."""
    from nodes.risk.service import build

    topo = config.load(config.DEFAULT_CONFIG)
    live = LiveShell(topo.nodes["risk"])
    build(live, topo)
    live_core = live.runner.core
    assert live_core.funding_clock.state()  # the start-up tick began the funding clock

    core, process = verify._replayer("risk", topo)
    process(ClockTick(), STARTED_NS)  # what the journal holds as input 1
    assert live_core.keys.table is not None  # input 2: risk's key table, as the file said then
    process(KeyTable(keys=live_core.keys.table, revoked=live_core.keys.revoked), STARTED_NS)
    assert core.funding_clock.state() == live_core.funding_clock.state()
    assert core.mark_ages.state() == live_core.mark_ages.state()
    assert core.state_hash() == live_core.state_hash()
