from __future__ import annotations

import asyncio
import json
import time

from cluster.client import Client
from cluster.protocol import IndexMark


async def wait_mark(client: Client, symbol: str, timeout: float = 10.0) -> IndexMark:
    """The next mark the oracle publishes for `symbol` (via the gateway's market data)."""
    return await client.next_mark(symbol, timeout)


async def next_report(client: Client, kind: type, timeout: float = 5.0):
    """The next execution report of type `kind` for this client's account (others are skipped)."""

    async def find():
        while True:
            report = await client.reports.get()
            if type(report.event) is kind:
                return report.event

    return await asyncio.wait_for(find(), timeout)


def wait_netsim_applied(cluster, table: dict, node: str, timeout: float = 5.0) -> None:
    """Poll `node`'s log until it has applied netsim table `table["version"]` or a later one,
    instead of sleeping through a republish period. A node logs `netsim_link` with the table's
    version for each of its own links (the sender's side) that the table changed."""
    path = cluster.run_dir / "log" / f"{node}.log"
    version = table["version"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            if '"netsim_link"' in line:
                try:
                    if json.loads(line).get("version", -1) >= version:
                        return
                except ValueError:  # a line being written
                    continue
        time.sleep(0.05)
    raise AssertionError(f"{node} had not applied netsim table v{version} after {timeout} s")


def poll(check, timeout: float, step: float = 0.1):
    """check() until it returns something true or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
