"""Where the cluster's latency goes, hop by hop: pings through the order path while something runs.

A Ping travels client -> gateway -> risk -> matching -> risk -> gateway -> client, and each node
stamps it with its monotonic clock (one host, one clock), so the time between stamps is the time
spent on each link: the sender's batch and flush, the transport, and the receiver's wake-up and
queue. `make bench` profiles the hops idle and at half the cluster's maximum, which shows whether
one node or link dominates or the cost is spread (python -m perf.hops runs it alone).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable

from cluster import config
from cluster.client import Client

HOPS = ("client->gateway", "gateway->risk", "risk->matching", "matching->risk", "risk->gateway",
        "gateway->client")
PING_INTERVAL_S = 0.005  # ~200 pings/s: nothing next to the load they measure
PING_ACCOUNT = "bob"  # the full path is for a logged-on session (a demo account of the topology)


def profile(endpoint: str, during: Callable[[], object], interval_s: float = PING_INTERVAL_S,
            api_key: str | None = None) -> dict:
    """Run `during()` while pinging; per hop, the median and p99 in us (and how many pings)."""
    api_key = api_key or config.load().accounts[PING_ACCOUNT].api_key
    samples: list[list[float]] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    async def ping_until_stopped() -> None:
        async with Client(endpoint, api_key=api_key, timeout=10.0) as client:
            await client.ping(full=True)  # connected before the clock starts
            while not stop.is_set():
                sent = time.monotonic_ns()
                pong = await client.ping(full=True)
                back = time.monotonic_ns()
                stamps = [sent] + [t for _, t in pong.hops] + [back]
                if [n for n, _ in pong.hops] == ["gateway", "risk", "matching", "risk", "gateway"]:
                    samples.append([(b - a) / 1000 for a, b in zip(stamps, stamps[1:])])
                await asyncio.sleep(interval_s)

    def pinger() -> None:
        try:
            asyncio.run(ping_until_stopped())
        except BaseException as exc:  # reported by the caller, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=pinger, name="hops-pinger", daemon=True)
    thread.start()
    try:
        during()
    finally:
        stop.set()
        thread.join(timeout=15)
    if failure:
        raise RuntimeError(f"hop profile: pings failed: {failure[0]!r}")
    if not samples:
        raise RuntimeError("hop profile: no ping came back")
    out: dict = {"pings": len(samples)}
    for i, hop in enumerate(HOPS):
        values = sorted(s[i] for s in samples)
        out[hop] = {"p50": round(statistics.median(values), 1),
                    "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1)}
    return out


def line(idle: dict, loaded: dict) -> str:
    """'client->gateway 227 (139), ...': the loaded median per hop, the idle one in brackets."""
    return ", ".join(f"{hop} {loaded[hop]['p50']:,.0f} ({idle[hop]['p50']:,.0f})" for hop in HOPS)


if __name__ == "__main__":
    import json

    from perf.cluster_load import Cluster

    with Cluster({}) as venue:
        time.sleep(1.5)
        gateway = venue.topo.nodes["gateway"].client
        print(json.dumps(profile(gateway, lambda: time.sleep(2.0)), indent=2))
