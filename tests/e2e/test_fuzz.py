"""A short fuzz run (perf/fuzz.py; `make fuzz` sends 100,000 frames) against real processes:
hostile frames at the gateway and every internal inbox kill nothing, change nothing, and each is
answered or counted with a reason."""

from __future__ import annotations

import asyncio

import pytest

from perf import fuzz
from perf.cluster_load import BENCH_RATE_LIMITS
from tests.conftest import ClusterHandle, stop_and_reap

pytestmark = pytest.mark.e2e


@pytest.fixture
def venue(tmp_path):
    # the session's own rate limits must not be what answers: the frames' content must be
    handle = ClusterHandle(tmp_path, node_settings={"gateway": {"rate_limits": BENCH_RATE_LIMITS}})
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


def test_hostile_frames_kill_nothing_change_nothing_and_each_gets_a_reason(venue):
    report = asyncio.run(fuzz.run(venue.topo, venue.run_dir, frames=3000, seed=7, too_big=2))
    print("\n" + fuzz.markdown(report))
    assert report["ok"], {k: v for k, v in report.items() if k != "internal"}
    gateway = report["gateway"]
    assert sum(gateway["sent"].values()) == 1800 and set(gateway["sent"]) == set(fuzz.CLIENT_KINDS)
    # the refusals name what was wrong, not one catch-all
    assert {"malformed_message", "invalid_message", "frame_too_large"} <= set(gateway["reasons"])
    inboxes = {n: r for n, r in report["internal"].items() if not r.get("no_listener")}
    assert {"risk", "matching", "liquidator", "gateway", "feeds"} <= set(inboxes)
    assert all(r["must_refuse"] > 0 for r in inboxes.values())
