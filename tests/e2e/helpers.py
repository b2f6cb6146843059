from __future__ import annotations

import asyncio

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
