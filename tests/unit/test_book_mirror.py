"""A subscriber's book copy from the engine's own deltas: with every delta it always equals the
engine's book; with deltas lost it is exact for the sequence number it claims or knows it is
unsynced (never silently wrong), and a snapshot brings it back."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.book_mirror import BookMirror
from cluster.protocol import BookDelta, BookLevels
from nodes.matching.engine import MatchingEngine
from tests.unit.test_matching_properties import SPECS, SYMBOL, commands, to_engine_commands


def snapshot(engine: MatchingEngine) -> BookLevels:
    book_seq, bids, asks = engine.depth(SYMBOL, 1000)
    return BookLevels(symbol=SYMBOL, book_seq=book_seq, bids=bids, asks=asks)


# Which deltas are lost: one 200-bit draw, bit k for the k-th delta (mod 200). A list of 200
# booleans cost hypothesis 200 draws per example, an eighth of the test's time.
lost_bits = st.integers(0, 2**200 - 1).map(lambda bits: [bool(bits >> k & 1) for k in range(200)])


def equal(mirror: BookMirror, engine: MatchingEngine) -> bool:
    _, bids, asks = engine.depth(SYMBOL, 1000)
    return mirror.levels(1000) == (bids, asks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands, lost_bits)
def test_the_copy_is_exact_for_its_sequence_or_knows_it_is_unsynced(script, lost):
    """A lost delta cannot be noticed before the next one arrives, so a copy may lag; what it must
    never be is wrong for the book_seq it claims."""
    engine = MatchingEngine(SPECS)
    mirror, lossless = BookMirror(SYMBOL), BookMirror(SYMBOL)
    mirror.load(snapshot(engine))
    lossless.load(snapshot(engine))
    history = {lossless.book_seq: lossless.levels(1000)}  # the book after each book_seq
    n = 0
    for cmd in to_engine_commands(script):
        deltas = [ev for ev in engine.handle(cmd) if type(ev) is BookDelta]
        for delta in deltas:
            assert lossless.feed([delta])
            history[delta.book_seq] = lossless.levels(1000)
            n += 1
            if not lost[n % len(lost)] or n % 3:  # drop about one delta in six
                mirror.feed([delta])
        assert equal(lossless, engine)  # every delta, in order: the engine's book exactly
        if mirror.synced:
            assert mirror.levels(1000) == history[mirror.book_seq], "wrong for its sequence"
        else:
            mirror.load(snapshot(engine))
            assert equal(mirror, engine)
    assert lossless.gaps == 0


def test_deltas_older_than_the_snapshot_are_skipped_and_a_gap_is_counted():
    mirror = BookMirror(SYMBOL)
    assert not mirror.feed([BookDelta(seq=1, symbol=SYMBOL, book_seq=1, side=1, price=9, qty=1)])
    mirror.load(BookLevels(symbol=SYMBOL, book_seq=5, bids=[(9, 3)], asks=[]))
    old = BookDelta(seq=1, symbol=SYMBOL, book_seq=4, side=1, price=9, qty=7)
    nxt = BookDelta(seq=2, symbol=SYMBOL, book_seq=6, side=-1, price=10, qty=2)
    other = BookDelta(seq=2, symbol="ETH-PERP", book_seq=99, side=1, price=1, qty=1)
    assert mirror.feed([old, nxt, other]) and mirror.levels() == ([(9, 3)], [(10, 2)])
    skipped = BookDelta(seq=3, symbol=SYMBOL, book_seq=8, side=1, price=9, qty=0)
    assert not mirror.feed([skipped]) and mirror.gaps == 1 and not mirror.synced


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands, lost_bits,
       st.integers(min_value=1, max_value=8))
def test_published_snapshots_heal_a_copy_without_asking(script, lost, every):
    """The stream as subscribers get it (deltas, about one in six lost, and matching's periodic
    snapshot after every `every` commands, itself lost sometimes): the copy is never wrong for the
    book_seq it claims, and right after a snapshot that arrives it equals the book."""
    engine = MatchingEngine(SPECS)
    mirror, lossless = BookMirror(SYMBOL, empty_at_start=True), BookMirror(SYMBOL, empty_at_start=True)
    history = {0: ([], [])}  # the book after each book_seq
    n = 0
    for i, cmd in enumerate(to_engine_commands(script), 1):
        for delta in (ev for ev in engine.handle(cmd) if type(ev) is BookDelta):
            assert lossless.feed([delta])
            history[delta.book_seq] = lossless.levels(1000)
            n += 1
            if not lost[n % len(lost)] or n % 3:
                mirror.feed([delta])
        if i % every == 0 and lost[(i * 7) % len(lost)] is False or i % (every * 3) == 0:
            mirror.feed([snapshot(engine)])
            assert mirror.synced and equal(mirror, engine)
        if mirror.synced:
            assert mirror.levels(1000) == history[mirror.book_seq], "wrong for its sequence"


def test_a_published_snapshot_is_taken_only_when_it_helps():
    mirror = BookMirror(SYMBOL)
    mirror.feed([BookLevels(symbol="ETH-PERP", book_seq=3, bids=[(1, 1)], asks=[])])
    assert not mirror.synced  # another symbol's
    mirror.feed([BookLevels(symbol=SYMBOL, book_seq=5, bids=[(9, 3)], asks=[])])
    assert mirror.book_seq == 5 and mirror.resyncs == 1
    mirror.feed([BookLevels(symbol=SYMBOL, book_seq=4, bids=[], asks=[]),
                 BookLevels(symbol=SYMBOL, book_seq=5, bids=[], asks=[])])
    assert mirror.levels() == ([(9, 3)], []) and mirror.resyncs == 1  # not newer: ignored
    # newer while synced: a delta went missing that no later delta has shown yet
    mirror.feed([BookLevels(symbol=SYMBOL, book_seq=7, bids=[(9, 1)], asks=[(11, 2)])])
    assert mirror.book_seq == 7 and mirror.levels() == ([(9, 1)], [(11, 2)])
