"""The open-loop load generator over the real client protocol, against the null pipeline and the
real cluster: every order is answered, none rejected, latencies recorded, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from perf.cluster_load import ACCOUNTS
from perf.loadgen import Step, kept_up, run_step
from tests.e2e.helpers import wait_netsim_applied

pytestmark = pytest.mark.e2e


def wait_marks(venue, timeout: float = 10.0) -> None:
    """Until the oracle's first mark reaches market data: risk prices orders from then on."""
    from cluster.client import Client

    async def first_mark() -> None:
        gateway = venue.topo.nodes["gateway"]
        async with Client(gateway.client, api_key=venue.api_keys()[0],
                          market_data=gateway.pub) as client:
            await client.next_mark("BTC-PERP", timeout)

    asyncio.run(first_mark())


@pytest.mark.parametrize("pipeline", ["null", "cluster"])
def test_one_open_loop_step_is_answered_in_full(pipeline, bench_cluster):
    env = {"PERPX_PIPELINE": "null"} if pipeline == "null" else {}
    with bench_cluster(env) as venue:
        if pipeline == "cluster":
            wait_marks(venue)
        else:  # sockets connect lazily, and the null pipeline publishes no state to wait for
            time.sleep(1.0)
        for name, pid in venue.node_pids().items():  # one scheduling group with the generator
            assert os.getsid(pid) == os.getsid(0), name
        topo = venue.topo
        r = run_step(topo.nodes["gateway"].client, venue.api_keys(), Step(rate=2_000, seconds=1.0, poisson=True),
                     "BTC-PERP", topo.symbols["BTC-PERP"].initial_price)
        if pipeline == "cluster":  # the IOCs left nothing open
            for account in ACCOUNTS:
                view = venue.cli("account", "show", account)
                assert view.returncode == 0, view.stderr
                assert json.loads(view.stdout)["open_orders"] == 0, view.stdout
    assert r["sent"] == 2_000 and r["answered"] == 2_000, r
    assert r["rejected"] == 0 and r["outstanding"] == 0 and kept_up(r)
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] < 5_000_000


def test_latency_measured_includes_a_delay_injected_on_the_answer_path(bench_cluster):
    """The instrument's clock and units: 20 ms added by netsim on gateway->client shows up, once,
    in the latencies (a wrong timestamp, a unit slip or a lost histogram would not)."""
    with bench_cluster({"PERPX_PIPELINE": "null"}) as venue:
        time.sleep(1.0)  # sockets connect lazily; the null pipeline publishes no state to wait for
        done = venue.cli("netsim", "set", "gateway->client", "--latency", "20ms")
        assert done.returncode == 0, done.stderr
        wait_netsim_applied(venue, json.loads(done.stdout), "gateway")
        topo = venue.topo
        r = run_step(topo.nodes["gateway"].client, venue.api_keys(), Step(rate=1_000, seconds=1.0, idle_ms=30),
                     "BTC-PERP", topo.symbols["BTC-PERP"].initial_price)
    assert r["answered"] == r["sent"] == 1_000, r
    lat = r["latency_us"]
    # every order carries the delay once; the upper bound is on p50, since this host stalls
    # delivery for 60-230 ms now and then, which would be more than 1% of a 1 s step
    assert 20_000 <= lat["p50"] < 40_000 and lat["p50"] <= lat["p99"], lat


def test_the_hop_profile_accounts_for_each_link_and_sees_a_delay_on_one(bench_cluster):
    """perf.hops, as make bench uses it: every hop of the order path measured, and 5 ms injected on
    risk->matching shows on that hop only."""
    from perf import hops

    with bench_cluster({}) as venue:
        wait_marks(venue)
        gateway = venue.topo.nodes["gateway"].client
        idle = hops.profile(gateway, lambda: time.sleep(0.6))
        assert idle["pings"] >= 20 and all(0 < idle[h]["p50"] <= idle[h]["p99"] for h in hops.HOPS)
        done = venue.cli("netsim", "set", "risk->matching", "--latency", "5ms")
        assert done.returncode == 0, done.stderr
        wait_netsim_applied(venue, json.loads(done.stdout), "risk")
        shaped = hops.profile(gateway, lambda: time.sleep(0.6))
    assert 5_000 <= shaped["risk->matching"]["p50"] < 5_000 + idle["risk->matching"]["p50"] + 2_000
    others = [h for h in hops.HOPS if h != "risk->matching"]
    # each other hop within 2 ms of its own idle median (not a flat 2 ms: a loaded box's hops
    # sit higher); 5 ms landing on the wrong hop still shows
    assert all(shaped[h]["p50"] < idle[h]["p50"] + 2_000 for h in others), (idle, shaped)
    # the line shows that hop's shaped median beside its idle one (5 ms plus the hop's own time)
    assert (f"risk->matching {shaped['risk->matching']['p50']:,.0f} "
            f"({idle['risk->matching']['p50']:,.0f})") in hops.line(idle, shaped)
