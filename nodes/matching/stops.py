"""Untriggered stop and take-profit orders of one symbol, indexed by trigger price.

A buy stop (and a sell take-profit) triggers when the price rises to its trigger; a sell stop (and a
buy take-profit) when it falls to it. Each (price source, direction) pair is a heap with lazy
deletion: a cancelled stop stays in its heap until it reaches the top.
"""

from __future__ import annotations

from heapq import heappop, heappush

from nodes.matching.book import Order

UP = 1  # triggers when price >= trigger
DOWN = -1  # triggers when price <= trigger


def direction(order_type: str, side: int) -> int:
    if order_type.startswith("stop"):
        return UP if side > 0 else DOWN
    return DOWN if side > 0 else UP  # take-profit


def is_triggered(order_type: str, side: int, trigger: int, price: int) -> bool:
    return price >= trigger if direction(order_type, side) == UP else price <= trigger


class StopBook:
    __slots__ = ("orders", "_heaps")

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        # (trigger_by, direction) -> heap of (key, order_id); key = trigger (UP) or -trigger (DOWN)
        self._heaps: dict[tuple[str, int], list[tuple[int, int]]] = {
            ("mark", UP): [], ("mark", DOWN): [], ("last", UP): [], ("last", DOWN): [],
        }

    def add(self, order: Order) -> None:
        self.orders[order.order_id] = order
        d = direction(order.type, order.side)
        key = order.trigger_price if d == UP else -order.trigger_price
        heappush(self._heaps[(order.trigger_by, d)], (key, order.order_id))

    def remove(self, order_id: int) -> Order | None:
        return self.orders.pop(order_id, None)

    def pop_triggered(self, trigger_by: str, price: int) -> list[Order]:
        """Every live stop on `trigger_by` that `price` triggers, in the order the price crossed them."""
        fired: list[Order] = []
        for d in (UP, DOWN):
            heap = self._heaps[(trigger_by, d)]
            while heap:
                key, order_id = heap[0]
                trigger = key if d == UP else -key
                if (price < trigger) if d == UP else (price > trigger):
                    break
                heappop(heap)
                order = self.orders.pop(order_id, None)
                if order is not None:  # None: cancelled while waiting (a stale heap entry)
                    fired.append(order)
        return fired
