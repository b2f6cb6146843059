"""A minimal reference order book, the yardstick for the matching engine's speed.

Dict of price levels + a heap of prices per side + a deque per level; cancel marks the entry dead
and leaves it in its deque (lazy deletion). Price-time priority, limit adds, IOC takers, cancels and
moves (cancel + add). No validation, no events beyond the fills, no STP, no reduce-only.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush


class ReferenceBook:
    def __init__(self) -> None:
        self.levels = ({}, {})  # 0 = bids, 1 = asks: price -> deque of [order_id, qty]
        self.heaps = ([], [])  # bids hold -price
        self.orders = {}  # order_id -> (side index, price, entry)
        self.fills = 0

    def add(self, order_id: int, side: int, price: int, qty: int) -> None:
        s = 0 if side > 0 else 1
        entry = [order_id, qty]
        level = self.levels[s].get(price)
        if level is None:
            level = self.levels[s][price] = deque()
            heappush(self.heaps[s], -price if s == 0 else price)
        level.append(entry)
        self.orders[order_id] = (s, price, entry)

    def cancel(self, order_id: int) -> None:
        found = self.orders.pop(order_id, None)
        if found is not None:
            found[2][1] = 0  # dead; skipped when reached

    def move(self, order_id: int, price: int) -> None:
        found = self.orders.pop(order_id, None)
        if found is not None:
            s, _, entry = found
            qty = entry[1]
            entry[1] = 0
            self.add(order_id, 1 if s == 0 else -1, price, qty)

    def ioc(self, side: int, limit: int, qty: int) -> int:
        o = 1 if side > 0 else 0  # opposite side index
        levels, heap = self.levels[o], self.heaps[o]
        while qty and heap:
            price = heap[0] if o == 1 else -heap[0]
            if (side > 0 and price > limit) or (side < 0 and price < limit):
                break
            level = levels[price]
            while level and qty:
                entry = level[0]
                if entry[1] == 0:
                    level.popleft()
                    continue
                take = min(qty, entry[1])
                entry[1] -= take
                qty -= take
                self.fills += 1
                if entry[1] == 0:
                    level.popleft()
                    del self.orders[entry[0]]
            if not level:
                del levels[price]
                heappop(heap)
        return qty
