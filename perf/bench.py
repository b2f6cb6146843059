"""`make bench`: the cluster against the null pipeline, in one run, open loop.

1. the order path's message handling per order, in process, for both (perf.logic_cost);
2. null pipeline: maximum sustainable orders/s (offered load stepped up until p99 exceeds the bound
   or answers fall behind, then bisected);
3. cluster: the same;
4. latency (p50/p99/p99.9) of both at 25%, 50% and 75% of the null pipeline's maximum, and of both
   at half the cluster's maximum, HALF_LOAD_RUNS times each (median p99 -> ratio_p99_at_half_load);
   then the cluster's latency per hop, idle and at half its maximum (perf.hops);
5. the same cluster without the journal, without CurveZMQ, and with hot standbys (#19): each
   safety feature's price as ratios of this run;
6. a mixed workload (quotes, cancels, IOCs that trade) on the null pipeline, the cluster and the
   cluster with standbys;
7. perf/results/bench.json, bench.md and bench.png (latency percentiles against offered load).
Every process started is stopped at the end; every step is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from perf import hops, logic_cost
from perf.cluster_load import ORDER_PATH, Cluster
from perf.loadgen import TRIES, Step, find_max, run_step

RESULTS = Path(__file__).with_name("results")
SYMBOL = "BTC-PERP"
CPUS = os.cpu_count() or 1
HALF_LOAD_RUNS = 5
# Bisection steps after the geometric search (x1.6 per step) brackets the maximum: 5 steps put
# each maximum within 2% of the bracket (3 left 7.5%, as much as the ratio's margin to its target).
REFINE = 5


def log(text: str) -> None:
    print(text, flush=True)


JOURNAL_OFF = {"enabled": False}


def with_cluster(env: dict, fn, journal: dict | None = None, curve: bool = True,
                 standby: bool = False):
    with Cluster(env, journal=journal, curve=curve, standby=standby) as cluster:
        time.sleep(1.5 if not standby else 3.0)  # marks flowing, sockets connected, pairs in sync
        topo = cluster.topo
        return fn(topo.nodes["gateway"].client, cluster.api_keys(), topo.symbols[SYMBOL].initial_price,
                  cluster)


def point(venue: Cluster, endpoint, keys, price, rate: float, seconds: float) -> dict:
    """One latency point, with the CPU each order-path node spent per answered order (us): what
    the two pipelines' difference is made of. The count includes the idle check before the step,
    a few dozen orders."""
    cpu0 = venue.node_cpu_seconds()
    r = run_step(endpoint, keys, Step(rate=rate, seconds=seconds), SYMBOL, price)
    cpu1 = venue.node_cpu_seconds()
    r["cpu_us_per_order"] = {name: round(1e6 * (cpu1[name] - cpu0[name]) / max(1, r["answered"]), 2)
                             for name in ORDER_PATH}
    log(f"  at {rate:>9,.0f}/s: answered {r['achieved_per_s']:>9,.0f}/s  "
        f"p50 {r['latency_us'].get('p50', 0):,.0f} us  p99 {r['latency_us'].get('p99', 0):,.0f} us  "
        f"p99.9 {r['latency_us'].get('p99.9', 0):,.0f} us  cpu us/order "
        + " ".join(f"{n} {v:g}" for n, v in r["cpu_us_per_order"].items()))
    return r


def safety_price(name: str, on_max: float, on_med, off_max: float, off_steps: list,
                 off_points: list) -> dict:
    """The cluster with and without one safety feature (`name`: journal, curve), in one run: the
    maxima, the p99 at the same half-load rate, and their ratios."""
    off_runs = [p["latency_us"].get("p99") for p in off_points]
    off_med = statistics.median(off_runs) if all(off_runs) else None
    on, off = f"{name}_on", f"{name}_off"
    return {"max_orders_per_s": {on: round(on_max), off: round(off_max)},
            "throughput_ratio_on_off": round(on_max / off_max, 3) if off_max else None,
            "p99_at_half_cluster_max_us": {on: on_med, off: off_med, f"{off}_runs": off_runs},
            "p99_ratio_on_off": round(on_med / off_med, 3) if on_med and off_med else None,
            f"steps_{off}": off_steps + off_points}


def run(seconds: float, bound_us: float) -> dict:
    result: dict = {"machine": {"python": platform.python_version(), "cpus": CPUS},
                    "p99_bound_us": bound_us, "step_seconds": seconds,
                    "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log("business logic per order, in process (perf.logic_cost)")
    result["logic_us_per_order"] = logic_cost.compare()
    log(json.dumps(result["logic_us_per_order"]))
    log("null pipeline: searching the maximum sustainable rate")
    null_max, null_steps = with_cluster({"PERPX_PIPELINE": "null"}, lambda e, k, p, _: find_max(
        e, k, SYMBOL, p, seconds=seconds, p99_bound_us=bound_us, refine=REFINE, log=log))
    log(f"null pipeline max: {null_max:,.0f} orders/s\ncluster: searching the maximum sustainable rate")
    cluster_max, cluster_steps = with_cluster({}, lambda e, k, p, _: find_max(
        e, k, SYMBOL, p, seconds=seconds, p99_bound_us=bound_us, refine=REFINE, log=log))
    log(f"cluster max: {cluster_max:,.0f} orders/s")
    fractions = (0.25, 0.5, 0.75)
    rates = [null_max * f for f in fractions]
    half_cluster = cluster_max / 2
    # The half-load comparison is one number from short steps on a host that stalls now and then,
    # so each pipeline runs it HALF_LOAD_RUNS times and the median p99 is compared.
    points = rates + [half_cluster] * HALF_LOAD_RUNS
    log("latency points: null pipeline")
    null_points = with_cluster({"PERPX_PIPELINE": "null"}, lambda e, k, p, venue: [
        point(venue, e, k, p, r, seconds) for r in points])
    log("latency points: cluster")

    def cluster_points_and_hops(e, k, p, venue):
        measured = [point(venue, e, k, p, r, seconds) for r in points]
        # then, outside the compared points: where the time goes, hop by hop, idle and loaded
        idle = hops.profile(e, lambda: time.sleep(1.0))
        loaded = hops.profile(e, lambda: run_step(
            e, k, Step(rate=half_cluster, seconds=seconds), SYMBOL, p))
        log(f"  hops at {half_cluster:,.0f}/s, median us (idle): {hops.line(idle, loaded)}")
        return measured, {"idle": idle, "at_half_cluster_max": loaded}

    cluster_points, result["hop_latency_us"] = with_cluster({}, cluster_points_and_hops)
    # The price of the journal (#18): the same cluster with risk and matching not journaling,
    # searched the same way and measured at the same half-load rate, in this run.
    def without(label: str, **venue) -> tuple[float, list, list]:
        """The same cluster without one safety feature: its max, searched the same way, and
        its p99 at the same half-load rate, in this run."""
        log(f"cluster, {label}: searching the maximum sustainable rate")
        top, steps = with_cluster({}, lambda e, k, p, _: find_max(
            e, k, SYMBOL, p, seconds=seconds, p99_bound_us=bound_us, refine=REFINE, log=log),
            **venue)
        log(f"cluster, {label}, max: {top:,.0f} orders/s; latency at half the full cluster's max")
        pts = with_cluster({}, lambda e, k, p, v: [
            point(v, e, k, p, half_cluster, seconds) for _ in range(HALF_LOAD_RUNS)], **venue)
        return top, steps, pts

    nojournal_max, nojournal_steps, nojournal_points = without("journal off", journal=JOURNAL_OFF)
    nocurve_max, nocurve_steps, nocurve_points = without("CurveZMQ off", curve=False)
    # The price of a hot standby for risk and matching (#19): every input in two journals before
    # its effects leave. Measured the same way (its max, and p99 at the same half-load rate).
    standby_max, standby_steps, standby_points = without("with standbys", standby=True)
    # The mixed workload (quotes, cancels, and IOCs that trade and settle two accounts): the IOC
    # that never fills is the cheapest path through the venue, and the safety costs show on fills.
    mixed = {}
    for label, env, venue in (("null", {"PERPX_PIPELINE": "null"}, {}), ("cluster", {}, {}),
                              ("cluster_with_standbys", {}, {"standby": True})):
        log(f"mixed workload, {label}: searching the maximum sustainable rate")
        top, steps = with_cluster(env, lambda e, k, p, _: find_max(
            e, k, SYMBOL, p, seconds=seconds, p99_bound_us=bound_us, refine=3, log=log,
            mix="mixed"), **venue)
        mixed[label] = {"max_orders_per_s": round(top), "steps": steps}
        log(f"mixed workload, {label}, max: {top:,.0f} orders/s")
    result["null"] = {"max_orders_per_s": round(null_max),
                      "latency_us": {f"{int(f * 100)}%_of_null_max": p["latency_us"]
                                     for f, p in zip(fractions, null_points)},
                      "steps": null_steps + null_points}
    result["cluster"] = {"max_orders_per_s": round(cluster_max),
                         "latency_us": {f"{int(f * 100)}%_of_null_max": p["latency_us"]
                                        for f, p in zip(fractions, cluster_points)},
                         "steps": cluster_steps + cluster_points}
    result["half_cluster_max_rate"] = round(half_cluster)
    on_p99 = [p["latency_us"].get("p99") for p in cluster_points[len(rates):]]
    on_med = statistics.median(on_p99) if all(on_p99) else None
    result["journal"] = {"fsync": "every_batch", "disk": disk_description(), **safety_price(
        "journal", cluster_max, on_med, nojournal_max, nojournal_steps, nojournal_points)}
    # the price of encrypting and authenticating the internal links
    result["curve"] = safety_price("curve", cluster_max, on_med, nocurve_max, nocurve_steps,
                                   nocurve_points)
    # standbys: their price against the journal-only cluster (on = with standbys)
    standby_runs = [p["latency_us"].get("p99") for p in standby_points]
    standby_med = statistics.median(standby_runs) if all(standby_runs) else None
    result["standby"] = {
        "max_orders_per_s": {"with_standbys": round(standby_max), "journal_only": round(cluster_max)},
        "throughput_ratio": round(standby_max / cluster_max, 3) if cluster_max else None,
        "p99_at_half_cluster_max_us": {"with_standbys": standby_med, "journal_only": on_med,
                                       "with_standbys_runs": standby_runs},
        "p99_ratio": round(standby_med / on_med, 3) if standby_med and on_med else None,
        "steps_with_standbys": standby_steps + standby_points}
    result["mixed"] = {**mixed, "ratio_cluster_to_null": round(
        mixed["cluster"]["max_orders_per_s"] / mixed["null"]["max_orders_per_s"], 3)
        if mixed["null"]["max_orders_per_s"] else None,
        "ratio_standbys_to_cluster": round(mixed["cluster_with_standbys"]["max_orders_per_s"]
                                           / mixed["cluster"]["max_orders_per_s"], 3)
        if mixed["cluster"]["max_orders_per_s"] else None}
    half_runs = {"null": null_points[len(rates):], "cluster": cluster_points[len(rates):]}
    runs = {name: [p["latency_us"].get("p99") for p in pts] for name, pts in half_runs.items()}
    result["p99_at_half_cluster_max_runs_us"] = runs
    # median over the half-load runs, per node: where each pipeline's CPU per order goes
    result["cpu_us_per_order_at_half_cluster_max"] = {
        name: {n: statistics.median(p["cpu_us_per_order"][n] for p in pts) for n in ORDER_PATH}
        for name, pts in half_runs.items()}
    result["p99_at_half_cluster_max_us"] = {
        name: statistics.median(v) if all(v) else None for name, v in runs.items()}
    result["p99_misses_while_keeping_up"] = {
        name: sum(1 for s in steps if s.get("kept_up") and not s.get("sustainable"))
        for name, steps in (("null", null_steps), ("cluster", cluster_steps))}
    result["ratio_throughput"] = round(cluster_max / null_max, 3) if null_max else None
    # At its maximum the null pipeline costs the host CPUS / null_max seconds per order, all in
    # (generator, transport, wake-ups). The cluster pays that plus its rules; were its wake-ups
    # amortised as well at its own (lower) maximum, it could reach CPUS / (that + rules).
    host_us = CPUS * 1e6 / null_max if null_max else 0
    added = result["logic_us_per_order"]["added_by_cluster_total"]
    result["ratio_ceiling_from_logic"] = round(host_us / (host_us + added), 3) if host_us else None
    n99, c99 = result["p99_at_half_cluster_max_us"]["null"], result["p99_at_half_cluster_max_us"]["cluster"]
    result["ratio_p99_at_half_load"] = round(c99 / n99, 3) if n99 and c99 else None
    return result


def disk_description() -> str:
    """What the journal writes to: the filesystem and device of perf/results' disk."""
    try:
        device = next(line.split() for line in Path("/proc/mounts").read_text().splitlines()
                      if line.split()[1] == "/")
        return f"{device[0]} ({device[2]}, {device[3].split(',')[0]}) at /"
    except (OSError, StopIteration):
        return "unknown"


def markdown(r: dict) -> str:
    lines = ["# perpx bench (open loop, one run, this host)", "",
             f"p99 bound for 'sustainable': {r['p99_bound_us'] / 1000:g} ms; {r['step_seconds']:g} s per step.", "",
             "| | max sustainable orders/s | p50 / p99 / p99.9 us at 25% | at 50% | at 75% of null max |",
             "|---|---|---|---|---|"]
    for name in ("null", "cluster"):
        cells = []
        for key in ("25%_of_null_max", "50%_of_null_max", "75%_of_null_max"):
            lat = r[name]["latency_us"][key]
            cells.append(f"{lat.get('p50', 0):,.0f} / {lat.get('p99', 0):,.0f} / {lat.get('p99.9', 0):,.0f}"
                         if lat else "-")
        lines.append(f"| {name} | {r[name]['max_orders_per_s']:,} | " + " | ".join(cells) + " |")
    h = r["p99_at_half_cluster_max_us"]
    lines += ["", f"- throughput ratio cluster / null: **{r['ratio_throughput']}**",
              f"- p99 at half the cluster's max ({r['half_cluster_max_rate']:,}/s), median of "
              f"{HALF_LOAD_RUNS} runs: cluster {h['cluster']:,.0f} us vs null {h['null']:,.0f} us: "
              f"ratio **{r['ratio_p99_at_half_load']}** (runs: cluster "
              f"{', '.join(f'{v:,.0f}' for v in r['p99_at_half_cluster_max_runs_us']['cluster'])}; null "
              f"{', '.join(f'{v:,.0f}' for v in r['p99_at_half_cluster_max_runs_us']['null'])})",
              "- CPU per answered order at that rate, median of the runs (us): " + "; ".join(
                  f"{n} {r['cpu_us_per_order_at_half_cluster_max']['cluster'][n]:g} vs "
                  f"{r['cpu_us_per_order_at_half_cluster_max']['null'][n]:g}" for n in ORDER_PATH)
              + " (cluster vs null)",
              "- the same nodes' message handling alone, in process without IO (us per order, "
              "perf.logic_cost): " + "; ".join(
                  f"{n} {r['logic_us_per_order']['cluster'][n]:g} vs {r['logic_us_per_order']['null'][n]:g}"
                  for n in ORDER_PATH)
              + f" (cluster vs null): the venue's rules add {r['logic_us_per_order']['added_by_cluster_total']:g}"
              f" us to every order; with the null's whole-host cost per order at its maximum, that "
              f"caps the throughput ratio at {r['ratio_ceiling_from_logic']} even if the cluster's "
              "wake-ups amortised as well at its maximum as the null's do at theirs",
              f"- where the cluster's latency goes at half its max, per hop (median us; idle in "
              f"brackets; from pings through the order path): "
              f"{hops.line(r['hop_latency_us']['idle'], r['hop_latency_us']['at_half_cluster_max'])}",
              f"- the journal's price (risk and matching journal every input, fsync every batch, "
              f"on {r['journal']['disk']}): max {r['journal']['max_orders_per_s']['journal_on']:,} "
              f"orders/s journaled vs {r['journal']['max_orders_per_s']['journal_off']:,} not: "
              f"ratio **{r['journal']['throughput_ratio_on_off']}**; p99 at half the cluster's max "
              f"{_us(r['journal']['p99_at_half_cluster_max_us']['journal_on'])} vs "
              f"{_us(r['journal']['p99_at_half_cluster_max_us']['journal_off'])}: ratio "
              f"**{r['journal']['p99_ratio_on_off']}**",
              f"- CurveZMQ's price (every internal link encrypted and authenticated): max "
              f"{r['curve']['max_orders_per_s']['curve_on']:,} orders/s with it vs "
              f"{r['curve']['max_orders_per_s']['curve_off']:,} without: ratio "
              f"**{r['curve']['throughput_ratio_on_off']}**; p99 at half the cluster's max "
              f"{_us(r['journal']['p99_at_half_cluster_max_us']['journal_on'])} vs "
              f"{_us(r['curve']['p99_at_half_cluster_max_us']['curve_off'])}: ratio "
              f"**{r['curve']['p99_ratio_on_off']}**",
              f"- the hot standbys' price (#19: every input in the standby's journal too before its "
              f"effects leave): max {r['standby']['max_orders_per_s']['with_standbys']:,} orders/s "
              f"with standbys vs {r['standby']['max_orders_per_s']['journal_only']:,} journal only: "
              f"ratio **{r['standby']['throughput_ratio']}** (goal >= 0.75); p99 at half the "
              f"cluster's max {_us(r['standby']['p99_at_half_cluster_max_us']['with_standbys'])} vs "
              f"{_us(r['standby']['p99_at_half_cluster_max_us']['journal_only'])}: ratio "
              f"**{r['standby']['p99_ratio']}**",
              f"- mixed workload (a resting quote, an order far away and its cancel, and an IOC that "
              f"trades with the quote and settles two accounts, per unit of four), max orders/s: "
              f"null {r['mixed']['null']['max_orders_per_s']:,}, cluster "
              f"{r['mixed']['cluster']['max_orders_per_s']:,} (ratio to null "
              f"**{r['mixed']['ratio_cluster_to_null']}**), cluster with standbys "
              f"{r['mixed']['cluster_with_standbys']['max_orders_per_s']:,} (ratio to the cluster "
              f"**{r['mixed']['ratio_standbys_to_cluster']}**)",
              f"- search steps that answered everything but missed the p99 bound (host stalls; a rate "
              f"fails after {TRIES} misses in a row): null {r['p99_misses_while_keeping_up']['null']}, "
              f"cluster {r['p99_misses_while_keeping_up']['cluster']}"]
    return "\n".join(lines) + "\n"


def _us(value) -> str:
    return f"{value:,.0f} us" if value else "-"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, style in (("null", "--"), ("cluster", "-")):
        steps = sorted((s for s in r[name]["steps"] if s["latency_us"]), key=lambda s: s["offered_per_s"])
        x = [s["offered_per_s"] for s in steps]
        for q, color in (("p50", "tab:blue"), ("p99", "tab:orange"), ("p99.9", "tab:red")):
            ax.plot(x, [s["latency_us"][q] / 1000 for s in steps], style, color=color, marker=".",
                    label=f"{name} {q}")
        ax.axvline(r[name]["max_orders_per_s"], linestyle=style, color="grey", linewidth=0.8)
    ax.set_xlabel("offered load (orders/s)")
    ax.set_ylabel("latency from intended send (ms)")
    ax.set_yscale("log")
    ax.set_title("perpx: latency against offered load (vertical lines: max sustainable)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def standby_price(seconds: float, bound_us: float, rounds: int = 2) -> dict:
    """Only the hot standbys' price (#19), quicker than the whole bench: the journal-only cluster
    and the cluster with standbys, searched the same way, in A B B A order `rounds` times over
    (the host drifts), and the ratio of the medians."""
    runs: dict[str, list[float]] = {"journal_only": [], "with_standbys": []}
    order = [("journal_only", False), ("with_standbys", True)]
    for n in range(rounds):
        for label, standby in (order if n % 2 == 0 else order[::-1]):
            log(f"round {n + 1}, {label}: searching the maximum sustainable rate")
            top, _ = with_cluster({}, lambda e, k, p, _: find_max(
                e, k, SYMBOL, p, seconds=seconds, p99_bound_us=bound_us, refine=REFINE, log=log),
                standby=standby)
            log(f"round {n + 1}, {label}: max {top:,.0f} orders/s")
            runs[label].append(round(top))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {"max_orders_per_s_runs": runs, "max_orders_per_s_median": medians,
            "throughput_ratio": round(medians["with_standbys"] / medians["journal_only"], 3),
            "machine": {"python": platform.python_version(), "cpus": CPUS},
            "step_seconds": seconds, "p99_bound_us": bound_us,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--seconds", type=float, default=3.0, help="per load step")
    parser.add_argument("--p99-bound-ms", type=float, default=50.0)
    parser.add_argument("--only", choices=("standby",),
                        help="measure one safety feature's price alone (bench-standby.json)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.only == "standby":
        result = standby_price(args.seconds, args.p99_bound_ms * 1000)
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench-standby.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0
    result = run(args.seconds, args.p99_bound_ms * 1000)
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (RESULTS / "bench.md").write_text(md)
    plot(result, RESULTS / "bench.png")
    print("\n" + md + f"\nwritten: perf/results/bench.json, bench.md, bench.png "
          f"({result['bench_seconds']:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
