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


def test_with_curve_off_and_standbys_the_decoders_still_refuse_everything(tmp_path):
    """#20 item 6 as asked: the internal fuzz with CurveZMQ off (any local process reaches every
    decoder, no key needed), here with risk and matching running hot standbys whose inboxes are
    fuzzed too: nothing dies, nothing changes, every frame is refused or counted."""
    import tomllib

    from cluster import config

    handle = ClusterHandle(tmp_path, internal_ipc=True, node_settings={
        "gateway": {"rate_limits": BENCH_RATE_LIMITS}, "risk": {"standby": True},
        "matching": {"standby": True}})
    raw = tomllib.loads(handle.config_path.read_text())
    raw["supervisor"]["curve"] = False
    handle.config_path.write_text(config._dump_toml(raw))
    handle.topo = config.load(handle.config_path, run_dir=str(handle.run_dir))
    try:
        handle.up()
        report = asyncio.run(fuzz.run(handle.topo, handle.run_dir, frames=1500, seed=11, too_big=1))
        assert report["ok"], {k: v for k, v in report.items() if k != "internal"}
        inboxes = {n: r for n, r in report["internal"].items() if not r.get("no_listener")}
        assert {"risk", "risk.b", "matching", "matching.b"} <= set(inboxes)
        assert all(r["must_refuse"] > 0 for r in inboxes.values())
    finally:
        stop_and_reap(handle)
