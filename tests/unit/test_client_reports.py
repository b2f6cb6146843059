"""The SDK keeps execution reports nobody asked for in a bounded queue: the newest stay, and the
client counts what it dropped."""

from __future__ import annotations

import asyncio

from cluster import client as client_module
from cluster.protocol import OrderCancelled, Report


def test_unread_reports_keep_the_newest_and_count_the_dropped(monkeypatch):
    monkeypatch.setattr(client_module, "REPORTS_KEPT", 3)

    async def run():
        c = client_module.Client("tcp://127.0.0.1:1")
        try:
            for i in range(5):
                c._dispatch(Report(account="a", event=OrderCancelled(
                    seq=i, ref=0, order_id=i, account="a", symbol="S", remaining=1,
                    reason="user")))
            kept = [c.reports.get_nowait().event.order_id for _ in range(c.reports.qsize())]
            return kept, c.reports_dropped
        finally:
            c.ctx.term()

    assert asyncio.run(run()) == ([2, 3, 4], 2)
