"""#19: a hot standby for risk and matching. kill -9 of a primary (then a pause of one) in a
running cluster with orders, fills and positions: the standby promotes itself under a higher
epoch within a second, peers follow it, every acknowledged order, position and balance is what it
was, no client hears a fill twice, and the old primary comes back as the new standby with the
same journal."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cluster.client import Client
from tests.conftest import ClusterHandle
from tests.e2e.helpers import HeardFills, poll, quote_and_cross
from tests.e2e.test_recovery import orders, stable

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"
PAIRS = {"risk": {"standby": True}, "matching": {"standby": True}}


def roles(handle, node: str) -> dict[str, tuple[str, int]]:
    nodes = handle.status()["nodes"]
    return {i: (nodes[i].get("role"), nodes[i].get("epoch")) for i in (node, f"{node}.b")}


def primary(handle, node: str) -> tuple[str, int] | None:
    found = [(i, e) for i, (r, e) in roles(handle, node).items() if r == "primary"]
    return max(found, key=lambda x: x[1]) if len(found) == 1 else None


def in_sync(handle, node: str) -> bool:
    """Both instances up, one primary, the other's journal caught up."""
    nodes = handle.status()["nodes"]
    pair = [nodes[i] for i in (node, f"{node}.b")]
    return (all(p["state"] == "running" and p.get("ready") for p in pair)
            and sorted(p.get("role") for p in pair) == ["primary", "standby"]
            and all(p.get("in_sync") for p in pair))


def audit(handle, instance: str, rule: str) -> list[dict]:
    path = handle.run_dir / "audit" / f"{instance}.jsonl"
    if not path.exists():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line)
            if r.get("rule") == rule]


def started_pairs(tmp_path, *nodes: str) -> ClusterHandle:
    """A cluster whose risk and matching run with standbys, once `nodes`' pairs are in sync."""
    handle = ClusterHandle(tmp_path, internal_ipc=True, node_settings=PAIRS)
    handle.up()
    for node in nodes:
        poll(lambda n=node: in_sync(handle, n), 20)
    return handle


def test_kill_the_primary_of_risk_then_of_matching_nothing_acknowledged_is_lost(tmp_path):
    handle = started_pairs(tmp_path, "risk", "matching")
    fills = HeardFills()
    fills_heard = fills.heard

    async def scenario():
        async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                          market_data=handle.md_endpoint()) as maker, \
                Client(handle.endpoint(), api_key=handle.api_key("taker1")) as taker:
            fills.clients = (maker, taker)
            mark = await quote_and_cross(maker, taker, SYMBOL)
            heard = fills.until
            await heard(3)
            before = {name: (stable(await c.account_view()), orders(await c.open_orders()))
                      for name, c in (("maker", maker), ("taker", taker))}
            took = {}
            for node in ("risk", "matching"):
                old, epoch = primary(handle, node)
                t0 = time.monotonic()
                handle.cli("netsim", "fault", node, "kill", "--primary", check=True)
                await asyncio.to_thread(
                    poll, lambda n=node, o=old, e=epoch: (primary(handle, n) or (o, 0))[0] != o
                    and primary(handle, n)[1] > e, 20)
                took[node] = time.monotonic() - t0
                after = {}
                for name, c in (("maker", maker), ("taker", taker)):
                    after[name] = (stable(await c.account_view()), orders(await c.open_orders()))
                assert after == before, f"after {node}'s primary was killed"
                await asyncio.to_thread(poll, lambda n=node: in_sync(handle, n), 30)
            await taker.place(SYMBOL, 1, 1, mark + 20, tif="IOC", client_order_id="after")
            await heard(4)
            return before, stable(await taker.account_view()), took

    try:
        before, taker_after, took = asyncio.run(scenario())
        assert len(fills_heard) == len(set(fills_heard)), "a fill was heard twice"
        assert len({trade for _, trade in fills_heard}) == 4
        assert len(taker_after["fills"]) == len(before["taker"][0]["fills"]) + 1
        for node in ("risk", "matching"):
            promoted = audit(handle, f"{node}.b", "failover.promoted")
            assert len(promoted) == 1 and promoted[0]["numbers"]["epoch"] == 2, promoted
            assert audit(handle, "gateway", "failover.witness"), "the witness was asked"
        print("failover seen by the client, s:", took)
        handle.down()
        verified = handle.cli_json("audit", "verify", str(handle.run_dir))
        pairs = {p["node"]: p for p in verified["pairs"]}
        assert verified["ok"], verified
        for node in ("risk", "matching"):  # both instances replay to one state at one input
            assert pairs[node]["equal"] and pairs[node]["frames_compared"] > 50, pairs[node]
    finally:
        handle.down()


def test_a_paused_primary_wakes_fenced_and_comes_back_as_the_standby(tmp_path):
    """SIGSTOP of matching's primary for 3 s under traffic: the standby promotes; the old primary,
    resumed, sends nothing under its old epoch (what it held is counted as refused) and is
    started again as the standby, which catches up; no fill is heard twice."""
    handle = started_pairs(tmp_path, "matching")
    fills_heard: list[tuple[str, int]] = []

    async def scenario():
        async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                          market_data=handle.md_endpoint()) as maker, \
                Client(handle.endpoint(), api_key=handle.api_key("taker1")) as taker:
            mark = (await maker.next_mark(SYMBOL, 10.0)).mark
            for i in range(1, 4):
                await maker.place(SYMBOL, -1, 3, mark + 10 * i, client_order_id=f"ask{i}")
            before = orders(await maker.open_orders())
            old, _ = primary(handle, "matching")
            handle.cli("netsim", "fault", "matching", "pause", "--primary", "--seconds", "3",
                       check=True)
            # Orders while the primary is stopped: answered once the standby has taken over.
            answers = []
            for i in range(3):
                answers.append(await taker.place(SYMBOL, 1, 1, mark + 10, tif="IOC",
                                                 client_order_id=f"during{i}"))
            await asyncio.to_thread(poll, lambda: (primary(handle, "matching") or (old,))[0] != old,
                                    20)
            await asyncio.to_thread(poll, lambda: in_sync(handle, "matching"), 30)
            for _ in range(40):
                while not taker.reports.empty():
                    ev = taker.reports.get_nowait().event
                    if type(ev).__name__ == "Fill":
                        fills_heard.append((ev.account, ev.trade_id))
                await asyncio.sleep(0.05)
            return before, answers, orders(await maker.open_orders()), \
                stable(await taker.account_view())

    try:
        before, answers, after, taker_view = asyncio.run(scenario())
        assert len(fills_heard) == len(set(fills_heard)), "a fill was heard twice"
        assert [type(a.event).__name__ for a in answers] == ["OrderAccepted"] * 3, answers
        filled = sum(f[2] for f in taker_view["fills"])
        assert filled == 3, taker_view["fills"]  # each IOC took one lot of ask1, once
        assert after == before[1:], (before, after)  # ask1 is gone, the others untouched
        fenced = audit(handle, "matching", "failover.fenced")
        assert len(fenced) == 1, fenced
        assert fenced[0]["numbers"]["new_epoch"] >= 2
        promoted = audit(handle, "matching.b", "failover.promoted")
        assert len(promoted) == 1
        events = [json.loads(line) for line in (handle.run_dir / "log" / "supervisor.log")
                  .read_text().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "node_restarted" and e.get("why") == "fenced"
                   for e in events)
    finally:
        handle.down()


def test_a_partition_between_primary_and_standby_promotes_nothing(tmp_path):
    """The pair's own link cut: the witness still hears the primary, so the standby is refused;
    the primary stops waiting for its standby after ack_timeout_ms (said, with the numbers) and
    goes on serving on its own disk; healed, the standby catches up and is in sync again."""
    handle = started_pairs(tmp_path, "risk")

    async def scenario():
        async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                          market_data=handle.md_endpoint()) as maker:
            mark = (await maker.next_mark(SYMBOL, 10.0)).mark
            old, epoch = primary(handle, "risk")
            other = "risk.b" if old == "risk" else "risk"
            handle.cli("netsim", "partition", f"{old}->{other}", f"{other}->{old}", check=True)
            t0 = time.monotonic()
            answers = [await maker.place(SYMBOL, 1, 1, mark - 100 - i, client_order_id=f"p{i}")
                       for i in range(5)]
            during = time.monotonic() - t0
            await asyncio.sleep(2.0)  # well past promote_after_ms: the standby asks, is refused
            still = primary(handle, "risk")
            handle.cli("netsim", "partition", "--heal", check=True)
            await asyncio.to_thread(poll, lambda: in_sync(handle, "risk") and any(
                r["numbers"]["standby"] == other for r in audit(handle, old, "failover.standby_in_sync")
                [1:]), 20)
            after = [await maker.place(SYMBOL, 1, 1, mark - 200 - i) for i in range(3)]
            return old, epoch, answers, during, still, after

    try:
        old, epoch, answers, during, still, after = asyncio.run(scenario())
        assert still == (old, epoch), "nobody was promoted"
        assert all(type(a.event).__name__ == "OrderAccepted" for a in answers + after)
        assert during < 4.0, f"the primary served during the partition ({during:.2f} s for 5)"
        detached = audit(handle, old, "failover.standby_detached")
        assert detached and detached[0]["numbers"]["waited_ms"] >= 500, detached
        refused = [r for r in audit(handle, "gateway", "failover.witness")
                   if r["decision"] == "refused"]
        assert refused and {r["numbers"]["reason"] for r in refused} <= {
            "primary_heard", "standby_behind"}, refused
        assert not audit(handle, "risk", "failover.promoted") + audit(handle, "risk.b",
                                                                      "failover.promoted")
        handle.down()
        verified = handle.cli_json("audit", "verify", str(handle.run_dir))
        pair = {p["node"]: p for p in verified["pairs"]}["risk"]
        assert pair["ok"], pair
    finally:
        handle.down()


def test_the_failover_soak_short_version(tmp_path):
    """`make failover-soak` in small: open-loop mixed orders while risk's and matching's primaries
    are killed in turn; from the clients' records and the venue: nothing acknowledged lost, no
    fill heard twice or never heard, money conserved, each pair replays to one state hash."""
    from perf.failover_soak import run

    report = run(kills=2, fault="kill", pause_s=1.5, seed=7, tmp=tmp_path, echo=lambda _: None)
    assert report["ok"], (report["failed"], report)
    assert report["fills_heard"] > 100 and report["orders_acknowledged"] > 100, report
    assert report["failover_ms"]["n"] == 2 and report["failover_ms"]["max"] < 2000, report


def test_a_partition_between_the_primary_and_the_gateway_moves_the_venue_to_the_standby(tmp_path):
    """risk's primary cut off from the gateway (its clients), its standby not: the primary no
    longer hears the witness and steps aside; the witness no longer hears it and grants the
    standby's promotion; the gateway follows the new primary and orders are served again. Healed,
    the old primary learns the newer epoch, is fenced and comes back as the standby."""
    handle = started_pairs(tmp_path, "risk")

    async def scenario():
        async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                          market_data=handle.md_endpoint()) as maker:
            mark = (await maker.next_mark(SYMBOL, 10.0)).mark
            old, epoch = primary(handle, "risk")
            handle.cli("netsim", "partition", f"{old}->gateway", f"gateway->{old}", check=True)
            t0 = time.monotonic()
            await asyncio.to_thread(poll, lambda: (primary(handle, "risk") or (old,))[0] != old, 20)
            moved = time.monotonic() - t0
            answer = await maker.place(SYMBOL, 1, 1, mark - 300, client_order_id="after-cut")
            handle.cli("netsim", "partition", "--heal", check=True)
            await asyncio.to_thread(poll, lambda: in_sync(handle, "risk"), 30)
            return old, epoch, moved, answer

    try:
        old, epoch, moved, answer = asyncio.run(scenario())
        assert type(answer.event).__name__ == "OrderAccepted", answer
        other = "risk.b" if old == "risk" else "risk"
        assert audit(handle, old, "failover.stepped_aside"), "the cut-off primary stepped aside"
        promoted = audit(handle, other, "failover.promoted")
        assert len(promoted) == 1 and promoted[0]["numbers"]["epoch"] == epoch + 1
        assert audit(handle, old, "failover.fenced"), "healed, the old primary was fenced"
        print(f"the venue moved to the standby {moved:.2f} s after the cut (seen by status)")
    finally:
        handle.down()
