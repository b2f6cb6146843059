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
from tests.e2e.helpers import poll
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
            and all((p.get("stats") or {}).get("epoch") for p in pair))


def audit(handle, instance: str, rule: str) -> list[dict]:
    path = handle.run_dir / "audit" / f"{instance}.jsonl"
    if not path.exists():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line)
            if r.get("rule") == rule]


def test_kill_the_primary_of_risk_then_of_matching_nothing_acknowledged_is_lost(tmp_path):
    handle = ClusterHandle(tmp_path, internal_ipc=True, node_settings=PAIRS)
    handle.up()
    fills_heard: list[tuple[str, int]] = []
    for node in ("risk", "matching"):
        poll(lambda n=node: in_sync(handle, n), 20)

    async def scenario():
        async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                          market_data=handle.md_endpoint()) as maker, \
                Client(handle.endpoint(), api_key=handle.api_key("taker1")) as taker:
            mark = (await maker.next_mark(SYMBOL, 10.0)).mark
            for i in range(1, 6):
                await maker.place(SYMBOL, -1, 3, mark + 10 * i, client_order_id=f"ask{i}")
                await maker.place(SYMBOL, 1, 3, mark - 10 * i, client_order_id=f"bid{i}")
            await taker.place(SYMBOL, 1, 4, mark + 20, tif="IOC")
            await taker.place(SYMBOL, -1, 2, mark - 10, tif="IOC")

            def collect(client):
                while not client.reports.empty():
                    ev = client.reports.get_nowait().event
                    if type(ev).__name__ == "Fill":
                        fills_heard.append((ev.account, ev.trade_id))

            async def heard(trades: int) -> None:
                deadline = time.monotonic() + 10
                while len(set(fills_heard)) < 2 * trades and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    collect(maker)
                    collect(taker)

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
    finally:
        handle.down()
