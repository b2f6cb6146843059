"""`make surveillance-cost`: what the surveillance node costs the venue, with and without it in one
run (the node, and matching's private feed, exist only when the topology has [nodes.surveillance]).

Alternating with / without (ROUNDS times each, so that a drift of the shared host hits both alike):
the maximum sustainable orders/s (perf.loadgen.find_max, the bench's search and p99 bound), then at
one fixed rate (half the first maximum without the node) the CPU per answered order of the order
path's nodes and of the surveillance node (counted until the node has worked through what the step
sent it: how long after the step that took is reported too), and how many events the node saw.
Writes perf/results/surveillance-cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from perf.cluster_load import Cluster, cpu_seconds
from perf.loadgen import Step, find_max, run_step

SYMBOL = "BTC-PERP"
SETTLE_S = 3.0  # after a fixed-rate step, before CPU is read again (with and without the node)
ORDER_PATH = ("gateway", "risk", "matching")


class Venue(Cluster):
    """A bench cluster, with or without the surveillance node."""

    def __init__(self, surveillance: bool) -> None:
        super().__init__(optional=("surveillance",) if surveillance else ())

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.node_pids().items()}


def measure(surveillance: bool, seconds: float, bound_us: float, fixed_rate: float | None,
            log, search: bool = True) -> dict:
    with Venue(surveillance) as venue:
        time.sleep(1.5)
        endpoint = venue.topo.nodes["gateway"].client
        keys, price = venue.api_keys(), venue.topo.symbols[SYMBOL].initial_price
        if search:
            best, steps = find_max(endpoint, keys, SYMBOL, price, seconds=seconds,
                                   p99_bound_us=bound_us, refine=3, log=log)
        else:
            best, steps = 0.0, []
        out = {"surveillance": surveillance, "max_orders_per_s": round(best) or None,
               "steps": len(steps)}
        rate = fixed_rate or best / 2
        state = venue.run_dir / "surveillance" / "state.json"
        caught_up_s = None
        cpu0 = venue.cpu()
        r = run_step(endpoint, keys, Step(rate=rate, seconds=seconds), SYMBOL, price)
        ended = time.monotonic()
        if surveillance:  # the node works through what it was sent: until its count of the
            # private feed's batches stops growing
            seen, deadline = -1, ended + 60
            while time.monotonic() < deadline:
                time.sleep(0.6)  # a ranking tick writes the count every 0.5 s
                now_seen = events(state)
                if now_seen == seen:
                    break
                seen = now_seen
            caught_up_s = round(time.monotonic() - ended - 0.6, 1)
        # both variants' CPU over the same window (idle nodes spend some: marks, timers)
        time.sleep(max(0.0, ended + SETTLE_S - time.monotonic()))
        cpu1 = venue.cpu()
        answered = max(1, r["answered"])
        out["at_rate"] = {
            "rate": round(rate), "answered_per_s": round(r["achieved_per_s"]),
            "p99_us": r["latency_us"].get("p99"),
            "cpu_us_per_order": {n: round(1e6 * (cpu1[n] - cpu0[n]) / answered, 2)
                                 for n in cpu1 if n in ORDER_PATH or n == "surveillance"},
            "surveillance_caught_up_after_s": caught_up_s}
        if surveillance:
            out["events_seen"] = events(state)
        return out


def events(state: Path) -> int:
    try:
        return json.loads(state.read_text())["engine_batches"]
    except (OSError, ValueError, KeyError):
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="surveillance-cost")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--p99-bound-us", type=float, default=50_000)
    p.add_argument("--fixed-rate", type=float, default=None,
                   help="skip the maximum's search: only CPU per order at this rate")
    p.add_argument("--out", default="perf/results")
    args = p.parse_args(argv)
    runs, fixed, failed = [], args.fixed_rate, []
    for i in range(args.rounds):
        for with_node in (False, True):
            print(f"round {i + 1}: surveillance {'on' if with_node else 'off'}", flush=True)
            try:
                r = measure(with_node, args.seconds, args.p99_bound_us, fixed,
                            lambda t: print(t, flush=True), search=args.fixed_rate is None)
            except RuntimeError as exc:  # e.g. the load generator got no logon answer
                failed.append({"round": i + 1, "surveillance": with_node, "error": str(exc)})
                print(f"  failed: {exc}", flush=True)
                continue
            fixed = fixed or r["max_orders_per_s"] / 2
            runs.append(r)
            print(json.dumps(r), flush=True)
    on = [r["max_orders_per_s"] for r in runs if r["surveillance"] and r["max_orders_per_s"]]
    off = [r["max_orders_per_s"] for r in runs if not r["surveillance"] and r["max_orders_per_s"]]
    summary = {
        "max_orders_per_s": {"with": on, "without": off},
        "throughput_ratio_with_without": (round(statistics.median(on) / statistics.median(off), 3)
                                          if on and off else None),
        "failed_rounds": failed,
        "fixed_rate": round(fixed),
        "cpu_us_per_order_at_fixed_rate": {
            side: {n: statistics.median([r["at_rate"]["cpu_us_per_order"].get(n, 0) for r in runs
                                         if r["surveillance"] == flag] or [0])
                   for n in (*ORDER_PATH, "surveillance")}
            for side, flag in (("with", True), ("without", False))},
        "p99_us_at_fixed_rate": {side: [r["at_rate"]["p99_us"] for r in runs
                                        if r["surveillance"] == flag]
                                 for side, flag in (("with", True), ("without", False))},
        "surveillance_caught_up_after_s": [r["at_rate"]["surveillance_caught_up_after_s"]
                                           for r in runs if r["surveillance"]],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "surveillance-cost.json").write_text(json.dumps({"summary": summary, "runs": runs},
                                                           indent=1))
    cpu = summary["cpu_us_per_order_at_fixed_rate"]
    md = "\n".join([
        "# Surveillance node: the venue's cost", "",
        f"{args.rounds} rounds, alternating; max sustainable orders/s (p99 <= "
        f"{args.p99_bound_us / 1000:g} ms, {args.seconds:g} s steps):", "",
        "| | max orders/s (each round) | median |", "|---|---|---|",
        f"| without the node | {off} | {statistics.median(off) if off else '-'} |",
        f"| with the node | {on} | {statistics.median(on) if on else '-'} |", "",
        f"Throughput ratio with / without: **{summary['throughput_ratio_with_without']}**.", "",
        f"CPU per answered order at {summary['fixed_rate']:,} orders/s (us, median of rounds):", "",
        "| | " + " | ".join((*ORDER_PATH, "surveillance")) + " |", "|---|---|---|---|---|",
        *[f"| {side} | " + " | ".join(str(round(cpu[side][n], 1))
                                      for n in (*ORDER_PATH, "surveillance"))
          + " |" for side in ("without", "with")], "",
        "The surveillance node had worked through a step's events this long after the step "
        f"ended (s): {summary['surveillance_caught_up_after_s']}.", ""])
    (out / "surveillance-cost.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
