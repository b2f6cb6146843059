"""`make failover-soak`: #19's soak. A cluster whose risk and matching each run with a hot standby
takes a steady open-loop load of mixed orders (makers quoting and cancelling, takers crossing
them) while the primaries of risk and matching are killed (or paused) alternately, N times, with
a pause after each for the new standby to catch up. Then, from the clients' own records and the
venue's state and journals:

- acknowledged orders lost: a resting order the venue acknowledged, not cancelled and not filled
  by the client's own account, that the venue no longer has (or has with another remaining);
- duplicate fills: a trade a client heard twice;
- fills never heard: a trade the venue booked for an account that its client never heard of
  (and fills heard that the venue never booked);
- money conserved (risk's ledger, replayed from its journal by `perpx audit verify`);
- primary and standby replay to the same state hash at the last input both have.

Failover time per fault: from the last input the standby had from the old primary (its stream)
to the first output of the new primary, both stamped by the nodes themselves.

Accounts' fill histories hold their latest 100 fills, so the load is bounded to keep every fill
in them: the test is about what failover does to orders and fills, not throughput (`make bench`).

    python -m perf.failover_soak [--kills 20] [--fault kill|pause] [--pause-s 2.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

from cluster import config
from cluster.client import Client
from cluster.protocol import Fill, OrderAccepted, OrderCancelled

RESULTS = Path(__file__).with_name("results")
SYMBOL = "BTC-PERP"
MAKERS = tuple(f"soak-m{i}" for i in range(1, 7))  # accounts the soak adds to the topology
TAKERS = tuple(f"soak-t{i}" for i in range(1, 9))
TAKER_ORDERS = 50  # crossing IOCs per taker: <= 50 fills each, ~67 per maker (histories keep 100)
CORES = ("risk", "matching")


class Records:
    """What one client was told, by its own reports."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.resting: dict[int, int] = {}  # acknowledged GTC order id -> remaining (client's view)
        self.cancelled: set[int] = set()
        self.refused_cancels: set[int] = set()
        self.fills: list[tuple[int, int, int]] = []  # (trade id, order id, qty), as heard
        self.unknown = 0  # requests with no answer in time (retried with the same id)
        self.retried_duplicates = 0  # retries answered with the first answer
        self.answers = 0

    def heard(self, event) -> None:
        if type(event) is Fill:
            self.fills.append((event.trade_id, event.order_id, event.qty))
            if event.order_id in self.resting:
                self.resting[event.order_id] = event.remaining


async def ask(client: Client, records: Records, make):
    """One request; no answer in time is `outcome_unknown` to this client, which retries it with
    the same client order id until it learns the outcome (bounded)."""
    for attempt in range(6):
        try:
            answer = await client.request(make(), raise_on_error=False)
        except asyncio.TimeoutError:
            records.unknown += 1
            continue
        records.answers += 1
        if attempt and getattr(getattr(answer, "event", None), "duplicate", False):
            records.retried_duplicates += 1
        return answer
    return None


async def reader(client: Client, records: Records, stop: asyncio.Event) -> None:
    while not stop.is_set() or not client.reports.empty():
        try:
            report = await asyncio.wait_for(client.reports.get(), 0.2)
        except asyncio.TimeoutError:
            continue
        records.heard(report.event)


async def maker(client: Client, records: Records, mark: int, stop: asyncio.Event,
                rng: random.Random) -> None:
    """Quotes around the mark and cancels the oldest: resting orders come and go all the time."""
    from cluster.protocol import CancelOrder, PlaceOrder
    n = 0
    while not stop.is_set():
        n += 1
        side = 1 if n % 2 else -1
        price = mark - side * rng.randint(1, 4) * 10
        cid = f"{records.account}-{n}"
        answer = await ask(client, records, lambda: PlaceOrder(
            symbol=SYMBOL, side=side, qty=rng.randint(1, 3), price=price, client_order_id=cid))
        event = getattr(answer, "event", None)
        if type(event) is OrderAccepted and event.order_id not in records.resting:
            records.resting[event.order_id] = event.qty
        open_ids = [o for o, left in records.resting.items()
                    if left and o not in records.cancelled and o not in records.refused_cancels]
        if len(open_ids) > 6:
            oldest = open_ids[0]
            answer = await ask(client, records, lambda: CancelOrder(symbol=SYMBOL, order_id=oldest))
            if type(getattr(answer, "event", None)) is OrderCancelled:
                records.cancelled.add(oldest)
            else:  # refused: filled meanwhile (its fill will say so), or lost (the judge says)
                records.refused_cancels.add(oldest)
        open_ids = [o for o in open_ids if o not in records.refused_cancels]
        await asyncio.sleep(0.12)


async def taker(client: Client, records: Records, mark: int, stop: asyncio.Event,
                rng: random.Random, interval: float) -> None:
    """Crosses the makers' quotes with one-lot IOCs, open loop (at intended times), bounded."""
    from cluster.protocol import PlaceOrder
    loop = asyncio.get_running_loop()
    start = loop.time() + rng.uniform(0, interval)
    pending = []
    for n in range(1, TAKER_ORDERS + 1):
        await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
        if stop.is_set():
            break
        side = rng.choice((1, -1))
        cid = f"{records.account}-{n}"
        pending.append(asyncio.create_task(ask(client, records, lambda s=side, c=cid: PlaceOrder(
            symbol=SYMBOL, side=s, qty=1, price=mark + s * 60, tif="IOC", client_order_id=c))))
    await asyncio.gather(*pending, return_exceptions=True)


def roles(status: dict, node: str) -> dict[str, tuple]:
    nodes = status["nodes"]
    return {i: (nodes[i].get("role"), nodes[i].get("epoch"), nodes[i].get("state"),
                nodes[i].get("ready")) for i in (node, f"{node}.b")}


def primary(status: dict, node: str):
    found = [(i, r[1]) for i, r in roles(status, node).items() if r[0] == "primary"]
    return found[0] if len(found) == 1 else None


def in_sync(status: dict, node: str) -> bool:
    """Both up, one primary, and it waits for the standby's acknowledgements (caught up)."""
    pair = roles(status, node).values()
    nodes = status["nodes"]
    return (all(r[2] == "running" and r[3] for r in pair)
            and sorted(r[0] for r in pair) == ["primary", "standby"]
            and all(nodes[i].get("in_sync") for i in (node, f"{node}.b")))


async def wait(check, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(step)
    return False


async def soak(handle, kills: int, fault: str, pause_s: float, seed: int, echo) -> dict:
    rng = random.Random(seed)
    stop = asyncio.Event()
    records = {a: Records(a) for a in MAKERS + TAKERS}
    faults: list[dict] = []
    for node in CORES:
        if not await wait(lambda n=node: in_sync(handle.status(), n), 30):
            raise RuntimeError(f"{node}'s pair never came up in sync")
    clients = {a: Client(handle.endpoint(), api_key=handle.api_key(a),
                         market_data=handle.md_endpoint() if a == MAKERS[0] else None)
               for a in records}
    for client in clients.values():
        await client.connect()
    mark = (await clients[MAKERS[0]].next_mark(SYMBOL, 10.0)).mark
    # The takers spread their orders over the expected run, so the crossing lasts to the end.
    expected_s = 2.0 + kills * (pause_s + 1.2)
    interval = expected_s / TAKER_ORDERS
    reading = asyncio.Event()  # set once the last reports are in
    tasks = [asyncio.create_task(reader(c, records[a], reading)) for a, c in clients.items()]
    tasks += [asyncio.create_task(maker(clients[a], records[a], mark, stop, random.Random(rng.random())))
              for a in MAKERS]
    tasks += [asyncio.create_task(taker(clients[a], records[a], mark, stop, random.Random(rng.random()),
                                        interval)) for a in TAKERS]
    try:
        await asyncio.sleep(2.0)  # steady state before the first fault
        for k in range(kills):
            node = CORES[k % 2]
            if not await wait(lambda: in_sync(handle.status(), node), 60):
                raise RuntimeError(f"fault {k + 1}: {node}'s pair not in sync within 60 s")
            old, epoch = primary(handle.status(), node)
            t0 = time.monotonic()
            args = ["netsim", "fault", node, fault, "--primary"]
            if fault == "pause":
                args += ["--seconds", "3"]
            proc = await asyncio.to_thread(handle.cli, *args)
            if proc.returncode:
                raise RuntimeError(f"fault {k + 1}: {proc.stdout}{proc.stderr}")
            ok = await wait(lambda: (primary(handle.status(), node) or (old, 0))[1] > epoch, 30)
            faults.append({"n": k + 1, "node": node, "old": old, "epoch": epoch,
                           "promoted": ok, "seen_by_status_s": round(time.monotonic() - t0, 3)})
            echo(f"fault {k + 1}/{kills}: {fault} {old} (epoch {epoch}) -> "
                 f"{primary(handle.status(), node)} in {time.monotonic() - t0:.2f} s (status)")
            await asyncio.sleep(pause_s)
        for node in CORES:
            await wait(lambda n=node: in_sync(handle.status(), n), 60)
    finally:
        stop.set()
        await asyncio.gather(*tasks[len(clients):], return_exceptions=True)
        # The last reports: until every fill the venue booked was heard, or 20 s (a loaded host
        # delivers late; what is still missing after that is judged "never heard").
        deadline = time.monotonic() + 20
        while True:
            venue = await venue_view(clients)
            if time.monotonic() > deadline or not any(judge(records, venue)[
                    k] for k in ("fills_never_heard", "acknowledged_orders_lost")):
                break
            await asyncio.sleep(0.5)
        reading.set()
        await asyncio.gather(*tasks[:len(clients)], return_exceptions=True)
    for client in clients.values():
        await client.close()
    return {"records": records, "venue": venue, "faults": faults}


async def venue_view(clients: dict) -> dict:
    venue = {}
    for account, client in clients.items():
        view = await client.account_view(fills=100)
        open_orders = await client.open_orders(SYMBOL)
        venue[account] = {"fills": [(f.trade_id, f.order_id, f.qty) for f in view.fills],
                          "open": {o.order_id: o.remaining for o in open_orders.orders}}
    return venue


def judge(records: dict, venue: dict) -> dict:
    lost, duplicate, unheard, phantom = [], [], [], []
    for account, rec in records.items():
        heard = [t for t, _, _ in rec.fills]
        duplicate += [(account, t) for t in set(heard) if heard.count(t) > 1]
        booked = {t for t, _, _ in venue[account]["fills"]}
        unheard += [(account, t) for t in booked - set(heard)]
        # risk keeps an account's latest 100 fills: a full list says nothing of older ones
        oldest = min(booked) if len(booked) >= 100 else None
        phantom += [(account, t) for t in set(heard) - booked if oldest is None or t > oldest]
        for order_id, remaining in rec.resting.items():
            if order_id in rec.cancelled or remaining == 0:
                continue
            if venue[account]["open"].get(order_id) != remaining:
                lost.append((account, order_id, remaining, venue[account]["open"].get(order_id)))
    return {"acknowledged_orders_lost": lost, "duplicate_fills": duplicate,
            "fills_never_heard": unheard, "fills_heard_not_booked": phantom}


def failover_times(run_dir: Path) -> list[dict]:
    """Per promotion: last input streamed from the old primary -> first output of the new one."""
    out = []
    for instance in [f"{n}{s}" for n in CORES for s in ("", ".b")]:
        audit = run_dir / "audit" / f"{instance}.jsonl"
        log = run_dir / "log" / f"{instance}.log"
        if not audit.exists():
            continue
        promoted = [json.loads(line) for line in audit.read_text().splitlines()
                    if '"failover.promoted"' in line]
        firsts = [json.loads(line) for line in log.read_text().splitlines()
                  if '"failover_first_output"' in line] if log.exists() else []
        for p in promoted:
            numbers = p["numbers"]
            after = [f["wall_ns"] for f in firsts if f["wall_ns"] >= int(numbers["promoted_ts_ns"])]
            first = min(after) if after else None
            out.append({"instance": instance, "epoch": int(numbers["epoch"]),
                        "beat_silence_ms": int(numbers["beat_silence_ms"]),
                        "failover_ms": round((first - int(numbers["last_input_ts_ns"])) / 1e6, 1)
                        if first and int(numbers["last_input_ts_ns"]) else None})
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(kills: int, fault: str, pause_s: float, seed: int, tmp: Path, echo=print) -> dict:
    from tests.conftest import ClusterHandle, stop_and_reap  # the suite's cluster fixture
    import tomllib
    handle = ClusterHandle(tmp, internal_ipc=True,
                           node_settings={n: {"standby": True} for n in CORES})
    raw = tomllib.loads(handle.config_path.read_text())
    raw["supervisor"]["max_restarts"] = 4 * kills + 5  # every kill restarts one instance
    raw["journal"] = {**raw.get("journal", {}), "snapshot_interval_s": 5}
    raw["accounts"] += [{"name": a, "api_key": f"key-{a}",
                         "deposit": "5000000" if a in MAKERS else "200000"}
                        for a in MAKERS + TAKERS]
    handle.config_path.write_text(config._dump_toml(raw))
    handle.topo = config.load(handle.config_path, run_dir=str(handle.run_dir))
    started = time.monotonic()
    handle.up()
    try:
        result = asyncio.run(soak(handle, kills, fault, pause_s, seed, echo))
        handle.down()
        verified = handle.cli_json("audit", "verify", str(handle.run_dir), ok=False)
    finally:
        stop_and_reap(handle)
    verdict = judge(result["records"], result["venue"])
    times = failover_times(handle.run_dir)
    ms = [t["failover_ms"] for t in times if t["failover_ms"] is not None]
    risk = next((n for n in verified.get("nodes", []) if n["node"] in ("risk", "risk.b")
                 and "money" in n), {})
    fenced = sum(len([1 for line in (handle.run_dir / "audit" / f"{i}.jsonl").read_text()
                      .splitlines() if '"failover.fenced"' in line])
                 for n in CORES for i in (n, f"{n}.b")
                 if (handle.run_dir / "audit" / f"{i}.jsonl").exists())
    refused_sends = 0
    for n in CORES:
        for i in (n, f"{n}.b"):
            path = handle.run_dir / "audit" / f"{i}.jsonl"
            if path.exists():
                for line in path.read_text().splitlines():
                    if '"failover.fenced"' in line:
                        refused_sends += int(json.loads(line)["numbers"]["refused_sends"])
    report = {
        "fault": fault, "kills": kills, "seed": seed, "seconds": round(time.monotonic() - started, 1),
        "faults": result["faults"], "failover": times,
        "failover_ms": {"p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99),
                        "max": max(ms) if ms else None, "n": len(ms)},
        "orders_acknowledged": sum(len(r.resting) for r in result["records"].values()),
        "fills_heard": sum(len(r.fills) for r in result["records"].values()),
        "answers": sum(r.answers for r in result["records"].values()),
        "outcome_unknown_then_retried": sum(r.unknown for r in result["records"].values()),
        "retries_answered_with_first_answer": sum(r.retried_duplicates
                                                  for r in result["records"].values()),
        **{k: len(v) for k, v in verdict.items()}, "examples": {k: v[:5] for k, v in verdict.items()},
        "money_conserved": bool(risk.get("money", {}).get("conserved")),
        "pairs": {p["node"]: {"equal": p.get("equal"), "common_input": p.get("common_input"),
                              "frames_compared": p.get("frames_compared"),
                              "frames_differing": p.get("frames_differing")}
                  for p in verified.get("pairs", [])},
        "journals_verified": verified.get("ok"),
        "old_primaries_fenced": fenced, "refused_sends_of_fenced_primaries": refused_sends,
    }
    failed = [f"{k}: {report[k]} {report['examples'][k]}" for k in verdict if report[k]]
    failed += [] if report["money_conserved"] else [f"money not conserved: {risk.get('money')}"]
    failed += [] if len(report["pairs"]) == 2 else [f"pairs compared: {sorted(report['pairs'])}"]
    failed += [f"pair {n} differs: {p}" for n, p in report["pairs"].items() if not p["equal"]]
    failed += [f"no promotion after {f}" for f in result["faults"] if not f["promoted"]]
    report["failed"] = failed  # first in the test's message: the report itself is long
    report["ok"] = not failed
    return report


def markdown(report: dict) -> str:
    f = report["failover_ms"]
    lines = [f"# Failover soak: {report['kills']} x {report['fault']} of a primary "
             f"({'PASS' if report['ok'] else 'FAIL'})", "",
             "| measure | value |", "|---|---|"]
    rows = [("faults (risk and matching alternately)", report["kills"]),
            ("promotions measured", f["n"]),
            ("failover ms p50 / p99 / max (last input streamed -> first output of the new primary)",
             f"{f['p50']} / {f['p99']} / {f['max']}"),
            ("orders acknowledged (resting)", report["orders_acknowledged"]),
            ("fills heard", report["fills_heard"]),
            ("requests answered", report["answers"]),
            ("outcome unknown, then retried with the same client order id",
             report["outcome_unknown_then_retried"]),
            ("retries answered with the first answer", report["retries_answered_with_first_answer"]),
            ("**acknowledged orders lost**", report["acknowledged_orders_lost"]),
            ("**duplicate fills**", report["duplicate_fills"]),
            ("**fills a client never heard of**", report["fills_never_heard"]),
            ("fills heard that the venue never booked", report["fills_heard_not_booked"]),
            ("money conserved (journal replay)", report["money_conserved"]),
            ("pairs replay to one state hash", ", ".join(
                f"{n}: {p['equal']} at input {p['common_input']}" for n, p in report["pairs"].items())),
            ("old primaries fenced / their refused sends",
             f"{report['old_primaries_fenced']} / {report['refused_sends_of_fenced_primaries']}"),
            ("run time s", report["seconds"])]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import tempfile
    parser = argparse.ArgumentParser(prog="failover-soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, choices=range(1, 201), metavar="N")
    parser.add_argument("--fault", choices=("kill", "pause"), default="kill")
    parser.add_argument("--pause-s", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    import shutil
    tmp = Path(tempfile.mkdtemp(prefix="perpx-soak-"))
    report = run(args.kills, args.fault, args.pause_s, args.seed, tmp)
    if report["ok"]:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        report["run_dir_kept"] = str(tmp / "run")  # its logs, audit and journals, to look at
    RESULTS.mkdir(exist_ok=True)
    name = f"failover-soak-{args.fault}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
