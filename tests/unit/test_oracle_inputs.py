"""The oracle under any input its feeds and the book can send: spot ticks from known and unknown
venues and symbols, zero, tiny and huge prices, book deltas with gaps and crossed levels, trades,
time jumps. It never raises, and whatever it publishes is sane: positive index and mark, a known
mode, sequence numbers that only grow."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import BookDelta, IndexMark, OracleMode, SpotTick, Trade
from nodes.oracle.index import Oracle, OracleConf

TOPO = config.load()
SYMBOLS = sorted(TOPO.symbols)
MS = 1_000_000
MODES = {"normal", "carry", "book", "degraded"}

ODD_PRICES = st.one_of(st.integers(-5, 3), st.sampled_from((2**31, 2**62)))


@st.composite
def spot(draw):
    """Mostly a known venue quoting a real symbol near its price; now and then anything."""
    name = draw(st.sampled_from(SYMBOLS * 4 + ["NOPE-PERP"]))
    near = TOPO.symbols[name].initial_price if name in TOPO.symbols else 300_000
    venue = draw(st.sampled_from(("alpha", "bravo", "charlie", "delta", "echo") * 3 + ("who",)))
    price = draw(st.one_of(*[st.integers(near - near // 50, near + near // 50)] * 4, ODD_PRICES))
    return "spot", SpotTick(venue=venue, symbol=name, price=price, seq=0, ts_ns=0), \
        draw(st.integers(0, 100))


@st.composite
def book_delta(draw):
    name = draw(st.sampled_from(SYMBOLS + ["NOPE-PERP"]))
    near = TOPO.symbols[name].initial_price if name in TOPO.symbols else 300_000
    side = draw(st.sampled_from((1, -1)))
    price = draw(st.one_of(st.integers(near - near // 100, near + near // 100), ODD_PRICES))
    return "md", (name, side, price, draw(st.integers(0, 5)), draw(st.integers(0, 5)) == 5), \
        draw(st.integers(0, 50))


trade = st.builds(lambda s, p, dt: ("trade", (s, p), dt), st.sampled_from(SYMBOLS), st.integers(1, 400_000),
                  st.integers(0, 50))
publish = st.builds(lambda dt: ("publish", None, dt), st.sampled_from((0, 100, 1_000, 5_000, 60_000)))
# sampled_from over strategies keeps the weights (one_of counts a repeated strategy once)
event = st.sampled_from([spot()] * 6 + [book_delta()] * 2 + [trade, publish, publish]).flatmap(
    lambda s: s)


@settings(max_examples=150, deadline=None)
@given(st.lists(event, min_size=30, max_size=150))
def test_any_feed_and_book_input_publishes_sane_marks(events):
    conf = OracleConf.from_nodes(TOPO.nodes["oracle"], TOPO.nodes["feeds"])
    oracle = Oracle(TOPO.symbols, conf)
    now = 1_000 * 1_000_000_000
    book_seq = {s: 0 for s in SYMBOLS + ["NOPE-PERP"]}
    last_seq: dict[str, int] = {}
    for kind, what, dt_ms in events:
        now += dt_ms * MS
        if kind == "spot":
            oracle.on_spot(what, now)
        elif kind == "md":
            s, side, p, q, gap = what
            book_seq[s] += 2 if gap else 1
            oracle.on_market_data(BookDelta(seq=0, symbol=s, book_seq=book_seq[s], side=side,
                                            price=p, qty=q))
        elif kind == "trade":
            s, p = what
            oracle.on_market_data(Trade(seq=0, trade_id=1, symbol=s, price=p, qty=1, taker_side=1,
                                        taker_order_id=1, taker_account="a", taker_remaining=0,
                                        maker_order_id=2, maker_account="b", maker_remaining=0))
        for out in oracle.publish(now) if kind == "publish" else ():
            if type(out) is IndexMark:
                assert out.index > 0 and out.mark > 0, out
                assert out.mode in MODES and out.seq > last_seq.get(out.symbol, 0), out
                last_seq[out.symbol] = out.seq
            elif type(out) is OracleMode:
                assert out.mode in MODES and out.previous in MODES, out
