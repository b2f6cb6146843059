"""Oracle core: index from several spot venues, mark price, funding rate, volatility regime.
Pure: `now_ns` is passed in.

Index = median of the venues whose last price is fresh (updated within `stale_after_ns`).
Mark  = median(index x (1 + last funding rate x time to funding / interval),
               index + EMA of (book mid - index), last trade)                  (Binance's form)
Funding: at every publish a premium sample from the impact bid/ask of the matching book (our L2
copy, built from its deltas); at each funding time (multiples of the interval since the epoch)
F = funding_rate(weighted mean premium, interest, cap) is published for risk to settle.
Regime: realized vol of the index over a window; a change is published for risk's IM buffer.
Without a fresh quorum the oracle does not publish a new index (the fallback chain, carry -> book
-> degraded, comes with the oracle issue).
"""

from __future__ import annotations

from fractions import Fraction

from cluster.config import SymbolSpec
from cluster.funding import PremiumAverage, funding_rate, impact_price, premium, to_e9
from cluster.protocol import BookDelta, FundingRate, IndexMark, Regime, SpotTick, Trade
from nodes.oracle.volatility import RealizedVol

BASIS_ALPHA_PPM = 100_000  # EMA weight of each new basis sample
PPM = 1_000_000


def median(values: list[int]) -> int:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) // 2


class SymbolState:
    __slots__ = ("feeds", "last", "bids", "asks", "book_seq", "book_ok", "basis", "seq", "index",
                 "premium", "next_funding_ns", "last_rate_e9", "vol")

    def __init__(self, spec: SymbolSpec) -> None:
        self.feeds: dict[str, tuple[int, int]] = {}  # venue -> (price, received ns)
        self.last = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.book_seq = 0
        self.book_ok = True
        self.basis: int | None = None
        self.seq = 0
        self.index = 0
        self.premium = PremiumAverage()
        self.next_funding_ns = 0
        self.last_rate_e9 = 0
        self.vol = RealizedVol(spec.vol_window_s, spec.vol_threshold_ppm)


class Oracle:
    def __init__(self, specs: dict[str, SymbolSpec], stale_after_ns: int = 2_000_000_000,
                 min_sources: int = 3) -> None:
        self.specs = dict(specs)
        self.symbols = {s: SymbolState(specs[s]) for s in sorted(specs)}
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

    def publish(self, now_ns: int) -> list:
        """IndexMark per symbol with a fresh quorum; FundingRate at funding times; Regime changes."""
        out: list = []
        for symbol, state in self.symbols.items():
            spec = self.specs[symbol]
            fresh = self.fresh_sources(symbol, now_ns)
            if len(fresh) < self.min_sources:
                continue
            index = median(list(fresh.values()))
            state.index = index
            interval_ns = spec.funding_interval_s * 1_000_000_000
            if not state.next_funding_ns:
                state.next_funding_ns = (now_ns // interval_ns + 1) * interval_ns
            if state.book_ok and state.bids and state.asks:
                best_bid, best_ask = max(state.bids), min(state.asks)
                sample = (best_bid + best_ask) // 2 - index
                state.basis = sample if state.basis is None else \
                    state.basis + (sample - state.basis) * BASIS_ALPHA_PPM // PPM
                self._sample_premium(spec, state, index)
            to_funding = max(0, state.next_funding_ns - now_ns)
            price1 = index + index * state.last_rate_e9 * to_funding // (1_000_000_000 * interval_ns)
            price2 = index + (state.basis or 0)
            mark = median([price1, price2, state.last or index])
            state.seq += 1
            out.append(IndexMark(symbol=symbol, index=index, mark=mark, last=state.last,
                                 seq=state.seq, ts_ns=now_ns, sources=len(fresh)))
            if now_ns >= state.next_funding_ns:
                rate = funding_rate(state.premium.value(), Fraction(spec.interest_e9, 1_000_000_000),
                                    Fraction(spec.funding_cap_e9, 1_000_000_000))
                state.last_rate_e9 = to_e9(rate)
                out.append(FundingRate(symbol=symbol, rate_e9=state.last_rate_e9, mark=mark,
                                       seq=state.seq, ts_ns=now_ns))
                state.premium = PremiumAverage()
                while state.next_funding_ns <= now_ns:
                    state.next_funding_ns += interval_ns
            changed = state.vol.add(index, now_ns)
            if changed is not None:
                out.append(Regime(symbol=symbol, regime=changed, realized_vol_ppm=state.vol.value(),
                                  threshold_ppm=spec.vol_threshold_ppm, window_s=spec.vol_window_s,
                                  ts_ns=now_ns))
        return out

    def _sample_premium(self, spec: SymbolSpec, state: SymbolState, index: int) -> None:
        mult = spec.atoms_per_tick_lot
        bid = impact_price(sorted(state.bids.items(), reverse=True), spec.impact_notional, mult)
        ask = impact_price(sorted(state.asks.items()), spec.impact_notional, mult)
        if bid is not None and ask is not None:
            state.premium.add(premium(bid, ask, index))
