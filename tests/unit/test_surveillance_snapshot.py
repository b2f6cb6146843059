"""The surveillance core's snapshot: restored, it is the state it was taken from (and goes on to rank
and alert exactly as the original does on the same events); buckets that left the window while
the node was down are dropped; bytes it cannot read are refused with a reason."""

from __future__ import annotations

import msgspec
import pytest

import perf.surveillance_eval as evaluation
from nodes.surveillance.core import SurveillanceCore
from nodes.surveillance.features import BUCKET_NS, WINDOW_BUCKETS, Features
from nodes.surveillance.service import RANK_MS
from nodes.surveillance.snapshot import VERSION, Snapshot, SnapshotError, dump, load, take
from perf.surveillance_sim import MS

S_NS = 1_000 * MS


@pytest.fixture(scope="module")
def stream():
    """Every message a core got in 40 s of the evaluation's easy level (market makers, takers,
    retail and every injector), with its time."""
    captured = {}

    class Capture(evaluation.Venue):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            captured["venue"] = self

    mp = pytest.MonkeyPatch()
    mp.setattr(evaluation, "Venue", Capture)
    try:
        evaluation.run(7, "easy", 40)
    finally:
        mp.undo()
    venue = captured["venue"]
    return venue.specs, venue.batches


def replay(core: SurveillanceCore, batches, next_tick: int, until_ns: int):
    """Feed `batches` up to `until_ns`, ranking every RANK_MS as the node does; (alerts, the
    next tick's time, how many were fed)."""
    alerts, fed = [], 0
    for msg, ts in batches:
        if ts >= until_ns:
            break
        while next_tick <= ts:
            alerts += core.tick(next_tick)
            next_tick += RANK_MS * MS
        core.handle(msg, ts)
        fed += 1
    return alerts, next_tick, fed


def resting(core: SurveillanceCore) -> dict:
    """Each key's resting lots by side and price (rebuilt from the open orders on restore)."""
    return {(key, side): (dict(lv.qty), list(lv.prices)) for key, sides in core.features.own.items()
            for side, lv in sides.items() if lv.qty}


def test_every_feature_state_is_in_the_snapshot():
    """A new attribute of Features must be snapshotted (or rebuilt, as the resting levels are
    from the open orders): this list is the snapshot's, so adding one fails here first."""
    specs = evaluation.Venue().specs
    assert set(vars(Features(specs))) == {
        "specs", "keys", "open", "own", "books", "cancel_times", "touch_times", "last_fill",
        "leverage", "raised_at", "raise_milli", "episodes", "marks", "last_price", "liq", "positions",
        "net", "opened", "market", "events", "engine_batches", "last_event_ns"}
    assert set(Snapshot.__struct_fields__) - {"version", "run", "symbols"} == {
        "keys", "open", "cancel_times", "touch_times", "last_fill", "leverage", "raised_at",
        "episodes", "marks", "last_price", "liq", "positions", "market", "books", "events",
        "engine_batches", "last_event_ns", "drift", "crowding", "crowded", "drifting", "alerted",
        "alerts", "raise_milli", "net", "opened"}


def test_restored_core_is_the_one_it_was_taken_from_and_goes_on_alike(stream):
    specs, batches = stream
    before = SurveillanceCore(specs)
    alerts, next_tick, fed = replay(before, batches, RANK_MS * MS, 20 * S_NS)
    assert alerts and fed > 1_000  # a state worth restoring: alerts raised, keys in flight
    now = next_tick - RANK_MS * MS  # the last tick
    raw = dump(before)
    after = load(raw, specs, now)
    assert take(after) == take(before)
    assert dump(after) == raw
    for window in ("10m", "session"):
        assert after.features.values(now, window) == before.features.values(now, window)
    assert after.state_hash() == before.state_hash()
    assert len(before.features.open) > 0 and resting(after) == resting(before)
    # the rest of the stream: the same alerts, the same queue, the same state
    rest = batches[fed:]
    alerts_before, end, _ = replay(before, rest, next_tick, 40 * S_NS)
    alerts_after, _, _ = replay(after, rest, next_tick, 40 * S_NS)
    assert alerts_after == alerts_before
    assert after.tick(end) == before.tick(end) and after.queue == before.queue
    assert take(after) == take(before)


def test_buckets_that_left_the_window_meanwhile_are_dropped(stream):
    specs, batches = stream
    before = SurveillanceCore(specs)
    _, next_tick, _ = replay(before, batches, RANK_MS * MS, 40 * S_NS)
    now = next_tick - RANK_MS * MS
    later = now + 575 * S_NS  # down 9m35s: of the 10 s buckets from 0 to 40 s, 20-40 s stay
    after = load(dump(before), specs, later)
    oldest_kept = later // BUCKET_NS - WINDOW_BUCKETS + 1
    buckets = [n for c in after.features.keys.values() for n, _, _ in c.buckets]
    assert buckets and min(buckets) >= oldest_kept
    assert sum(len(c.buckets) for c in before.features.keys.values()) > len(buckets)
    # what the window still holds is what the original reads then (it expires lazily)
    assert after.features.values(later) == before.features.values(later)
    for key, c in after.features.keys.items():
        assert c.sums == before.features.keys[key].sums  # the dropped counts taken off the sums
        assert c.session == before.features.keys[key].session  # the session forgets nothing
    gone = load(dump(before), specs, now + 11 * 60 * S_NS)
    assert all(not c.buckets for c in gone.features.keys.values())
    assert gone.features.values(now + 11 * 60 * S_NS) == before.features.values(
        now + 11 * 60 * S_NS)


def test_unreadable_foreign_or_other_version_snapshots_are_refused_with_a_reason(stream):
    specs, _ = stream
    with pytest.raises(SnapshotError) as bad:
        load(b"\x93not a snapshot", specs, 0)
    assert bad.value.reason == "snapshot_unreadable"
    raw = dump(SurveillanceCore(specs))
    other = msgspec.structs.replace(msgspec.msgpack.decode(raw, type=Snapshot),
                                    version=VERSION + 1)
    with pytest.raises(SnapshotError) as bad:
        load(msgspec.msgpack.encode(other), specs, 0)
    assert bad.value.reason == "snapshot_version" and f"version {VERSION + 1}" in bad.value.detail
    foreign = msgspec.structs.replace(other, version=VERSION, symbols=["DOGE-PERP"])
    with pytest.raises(SnapshotError) as bad:
        load(msgspec.msgpack.encode(foreign), specs, 0)
    assert bad.value.reason == "snapshot_symbols" and "DOGE-PERP" in bad.value.detail


def test_a_snapshot_of_another_run_is_refused():
    specs = evaluation.Venue().specs
    raw = dump(SurveillanceCore(specs), run="11:100")
    assert load(raw, specs, 0, run="11:100").alerts == 0
    with pytest.raises(SnapshotError) as bad:
        load(raw, specs, 0, run="12:200")
    assert bad.value.reason == "snapshot_other_run" and "11:100" in bad.value.detail


def test_a_snapshot_taken_before_the_cohort_and_the_raise_ratio_still_loads(stream):
    """raise_milli, net and opened came later: a snapshot without them loads, the rest intact (a
    raise then counts x1, a position's opening time is known again from its next opening)."""
    specs, batches = stream
    before = SurveillanceCore(specs)
    _, next_tick, _ = replay(before, batches, RANK_MS * MS, 20 * S_NS)
    assert before.features.net and before.features.opened
    older = msgspec.msgpack.decode(dump(before))
    for name in ("raise_milli", "net", "opened"):
        del older[name]
    now = next_tick - RANK_MS * MS
    after = load(msgspec.msgpack.encode(older), specs, now)
    assert (after.features.raise_milli, after.features.net, after.features.opened) == ({}, {}, {})
    assert after.features.keys.keys() == before.features.keys.keys()
    assert after.state_hash() == before.state_hash()
