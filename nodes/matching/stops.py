"""Untriggered stop and take-profit orders of one symbol, indexed by trigger price.

A buy stop (and a sell take-profit) triggers when the price rises to its trigger; a sell stop (and a
buy take-profit) when it falls to it. Each (price source, direction) pair is a heap with lazy
deletion: a cancelled stop, or the old trigger of a moved one, stays in its heap until it reaches
the top, and is skipped then.
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
        heap = self._push(order)
        if len(heap) > 2 * len(self.orders) + 64:
            self._compact()  # a stop moved again and again: its stale entries, dropped

    def _push(self, order: Order) -> list[tuple[int, int]]:
        d = direction(order.type, order.side)
        heap = self._heaps[(order.trigger_by, d)]
        heappush(heap, (order.trigger_price if d == UP else -order.trigger_price, order.order_id))
        return heap

    def _compact(self) -> None:
        for heap in self._heaps.values():
            heap.clear()
        for order in self.orders.values():
            self._push(order)

    def heap_size(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def remove(self, order_id: int) -> Order | None:
        return self.orders.pop(order_id, None)

    def move(self, order: Order, trigger_price: int) -> None:
        """A new trigger for a waiting order; its old heap entry goes stale (skipped when popped)."""
        order.trigger_price = trigger_price
        self.add(order)

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
                order = self.orders.get(order_id)
                # Stale entries: the order was cancelled while waiting, or its trigger moved; or
                # its id now names another waiting order (in another heap, or at another price).
                if order is not None and order.trigger_price == trigger \
                        and order.trigger_by == trigger_by and direction(order.type, order.side) == d:
                    del self.orders[order_id]
                    fired.append(order)
        return fired
