"""An append-only input journal with snapshots: the truth a core is rebuilt from.

A core (risk, matching) is a deterministic state machine, so its state is a function of the inputs
it handled. The journal keeps those inputs, each under a per-node input sequence number, in
segment files; a snapshot is a shortcut (the core's `snapshot()` bytes at sequence S), never the
truth: replaying the journal after S onto `restore(snapshot)` must give the same `state_hash()`.

On disk, under one directory per node:

    seg-<first seq, 20 digits>.jnl     frames, appended; a new segment past `segment_bytes`
    snap-<seq, 20 digits>.snap         one snapshot: a frame whose payload is the core's bytes

A frame is a 24-byte header and a payload (the input as the node encodes it, msgpack):

    u32 payload length | u32 CRC-32 of (seq, ts_ns, payload) | u64 seq | i64 ts_ns | payload

Sequence numbers are contiguous (each frame is the previous + 1): a gap is corruption, not a
skipped input. On open, the last frame of the last segment may be incomplete or fail its checksum
(the process died inside a write): that torn tail is cut and reported. Anything else that fails to
read (a bad checksum with frames after it, a gap, a bad frame in an earlier segment) is damage no
crash explains: `JournalCorrupt` names the file, the offset and the sequence, and nothing is cut.

Durability (`fsync` policy), for the group commit of one drained batch (`append_batch`):
- "every_batch" (default): no effect of an input leaves the node before the input is fsynced, so
  nothing acknowledged is lost to a power cut. Inline (`deferred=False`), `append_batch` fsyncs
  before it returns. Deferred (the runner's choice), it only writes; `start_sync` fsyncs everything
  written so far on a background thread and `durable_seq` says how far the disk has it, so the
  node handles the next batch while the disk works and holds each batch's effects until the
  fsync covering it is done (a pipelined group commit: cluster/runner.py).
- "interval_ms:N": written at once (a process crash loses nothing: the OS has the bytes), fsynced
  when N ms have passed since the last fsync; a power cut may lose up to N ms.
- "off": written, never fsynced by the journal (benchmarks; the OS flushes when it likes).
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import Executor, Future
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

HEADER = struct.Struct("<IIQq")
MAX_PAYLOAD = 64 * 1024 * 1024  # a length past this is damage, not a frame
SEG_PREFIX, SEG_SUFFIX = "seg-", ".jnl"
SNAP_PREFIX, SNAP_SUFFIX = "snap-", ".snap"


class JournalCorrupt(Exception):
    """Damage a crash cannot explain. `path`, `offset` and `seq` say where."""

    def __init__(self, path: Path, offset: int, seq: int | None, reason: str) -> None:
        where = f"{path.name} at byte {offset}" + (f" (seq {seq})" if seq is not None else "")
        super().__init__(f"journal damaged: {reason} in {where}")
        self.path, self.offset, self.seq, self.reason = path, offset, seq, reason


@dataclass(frozen=True)
class Frame:
    seq: int
    ts_ns: int
    payload: bytes


@dataclass(frozen=True)
class TornTail:
    """What opening the journal cut: the incomplete or unchecked bytes after the last good frame."""
    path: Path
    offset: int
    cut_bytes: int
    reason: str


def encode_frame(seq: int, ts_ns: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Qq", seq, ts_ns)))
    return HEADER.pack(len(payload), crc, seq, ts_ns) + payload


def parse_policy(policy: str) -> tuple[str, int]:
    """('every_batch'|'off'|'interval', interval in ns). Refuses anything else by name."""
    if policy in ("every_batch", "off"):
        return policy, 0
    if policy.startswith("interval_ms:"):
        text = policy.split(":", 1)[1]
        if text.isascii() and text.isdigit() and 1 <= int(text) <= 60_000:
            return "interval", int(text) * 1_000_000
    raise ValueError(f"fsync policy {policy!r}: expected every_batch, off or interval_ms:N "
                     f"(N from 1 to 60000)")


def _scan(path: Path, data: bytes, expect_seq: int | None,
          last_segment: bool) -> tuple[list[Frame], TornTail | None]:
    """The frames of one segment's bytes; a torn tail only where a crash can leave one."""
    frames: list[Frame] = []
    offset, end = 0, len(data)
    while offset < end:
        torn = None
        if end - offset < HEADER.size:
            torn = "incomplete header"
        else:
            length, crc, seq, ts_ns = HEADER.unpack_from(data, offset)
            stop = offset + HEADER.size + length
            if length > MAX_PAYLOAD:
                # A length this large can only be a header cut mid-write (the rest of it is what
                # was there before, zeros on a fresh file) or damage: it is torn only at the end.
                torn = "impossible length"
            elif stop > end:
                torn = "incomplete payload"
            else:
                payload = data[offset + HEADER.size:stop]
                if zlib.crc32(payload, zlib.crc32(struct.pack("<Qq", seq, ts_ns))) != crc:
                    if stop == end and last_segment:
                        torn = "checksum of the last frame"
                    else:
                        raise JournalCorrupt(path, offset, seq, "checksum mismatch")
                elif expect_seq is not None and seq != expect_seq:
                    raise JournalCorrupt(path, offset, seq,
                                         f"sequence gap: expected {expect_seq}, found {seq}")
                else:
                    frames.append(Frame(seq, ts_ns, payload))
                    expect_seq = seq + 1
                    offset = stop
                    continue
        if not last_segment:
            raise JournalCorrupt(path, offset, None, torn)
        later = _frame_after(data, offset + 1, expect_seq)
        if later is not None:  # a crash leaves no whole frame after a torn one: this is damage
            raise JournalCorrupt(path, offset, None,
                                 f"{torn}, with a whole frame (seq {later}) after it")
        return frames, TornTail(path, offset, end - offset, torn)
    return frames, None


def _frame_after(data: bytes, start: int, min_seq: int | None) -> int | None:
    """The seq of a whole, checked frame starting anywhere at or after `start`, or None."""
    end = len(data)
    for offset in range(start, end - HEADER.size + 1):
        length, crc, seq, ts_ns = HEADER.unpack_from(data, offset)
        stop = offset + HEADER.size + length
        if stop > end or (min_seq is not None and seq < min_seq):
            continue
        payload = data[offset + HEADER.size:stop]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<Qq", seq, ts_ns))) == crc:
            return seq
    return None


class Journal:
    """One node's input journal and snapshots in `directory`.

    `append_batch` is the group commit: the frames of one drained batch, one write and (by policy)
    one fsync. The caller lets a batch's effects leave only after it returns."""

    def __init__(self, directory: str | Path, fsync: str = "every_batch",
                 segment_bytes: int = 64 * 1024 * 1024, keep_snapshots: int = 2,
                 clock_ns=None, deferred: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.policy, self.interval_ns = parse_policy(fsync)
        self.segment_bytes = segment_bytes
        self.keep_snapshots = keep_snapshots
        self._clock = clock_ns or (lambda: 0)
        self._last_sync = 0
        self.torn: TornTail | None = None
        self.next_seq = 1
        self._fd: int | None = None
        self._seg_size = 0
        self._open()
        self.deferred = deferred and self.policy == "every_batch"
        self.durable_seq = self.next_seq - 1  # every input up to this one is on disk (by policy)
        self._inflight: Future | None = None  # a deferred fsync the disk is doing

    # ------------------------------------------------------------------ files

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob(f"{SEG_PREFIX}*{SEG_SUFFIX}"))

    def snapshots(self) -> list[Path]:
        return sorted(self.dir.glob(f"{SNAP_PREFIX}*{SNAP_SUFFIX}"))

    @staticmethod
    def _first_seq(path: Path) -> int:
        return int(path.name[len(SEG_PREFIX):-len(SEG_SUFFIX)])

    def _open(self) -> None:
        """Find the next sequence, cutting a torn tail off the last segment."""
        segments = self.segments()
        snaps = self.snapshots()
        last_snap = int(snaps[-1].name[len(SNAP_PREFIX):-len(SNAP_SUFFIX)]) if snaps else 0
        if not segments:
            self.next_seq = last_snap + 1
            return
        last = segments[-1]
        data = last.read_bytes()
        frames, torn = _scan(last, data, self._first_seq(last), last_segment=True)
        if torn is not None:
            with open(last, "r+b") as f:
                f.truncate(torn.offset)
                os.fsync(f.fileno())
            self.torn = torn
        self.next_seq = frames[-1].seq + 1 if frames else self._first_seq(last)
        self.next_seq = max(self.next_seq, last_snap + 1)
        self._fd = os.open(last, os.O_WRONLY | os.O_APPEND)
        self._seg_size = torn.offset if torn is not None else len(data)

    def _roll(self) -> None:
        self._wait_inflight()  # never close the file a background fsync is working on
        if self._fd is not None:
            if self.policy != "off":
                os.fsync(self._fd)
            os.close(self._fd)
        path = self.dir / f"{SEG_PREFIX}{self.next_seq:020d}{SEG_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seg_size = 0
        self._sync_dir()

    def _sync_dir(self) -> None:
        if self.policy == "off":
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ writing

    def append_batch(self, items: list[tuple[int, bytes]]) -> int:
        """Journal a batch of (ts_ns, payload) inputs under the next sequence numbers; returns the
        first sequence given. Durable by policy when this returns."""
        if not items:
            return self.next_seq
        if self._fd is None or self._seg_size >= self.segment_bytes:
            self._roll()
        first = seq = self.next_seq
        buf = bytearray()
        for ts_ns, payload in items:
            buf += encode_frame(seq, ts_ns, payload)
            seq += 1
        os.write(self._fd, buf)
        self._seg_size += len(buf)
        self.next_seq = seq
        if self.deferred:
            return first  # durable once a start_sync issued after this returns has finished
        if self.policy == "every_batch":
            os.fsync(self._fd)
        elif self.policy == "interval":
            now = self._clock()
            if now - self._last_sync >= self.interval_ns:
                os.fsync(self._fd)
                self._last_sync = now
        self.durable_seq = seq - 1  # (as far as the policy asks: it chose what a power cut may take)
        return first

    def append(self, ts_ns: int, payload: bytes) -> int:
        return self.append_batch([(ts_ns, payload)])

    @property
    def unsynced(self) -> bool:
        """Inputs written that a deferred fsync has yet to cover."""
        return self.durable_seq < self.next_seq - 1

    def start_sync(self, executor: Executor) -> tuple[Future, int]:
        """fsync everything written so far on `executor`; the future finishes when the disk has
        it, and the returned sequence is what it covers (give it to `synced`). One at a time."""
        assert self._inflight is None, "one deferred fsync at a time"
        self._inflight = executor.submit(os.fsync, self._fd)
        return self._inflight, self.next_seq - 1

    def synced(self, upto: int) -> None:
        """A deferred fsync covering inputs up to `upto` has finished (it raised if it failed)."""
        done, self._inflight = self._inflight, None
        if done is not None:
            done.result()  # an fsync error is not retried: the page cache may have lost the data
        self.durable_seq = max(self.durable_seq, upto)

    def _wait_inflight(self) -> None:
        if self._inflight is not None:
            self._inflight.result()

    def sync(self) -> None:
        """fsync now, on this thread (a snapshot, a stop)."""
        self._wait_inflight()
        if self._fd is not None:
            os.fsync(self._fd)
            self.durable_seq = self.next_seq - 1

    def close(self) -> None:
        self._wait_inflight()
        if self._fd is not None:
            if self.policy != "off":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self.durable_seq = self.next_seq - 1

    def reset(self, seq: int) -> None:
        """Forget every frame and snapshot: the journal continues after input `seq` (a standby
        that takes its primary's state; the caller writes that state as a snapshot at `seq`)."""
        self._wait_inflight()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for path in self.segments() + self.snapshots():
            path.unlink()
        self._sync_dir()
        self.next_seq = seq + 1
        self.durable_seq = seq
        self._seg_size = 0
        self.torn = None

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, seq: int, ts_ns: int, state: bytes, prune: bool = True) -> Path:
        """The core's state after input `seq`, written whole or not at all (temp file, fsync,
        rename); then older snapshots past `keep_snapshots`, and the segments only they needed,
        are pruned."""
        path = self.dir / f"{SNAP_PREFIX}{seq:020d}{SNAP_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(encode_frame(seq, ts_ns, state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_dir()
        if prune:
            self.prune()
        return path

    def latest_snapshot(self) -> Frame | None:
        snaps = self.snapshots()
        return read_snapshot(snaps[-1]) if snaps else None

    def prune(self) -> None:
        snaps = self.snapshots()
        for old in snaps[:-self.keep_snapshots] if self.keep_snapshots else snaps:
            old.unlink()
        kept = self.snapshots()
        if not kept:
            return
        oldest = int(kept[0].name[len(SNAP_PREFIX):-len(SNAP_SUFFIX)])
        segments = self.segments()
        # A segment is only needed if a frame after the oldest snapshot kept is in it: every
        # segment whose successor starts at or before oldest + 1 holds nothing needed.
        for seg, nxt in zip(segments, segments[1:]):
            if self._first_seq(nxt) <= oldest + 1:
                seg.unlink()

    # ------------------------------------------------------------------ reading

    def read(self, after: int = 0) -> Iterator[Frame]:
        """Every frame with seq > `after`, in order, checked (a gap or bad frame raises)."""
        yield from read_frames(self.dir, after)


def read_snapshot(path: Path) -> Frame:
    data = Path(path).read_bytes()
    frames, torn = _scan(Path(path), data, None, last_segment=False) if data else ([], None)
    if len(frames) != 1 or torn is not None:
        raise JournalCorrupt(Path(path), 0, None, "snapshot is not one whole frame")
    return frames[0]


def read_frames(directory: str | Path, after: int = 0) -> Iterator[Frame]:
    """Frames of a journal directory with seq > `after`, without opening it for writing (so an
    offline verifier cuts nothing: a torn tail is reported by stopping before it)."""
    segments = sorted(Path(directory).glob(f"{SEG_PREFIX}*{SEG_SUFFIX}"))
    expect = None
    for i, seg in enumerate(segments):
        first = Journal._first_seq(seg)
        if i + 1 < len(segments) and Journal._first_seq(segments[i + 1]) <= after + 1:
            continue  # wholly before `after`
        if expect is not None and first != expect:
            raise JournalCorrupt(seg, 0, first, f"sequence gap: expected {expect}, found {first}")
        frames, _ = _scan(seg, seg.read_bytes(), first, last_segment=i == len(segments) - 1)
        for frame in frames:
            if frame.seq > after:
                yield frame
        expect = frames[-1].seq + 1 if frames else first


def torn_tail(directory: str | Path) -> TornTail | None:
    """What opening the journal would cut from its last segment, without cutting it."""
    segments = sorted(Path(directory).glob(f"{SEG_PREFIX}*{SEG_SUFFIX}"))
    if not segments:
        return None
    last = segments[-1]
    _, torn = _scan(last, last.read_bytes(), Journal._first_seq(last), last_segment=True)
    return torn
