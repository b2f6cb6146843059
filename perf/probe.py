"""`make probe`: where the CPU goes at one fixed offered rate, per node.

Starts a venue (the cluster, or the null pipeline with --pipeline null), runs one open-loop step
of the bench's order at --rate for --seconds, and prints per node: CPU % and us per answered
order, time spent runnable but waiting for a CPU (/proc/PID/schedstat) and context switches.
With --spy, py-spy samples gateway, risk and matching during the step; their raw profiles go to
perf/results/probe_<node>.txt and the hottest frames are printed ("Runner.run" on top of the
stack is time inside uvloop's C loop, mostly waiting for input).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from perf.cluster_load import ORDER_PATH, Cluster
from perf.loadgen import Step, run_step

RESULTS = Path(__file__).with_name("results")
SYMBOL = "BTC-PERP"


def sched(pid: int) -> tuple[int, int, int]:
    """(ns on a CPU, ns runnable but waiting, timeslices) of the main thread, /proc/PID/schedstat."""
    run_ns, wait_ns, slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(run_ns), int(wait_ns), int(slices)


def py_spy() -> str:
    """py-spy from this interpreter's environment (make's venv is not on PATH), else PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def top_frames(raw: str, n: int = 12) -> list[tuple[float, str]]:
    """The n frames with the most samples at the top of the stack, from py-spy's raw format
    (one 'frame;frame;...;frame count' line per distinct stack): (share of samples, frame)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        own[stack.split(";")[-1]] += int(count)
    return [(c / total, frame) for frame, c in own.most_common(n)] if total else []


def probe(pipeline: str, rate: float, seconds: float, spy: bool) -> dict:
    env = {"PERPX_PIPELINE": "null"} if pipeline == "null" else {}
    with Cluster(env) as venue:
        time.sleep(1.5)  # marks flowing, sockets connected
        topo = venue.topo
        pids = venue.node_pids()
        endpoint = topo.nodes["gateway"].client
        keys = venue.api_keys()
        price = topo.symbols[SYMBOL].initial_price
        run_step(endpoint, keys, Step(rate=rate / 4, seconds=1.0), SYMBOL, price)  # warm up
        spies = []
        if spy:
            RESULTS.mkdir(parents=True, exist_ok=True)
            for name in ORDER_PATH:
                spies.append(subprocess.Popen(
                    [py_spy(), "record", "-r", "200", "-d",
                     str(max(1, int(seconds))), "-f", "raw", "-o", str(RESULTS / f"probe_{name}.txt"),
                     "-p", str(pids[name])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cpu0 = venue.node_cpu_seconds()
        sched0 = {n: sched(p) for n, p in pids.items()}
        result = run_step(endpoint, keys, Step(rate=rate, seconds=seconds), SYMBOL, price)
        cpu1 = venue.node_cpu_seconds()
        sched1 = {n: sched(p) for n, p in pids.items()}
        for s in spies:
            s.wait(timeout=seconds + 30)
    answered = max(1, result["answered"])
    nodes = {}
    for name in pids:
        cpu = cpu1[name] - cpu0[name]  # includes the settle before the step: a few orders
        _, wait_ns, slices = (b - a for a, b in zip(sched0[name], sched1[name]))
        nodes[name] = {"cpu_pct": round(100 * cpu / seconds, 1),
                       "us_per_order": round(1e6 * cpu / answered, 2),
                       "runqueue_wait_ms_per_s": round(wait_ns / 1e6 / seconds, 1),
                       "switches_per_s": round(slices / seconds),
                       "wait_per_switch_us": round(wait_ns / max(1, slices) / 1e3, 1)}
    return {"pipeline": pipeline, "offered_per_s": rate, "seconds": seconds,
            "answered_per_s": result["achieved_per_s"], "latency_us": result["latency_us"],
            "nodes": nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=("cluster", "null"), default="cluster")
    parser.add_argument("--rate", type=float, default=50_000, help="offered orders/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--spy", action="store_true", help="py-spy the order path's nodes")
    args = parser.parse_args(argv)
    r = probe(args.pipeline, args.rate, args.seconds, args.spy)
    lat = r["latency_us"]
    print(f"{r['pipeline']} at {r['offered_per_s']:,.0f}/s: answered {r['answered_per_s']:,.0f}/s, "
          f"p50 {lat.get('p50', 0):,.0f} us, p99 {lat.get('p99', 0):,.0f} us")
    print(f"{'node':<11}{'cpu %':>7}{'us/order':>10}{'runqueue wait ms/s':>20}{'switches/s':>12}"
          f"{'wait/switch us':>16}")
    for name, n in sorted(r["nodes"].items(), key=lambda kv: -kv[1]["cpu_pct"]):
        print(f"{name:<11}{n['cpu_pct']:>7}{n['us_per_order']:>10}{n['runqueue_wait_ms_per_s']:>20}"
              f"{n['switches_per_s']:>12}{n['wait_per_switch_us']:>16}")
    if args.spy:
        for name in ORDER_PATH:
            path = RESULTS / f"probe_{name}.txt"
            if path.exists():
                print(f"\n{name}: hottest frames (share of samples, own time) - {path}")
                for share, frame in top_frames(path.read_text()):
                    print(f"  {100 * share:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
