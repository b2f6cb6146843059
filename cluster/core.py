"""What every journaled core offers beside `handle()` and `state_hash()`: its whole state as bytes,
and back. A snapshot is a shortcut for replaying the journal up to it (cluster/runner.py), so the
bytes are the core's own objects as they are (pickle): restoring them is exact, with the same dict
orders, heaps and queues, which a re-derived state would not promise. The bytes only ever travel
inside the node's own run directory, checksummed by the journal's frame.

What a core builds from itself (a dispatch table of its own bound methods) is not state: it names
those attributes in `DERIVED` and rebuilds them in `derive()`, which restore() calls."""

from __future__ import annotations

import pickle


class Snapshottable:
    DERIVED: tuple[str, ...] = ()

    def derive(self) -> None:
        """Rebuild the attributes named in DERIVED from the rest of the state."""

    def snapshot(self) -> bytes:
        state = {k: v for k, v in self.__dict__.items() if k not in self.DERIVED}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        state = pickle.loads(data)
        self.__dict__.clear()
        self.__dict__.update(state)
        self.derive()
