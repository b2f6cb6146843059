"""The input journal: frames round-trip, a torn tail is cut at every byte offset, damage is named."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.journal import (
    HEADER, Journal, JournalCorrupt, encode_frame, parse_policy, read_frames,
)

batches = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=12)


def write(directory, batch_list, **kw) -> list[bytes]:
    journal = Journal(directory, fsync="off", **kw)
    payloads = []
    for batch in batch_list:
        journal.append_batch([(len(payloads) + i, p) for i, p in enumerate(batch)])
        payloads += batch
    journal.close()
    return payloads


@settings(max_examples=40, deadline=None)
@given(batches, st.integers(min_value=30, max_value=400))
def test_frames_round_trip_across_segments_and_reopen(tmp_path_factory, batch_list, seg_bytes):
    directory = tmp_path_factory.mktemp("j")
    payloads = write(directory, batch_list, segment_bytes=seg_bytes)
    frames = list(read_frames(directory))
    assert [f.seq for f in frames] == list(range(1, len(payloads) + 1))
    assert [f.payload for f in frames] == payloads
    assert [f.ts_ns for f in frames] == list(range(len(payloads)))
    reopened = Journal(directory, fsync="off", segment_bytes=seg_bytes)
    assert reopened.torn is None and reopened.next_seq == len(payloads) + 1
    assert reopened.append(0, b"next") == len(payloads) + 1
    reopened.close()
    after = len(payloads) // 2
    assert [f.seq for f in read_frames(directory, after)] == list(range(after + 1, len(payloads) + 2))


def test_torn_tail_cut_at_every_byte_offset_of_the_last_frame(tmp_path):
    base = tmp_path / "base"
    payloads = write(base, [[b"alpha", b"bravo"], [b"charlie-is-longer" * 3]])
    seg = sorted(base.iterdir())[0]
    full = seg.read_bytes()
    last = len(encode_frame(3, 2, payloads[-1]))
    for cut in range(1, last + 1):  # keep `last - cut` bytes of the last frame
        case = tmp_path / f"cut{cut}"
        shutil.copytree(base, case)
        (case / seg.name).write_bytes(full[:len(full) - cut])
        journal = Journal(case, fsync="off")
        if cut == last:
            assert journal.torn is None  # the file ends on a frame boundary
        else:
            assert journal.torn is not None and journal.torn.cut_bytes == last - cut
            assert journal.torn.offset == len(full) - last
        assert journal.next_seq == 3
        assert [f.payload for f in journal.read()] == payloads[:2]
        journal.append(9, b"after")  # the journal goes on from the cut
        journal.close()
        assert [f.payload for f in read_frames(case)] == payloads[:2] + [b"after"]


def test_a_flipped_byte_in_the_middle_names_the_frame(tmp_path):
    payloads = write(tmp_path, [[b"x" * 20 for _ in range(5)]])
    seg = sorted(tmp_path.iterdir())[0]
    data = bytearray(seg.read_bytes())
    frame = HEADER.size + 20
    for flip in (2 * frame + HEADER.size + 3, 2 * frame + 1, 2 * frame + 9):  # payload, length, seq
        damaged = bytearray(data)
        damaged[flip] ^= 0x40
        seg.write_bytes(bytes(damaged))
        with pytest.raises(JournalCorrupt) as err:
            list(read_frames(tmp_path))
        assert err.value.path == seg and err.value.offset == 2 * frame
        with pytest.raises(JournalCorrupt):
            Journal(tmp_path, fsync="off")  # opening never cuts good frames after damage
        assert seg.read_bytes() == bytes(damaged)
    assert len(payloads) == 5


def test_a_sequence_gap_is_damage(tmp_path):
    seg = tmp_path / f"seg-{1:020d}.jnl"
    seg.write_bytes(encode_frame(1, 0, b"a") + encode_frame(3, 0, b"c"))
    with pytest.raises(JournalCorrupt, match="expected 2, found 3"):
        list(read_frames(tmp_path))


def test_snapshot_prunes_what_only_older_snapshots_needed(tmp_path):
    journal = Journal(tmp_path, fsync="every_batch", segment_bytes=64, keep_snapshots=1)
    for i in range(20):
        journal.append(i, b"input-%d" % i)
    journal.write_snapshot(12, 0, b"state@12")
    snap = journal.latest_snapshot()
    assert (snap.seq, snap.payload) == (12, b"state@12")
    assert [f.seq for f in journal.read(12)] == list(range(13, 21))
    assert min(f.seq for f in journal.read()) <= 13  # what a restore needs is kept ...
    assert len(journal.segments()) < 20  # ... and what it never needs again is gone
    journal.close()


@pytest.mark.parametrize("policy", ["sometimes", "interval_ms:0", "interval_ms:x", "interval_ms:"])
def test_fsync_policy_refused_by_name(policy):
    with pytest.raises(ValueError, match="every_batch, off or interval_ms"):
        parse_policy(policy)


def test_interval_policy_syncs_on_its_clock(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr("cluster.journal.os.fsync", lambda fd: synced.append(fd))
    now = [0]
    journal = Journal(tmp_path, fsync="interval_ms:10", clock_ns=lambda: now[0])
    journal.append(0, b"a")
    before = len(synced)
    now[0] = 5_000_000
    journal.append(0, b"b")
    assert len(synced) == before  # 5 ms: not yet
    now[0] = 20_000_000
    journal.append(0, b"c")
    assert len(synced) == before + 1
