"""Oracle core: index from several spot venues with fallbacks, mark price, funding rate and
volatility regime. Pure: `now_ns` is passed in.

Index = weighted median of the healthy venues (fresh and not outliers, see sources.py; no venue
counts for half of the weight) while at least `min_sources` are healthy; otherwise the fallback
chain (fallback.py): carry the last good index, then the venue's own book (its impact price: the
mean fill of the impact notional on each side, so a thin quote cannot set it) clamped to a band
around it, then *degraded* with the mark frozen. Every mode change is published with its reason and numbers (stale venues and their ages,
outliers and their deviations, since when), and the published regime becomes "degraded" so risk
takes reduce-only orders only on that symbol and the liquidator holds off.

Mark  = median(index x (1 + last funding rate x time to funding / interval),
               index + 5-minute moving average of (book mid - index), last trade)
                                                                  (Binance's form, basis.py)
Funding: at every publish a premium sample from the impact bid/ask of the matching book (our L2
copy, built from its deltas); at each funding time (multiples of the interval since the epoch)
F = funding_rate(weighted mean premium, interest, cap) is published for risk to settle.
Regime: realized vol of the index over a window; a change is published for risk's IM buffer.
"""

from __future__ import annotations

from fractions import Fraction

import msgspec

from cluster.book_mirror import BookMirror
from cluster.config import NodeConf, SymbolSpec
from cluster.core import EffectCore, SnapshotCore
from cluster.rules.funding import PremiumAverage, funding_rate, impact_price, premium, to_e9
from cluster.protocol import (
    BookDelta, BookLevels, ClockTick, FundingRate, IndexMark, OracleMode, OracleSource, Regime,
    SpotTick, Trade,
)
from cluster.rules.units import PPM, rate_to_ppm
from nodes.oracle.basis import BasisAverage
from nodes.oracle.explain import explanation
from nodes.oracle.fallback import Fallback, FallbackConf
from nodes.oracle.sources import classify, median, weighted_median
from nodes.oracle.volatility import RealizedVol

REGIME_REPEAT_NS = 1_000_000_000  # a regime is repeated this often, changed or not
MS = 1_000_000


class OracleConf(msgspec.Struct, frozen=True, kw_only=True):
    venues: list[str]
    weights: dict[str, int]
    stale_after_ns: int = 2_000 * MS
    outlier_band_ppm: int = 30_000
    fallback: FallbackConf = FallbackConf()

    @classmethod
    def from_nodes(cls, oracle: NodeConf, feeds: NodeConf) -> OracleConf:
        return cls(
            venues=list(feeds.venues), weights=dict(oracle.weights),
            stale_after_ns=oracle.stale_after_ms * MS,
            outlier_band_ppm=rate_to_ppm(oracle.outlier_band, "oracle.outlier_band"),
            fallback=FallbackConf(
                min_sources=oracle.min_sources, max_carry_ns=oracle.max_carry_ms * MS,
                book_max_ns=oracle.book_max_ms * MS,
                book_band_ppm=rate_to_ppm(oracle.book_band, "oracle.book_band"),
                recovery_ns=oracle.recovery_ms * MS),
        )


class SymbolState:
    __slots__ = ("feeds", "last", "book", "basis", "seq", "index", "mark", "premium",
                 "next_funding_ns", "last_rate_e9", "vol", "fallback", "regime",
                 "regime_repeat_ns", "sources")

    def __init__(self, spec: SymbolSpec, conf: OracleConf) -> None:
        self.feeds: dict[str, tuple[int, int]] = {}  # venue -> (price, received ns)
        self.last = 0
        # Our copy of matching's book, from its deltas. A lost delta (or a restart while matching
        # runs: its first delta is not book_seq 1) leaves it unsynced until matching's next
        # published snapshot, and it is not used for the mid or the impact prices meanwhile.
        self.book = BookMirror(spec.name, empty_at_start=True)
        self.basis = BasisAverage()
        self.seq = 0
        self.index = 0
        self.mark = 0
        self.premium = PremiumAverage()
        self.next_funding_ns = 0
        self.last_rate_e9 = 0
        self.vol = RealizedVol(spec.vol_window_s, spec.vol_threshold_ppm)
        self.fallback = Fallback(conf.fallback)
        self.regime = "normal"  # the regime last published: vol regime, or degraded
        self.regime_repeat_ns = 0  # when it is said again (risk starts from "normal" too)
        self.sources: dict[str, str] = {}  # venue -> healthy | stale | outlier (as last published)


class Oracle(SnapshotCore, EffectCore):
    def __init__(self, specs: dict[str, SymbolSpec], conf: OracleConf | None = None,
                 restarted: bool = False) -> None:
        self.specs = dict(specs)
        self.conf = conf or OracleConf(venues=[], weights={})
        self.symbols = {s: SymbolState(specs[s], self.conf) for s in sorted(specs)}
        self.restarted = restarted  # started again while the venue ran (see _publish_symbol)

    def snapshot(self) -> bytes:
        """What an oracle must not lose in a restart: per symbol, the funding time it owes next,
        the last rate (the mark's funding term), the interval's premium samples and the basis
        average. The rest (feeds, book copy, fallback mode, volatility) is rebuilt from the
        live streams within seconds."""
        return msgspec.json.encode({symbol: {
            "next_funding_ns": st.next_funding_ns, "last_rate_e9": st.last_rate_e9,
            "premium": [st.premium.weighted.numerator, st.premium.weighted.denominator,
                        st.premium.weights, st.premium.n],
            "basis": [list(st.basis.samples), st.basis.next_ns],
        } for symbol, st in self.symbols.items()})

    def restore(self, data: bytes) -> None:
        for symbol, saved in msgspec.json.decode(data).items():
            st = self.symbols.get(symbol)
            if st is None:
                continue
            st.next_funding_ns = saved["next_funding_ns"]
            st.last_rate_e9 = saved["last_rate_e9"]
            numerator, denominator, st.premium.weights, st.premium.n = saved["premium"]
            st.premium.weighted = Fraction(numerator, denominator)
            samples, st.basis.next_ns = saved["basis"]
            st.basis.samples.clear()
            st.basis.samples.extend(samples)
            st.basis.total = sum(st.basis.samples)

    def handle(self, msg, now_ns: int) -> list[tuple[str, object]]:
        """Spot ticks and the venue's market data in; on the clock (ClockTick, the shell's
        publish timer) what publish() has: each on the PUB ("pub"), a funding rate to risk as
        well, and a change of mode, source or regime into the audit journal."""
        t = type(msg)
        if t is SpotTick:
            self.on_spot(msg, now_ns)
        elif t is Trade or t is BookDelta or t is BookLevels:
            self.on_market_data(msg)
        elif t is ClockTick:
            out: list[tuple[str, object]] = []
            for published in self.publish(now_ns):
                out.append(("pub", published))
                if type(published) is FundingRate:
                    out.append(("risk", published))
                record = explanation(published)
                if record is not None:
                    out.append(("audit", record))
            return out
        return []

    def on_spot(self, tick: SpotTick, now_ns: int) -> None:
        state = self.symbols.get(tick.symbol)
        if state is not None and tick.price > 0:
            state.feeds[tick.venue] = (tick.price, now_ns)

    def on_market_data(self, ev) -> None:
        state = self.symbols.get(ev.symbol)
        if state is None:
            return
        t = type(ev)
        if t is Trade:
            state.last = ev.price
        elif t is BookDelta:
            state.book.apply(ev)  # a gap leaves the copy unsynced until the next snapshot
        elif t is BookLevels:
            state.book.offer(ev)

    def _venues(self, state: SymbolState) -> list[str]:
        return self.conf.venues or sorted(state.feeds)

    def fresh_sources(self, symbol: str, now_ns: int) -> dict[str, int]:
        state = self.symbols[symbol]
        return classify(state.feeds, self._venues(state), now_ns, self.conf.stale_after_ns,
                        self.conf.outlier_band_ppm).healthy

    def _book_mid(self, state: SymbolState) -> int | None:
        book = state.book
        if book.synced and book.bids and book.asks:
            return (max(book.bids) + min(book.asks)) // 2
        return None

    def _book_price(self, spec: SymbolSpec, state: SymbolState) -> int | None:
        """The book's price for the fallback: the mean of the impact bid and ask (the average
        fill of the impact notional on each side, as the funding premium uses them), or None
        when either side is thinner than that. So it takes the impact notional (200 USD x max
        leverage) of depth on both sides to price the index from the book: a 0.001-BTC quote
        (its raw mid once moved the mark +2%) leaves the book unusable instead."""
        book = state.book
        if not (book.synced and book.bids and book.asks):
            return None
        mult = spec.atoms_per_tick_lot
        bid = impact_price(sorted(book.bids.items(), reverse=True), spec.impact_notional, mult)
        ask = impact_price(sorted(book.asks.items()), spec.impact_notional, mult)
        if bid is None or ask is None:
            return None
        return round((bid + ask) / 2)

    def publish(self, now_ns: int) -> list:
        """Per symbol: mode changes, IndexMark, FundingRate at funding times, regime changes."""
        out: list = []
        for symbol, state in self.symbols.items():
            self._publish_symbol(symbol, state, now_ns, out)
        return out

    def _publish_symbol(self, symbol: str, state: SymbolState, now_ns: int, out: list) -> None:
        spec = self.specs[symbol]
        report = classify(state.feeds, self._venues(state), now_ns, self.conf.stale_after_ns,
                          self.conf.outlier_band_ppm)
        self._source_changes(symbol, state, report, now_ns, out)
        quorum = None
        if len(report.healthy) >= self.conf.fallback.min_sources:
            quorum = weighted_median(report.healthy, self.conf.weights)
        mid = self._book_mid(state)
        book_price = self._book_price(spec, state) if quorum is None else None
        index, transition = state.fallback.step(now_ns, quorum, book_price)
        if transition is not None:
            numbers = {"healthy": len(report.healthy), "min_sources": self.conf.fallback.min_sources,
                       "last_good_index": state.fallback.last_good,
                       "last_good_age_ms": (now_ns - state.fallback.last_good_ns) // MS,
                       **{f"stale.{v}_ms": age for v, age in report.stale.items()},
                       **{f"outlier.{v}_ppm": dev for v, dev in report.outliers.items()}}
            if mid is not None:
                numbers["book_mid"] = mid
            if book_price is not None:
                numbers["book_impact_price"] = book_price
            numbers["impact_notional"] = spec.impact_notional
            out.append(OracleMode(symbol=symbol, mode=transition.mode, previous=transition.previous,
                                  reason=transition.reason, numbers=numbers, ts_ns=now_ns))
        if index is None:
            return
        mode = state.fallback.mode
        state.index = index
        interval_ns = spec.funding_interval_s * 1_000_000_000
        if not state.next_funding_ns:
            # Funding times are the epoch's multiples of the interval. A fresh start's first is
            # the next one; a restart that lost its state catches up the last one (risk's funding
            # clock refuses it if it was settled already).
            due = (now_ns // interval_ns + (0 if self.restarted else 1)) * interval_ns
            state.next_funding_ns = due
        state.basis.offer(mid, index, now_ns)
        if mid is not None:
            self._sample_premium(spec, state, index)
        if mode == "degraded" and state.mark:
            mark = state.mark  # frozen
        else:
            to_funding = max(0, state.next_funding_ns - now_ns)
            price1 = index + index * state.last_rate_e9 * to_funding // (1_000_000_000 * interval_ns)
            price2 = index + state.basis.value()
            mark = median([price1, price2, state.last or index])
        state.mark = mark
        state.seq += 1
        divergence = (state.last - mark) * PPM // mark if state.last and mark else 0
        out.append(IndexMark(symbol=symbol, index=index, mark=mark, last=state.last,
                             seq=state.seq, ts_ns=now_ns, sources=len(report.healthy), mode=mode,
                             mark_last_divergence_ppm=divergence))
        if now_ns >= state.next_funding_ns:
            rate = funding_rate(state.premium.value(), Fraction(spec.interest_e9, 1_000_000_000),
                                Fraction(spec.funding_cap_e9, 1_000_000_000))
            state.last_rate_e9 = to_e9(rate)
            # One rate per funding time due, each named: after an outage every funding time it
            # missed is caught up (late, and risk explains it), at the rate of the premium
            # samples kept across the restart (snapshot/restore) and taken since.
            while state.next_funding_ns <= now_ns:
                out.append(FundingRate(symbol=symbol, rate_e9=state.last_rate_e9, mark=mark,
                                       seq=state.seq, ts_ns=now_ns,
                                       funding_ts_ns=state.next_funding_ns))
                state.next_funding_ns += interval_ns
            state.premium = PremiumAverage()
        if mode == "normal":
            state.vol.add(index, now_ns)
        regime = "degraded" if mode == "degraded" else state.vol.regime
        changed = regime != state.regime
        if changed or now_ns >= state.regime_repeat_ns:  # a state: said again every second
            state.regime = regime
            state.regime_repeat_ns = now_ns + REGIME_REPEAT_NS
            out.append(Regime(symbol=symbol, regime=regime, realized_vol_ppm=state.vol.value(),
                              threshold_ppm=spec.vol_threshold_ppm, window_s=spec.vol_window_s,
                              ts_ns=now_ns, changed=changed))

    def _source_changes(self, symbol: str, state: SymbolState, report, now_ns: int,
                        out: list) -> None:
        """A venue leaving or rejoining the index is published with its age or deviation."""
        for venue in self._venues(state):
            if report.stale.get(venue) == -1:
                continue  # not heard from yet (a start or a restart): it has no state to change
            if venue in report.stale:
                status = "stale"
            elif venue in report.outliers:
                status = "outlier"
            else:
                status = "healthy"
            previous = state.sources.get(venue)
            if previous is None:  # first time heard from: its starting state, not a change
                state.sources[venue] = status
            elif status != previous:
                state.sources[venue] = status
                out.append(OracleSource(symbol=symbol, venue=venue, status=status, previous=previous,
                                        age_ms=report.stale.get(venue, -1),
                                        deviation_ppm=report.outliers.get(venue, 0), ts_ns=now_ns))

    def _sample_premium(self, spec: SymbolSpec, state: SymbolState, index: int) -> None:
        mult = spec.atoms_per_tick_lot
        bid = impact_price(sorted(state.book.bids.items(), reverse=True), spec.impact_notional, mult)
        ask = impact_price(sorted(state.book.asks.items()), spec.impact_notional, mult)
        if bid is not None and ask is not None:
            state.premium.add(premium(bid, ask, index))
