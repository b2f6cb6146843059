"""REST facade vs native protocol, order placement in the same run (`make bench-rest`, #25).

One cluster (the default topology, loopback tcp, its REST facade). For each path, an open-loop
order stream at stepped rates (fixed send schedule; latency measured from each order's scheduled
time, so a stalled sender is charged for its queue: coordinated omission corrected):

- native: cluster/client.py's PlaceOrder over the gateway's ZeroMQ protocol, until the answer;
- rest: a ccxt-shaped signed POST /fapi/v1/order (form body, HMAC-SHA256, X-MBX-APIKEY) on
  keep-alive connections, newOrderRespType=ACK (answered at acceptance like the native path;
  RESULT would also wait for an IOC's final state), until the HTTP answer.

Orders are IOC buys 3% under the mark: checked by risk, cancelled by matching (nothing to fill,
nothing rests); the answer is that cancel on both paths.
A rate is sustained when >= 97% of its orders were answered within the step and p99 is
under P99_LIMIT_MS; the figure is the highest sustained rate and its p99, per path.
Results: perf/results/bench-rest.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import tomllib
from pathlib import Path

import aiohttp
import uvloop

from cluster.signing import secret_for
from cluster import config
from cluster.client import Client
from cluster.protocol import BUY, OrderAccepted, OrderCancelled
from nodes.rest.auth import sign
from perf.cluster_load import Cluster

RESULTS = Path(__file__).resolve().parent / "results"
P99_LIMIT_MS = 50.0
SYMBOL = "BTC-PERP"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


async def open_loop(rate: int, seconds: float, send) -> dict:
    """Call `send()` at `rate`/s for `seconds`; latency from each call's scheduled time."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    start = loop.time() + 0.05
    total = int(rate * seconds)
    latencies: list[float] = []
    ok = 0
    failures: dict[str, int] = {}

    async def one(scheduled: float) -> None:
        nonlocal ok
        try:
            outcome = await send()
            if outcome is True:
                ok += 1
                latencies.append(loop.time() - scheduled)
            else:
                failures[str(outcome)[:80]] = failures.get(str(outcome)[:80], 0) + 1
        except Exception as exc:
            failures[repr(exc)[:80]] = failures.get(repr(exc)[:80], 0) + 1

    tasks = []
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.wait(tasks, timeout=10)
    return {"offered_per_s": rate, "orders": total, "accepted": ok,
            "accepted_share": round(ok / total, 4),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2), "failures": failures}


def sustained(step: dict) -> bool:
    return step["accepted_share"] >= 0.97 and step["p99_ms"] <= P99_LIMIT_MS


async def run(rates: list[int], seconds: float) -> dict:
    cluster = Cluster(optional=("rest",))
    raw = tomllib.loads(cluster.config.read_text())
    raw["nodes"]["rest"]["weight_per_minute"] = 10**9  # measure the path, not the weight limit
    cluster.config.write_text(config._dump_toml(raw))
    with cluster:
        topo = cluster.topo
        await asyncio.sleep(1.5)
        key = topo.accounts["taker1"].api_key
        async with Client(topo.nodes["gateway"].client, api_key=key,
                          market_data=topo.nodes["gateway"].pub) as native:
            mark = (await native.next_mark(SYMBOL)).mark
            price = mark - mark * 3 // 100
            tick = topo.symbols[SYMBOL].tick_size
            price_text = format(price * tick, "f")

            async def native_send() -> bool:
                report = await native.place(SYMBOL, BUY, qty=1, price=price, tif="IOC")
                # an IOC the book cannot fill is answered with its cancel: processed all the same
                return type(report.event) in (OrderAccepted, OrderCancelled) or report

            base = "http://" + topo.nodes["rest"].http
            secret = secret_for(cluster.run_dir, key).hex()  # the key file's, as a REST user has it
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as http:
                async def rest_send() -> bool:
                    body = (f"timestamp={int(time.time() * 1000)}&symbol=BTCUSDT&side=BUY"
                            f"&type=LIMIT&quantity=0.001&price={price_text}&timeInForce=IOC"
                            "&newOrderRespType=ACK&recvWindow=10000")
                    body += "&signature=" + sign(secret, body)
                    async with http.post(base + "/fapi/v1/order", data=body, headers={
                            "X-MBX-APIKEY": key,
                            "Content-Type": "application/x-www-form-urlencoded"}) as answer:
                        text = await answer.read()
                        return answer.status == 200 or text.decode()

                results: dict[str, list] = {"native": [], "rest": []}
                for name, send in (("native", native_send), ("rest", rest_send)):
                    for rate in rates:
                        cpu0 = cluster.node_cpu_seconds()
                        step = await open_loop(rate, seconds, send)
                        cpu1 = cluster.node_cpu_seconds()
                        # where the CPU went, per order: the facade's own cost is the criterion
                        step["cpu_us_per_order"] = {
                            node: round((cpu1[node] - cpu0[node]) / step["orders"] * 1e6)
                            for node in ("gateway", "risk", "matching", "rest")}
                        results[name].append(step)
                        print(name, json.dumps(step), flush=True)
                        if not sustained(step):
                            break
                        await asyncio.sleep(0.5)
    best = {name: max((s for s in steps if sustained(s)), key=lambda s: s["offered_per_s"],
                      default=None) for name, steps in results.items()}
    return {"p99_limit_ms": P99_LIMIT_MS, "seconds_per_step": seconds, "steps": results,
            "max_sustained": {name: (b and {"orders_per_s": b["offered_per_s"], "p50_ms": b["p50_ms"],
                                            "p99_ms": b["p99_ms"]}) for name, b in best.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="100,200,300,400,600,800,1600,3200,6400,12800")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    report = uvloop.run(run([int(r) for r in args.rates.split(",")], args.seconds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench-rest.json").write_text(json.dumps(report, indent=1))
    lines = ["# REST facade vs native order placement (same run)", "",
             f"open loop, {args.seconds:g} s a step, sustained = >= 97% accepted and p99 <= "
             f"{P99_LIMIT_MS:g} ms", "", "| path | max sustained orders/s | p50 ms | p99 ms | "
             "CPU us/order gateway, risk, matching, rest |", "|---|---|---|---|---|"]
    for name, best in report["max_sustained"].items():
        step = next((s for s in report["steps"][name] if best and s["offered_per_s"] == best["orders_per_s"]), None)
        cpu = ", ".join(str(v) for v in step["cpu_us_per_order"].values()) if step else "-"
        lines.append(f"| {name} | {best['orders_per_s'] if best else '-'} | "
                     f"{best['p50_ms'] if best else '-'} | {best['p99_ms'] if best else '-'} | {cpu} |")
    (RESULTS / "bench-rest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
