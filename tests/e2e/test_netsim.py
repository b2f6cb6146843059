"""netsim on the real cluster: shaped links show in ping, feed faults show in the oracle's
explanations, scenarios apply and heal."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest

from cluster.client import Client
from cluster.protocol import Logon
from tests.e2e.helpers import poll, wait_netsim_applied

pytestmark = pytest.mark.e2e
HOPS = ("client->gateway", "gateway->risk", "risk->matching", "matching->risk", "risk->gateway")


async def hop_deltas(cluster, n: int = 15) -> dict[str, float]:
    """Least microseconds between consecutive ping hops over `n` pings (gateway->risk is
    hops[1] - hops[0]...). The least, not the median: a shaped delay is added to every message,
    while a loaded host's noise (scheduling, an fsync the journaled hops wait for) only ever
    adds; the median of 9 moved by 2 ms on an unshaped hop under load."""
    per_link: dict[str, list[float]] = {h: [] for h in HOPS[1:]}
    async with Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as c:
        await c.ping(full=True)  # warm up the connection
        for _ in range(n):
            stamps = [t for _, t in (await c.ping(full=True)).hops]
            for i, link in enumerate(HOPS[1:]):
                per_link[link].append((stamps[i + 1] - stamps[i]) / 1000)
    return {link: min(v) for link, v in per_link.items()}


def test_ping_shows_the_delay_on_exactly_the_shaped_link(cluster):
    base = asyncio.run(hop_deltas(cluster))
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "set", "risk->matching", "--latency",
                                                  "3ms"), "risk")
    shaped = asyncio.run(hop_deltas(cluster))
    # Slack of 2 ms over the unshaped hop (the least of 15 pings): 3 ms landing on the wrong
    # link still shows.
    assert 3_000 <= shaped["risk->matching"] <= 3_000 + base["risk->matching"] + 2_000, shaped
    for link in ("gateway->risk", "matching->risk", "risk->gateway"):
        assert shaped[link] < base[link] + 2_000, (link, base, shaped)
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "clear"), "risk")
    assert asyncio.run(hop_deltas(cluster))["risk->matching"] < base["risk->matching"] + 2_000


def test_an_extreme_latency_model_delays_messages_and_never_takes_a_node_down(cluster):
    # min / U^(1/alpha) with alpha 1e-9 is astronomically large (it used to divide by zero in
    # the risk node and stop the venue); every sample is capped at an hour instead.
    refused = cluster.cli_json("netsim", "set", "risk->gateway", "--model", "pareto", ok=False)
    assert "pareto needs 'min'" in refused["message"]
    wait_netsim_applied(cluster, cluster.cli_json(
        "netsim", "set", "risk->gateway", "--model", "pareto", "--min", "1ms",
        "--alpha", "0.000000001"), "risk")

    async def ping(timeout: float):
        async with Client(cluster.endpoint(), timeout=timeout) as c:
            await c.request(Logon(api_key=cluster.api_key("bob")))  # (gateway only: not delayed)
            return await c.ping(full=True)

    with pytest.raises(asyncio.TimeoutError):  # the answer is an hour away
        asyncio.run(ping(1.0))
    status = cluster.cli_json("cluster", "status")
    assert status["state"] == "running", status
    assert status["nodes"]["risk"]["alive"] and status["nodes"]["risk"]["restarts"] == 0
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "clear"), "risk")
    assert [n for n, _ in asyncio.run(ping(5.0)).hops][-1] == "gateway"


def oracle_records(cluster) -> list[dict]:
    path = cluster.run_dir / "audit" / "oracle.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_freezing_two_of_five_feeds_is_explained_by_the_oracle(cluster):
    stale_after_ms = cluster.topo.nodes["oracle"].stale_after_ms
    time.sleep(1.0)  # every venue seen at least once
    frozen_at: dict[str, int] = {}
    for venue in ("bravo", "charlie"):
        before = time.time_ns()
        cluster.cli_json("netsim", "feed", venue, "freeze", "--duration", "6s")
        frozen_at[venue] = before  # the freeze applies between these two instants
        frozen_at[venue + ".after"] = time.time_ns()
    deadline = time.monotonic() + stale_after_ms / 1000 + 3
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline and len(seen) < 2:
        for r in oracle_records(cluster):
            if r["rule"] == "oracle.source_stale" and r["subject"] == "BTC-PERP":
                seen.setdefault(r["numbers"]["venue"], r)
        time.sleep(0.1)
    assert set(seen) == {"bravo", "charlie"}
    for venue, r in seen.items():
        # stale once silent for stale_after_ms; the oracle looks every 100 ms and a venue ticks
        # every 100 ms, so it shows within stale_after_ms + 200 ms of the freeze taking effect
        assert (r["ts_ns"] - frozen_at[venue + ".after"]) / 1e6 <= stale_after_ms + 300, r
        assert (r["ts_ns"] - frozen_at[venue]) / 1e6 >= stale_after_ms - 100, r
        assert r["numbers"]["age_ms"] > stale_after_ms
    # 3 of 5 are still healthy: the index method did not change (no fallback mode)
    assert not [r for r in oracle_records(cluster) if r["rule"].startswith("oracle.quorum")]
    cluster.cli_json("netsim", "feed", "all", "heal")


def test_scenario_applies_each_step_and_heals(cluster, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text("""
name = "short"
[[step]]
at = "0s"
action = "set"
link = "gateway->risk"
latency = { model = "lognormal", median = "1ms", sigma = 0.3 }
[[step]]
at = "300ms"
action = "feed"
venue = "delta"
op = "bias"
ppm = 20000
[[step]]
at = "600ms"
action = "fault"
node = "liquidator"
op = "pause"
[[step]]
at = "900ms"
action = "fault"
node = "liquidator"
op = "resume"
""")
    proc = cluster.cli("netsim", "run", str(scenario), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [l["action"] for l in lines][:4] == ["set", "feed", "fault", "fault"]
    assert all(l["ok"] for l in lines) and all(l["wall_ns"] and l["mono_ns"] for l in lines)
    assert [l["at_s"] for l in lines[:4]] == [0.0, 0.3, 0.6, 0.9]
    assert lines[-1]["action"] == "heal_at_end"
    assert cluster.cli_json("netsim", "show")["links"] == {}
    applied = [json.loads(l) for l in (cluster.run_dir / "audit" / "supervisor.jsonl")
               .read_text().splitlines()]
    assert {"netsim.set", "netsim.feed_bias", "netsim.fault_pause", "netsim.fault_resume"} <= \
        {r["rule"] for r in applied}
    assert cluster.status()["nodes"]["liquidator"]["state"] == "running"


def test_the_admin_socket_refuses_garbage_and_keeps_serving(cluster):
    import msgspec
    import zmq

    from cluster.protocol import AdminReply, AdminRequest

    from cluster import curve

    sock = curve.tools_socket(zmq.Context.instance(), zmq.DEALER, cluster.topo,
                              cluster.topo.supervisor.admin)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        not_utf8 = msgspec.msgpack.encode(AdminRequest(cmd="abc")).replace(b"abc", b"a\xffc")
        for payload in (b"\x00garbage", msgspec.msgpack.encode({"cmd": 3}), not_utf8,
                        msgspec.msgpack.encode(AdminRequest(cmd="netsim_set",
                                                            args={"link": 5, "settings": []})),
                        msgspec.msgpack.encode(AdminRequest(cmd="fault", args={"node": "risk",
                                                                               "op": "explode"})),
                        # the feeds process would ignore these: refused by name instead
                        msgspec.msgpack.encode(AdminRequest(cmd="feed", args={
                            "action": "freeze", "venue": "nosuch"})),
                        msgspec.msgpack.encode(AdminRequest(cmd="feed", args={
                            "action": "shock", "symbol": "NOPE", "ppm": 1000}))):
            sock.send(payload)
            assert sock.poll(5000)
            reply = msgspec.msgpack.decode(sock.recv(), type=AdminReply)
            assert not reply.ok and reply.error
        assert cluster.cli_json("netsim", "show")["links"] == {}
    finally:
        sock.close()
    assert cluster.status()["nodes"]["risk"]["state"] == "running"
    # a value out of range is refused naming the field, not only its place in the wire array
    huge = cluster.cli_json("netsim", "feed", "alpha", "spike", "--ppm", "1000000000000", ok=False)
    assert "(FeedControl.ppm)" in huge["message"], huge


async def mark_clock_offset_ms(cluster, samples: int = 3) -> float:
    """The oracle's clock against ours: IndexMark.ts_ns (the oracle's now) minus local time, median
    of a few marks (ms; a mark is a few ms old when it arrives)."""
    from cluster.protocol import IndexMark

    offsets = []
    async with Client(cluster.endpoint(), market_data=cluster.md_endpoint()) as c:
        await c.subscribe(b"mark.")
        while len(offsets) < samples:
            for msg in await asyncio.wait_for(c.market_data(), 5):
                if type(msg) is IndexMark:
                    offsets.append((msg.ts_ns - time.time_ns()) / 1e6)
    return statistics.median(offsets)


def test_clock_skew_moves_one_nodes_clock_and_clear_restores_it(cluster):
    assert abs(asyncio.run(mark_clock_offset_ms(cluster))) < 150
    bad = cluster.cli_json("netsim", "fault", "oracle", "skew", "--by", "1e40ms", ok=False)
    assert bad["error"] == "bad_duration" and "1e40ms" in bad["message"]
    table = cluster.cli_json("netsim", "fault", "oracle", "skew", "--by", "400ms")
    assert table["skew_ns"] == {"oracle": 400_000_000}
    # a skew logs no link change: poll the marks' clock until it moved (or 5 s passed)
    offset = poll(lambda: (lambda ms: ms if ms > 250 else 0)(
        asyncio.run(mark_clock_offset_ms(cluster))), 5, 0)
    assert 250 < offset < 550  # 400 ms, less delivery time
    # the supervisor's status file lists it once written (it lagged the marks on a loaded box)
    events = poll(lambda: [e for e in cluster.status()["events"] if e["event"] == "netsim_skew"], 5)
    assert events and events[-1]["node"] == "oracle" and events[-1]["ns"] == 400_000_000
    cluster.cli_json("netsim", "clear")
    assert poll(lambda: abs(asyncio.run(mark_clock_offset_ms(cluster))) < 150, 5, 0)


def test_an_order_held_by_a_partition_is_unknown_not_refused_and_a_retry_is_safe(cluster):
    """risk->matching partitioned: the CLI cannot know the order's fate, so it says so (exit 3,
    outcome_unknown) rather than refusal or "is the cluster up?"; after the heal the order is
    live, and the same client order id sent again returns its first answer, not a second order."""
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "partition", "risk->matching"), "risk")
    mark = float(cluster.cli_json("book", "BTC-PERP")["prices"]["mark"])
    order = ("order", "place", "--account", "mm1", "--symbol", "BTC-PERP", "--side", "sell",
             "--qty", "0.5", "--price", f"{mark * 1.02:.1f}", "--client-order-id", "held-1")
    held = cluster.cli(*order, "--timeout", "1", "--json")
    assert held.returncode == 3, (held.stdout, held.stderr)
    answer = json.loads(held.stdout)
    assert answer["error"] == "outcome_unknown" and "--client-order-id" in answer["message"]
    pending = cluster.cli_json("order", "list", "--account", "mm1")["orders"]
    assert [(o["client_order_id"], o["status"]) for o in pending] == [("held-1", "pending")]
    wait_netsim_applied(cluster, cluster.cli_json("netsim", "partition", "risk->matching",
                                                  "--heal"), "risk")
    again = cluster.cli_json(*order)
    assert again["result"]["type"] == "OrderAccepted" and again["result"]["duplicate"] is True
    live = cluster.cli_json("order", "list", "--account", "mm1")["orders"]
    assert [(o["client_order_id"], o["status"]) for o in live] == [("held-1", "new")]
    cluster.cli_json("order", "cancel-all", "--account", "mm1")


def test_one_clients_own_link_is_shaped_by_netsim_and_no_one_elses(cluster):
    """`gateway->client:bob` set in netsim delays what bob receives through his proxy (and
    nothing on the direct path); the proxy measures it; clearing it takes the delay away."""
    from cluster.chaos_run import Proxies

    proxies = Proxies(cluster.config_path, cluster.run_dir, cluster.topo, ["bob"])
    via = proxies.listening["bob"]["client"]

    async def rtt_ms(endpoint: str, n: int = 5) -> float:
        async with Client(endpoint, api_key=cluster.api_key("bob")) as c:
            await c.ping()
            times = []
            for _ in range(n):
                t = time.monotonic()
                await c.ping()
                times.append((time.monotonic() - t) * 1000)
            return statistics.median(times)

    try:
        before = asyncio.run(rtt_ms(via))
        cluster.cli_json("netsim", "set", "gateway->client:bob", "--latency", "80ms")
        shaped = poll(lambda: (lambda ms: ms if ms >= 80 else None)(asyncio.run(rtt_ms(via, 3))),
                      10.0, 0.05)
        direct = asyncio.run(rtt_ms(cluster.endpoint()))
        cluster.cli_json("netsim", "clear")
        cleared = poll(lambda: (lambda ms: ms if ms < 40 else None)(asyncio.run(rtt_ms(via, 3))),
                       10.0, 0.05)
    finally:
        stats = proxies.stop()
    assert before < 40, before
    assert shaped and 80 <= shaped < 80 + 200, shaped  # with a loaded host's slack
    assert direct < 40, direct  # bob's direct connection, and everyone else's, unshaped
    assert cleared, "the delay stayed after netsim clear"
    measured = stats["bob"]["links"]["gateway->client:bob"]["measured_ms"]
    eighty = next(v for k, v in measured.items() if "80ms" in k)
    assert 80 <= eighty["p50"] < 80 + 50, eighty
    assert stats["bob"]["links"]["client:bob->gateway"]["measured_ms"]["unshaped"]["p50"] < 20
