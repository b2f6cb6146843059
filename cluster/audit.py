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


class AuditJournal:
    """Buffered append; the shell calls flush() once per processed batch."""

    def __init__(self, path: str | None) -> None:
        self._file = None
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115
        self._enc = msgspec.json.Encoder()
        self._pending: list[bytes] = []

    def record(self, explanation: Explanation) -> None:
        self._pending.append(self._enc.encode(explanation) + b"\n")

    def flush(self) -> None:
        if self._pending and self._file is not None:
            self._file.write(b"".join(self._pending))
            self._file.flush()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def read(path: str) -> list[Explanation]:
    dec = msgspec.json.Decoder(Explanation)
    with open(path, "rb") as fh:
        return [dec.decode(line) for line in fh if line.strip()]
