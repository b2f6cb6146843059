"""`make bench-core`: the matching engine against the minimal reference book, same op streams, same run.

Two generated streams of 1,000,000 operations (generation is not timed):
- mixed: 70% passive limit adds near the touch, 25% cancels of random live orders, 5% IOCs that
  cross; IOC sizes adapt so the book hovers around ~1,000 live orders;
- modify_heavy: 9% GTC adds, 3% IOC, 6% cancels, 82% amends moving an order near the touch.
Throughput comes from an untimed-per-op pass; per-op latency (p50/p99/p99.9 by op type) from a
second pass that times each call. Results: perf/results/core.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import time
from heapq import heappop
from pathlib import Path

from hdrh.histogram import HdrHistogram

from cluster import config
from cluster.protocol import Amend, Cancel, NewOrder
from nodes.matching.engine import MatchingEngine
from perf.reference_book import ReferenceBook

SYMBOL = "BTC-PERP"
MID = 300_000
RESULTS = Path(__file__).with_name("results")


def generate(kind: str, n: int, seed: int) -> list[tuple]:
    """Ops as tuples: ("add", id, side, price, qty, account) | ("cancel", id) | ("ioc", id, side,
    limit, qty, account) | ("move", id, price). A reference book tracks the state while generating."""
    rng = random.Random(seed)
    book = ReferenceBook()
    live: list[int] = []
    where: dict[int, int] = {}  # order id -> index in live
    ops: list[tuple] = []
    next_id = 1

    def touch() -> tuple[int, int]:
        bids, asks = book.heaps
        while bids and -bids[0] not in book.levels[0]:
            heappop(bids)
        while asks and asks[0] not in book.levels[1]:
            heappop(asks)
        bid = -bids[0] if bids else MID - 1
        ask = asks[0] if asks else MID + 1
        return bid, ask

    def drop(order_id: int) -> None:
        i = where.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[i] = last
            where[last] = i

    def passive_price(side: int) -> int:
        bid, ask = touch()
        return (min(bid + 1, ask - 1) - rng.randrange(0, 12)) if side > 0 else \
            (max(ask - 1, bid + 1) + rng.randrange(0, 12))

    if kind == "mixed":
        mix = (("add", 70), ("cancel", 25), ("ioc", 5))
    else:
        mix = (("add", 9), ("ioc", 3), ("cancel", 6), ("move", 82))
    names = [k for k, w in mix for _ in range(w)]
    while len(ops) < n:
        op = rng.choice(names)
        # keep the book hovering around 1,000 live orders
        if op in ("cancel", "move") and not live:
            op = "add"
        if op == "add":
            side = rng.choice((1, -1))
            price = passive_price(side)
            qty = rng.randint(1, 20)
            ops.append(("add", next_id, side, price, qty, f"mm{next_id % 200}"))
            book.add(next_id, side, price, qty)
            where[next_id] = len(live)
            live.append(next_id)
            next_id += 1
        elif op == "cancel":
            oid = live[rng.randrange(len(live))]
            ops.append(("cancel", oid))
            book.cancel(oid)
            drop(oid)
        elif op == "move":
            oid = live[rng.randrange(len(live))]
            side = 1 if book.orders[oid][0] == 0 else -1
            price = passive_price(side)
            ops.append(("move", oid, price))
            book.move(oid, price)
        else:
            side = rng.choice((1, -1))
            bid, ask = touch()
            pressure = max(1, 10 + (len(live) - 1000) // 10)
            qty = rng.randint(1, 11 * pressure)
            limit = ask + 15 if side > 0 else bid - 15
            ops.append(("ioc", next_id, side, limit, qty, f"tk{next_id % 50}"))
            next_id += 1
            before = set(book.orders)
            book.ioc(side, limit, qty)
            for oid in before - set(book.orders):
                drop(oid)
    return ops


def engine_commands(ops: list[tuple], owners: dict[int, str]) -> list:
    cmds = []
    for op in ops:
        k = op[0]
        if k == "add":
            owners[op[1]] = op[5]
            cmds.append(NewOrder(order_id=op[1], account=op[5], symbol=SYMBOL, side=op[2],
                                 price=op[3], qty=op[4]))
        elif k == "ioc":
            cmds.append(NewOrder(order_id=op[1], account=op[5], symbol=SYMBOL, side=op[2],
                                 price=op[3], qty=op[4], tif="IOC"))
        elif k == "cancel":
            cmds.append(Cancel(account=owners[op[1]], symbol=SYMBOL, order_id=op[1]))
        else:
            cmds.append(Amend(account=owners[op[1]], symbol=SYMBOL, order_id=op[1], price=op[2]))
    return cmds


def reference_calls(ops: list[tuple]):
    calls = []
    for op in ops:
        k = op[0]
        if k == "add":
            calls.append((0, op[1], op[2], op[3], op[4]))
        elif k == "ioc":
            calls.append((1, op[2], op[3], op[4], 0))
        elif k == "cancel":
            calls.append((2, op[1], 0, 0, 0))
        else:
            calls.append((3, op[1], op[2], 0, 0))
    return calls


# The untimed and timed loops below repeat the dispatch on purpose: the throughput pass must not pay
# for a per-op function table or clock reads, and the reference and the engine are run the same way.
def run_reference(calls, timed: bool):
    book = ReferenceBook()
    add, ioc, cancel, move = book.add, book.ioc, book.cancel, book.move
    hists = {}
    clock = time.perf_counter_ns
    start = clock()
    if not timed:
        for c in calls:
            k = c[0]
            if k == 0:
                add(c[1], c[2], c[3], c[4])
            elif k == 1:
                ioc(c[1], c[2], c[3])
            elif k == 2:
                cancel(c[1])
            else:
                move(c[1], c[2])
        return clock() - start, hists
    names = ("add", "ioc", "cancel", "amend")
    hists = {n: HdrHistogram(1, 60_000_000, 3) for n in names}
    for c in calls:
        k = c[0]
        t0 = clock()
        if k == 0:
            add(c[1], c[2], c[3], c[4])
        elif k == 1:
            ioc(c[1], c[2], c[3])
        elif k == 2:
            cancel(c[1])
        else:
            move(c[1], c[2])
        hists[names[k]].record_value(max(1, clock() - t0))
    return clock() - start, hists


def run_engine(cmds, kinds, timed: bool):
    engine = MatchingEngine(config.load().symbols)
    handle = engine.handle
    clock = time.perf_counter_ns
    hists = {}
    start = clock()
    if not timed:
        for c in cmds:
            handle(c)
        return clock() - start, hists, engine
    hists = {n: HdrHistogram(1, 60_000_000, 3) for n in ("add", "ioc", "cancel", "amend")}
    for c, k in zip(cmds, kinds):
        t0 = clock()
        handle(c)
        hists[k].record_value(max(1, clock() - t0))
    return clock() - start, hists, engine


def summarize(hists) -> dict:
    return {k: {"count": h.get_total_count(), "p50": h.get_value_at_percentile(50) / 1000,
                "p99": h.get_value_at_percentile(99) / 1000,
                "p99.9": h.get_value_at_percentile(99.9) / 1000}
            for k, h in hists.items() if h.get_total_count()}


def bench(kind: str, n: int, seed: int) -> dict:
    ops = generate(kind, n, seed)
    kinds = [{"add": "add", "ioc": "ioc", "cancel": "cancel", "move": "amend"}[o[0]] for o in ops]
    cmds = engine_commands(ops, {})
    calls = reference_calls(ops)
    gc.collect()
    gc.disable()
    try:
        ref_ns, _ = run_reference(calls, timed=False)
        eng_ns, _, engine = run_engine(cmds, kinds, timed=False)
        _, ref_h = run_reference(calls, timed=True)
        _, eng_h, _ = run_engine(cmds, kinds, timed=True)
    finally:
        gc.enable()
    engine.validate_internal_state()
    live = len(engine.orders)
    return {
        "ops": n, "engine_ops_per_s": round(n / (eng_ns / 1e9)),
        "reference_ops_per_s": round(n / (ref_ns / 1e9)),
        "ratio": round(ref_ns / eng_ns, 3),
        "latency_us": summarize(eng_h), "reference_latency_us": summarize(ref_h),
        "mix": {k: kinds.count(k) for k in ("add", "ioc", "cancel", "amend")},
        "live_orders_at_end": live, "trades": engine.trade_id,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-core")
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(RESULTS / "core.json"))
    args = parser.parse_args(argv)
    results = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or
                           platform.machine()}, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                              time.gmtime())}
    for kind in ("mixed", "modify_heavy"):
        print(f"bench-core: {kind}: generating {args.ops:,} ops ...", flush=True)
        results[kind] = bench(kind, args.ops, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print()
    print("| stream | engine ops/s | reference ops/s | ratio | add p50/p99/p99.9 us | cancel p50/p99 us |"
          " ioc p50/p99 us | amend p50/p99 us |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("mixed", "modify_heavy"):
        r = results[kind]
        lat = r["latency_us"]

        def cell(op, three=False):
            if op not in lat:
                return "-"
            v = lat[op]
            return f"{v['p50']:.1f}/{v['p99']:.1f}" + (f"/{v['p99.9']:.1f}" if three else "")

        print(f"| {kind} | {r['engine_ops_per_s']:,} | {r['reference_ops_per_s']:,} | {r['ratio']:.2f}x |"
              f" {cell('add', True)} | {cell('cancel')} | {cell('ioc')} | {cell('amend')} |")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
