"""The audit journal: append-only explanation records, one JSON line each, one file per node.

A record says which rule decided, on which inputs and numbers, and what was decided, so that a person
can answer "why was this rejected / throttled / liquidated" after the fact.
"""

from __future__ import annotations

import os

import msgspec


class Explanation(msgspec.Struct, kw_only=True):
    ts_ns: int
    node: str
    rule: str  # stable id, e.g. "risk.initial_margin"
    subject: str  # account, symbol or node the decision is about
    decision: str
    numbers: dict[str, int | str] = msgspec.field(default_factory=dict)
    input_seq: int = 0  # the journaled input it explains (a journaled core's; 0 elsewhere)


def counterparties_text(parties) -> str:
    """A liquidation step's counterparties as journaled: 'acct:lots@ticks;...'."""
    return ";".join(f"{account}:{lots}@{ticks}" for account, lots, ticks in parties)


def counterparties_of(text) -> list[tuple[str, int, int]] | None:
    """The (account, lots, ticks) a journaled counterparties text names; None when it is not in
    that form (an older or damaged record)."""
    if not isinstance(text, str):
        return None
    parties = []
    for part in filter(None, text.split(";")):
        account, _, rest = part.rpartition(":")
        lots, _, ticks = rest.partition("@")
        if not account or not lots.lstrip("-").isdigit() or not ticks.isdigit():
            return None
        parties.append((account, int(lots), int(ticks)))
    return parties


MAX_UNWRITTEN = 100_000  # records held while the disk refuses them; beyond, the oldest go


class AuditJournal:
    """Buffered append; the shell calls flush() once per processed batch.

    A write that fails (a full disk) does not stop the node: the records are kept, up to
    MAX_UNWRITTEN, and written by the next flush that succeeds (a record that was partly written
    when the write failed may then appear twice); `failed_writes` and `dropped` count what
    happened, and the shell logs the first failure and the recovery."""

    def __init__(self, path: str | None) -> None:
        self._file = None
        self._pending: list[bytes] = []
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115
            if _ends_torn(path):  # a write cut short before: start on a line of our own
                self._pending.append(b"\n")
        self._enc = msgspec.json.Encoder()
        self.failed_writes = 0
        self.dropped = 0
        self.last_error: OSError | None = None  # None while writes succeed
        self.input_seq = 0  # set by a journaled core's runner before each input it hands on

    def record(self, explanation: Explanation) -> None:
        if self.input_seq and not explanation.input_seq:
            explanation.input_seq = self.input_seq
        self._pending.append(self._enc.encode(explanation) + b"\n")

    def mark(self) -> int:
        return len(self._pending)

    def truncate(self, mark: int) -> None:
        """Drop what was recorded since `mark` (a replay re-derives records already written)."""
        del self._pending[mark:]

    def flush(self) -> None:
        if not self._pending:
            return
        if self._file is None:
            self._pending.clear()
            return
        data = b"".join(self._pending)
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self.failed_writes += 1
            self.last_error = exc
            excess = len(self._pending) - MAX_UNWRITTEN
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
            return
        self.last_error = None
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def _ends_torn(path: str) -> bool:
    """Does the file end part way through a line?"""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def read(path: str) -> tuple[list[Explanation], int]:
    """(the records of a journal, how many lines could not be read). A line can be torn by a
    write that failed half way (a full disk, a node killed mid-write) or damaged on disk; it is
    counted, not fatal: the rest of the journal still explains what happened."""
    dec = msgspec.json.Decoder(Explanation)
    records, unreadable = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                records.append(dec.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                unreadable += 1
    return records, unreadable
