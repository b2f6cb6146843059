"""Oracle core: index from several spot venues, mark price. Pure: `now_ns` is passed in.

Index = median of the venues whose last price is fresh (updated within `stale_after_ns`).
Mark  = median(index x (1 + funding term), index + EMA of (book mid - index), last trade), the
Binance form; the funding term is 0 until funding exists. Without a fresh quorum the oracle does not
publish a new index (the fallback chain, carry -> book -> degraded, comes with the oracle issue).
"""

from __future__ import annotations

from cluster.protocol import BookDelta, IndexMark, SpotTick, Trade

BASIS_ALPHA_PPM = 100_000  # EMA weight of each new basis sample
PPM = 1_000_000


def median(values: list[int]) -> int:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) // 2


class SymbolState:
    __slots__ = ("feeds", "last", "bids", "asks", "book_seq", "book_ok", "basis", "seq", "index")

    def __init__(self) -> None:
        self.feeds: dict[str, tuple[int, int]] = {}  # venue -> (price, received ns)
        self.last = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.book_seq = 0
        self.book_ok = True
        self.basis: int | None = None
        self.seq = 0
        self.index = 0


class Oracle:
    def __init__(self, symbols: list[str], stale_after_ns: int = 2_000_000_000,
                 min_sources: int = 3) -> None:
        self.symbols = {s: SymbolState() for s in sorted(symbols)}
        self.stale_after_ns = stale_after_ns
        self.min_sources = min_sources

    def on_spot(self, tick: SpotTick, now_ns: int) -> None:
        state = self.symbols.get(tick.symbol)
        if state is not None and tick.price > 0:
            state.feeds[tick.venue] = (tick.price, now_ns)

    def on_market_data(self, ev) -> None:
        state = self.symbols.get(ev.symbol)
        if state is None:
            return
        if type(ev) is Trade:
            state.last = ev.price
        elif type(ev) is BookDelta:
            if ev.book_seq != state.book_seq + 1:
                state.book_ok = False  # a gap: our copy of the book can't be trusted for the mid
            state.book_seq = ev.book_seq
            levels = state.bids if ev.side > 0 else state.asks
            if ev.qty:
                levels[ev.price] = ev.qty
            else:
                levels.pop(ev.price, None)

    def fresh_sources(self, symbol: str, now_ns: int) -> dict[str, int]:
        state = self.symbols[symbol]
        return {v: p for v, (p, at) in sorted(state.feeds.items())
                if now_ns - at <= self.stale_after_ns}

    def publish(self, now_ns: int) -> list[IndexMark]:
        out = []
        for symbol, state in self.symbols.items():
            fresh = self.fresh_sources(symbol, now_ns)
            if len(fresh) < self.min_sources:
                continue
            index = median(list(fresh.values()))
            state.index = index
            if state.book_ok and state.bids and state.asks:
                mid = (max(state.bids) + min(state.asks)) // 2
                sample = mid - index
                state.basis = sample if state.basis is None else \
                    state.basis + (sample - state.basis) * BASIS_ALPHA_PPM // PPM
            price2 = index + (state.basis or 0)
            last = state.last or index
            mark = median([index, price2, last])
            state.seq += 1
            out.append(IndexMark(symbol=symbol, index=index, mark=mark, last=state.last,
                                 seq=state.seq, ts_ns=now_ns, sources=len(fresh)))
        return out
