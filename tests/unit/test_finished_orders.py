"""The matching engine's memory of finished orders: bounded, and the latest ids are kept."""

from __future__ import annotations

from nodes.matching.finished import FinishedOrders


def test_remembers_the_last_orders_and_forgets_older_ones():
    done = FinishedOrders(1000)
    for oid in range(1, 5001):
        done.add(oid, "filled" if oid % 2 else "cancelled")
    assert done.status(5000) == "cancelled" and done.status(4001) == "filled"
    assert 4001 in done and 4000 not in done  # 4000 shares a slot with 5000
    assert done.status(17) is None and 0 not in done and 6000 not in done

