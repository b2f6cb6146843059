"""The surveillance core's state as bytes and back, so a restarted node keeps its windows.

    raw = dump(core)                          # msgpack of Snapshot (every counter, window, drift)
    core = load(raw, symbols, now_ns)         # a core in that state; buckets that left the window
                                              # while the node was down are dropped
    write_atomic(path, raw)                   # tmp file, fsync, rename: a reader never sees half

What is kept: every key's buckets and session totals, the open orders (an account's resting shape
and its cancels' lifetimes; the resting levels are rebuilt from them), the sliding windows of
cancels and top-of-book changes, fills awaiting a cancel, leverage and raises, momentum episodes,
marks, liquidation prices, positions (risk's, and those of the fills seen with their opening
times), the market sample, the books' copies (a gap after the restart
unsyncs them until the next published snapshot), the drift and crowding histories and which keys
were alerted (no second alert for the same score after a restart). The ranked queue is not kept:
the next tick ranks again.

What a snapshot cannot know: the events published while the node was down (the private feed is a
PUB socket: nothing is replayed), so counts miss that gap, and an order cancelled or filled in it
stays in the open orders (its lots in the account's resting shape) until the window forgets the
account. load refuses bytes that do not decode, another version or symbols this venue does not
list, or from another run of the venue (a fresh `perpx cluster up` starts afresh, as the journals
do; --resume keeps them and the snapshot), with a reason (SnapshotError); the node starts empty.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import msgspec

from cluster.config import SymbolSpec
from nodes.surveillance.core import SurveillanceCore
from nodes.surveillance.crowding import HISTORY
from nodes.surveillance.features import BUCKET_NS, Counters, Episode, Levels, OpenOrder

VERSION = 1
FILE = "snapshot.msgpack"


class SnapshotError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class KeyState(msgspec.Struct, array_like=True):
    account: str
    symbol: str
    last_ns: int
    buckets: list[tuple[int, dict[str, int], dict[str, int]]]
    session: dict[str, int]
    session_peaks: dict[str, int]


class OrderState(msgspec.Struct, array_like=True):
    order_id: int
    account: str
    symbol: str
    side: int
    price: int
    remaining: int
    ts_ns: int


class EpisodeState(msgspec.Struct, array_like=True):
    account: str
    symbol: str
    direction: int
    start_ns: int
    start_mid: int
    best_mid: int
    own: int
    total: int
    closed_ns: int
    score: int


class BookState(msgspec.Struct, array_like=True):
    symbol: str
    book_seq: int | None
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class DriftState(msgspec.Struct, array_like=True):
    feature: str
    warm: list[int]
    mu0: int
    sigma: int
    hi: int
    lo: int
    ewma: int
    run: int
    alarm: str


class Snapshot(msgspec.Struct):
    version: int
    run: str  # which run of the venue it belongs to (service.run_token): a fresh run starts empty
    symbols: list[str]
    keys: list[KeyState]
    open: list[OrderState]
    cancel_times: list[tuple[str, str, list[int]]]
    touch_times: list[tuple[str, str, list[int]]]
    last_fill: list[tuple[str, str, int, int, int]]  # account, symbol, side, ts, lots
    leverage: list[tuple[str, str, int]]
    raised_at: list[tuple[str, str, int]]
    episodes: list[EpisodeState]
    marks: dict[str, int]
    last_price: dict[str, int]
    liq: list[tuple[str, str, int]]
    positions: list[tuple[str, str, int]]
    market: dict[str, dict[str, int]]
    books: list[BookState]
    events: int
    engine_batches: int
    last_event_ns: int
    drift: list[DriftState]
    crowding: list[tuple[str, list[list[int]]]]
    crowded: list[str]
    drifting: list[str]
    alerted: list[tuple[str, str, int]]
    alerts: int
    # later additions, empty in an older snapshot (a raise then counts as x1, a position's opening
    # time is unknown until it is next opened)
    raise_milli: list[tuple[str, str, int]] = []
    net: list[tuple[str, str, int]] = []
    opened: list[tuple[str, str, int]] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def _pairs(d: dict) -> list:
    """{(account, symbol): v} -> [(account, symbol, v)], sorted: the same state, the same bytes."""
    return [(a, s, v) for (a, s), v in sorted(d.items())]


def take(core: SurveillanceCore, run: str = "") -> Snapshot:
    f = core.features
    return Snapshot(
        version=VERSION, run=run, symbols=sorted(f.specs),
        keys=[KeyState(a, s, c.last_ns, [(n, dict(counts), dict(peaks))
                                          for n, counts, peaks in c.buckets],
                       dict(c.session), dict(c.session_peaks))
              for (a, s), c in sorted(f.keys.items())],
        open=[OrderState(oid, o.account, o.symbol, o.side, o.price, o.remaining, o.ts_ns)
              for oid, o in sorted(f.open.items())],
        cancel_times=[(a, s, list(t)) for (a, s), t in sorted(f.cancel_times.items())],
        touch_times=[(a, s, list(t)) for (a, s), t in sorted(f.touch_times.items())],
        last_fill=[(a, s, side, ts, lots) for (a, s, side), (ts, lots)
                   in sorted(f.last_fill.items())],
        leverage=_pairs(f.leverage), raised_at=_pairs(f.raised_at),
        episodes=[EpisodeState(a, s, e.direction, e.start_ns, e.start_mid, e.best_mid, e.own,
                               e.total, e.closed_ns, e.score)
                  for (a, s), e in sorted(f.episodes.items())],
        marks=dict(f.marks), last_price=dict(f.last_price), liq=_pairs(f.liq),
        positions=_pairs(f.positions), market={s: dict(m) for s, m in f.market.items()},
        books=[BookState(s, b.book_seq, sorted(b.bids.items()), sorted(b.asks.items()))
               for s, b in sorted(f.books.items())],
        events=f.events, engine_batches=f.engine_batches, last_event_ns=f.last_event_ns,
        drift=[DriftState(name, list(d.warm), d.mu0, d.sigma, d.hi, d.lo, d.ewma, d.run, d.alarm)
               for name, d in core.drift.series.items()],
        crowding=[(s, [list(sample) for sample in h])
                  for s, h in sorted(core.crowding.history.items())],
        crowded=sorted(core.crowded), drifting=sorted(core.drifting),
        alerted=_pairs(core.alerted), alerts=core.alerts, raise_milli=_pairs(f.raise_milli),
        net=_pairs(f.net), opened=_pairs(f.opened))


def dump(core: SurveillanceCore, run: str = "") -> bytes:
    return _encoder.encode(take(core, run))


def load(raw: bytes, symbols: dict[str, SymbolSpec], now_ns: int,
         run: str = "") -> SurveillanceCore:
    """A core in the snapshot's state, its windows moved on to `now_ns` (the buckets that left
    the window meanwhile dropped, their counts taken off the window's sums). `run`: the run it
    must belong to."""
    try:
        snap = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError("snapshot_unreadable", str(exc)) from None
    if snap.version != VERSION:
        raise SnapshotError("snapshot_version", f"version {snap.version}, this node reads "
                            f"{VERSION}")
    if snap.run != run:
        raise SnapshotError("snapshot_other_run", f"taken in run {snap.run!r}, this is {run!r}")
    unknown = sorted(set(snap.symbols) - set(symbols))
    if unknown:
        raise SnapshotError("snapshot_symbols", f"symbols {unknown} are not this venue's "
                            f"({sorted(symbols)})")
    core = SurveillanceCore(symbols)
    f = core.features
    for k in snap.keys:
        c = f.keys[(k.account, k.symbol)] = Counters()
        c.last_ns = k.last_ns
        c.buckets = deque((n, dict(counts), dict(peaks)) for n, counts, peaks in k.buckets)
        for _, counts, _ in c.buckets:
            for name, n in counts.items():
                c.sums[name] += n
        c.session.update(k.session)
        c.session_peaks.update(k.session_peaks)
        c.expire(now_ns // BUCKET_NS)
    for o in snap.open:
        order = f.open[o.order_id] = OpenOrder(o.account, o.symbol, o.side, o.price, o.remaining,
                                               o.ts_ns)
        f._own(order, o.remaining)
    f.cancel_times = {(a, s): deque(t) for a, s, t in snap.cancel_times}
    f.touch_times = {(a, s): deque(t) for a, s, t in snap.touch_times}
    f.last_fill = {(a, s, side): (ts, lots) for a, s, side, ts, lots in snap.last_fill}
    f.leverage = {(a, s): v for a, s, v in snap.leverage}
    f.raised_at = {(a, s): v for a, s, v in snap.raised_at}
    f.raise_milli = {(a, s): v for a, s, v in snap.raise_milli}
    f.net = {(a, s): v for a, s, v in snap.net}
    f.opened = {(a, s): v for a, s, v in snap.opened}
    for e in snap.episodes:
        ep = f.episodes[(e.account, e.symbol)] = Episode(e.direction, e.start_ns, e.start_mid)
        ep.best_mid, ep.own, ep.total, ep.closed_ns, ep.score = (
            e.best_mid, e.own, e.total, e.closed_ns, e.score)
    f.marks, f.last_price = dict(snap.marks), dict(snap.last_price)
    f.liq = {(a, s): v for a, s, v in snap.liq}
    f.positions = {(a, s): v for a, s, v in snap.positions}
    for symbol, sample in snap.market.items():
        if symbol in f.market:
            f.market[symbol] = dict(sample)
    for b in snap.books:
        book = f.books[b.symbol]
        book.book_seq = b.book_seq
        book.bids, book.asks = dict(b.bids), dict(b.asks)
        for sign, levels in ((1, book.bids), (-1, book.asks)):
            side = book.sides[sign] = Levels()
            side.qty, side.prices = dict(levels), sorted(levels)
    f.events, f.engine_batches, f.last_event_ns = snap.events, snap.engine_batches, \
        snap.last_event_ns
    for d in snap.drift:
        series = core.drift.series.get(d.feature)
        if series is None:
            continue  # a feature this version does not rank
        series.warm, series.mu0, series.sigma, series.hi, series.lo = (
            list(d.warm), d.mu0, d.sigma, d.hi, d.lo)
        series.ewma, series.run, series.alarm = d.ewma, d.run, d.alarm
    for symbol, history in snap.crowding:
        hist = core.crowding.history.setdefault(symbol, deque(maxlen=HISTORY))
        hist.extend(tuple(sample) for sample in history)
    core.crowded, core.drifting = set(snap.crowded), set(snap.drifting)
    core.alerted = {(a, s): v for a, s, v in snap.alerted}
    core.alerts = snap.alerts
    return core


def write_atomic(path: Path, raw: bytes) -> None:
    """Write `raw` to `path` whole or not at all: a temporary file, fsynced, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(raw)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
