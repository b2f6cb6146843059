"""A closed-loop order load through a real cluster: clients place a passive order and cancel it,
as fast as the cluster answers, for a bounded time. Used by `make bench-netsim` (and a building
block for the full bench): start a cluster, drive it, stop it, report orders/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from cluster import config
from cluster.client import Client
from cluster.protocol import BUY, SELL
from cluster.runstate import read_status

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = ("mm1", "mm2", "taker1", "taker2", "alice", "bob")
# Each of these accounts carries a sixth of the bench's load, ~30k orders/s near the cluster's
# maximum, with thousands of IOCs in flight at once; an order in flight is an open order, and at
# the topology's limit (200) 19% of the orders at 175k/s were refused. The bench's venue raises
# the limit, as venues do for market makers, so that it measures the venue's capacity and not one
# account's limit; a step with any refusal still does not count as sustainable (perf.loadgen).
BENCH_MAX_OPEN_ORDERS = 50_000
# Likewise the gateway's rate limits: kept on (their cost is part of the path measured), at a rate
# no bench step reaches.
BENCH_RULE = {"limit": 1_000_000, "window_ms": 1000}  # (fits in 64 bits in ns units)
BENCH_RATE_LIMITS = {name: dict(BENCH_RULE) for name in (
    "key_weight", "ip_weight", "account_weight", "account_orders", "exit_floor")}
ORDER_PATH = ("gateway", "risk", "matching")  # the nodes every order crosses


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    """A detached cluster in a temporary directory, with extra environment for its processes."""

    def __init__(self, env: dict[str, str] | None = None, journal: dict | None = None,
                 optional: tuple[str, ...] = (), curve: bool = True, standby: bool = False) -> None:
        """`optional`: which of the topology's optional nodes (surveillance, the REST facade) run;
        none by default, so the bench measures the venue's order path and each optional node's
        price is measured on its own (make surveillance-cost, make bench-rest)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="perpx-bench-"))
        self.run_dir = self.tmp / "run"
        self.config = config.write_tcp_topology(
            config.DEFAULT_CONFIG, self.tmp / "topology.toml", config.free_tcp_ports(20), self.run_dir,
            internal_ipc=True, node_settings={"risk": {"max_open_orders": BENCH_MAX_OPEN_ORDERS,
                                                       "standby": standby},
                                              "matching": {"standby": standby},
                                              "gateway": {"rate_limits": BENCH_RATE_LIMITS}},
            sections={"journal": journal} if journal else None)
        raw = tomllib.loads(self.config.read_text())
        for name in config.OPTIONAL_NODES:
            if name not in optional:
                raw["nodes"].pop(name, None)
        raw["supervisor"]["curve"] = curve  # CurveZMQ on the internal links (its price: bench)
        self.config.write_text(config._dump_toml(raw))
        self.topo = config.load(self.config, run_dir=str(self.run_dir))
        self.env = {**os.environ, **(env or {})}
        if self.env.get("PERPX_PIPELINE") == "null":  # the null pipeline's services, by module
            self.env["PERPX_SERVICES"] = "perf.null_services"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster.cli", *args, "--run-dir",
                               str(self.run_dir), "--config", str(self.config), "--json"],
                              capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=60)

    def api_keys(self) -> list[str]:
        """The API keys load is driven with: one per account in ACCOUNTS."""
        return [self.topo.accounts[a].api_key for a in ACCOUNTS]

    def node_pids(self) -> dict[str, int]:
        status = read_status(self.run_dir) or {"nodes": {}}
        return {name: node["pid"] for name, node in status["nodes"].items()}

    def node_cpu_seconds(self) -> dict[str, float]:
        """User + system CPU so far of each node process (all its threads), from /proc."""
        return {name: cpu_seconds(pid) for name, pid in self.node_pids().items()}

    def __enter__(self) -> Cluster:
        # In the caller's session: with kernel autogroup (on by default on most distributions)
        # every session is one scheduling group, and a venue in a session of its own got, all
        # its busy nodes together, the CPU weight of the one load-generator process. Measured
        # on this host: the cluster's max 84-95k -> 114-128k orders/s, the null's 183-204k -> 194k.
        proc = self.cli("cluster", "up", "--detach", "--same-session")
        if proc.returncode:
            raise RuntimeError(f"cluster did not start: {proc.stdout} {proc.stderr}")
        return self

    def __exit__(self, *exc) -> None:
        self.cli("cluster", "down")


async def closed_loop(topo: config.Topology, seconds: float, clients: int) -> dict:
    """Each client: place a post-only order far from the touch, cancel it; repeat."""
    gw = topo.nodes["gateway"]
    conns = [Client(gw.client, api_key=topo.accounts[ACCOUNTS[i % len(ACCOUNTS)]].api_key,
                    timeout=10) for i in range(clients)]
    for c in conns:
        await c.connect()
    price = topo.symbols["BTC-PERP"].initial_price
    done = 0
    latencies: list[int] = []
    stop_at = time.monotonic() + seconds

    async def worker(i: int, c: Client) -> None:
        nonlocal done
        side = BUY if i % 2 else SELL
        limit = price - price // 50 if side == BUY else price + price // 50  # 2% off: never fills
        while time.monotonic() < stop_at:
            t0 = time.monotonic_ns()
            report = await c.place("BTC-PERP", side, 1, limit, post_only=True)
            order_id = getattr(report.event, "order_id", 0)
            if order_id:
                await c.cancel("BTC-PERP", order_id)
            latencies.append(time.monotonic_ns() - t0)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.monotonic() - start
    for c in conns:
        await c.close()
    latencies.sort()
    return {"orders": done, "seconds": round(elapsed, 3),
            "orders_per_s": round(done / elapsed, 1),
            "requests_per_s": round(2 * done / elapsed, 1),
            "round_trip_us": {"p50": latencies[len(latencies) // 2] // 1000 if latencies else None,
                              "p99": latencies[int(len(latencies) * 0.99)] // 1000 if latencies else None}}


def measure(env: dict[str, str], seconds: float, clients: int, zero_links: bool = False) -> dict:
    with Cluster(env) as cluster:
        if zero_links:  # netsim present, every link configured, all at zero
            from netsim.shaper import known_links

            for link in known_links():
                cluster.cli("netsim", "set", link, "--latency", "0")
        time.sleep(1.0)
        import uvloop

        return uvloop.run(closed_loop(cluster.topo, seconds, clients))


def netsim_overhead(seconds: float = 8, clients: int = 8, rounds: int = 2) -> dict:
    """Alternate netsim compiled out / present-at-zero, `rounds` times each, in one run."""
    runs: dict[str, list[dict]] = {"compiled_out": [], "present_zero": []}
    for _ in range(rounds):
        runs["compiled_out"].append(measure({"PERPX_NETSIM": "off"}, seconds, clients))
        runs["present_zero"].append(measure({"PERPX_NETSIM": "on"}, seconds, clients,
                                            zero_links=True))
    out = {k: statistics.median(r["orders_per_s"] for r in v) for k, v in runs.items()}
    return {"runs": runs, "median_orders_per_s": out,
            "ratio_present_over_compiled_out": round(out["present_zero"] / out["compiled_out"], 3),
            "seconds_per_run": seconds, "clients": clients}


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="bench-netsim")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = netsim_overhead(args.seconds, args.clients, args.rounds)
    out = ROOT / "perf" / "results" / "netsim_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    m = result["median_orders_per_s"]
    print("| netsim | orders/s (median of runs) |\n|---|---|")
    print(f"| compiled out (PERPX_NETSIM=off) | {m['compiled_out']:,.0f} |")
    print(f"| present, every link at zero | {m['present_zero']:,.0f} |")
    print(f"\nratio present/compiled-out: {result['ratio_present_over_compiled_out']}  "
          f"(runs: {[r['orders_per_s'] for r in result['runs']['compiled_out']]} vs "
          f"{[r['orders_per_s'] for r in result['runs']['present_zero']]})\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
