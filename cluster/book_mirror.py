"""A subscriber's copy of one symbol's L2 book, kept from the venue's BookDelta stream and checked
by its sequence numbers: a delta is applied only if it is the next one; a missing delta (market
data is a PUB: a slow or lossy link drops messages) makes the copy unsynced, never silently wrong,
until a snapshot resyncs it.

    mirror = BookMirror("BTC-PERP")
    await client.subscribe(b"md.BTC-PERP")   # first, so no delta after the snapshot is missed
    await mirror.resync(client)              # GetBook snapshot: levels and its book_seq
    while True:
        if not mirror.feed(await client.market_data()):
            await mirror.resync(client)      # a gap: take a new snapshot

Matching also publishes each book's snapshot (BookLevels) on its market data every second; `feed`
takes one whenever the copy is unsynced or the snapshot is newer, so a copy also heals by itself
within a second, without a request (which is how the oracle keeps its copy).

Deltas are the new total quantity of a level, so those that arrive before the snapshot's answer
and are older than it are simply skipped. A snapshot carries at most `depth` levels a side
(the venue serves up to 1,000): a level deeper than that which never changes afterwards is not in
the copy.
"""

from __future__ import annotations

from cluster.protocol import MAX_BOOK_DEPTH, BookDelta, BookLevels

SNAPSHOT_DEPTH = MAX_BOOK_DEPTH


class BookMirror:
    def __init__(self, symbol: str, empty_at_start: bool = False) -> None:
        """`empty_at_start`: the copy starts synced, as the empty book at book_seq 0 that matching
        starts with (for a subscriber started with the venue; a later start shows as a gap)."""
        self.symbol = symbol
        self.bids: dict[int, int] = {}  # price ticks -> qty lots
        self.asks: dict[int, int] = {}
        # None: unsynced (no snapshot yet, or a gap seen)
        self.book_seq: int | None = 0 if empty_at_start else None
        self.gaps = 0  # deltas found missing
        self.resyncs = 0  # snapshots loaded

    @property
    def synced(self) -> bool:
        return self.book_seq is not None

    def load(self, snapshot: BookLevels) -> None:
        """Take a snapshot's levels and sequence number as the new state."""
        self.bids = dict(snapshot.bids)
        self.asks = dict(snapshot.asks)
        self.book_seq = snapshot.book_seq
        self.resyncs += 1

    def offer(self, snapshot: BookLevels) -> None:
        """A published snapshot: taken when the copy is unsynced or behind it, else ignored."""
        if self.book_seq is None or snapshot.book_seq > self.book_seq:
            self.load(snapshot)

    def apply(self, delta: BookDelta) -> bool:
        """One delta of this symbol; False when it shows a gap (the copy is then unsynced)."""
        if self.book_seq is None:
            return False
        if delta.book_seq <= self.book_seq:
            return True  # older than the state (sent before the snapshot was taken)
        if delta.book_seq != self.book_seq + 1:
            self.gaps += 1
            self.book_seq = None
            return False
        side = self.bids if delta.side > 0 else self.asks
        if delta.qty:
            side[delta.price] = delta.qty
        else:
            side.pop(delta.price, None)
        self.book_seq = delta.book_seq
        return True

    def feed(self, messages: list) -> bool:
        """A batch of market data (other symbols and types are skipped); False once unsynced."""
        for msg in messages:
            t = type(msg)
            if t is BookDelta:
                if msg.symbol == self.symbol and not self.apply(msg):
                    return False
            elif t is BookLevels and msg.symbol == self.symbol:
                self.offer(msg)
        return self.synced

    async def resync(self, client, depth: int = SNAPSHOT_DEPTH) -> None:
        """Load a fresh snapshot through `client` (a cluster.client.Client)."""
        self.load(await client.book(self.symbol, depth=depth))

    def levels(self, n: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best `n` levels a side, best first, as a snapshot lists them."""
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return bids, asks
