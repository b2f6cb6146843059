"""Price levels of one side of one order book.

A level is an insertion-ordered dict (order_id -> order): time priority is dict order, cancel is
O(1), a quantity decrease edits in place. Best price comes from a heap of level prices with lazy
deletion (a price whose level is gone is popped when it reaches the top).
"""

from __future__ import annotations

from heapq import heappop, heappush

import msgspec


class Order(msgspec.Struct, gc=False):
    """A live order: resting in a level, or an untriggered stop. Mutable; never on the wire.

    The engine constructs it positionally (hot path): keep the field order in step with it.
    """

    order_id: int
    account: str
    side: int
    price: int  # limit price in ticks (protection price for market orders)
    qty: int  # total accepted quantity (amend may change it)
    remaining: int
    tif: str
    type: str
    reduce_only: bool
    post_only: bool
    stp: str
    client_order_id: str
    ref: int
    trigger_price: int = 0
    trigger_by: str = "mark"
    max_slippage_ppm: int = 0
    symbol: str = ""


class Level:
    __slots__ = ("orders", "qty")

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.qty = 0


class BookSide:
    """One side. `sign` is +1 for bids (best = highest), -1 for asks (best = lowest)."""

    __slots__ = ("sign", "levels", "_heap")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self._heap: list[int] = []  # -price for bids, price for asks

    def best(self) -> int | None:
        heap = self._heap
        levels = self.levels
        sign = self.sign
        while heap:
            price = -heap[0] if sign > 0 else heap[0]
            if price in levels:
                return price
            heappop(heap)
        return None

    def add(self, order: Order) -> Level:
        price = order.price
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level()
            heap = self._heap
            heappush(heap, -price if self.sign > 0 else price)
            if len(heap) > 2 * len(self.levels) + 64:
                self.compact()  # stale prices deep in the heap: amortised O(1) per push
        level.orders[order.order_id] = order
        level.qty += order.remaining
        return level

    def remove(self, order: Order) -> int:
        """Take a resting order out; return the level's new quantity."""
        level = self.levels[order.price]
        del level.orders[order.order_id]
        level.qty -= order.remaining
        if not level.orders:
            del self.levels[order.price]
            return 0
        return level.qty

    def crosses(self, price: int, limit: int) -> bool:
        """Does a resting price on this side satisfy an incoming order limited at `limit`?"""
        return price >= limit if self.sign > 0 else price <= limit

    def sorted_prices(self) -> list[int]:
        return sorted(self.levels, reverse=self.sign > 0)

    def depth(self, n: int) -> list[tuple[int, int]]:
        return [(p, self.levels[p].qty) for p in self.sorted_prices()[:n]]

    def compact(self) -> None:
        """Rebuild the heap from live levels (drops stale and duplicate prices)."""
        self._heap = [-p if self.sign > 0 else p for p in self.levels]
        self._heap.sort()

    def heap_size(self) -> int:
        return len(self._heap)


class Book:
    """Both sides of one symbol, plus the per-symbol facts matching needs."""

    __slots__ = ("symbol", "bids", "asks", "book_seq", "mark", "last", "positions", "reduce_only")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(1)
        self.asks = BookSide(-1)
        self.book_seq = 0
        self.mark = 0  # ticks; 0 = no mark yet
        self.last = 0  # last trade price
        self.positions: dict[str, int] = {}  # account -> signed lots, kept from fills
        self.reduce_only: dict[str, dict[int, Order]] = {}  # account -> resting reduce-only orders

    def side(self, side: int) -> BookSide:
        return self.bids if side > 0 else self.asks

    def opposite(self, side: int) -> BookSide:
        return self.asks if side > 0 else self.bids

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask
