"""Matching's private engine feed: every command's events, with accounts, to the surveillance node.

It is its own PUB socket (`nodes.matching.private`), not the market data PUB, which the gateway
forwards to clients whole. Matching creates it only when the topology runs a surveillance node:
without one the hot path pays nothing (`feed` is None, one `is not None` test per command). With
one, a command costs an append; the batches go out on a timer, a frame every FLUSH_MS, so the private
feed adds one send per interval rather than one per command.
"""

from __future__ import annotations

import msgspec

from cluster.protocol import EngineBatch

TOPIC = b"priv"
FLUSH_MS = 20
MAX_FRAME = 2_000  # batches per frame


class PrivateFeed:
    def __init__(self, shell, endpoint: str) -> None:
        self._send = shell.bind_private_pub(endpoint)
        self._shell = shell
        self._enc = msgspec.msgpack.Encoder()
        self.pending: list[EngineBatch] = []
        shell.every(FLUSH_MS, self.flush)

    def add(self, now_ns: int, events: list) -> None:
        # A hot standby (#19) applies its primary's inputs but publishes nothing: the primary's
        # feed carried these events; its own starts when it is promoted.
        if events and getattr(self._shell, "role", "primary") == "primary":
            self.pending.append(EngineBatch(ts_ns=now_ns, events=events))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for i in range(0, len(pending), MAX_FRAME):
            self._send([TOPIC, self._enc.encode(pending[i:i + MAX_FRAME])])
