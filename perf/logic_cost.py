"""What each order-path node's message handling costs per order, in process: the bench's order
through the real handlers of gateway, risk and matching (their build() on a recording shell, no
sockets, no codec between nodes), for the cluster and for the null pipeline.

The two pipelines share the host's transport, wake-ups and codec; this is the part they do not
share. `make bench` reports it beside the ratios, so each run says how much CPU the venue's rules
add to every order (`python -m perf.logic_cost` prints it alone).
"""

from __future__ import annotations

import gc
import json
import time

import msgspec

from cluster import config
from cluster.protocol import Logon, encode_one
from cluster.recording import RecordingShell
from nodes.gateway import service as gateway_service
from nodes.matching import service as matching_service
from nodes.risk import service as risk_service
from perf import null_services
from perf.cluster_load import BENCH_MAX_OPEN_ORDERS, BENCH_RATE_LIMITS, ORDER_PATH
from perf.loadgen import ENCODER, bench_order

SYMBOL = "BTC-PERP"
BATCH = 64  # orders per handler call, as a busy node drains them
CLUSTER_BUILDERS = {"gateway": gateway_service.build, "risk": risk_service.build,
                    "matching": matching_service.build}


def _shells(pipeline: str, topo) -> dict[str, RecordingShell]:
    shells = {}
    for name in ORDER_PATH:
        conf = topo.nodes[name]
        if name == "risk":
            conf = msgspec.structs.replace(conf, max_open_orders=BENCH_MAX_OPEN_ORDERS)
        if name == "gateway":
            conf = msgspec.structs.replace(conf, rate_limits=msgspec.convert(
                BENCH_RATE_LIMITS, config.LimitsPolicy))
        shells[name] = RecordingShell(conf)
        build = null_services.build(name) if pipeline == "null" else CLUSTER_BUILDERS[name]
        build(shells[name], topo)
    return shells


def _take(shell: RecordingShell, peer: str) -> list:
    sent = [m for p, m in shell.sent if p == peer]
    shell.sent.clear()
    return sent


def measure(pipeline: str, orders: int = 60_000) -> dict[str, float]:
    """us per order spent in each node's handlers, for `orders` orders in batches of BATCH."""
    topo = config.load()
    shells = _shells(pipeline, topo)
    gw, risk, matching = (shells[n] for n in ORDER_PATH)
    me = b"bench-session"
    gw.router([[me, encode_one(Logon(req_id=0, api_key=topo.accounts["mm1"].api_key))]])
    gw.sent.clear()
    order = bench_order(SYMBOL, topo.symbols[SYMBOL].initial_price)
    frames = [[me, ENCODER.encode([msgspec.structs.replace(order, req_id=i + 1)])]
              for i in range(orders)]
    # The order's path, hop by hop: (node, its handler, its shell, the peer its output goes to).
    path = [("gateway", gw.router, gw, "risk"), ("risk", risk.inbox, risk, "matching"),
            ("matching", matching.inbox, matching, "risk"), ("risk", risk.inbox, risk, "gateway"),
            ("gateway", gw.inbox, gw, "client")]
    spent = dict.fromkeys(ORDER_PATH, 0)
    clock = time.perf_counter_ns
    answered = 0
    gc.collect()
    gc.disable()
    try:
        for start in range(0, orders, BATCH):
            batch = frames[start:start + BATCH]
            for node, handler, shell, peer in path:
                t0 = clock()
                handler(batch)
                spent[node] += clock() - t0
                batch = _take(shell, peer)  # (untimed: the recording shell's bookkeeping)
            answered += len(batch)
    finally:
        gc.enable()
    if answered != orders:
        raise RuntimeError(f"{pipeline}: {answered} answers to {orders} orders")
    return {name: round(ns / orders / 1000, 3) for name, ns in spent.items()}


def compare(orders: int = 60_000, runs: int = 3) -> dict:
    """Fastest of `runs` per node and pipeline (the host is shared: the minimum is the cost)."""
    result = {}
    for pipeline in ("null", "cluster"):
        samples = [measure(pipeline, orders) for _ in range(runs)]
        result[pipeline] = {n: min(s[n] for s in samples) for n in ORDER_PATH}
    result["added_by_cluster"] = {n: round(result["cluster"][n] - result["null"][n], 3)
                                  for n in ORDER_PATH}
    result["added_by_cluster_total"] = round(sum(result["added_by_cluster"].values()), 3)
    return result


if __name__ == "__main__":
    print(json.dumps(compare(), indent=2))
