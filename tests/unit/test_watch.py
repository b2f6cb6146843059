"""`perpx watch`: one line per market event a person wants, the top of book only when it moves."""

from __future__ import annotations

from cluster.protocol import BookDelta, BookLevels, IndexMark, OracleMode, OracleSource, Regime, Trade
from cluster.watch import Watcher

S = "BTC-PERP"


class Units:
    def price_str(self, symbol, ticks):
        return f"{ticks / 10:g}"

    def qty_str(self, symbol, lots):
        return f"{lots / 1000:g}"


def test_each_event_in_words_and_the_top_only_when_it_moves():
    w = Watcher(Units(), S)
    w.book.load(BookLevels(symbol=S, book_seq=1, bids=[(299_000, 500)], asks=[(301_000, 200)]))
    assert w.top_line() == "TOP      bid            0.5 @ 29900   ask            0.2 @ 30100"
    assert w.top_line() is None  # said once
    deep = BookDelta(seq=1, symbol=S, book_seq=2, side=1, price=298_000, qty=100)
    assert w.lines([deep], 0.0) == []  # below the top: nothing to say
    taken = BookDelta(seq=2, symbol=S, book_seq=3, side=-1, price=301_000, qty=0)
    trade = Trade(seq=2, trade_id=7, symbol=S, price=301_000, qty=200, taker_side=1,
                  taker_order_id=2, taker_account="b", taker_remaining=0, maker_order_id=1,
                  maker_account="a", maker_remaining=0)
    other = Trade(seq=3, trade_id=8, symbol="ETH-PERP", price=1, qty=1, taker_side=1,
                  taker_order_id=4, taker_account="b", taker_remaining=0, maker_order_id=3,
                  maker_account="a", maker_remaining=0)
    lines = w.lines([trade, taken, other], 0.0)
    assert lines == ["TRADE           0.2 @      30100  taker buy  (trade 7)",
                     "TOP      bid            0.5 @ 29900   ask                      -"]
    gap = BookDelta(seq=4, symbol=S, book_seq=9, side=1, price=299_500, qty=1)
    assert w.lines([gap], 0.0) == [] and not w.book.synced  # unsynced: silent until a snapshot
    mark = IndexMark(symbol=S, index=300_000, mark=300_100, last=301_000, seq=1, ts_ns=1,
                     sources=4, mode="carry")
    assert w.lines([mark], 10.0) == [
        "MARK          30010  index      30000  last      30100  oracle carry from 4 feeds"]
    assert w.lines([mark], 10.5) == []  # at most once a second
    assert w.lines([Regime(symbol=S, regime="normal", changed=False)], 11) == []  # a repeat
    assert w.lines([Regime(symbol=S, regime="high_volatility", realized_vol_ppm=52_000,
                           threshold_ppm=40_000, changed=True)], 11) == [
        "REGIME   high_volatility  realized vol 5.2% (threshold 4%, 300 s)"]
    assert w.lines([OracleMode(symbol=S, mode="degraded", previous="carry",
                               reason="carry_expired")], 12) == [
        "ORACLE   carry -> degraded  carry_expired"]
    assert w.lines([OracleSource(symbol=S, venue="bravo", status="stale", previous="healthy",
                                 age_ms=2_100)], 12) == [
        "SOURCE   bravo healthy -> stale  silent 2100 ms"]


def test_a_persons_lines_are_led_by_the_utc_time_to_the_millisecond():
    from cluster.watch import timestamped

    # 2026-12-07 06:51:06.716 UTC
    assert timestamped("TRADE  x", 1796626266.716) == "06:51:06.716  TRADE  x"
    assert timestamped("MARK", 1796626266.0) == "06:51:06.000  MARK"
