"""Oracle core: index, mark with the funding term, premium sampling, funding times, vol regime."""

from __future__ import annotations

from fractions import Fraction

import msgspec

from cluster import config
from cluster.rules.funding import PremiumAverage, impact_price, premium
from cluster.protocol import BookDelta, FundingRate, IndexMark, OracleMode, Regime, SpotTick
from nodes.oracle.fallback import FallbackConf
from nodes.oracle.index import Oracle, OracleConf
from nodes.oracle.sources import classify, weighted_median
from nodes.oracle.volatility import RealizedVol

S = "BTC-PERP"
SEC = 1_000_000_000


def specs(**changes):
    spec = config.load().symbols[S]
    return {S: msgspec.structs.replace(spec, **changes)}


def feed(oracle, prices, now):
    for i, p in enumerate(prices):
        oracle.on_spot(SpotTick(venue=f"v{i}", symbol=S, price=p, seq=i, ts_ns=now), now)


def book(oracle, bids, asks):
    seq = 0
    for side, levels in ((1, bids), (-1, asks)):
        for price, qty in levels:
            seq += 1
            oracle.on_market_data(BookDelta(seq=seq, symbol=S, book_seq=seq, side=side, price=price,
                                            qty=qty))


def test_impact_price_and_premium():
    # 25,000 USD into asks 300,010 x 500 lots (15,000.5 USD) then 300,020 x 1000
    levels = [(300_010, 500), (300_020, 1000)]
    p = impact_price(levels, 25_000 * 1_000_000, 100)
    filled_second = Fraction(25_000_000_000 - 300_010 * 500 * 100, 300_020 * 100)
    assert p == Fraction(25_000_000_000, (500 + filled_second) * 100)
    assert impact_price(levels, 10**15, 100) is None  # too thin
    assert premium(Fraction(300_100), Fraction(300_200), 300_000) == Fraction(100, 300_000)
    assert premium(Fraction(299_800), Fraction(299_900), 300_000) == Fraction(-100, 300_000)
    assert premium(Fraction(299_990), Fraction(300_010), 300_000) == 0


def test_premium_average_is_linearly_weighted():
    avg = PremiumAverage()
    for x in (Fraction(1), Fraction(2), Fraction(3)):
        avg.add(x)
    assert avg.value() == Fraction(1 * 1 + 2 * 2 + 3 * 3, 6)


def test_funding_published_at_interval_boundaries_from_the_book_premium():
    oracle = Oracle(specs(funding_interval_s=10))
    t0 = 1_000 * SEC + SEC // 2  # first funding time: 1,010 s
    feed(oracle, [300_000] * 5, t0)
    # a book 0.1% above the index on both impact prices: premium +0.001 > clamp: F = 0.05% + ...
    book(oracle, [(300_300, 100_000)], [(300_310, 100_000)])
    out = oracle.publish(t0)
    assert [type(m) for m in out] == [IndexMark, Regime]  # and the regime, which is repeated
    assert out[1].regime == "normal" and out[1].changed is False
    feed(oracle, [300_000] * 5, 1_010 * SEC)
    out = oracle.publish(1_010 * SEC)
    funding = [m for m in out if type(m) is FundingRate]
    # P = 0.001 (impact bid 300,300 vs index 300,000); F = P + clamp(0.0001 - P) = 0.001 - 0.0005
    assert len(funding) == 1 and funding[0].rate_e9 == 500_000
    # the mark's funding term now lifts price 1 until the next funding time
    feed(oracle, [300_000] * 5, 1_015 * SEC)
    mark = [m for m in oracle.publish(1_015 * SEC) if type(m) is IndexMark][0]
    assert mark.mark > mark.index


def test_regime_changes_with_hysteresis():
    vol = RealizedVol(window_s=60, threshold_ppm=10_000)
    price, t = 100_000, 0
    changes = []
    for i in range(200):  # +-1% moves: vol climbs past 1%
        t += SEC // 10
        price += 1_000 if i % 2 else -1_000
        changes.append(vol.add(price, t))
    assert "high_volatility" in changes
    for _ in range(700):  # a flat minute: the window empties, vol falls below 80% of threshold
        t += SEC // 10
        changes.append(vol.add(price, t))
    assert changes[-700:].count("normal") == 1 and vol.regime == "normal"


def test_oracle_publishes_regime_changes():
    oracle = Oracle(specs(vol_threshold_ppm=5_000, vol_window_s=60))
    t = 0
    out = []
    for i in range(50):
        t += SEC // 10
        feed(oracle, [300_000 + (3_000 if i % 2 else 0)] * 5, t)
        out += oracle.publish(t)
    regimes = [m for m in out if type(m) is Regime and m.changed]
    assert regimes and regimes[0].regime == "high_volatility"
    assert regimes[0].realized_vol_ppm > regimes[0].threshold_ppm == 5_000
    # between changes the regime is said again every second, as a repeat (risk: no change)
    repeats = [m for m in out if type(m) is Regime and not m.changed]
    assert len(repeats) >= 4 and {m.regime for m in repeats} <= {"normal", "high_volatility"}
    stamps = [m.ts_ns for m in out if type(m) is Regime]
    assert max(b - a for a, b in zip(stamps, stamps[1:])) <= SEC


# ---------------------------------------------------------------- fallback chain


VENUES = ["alpha", "bravo", "charlie", "delta", "echo"]
MS = 1_000_000


def chain_oracle():
    conf = OracleConf(venues=VENUES, weights={"alpha": 3, "bravo": 2, "charlie": 2},
                      stale_after_ns=2_000 * MS, outlier_band_ppm=30_000,
                      fallback=FallbackConf(min_sources=3, max_carry_ns=3_000 * MS,
                                            book_max_ns=10_000 * MS, book_band_ppm=20_000,
                                            recovery_ns=2_000 * MS))
    return Oracle(specs(), conf)


def tick(oracle, prices: dict[str, int], now):
    for venue, price in prices.items():
        oracle.on_spot(SpotTick(venue=venue, symbol=S, price=price, seq=0, ts_ns=now), now)


def marks(out):
    return [m for m in out if type(m) is IndexMark]


def modes(out):
    return [m for m in out if type(m) is OracleMode]


def test_weighted_median():
    assert weighted_median({"a": 100, "b": 200, "c": 300}, {}) == 200
    assert weighted_median({"a": 100, "b": 200, "c": 300, "d": 400}, {"d": 3}) == 300
    # c holds 5 of 7: it was the index alone; capped below the others' weight, it is not
    assert weighted_median({"a": 100, "b": 200, "c": 300}, {"c": 5}) == 200
    # two venues: no rule can stop one of them being the index (a declared min_sources < 3)
    assert weighted_median({"a": 100, "c": 300}, {"c": 5}) == 300


def test_one_stale_feed_is_excluded_and_the_method_is_unchanged():
    o = chain_oracle()
    tick(o, dict(zip(VENUES, (300_000, 300_010, 300_020, 300_030, 300_040))), 0)
    tick(o, dict(zip(VENUES[:4], (300_000, 300_010, 300_020, 300_030))), 2_500 * MS)
    out = o.publish(2_500 * MS)
    m = marks(out)[0]
    assert m.mode == "normal" and m.sources == 4 and not modes(out)
    assert m.mark_last_divergence_ppm == 0  # no trade yet
    # weights 3,2,2,1 over 300,000..300,030: half of 8 is reached at bravo (3+2 >= 4)
    assert m.index == 300_010


def test_an_outlier_feed_is_excluded():
    o = chain_oracle()
    tick(o, dict(zip(VENUES, (300_000, 300_010, 300_020, 300_030, 330_000))), 0)
    m = marks(o.publish(0))[0]
    assert m.sources == 4 and m.index == 300_010


def test_four_stale_then_carry_book_degraded_and_recovery_with_hysteresis():
    o = chain_oracle()
    all5 = dict(zip(VENUES, (300_000, 300_010, 300_020, 300_030, 300_040)))
    tick(o, all5, 0)
    assert marks(o.publish(0))[0].index == 300_010
    book(o, [(301_000, 1_000)], [(301_200, 1_000)])  # 1 BTC a side: impact price 301,100
    # from t=0 only echo keeps ticking: at 2.5 s four venues are stale
    tick(o, {"echo": 300_040}, 2_500 * MS)
    out = o.publish(2_500 * MS)
    change = modes(out)[0]
    assert (change.previous, change.mode, change.reason) == ("normal", "carry", "quorum_lost")
    assert change.numbers["healthy"] == 1 and change.numbers["stale.alpha_ms"] == 2_500
    assert marks(out)[0].index == 300_010 and marks(out)[0].mode == "carry"
    # carry for at most 3 s, then the book mid (clamped to +-2% of 300,010: within)
    tick(o, {"echo": 300_040}, 5_600 * MS)
    out = o.publish(5_600 * MS)
    assert [(c.mode, c.reason) for c in modes(out)] == [("book", "carry_expired")]
    assert marks(out)[0].index == 301_100
    # the book fallback expires after 10 s: degraded, mark frozen, regime degraded
    frozen = marks(out)[0].mark
    tick(o, {"echo": 300_040}, 15_700 * MS)
    out = o.publish(15_700 * MS)
    assert [(c.mode, c.reason) for c in modes(out)] == [("degraded", "book_fallback_expired")]
    assert marks(out)[0].mark == frozen
    assert [r.regime for r in out if type(r) is Regime] == ["degraded"]
    # quorum comes back at 16 s; recovery only after it held for 2 s
    tick(o, all5, 16_000 * MS)
    out = o.publish(16_000 * MS)
    assert not modes(out) and marks(out)[0].mode == "degraded"
    tick(o, all5, 17_000 * MS)
    assert not modes(o.publish(17_000 * MS))
    tick(o, all5, 18_100 * MS)
    out = o.publish(18_100 * MS)
    assert [(c.mode, c.reason) for c in modes(out)] == [("normal", "quorum_restored")]
    assert [r.regime for r in out if type(r) is Regime] == ["normal"]
    assert marks(out)[0].mode == "normal"


def test_carry_straight_to_degraded_when_the_book_is_empty():
    o = chain_oracle()
    tick(o, dict(zip(VENUES, (300_000,) * 5)), 0)
    o.publish(0)
    o.publish(2_500 * MS)
    out = o.publish(5_600 * MS)
    assert [(c.mode, c.reason) for c in modes(out)] == [("degraded", "carry_expired_book_unusable")]


def test_a_venue_leaving_and_rejoining_is_explained():
    o = chain_oracle()
    all5 = dict(zip(VENUES, (300_000, 300_010, 300_020, 300_030, 300_040)))
    tick(o, all5, 0)
    o.publish(0)
    # bravo and charlie freeze: 3 of 5 still healthy, the index method is unchanged
    tick(o, {v: p for v, p in all5.items() if v not in ("bravo", "charlie")}, 2_100 * MS)
    out = o.publish(2_100 * MS)
    sources = [m for m in out if type(m).__name__ == "OracleSource"]
    assert [(m.venue, m.previous, m.status, m.age_ms) for m in sources] == [
        ("bravo", "healthy", "stale", 2_100), ("charlie", "healthy", "stale", 2_100)]
    assert not modes(out) and marks(out)[0].mode == "normal"
    tick(o, all5, 2_200 * MS)
    back = [m for m in o.publish(2_200 * MS) if type(m).__name__ == "OracleSource"]
    assert [(m.venue, m.status) for m in back] == [("bravo", "healthy"), ("charlie", "healthy")]


def test_venues_first_heard_after_the_oracle_starts_are_not_incidents():
    """At a start (or restart) the oracle publishes before every feed has ticked; a venue heard
    from for the first time is its starting state, not a stale venue recovering."""
    o = chain_oracle()
    tick(o, {"alpha": 300_000, "bravo": 300_010, "charlie": 300_020}, 0)
    first = o.publish(0)
    tick(o, dict(zip(VENUES, (300_000, 300_010, 300_020, 300_030, 300_040))), 500 * MS)
    later = o.publish(500 * MS)
    assert [m for m in first + later if type(m).__name__ == "OracleSource"] == []


def test_a_stale_venues_quoted_age_is_past_the_limit_even_by_a_fraction_of_a_ms():
    limit = 2_000 * 1_000_000
    feeds = {"a": (100, 0), "b": (100, 500_000), "c": (100, 1_000_000_000)}
    report = classify(feeds, ["a", "b", "c"], limit + 500_000, limit, 10_000)
    assert report.stale == {"a": 2001}  # 2000.5 ms old: quoted as 2001, not 2000
    assert "b" not in report.stale  # exactly at the limit: still fresh


def test_a_lost_delta_stops_the_book_being_used_until_matchings_next_snapshot():
    """The oracle's copy of the book feeds the mark's basis and the funding premium: after a gap
    (a lost delta, or a restart while matching runs) it must not be used, and it must come back."""
    from cluster.protocol import BookLevels

    oracle = Oracle(specs())
    state = oracle.symbols[S]
    book(oracle, [(299_990, 10)], [(300_010, 10)])
    assert oracle._book_mid(state) == 300_000
    oracle.on_market_data(BookDelta(seq=9, symbol=S, book_seq=4, side=1, price=299_995, qty=5))
    assert oracle._book_mid(state) is None  # book_seq 3 never came: the copy is not trusted
    oracle.on_market_data(BookLevels(symbol=S, book_seq=4, bids=[(299_995, 5), (299_990, 10)],
                                     asks=[(300_010, 10)]))
    assert oracle._book_mid(state) == (299_995 + 300_010) // 2  # healed by the published one
    # a restarted oracle: matching's book is far along, its first delta is not book_seq 1
    restarted = Oracle(specs())
    restarted.on_market_data(BookDelta(seq=50, symbol=S, book_seq=50, side=-1, price=300_020, qty=1))
    assert restarted._book_mid(restarted.symbols[S]) is None
    restarted.on_market_data(BookLevels(symbol=S, book_seq=50, bids=[(299_980, 3)],
                                        asks=[(300_020, 1)]))
    assert restarted._book_mid(restarted.symbols[S]) == 300_000


def test_a_quote_away_from_the_index_moves_the_mark_by_a_sixtieth_per_sample():
    """Price 2 is the index plus the 5-minute average of the book's basis (60 samples, one every
    5 s): a thin book quoted 2% above the index moves the mark 1/60 of that per sample, not at
    once, and a book quoted on one side only counts as no basis."""
    from cluster.protocol import Trade

    oracle = Oracle(specs())
    seq = 0

    def quote(bid, ask, gone=()):
        nonlocal seq
        for side, price, qty in [*((s, p, 0) for s, p in gone), (1, bid, 100), (-1, ask, 100)]:
            if price is None:
                continue
            seq += 1
            oracle.on_market_data(BookDelta(seq=seq, symbol=S, book_seq=seq, side=side,
                                            price=price, qty=qty))

    def mark_at(t):
        feed(oracle, [300_000] * 5, t)
        return next(m for m in oracle.publish(t) if type(m) is IndexMark).mark

    t = 1_000 * SEC
    quote(299_990, 300_010)  # centred on the index: basis 0
    for _ in range(60):
        assert mark_at(t) == 300_000
        t += 5 * SEC
    quote(306_000, 306_010, gone=[(1, 299_990), (-1, 300_010)])  # mid 306,005: 6,005 above
    oracle.on_market_data(Trade(  # and a trade there, so that the last price cannot hold the mark
        seq=seq, trade_id=1, symbol=S, price=306_005, qty=1, taker_side=1, taker_order_id=2,
        taker_account="b", taker_remaining=0, maker_order_id=1, maker_account="a",
        maker_remaining=0))
    assert mark_at(t) == 300_000 + 100  # round(6,005 / 60)
    assert mark_at(t + SEC) == 300_100  # no new sample within the 5 s
    for _ in range(60):
        t += 5 * SEC
        mark = mark_at(t)
    assert mark == 306_005  # five minutes of agreement: the whole basis
    quote(None, None, gone=[(1, 306_000)])  # bids gone: one-sided, no basis evidence
    for _ in range(30):
        t += 5 * SEC
        mark = mark_at(t)
    assert mark == 300_000 + 3_003  # half the window at 6,005, half at 0: 3,002.5, half away from 0


def test_a_fresh_oracle_moves_the_mark_by_a_sixtieth_of_its_first_basis_sample_too():
    """In the oracle's first five minutes the samples not yet taken count as no basis (0): the
    first quote 6,005 ticks above the index moves the mark by 100 (1/60), not by all of it (the
    mean of one sample), so a venue's own book cannot drag the mark of a fresh venue."""
    from nodes.oracle.basis import BasisAverage

    basis = BasisAverage()
    basis.offer(306_005, 300_000, 1_000 * SEC)
    assert basis.value() == 100  # round(6,005 / 60), half away from zero
    basis.offer(306_005, 300_000, 1_005 * SEC)
    assert basis.value() == 200  # round(12,010 / 60)
    basis.offer(None, 300_000, 1_010 * SEC)  # one-sided: a 0 sample
    assert basis.value() == 200
    negative = BasisAverage()
    negative.offer(293_995, 300_000, 1_000 * SEC)
    assert negative.value() == -100
