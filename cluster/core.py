"""The shape of a node's core, and what every journaled core offers beside `handle()` and
`state_hash()`: its whole state as bytes,
and back. A snapshot is a shortcut for replaying the journal up to it (cluster/runner.py), so the
bytes are the core's own objects as they are (pickle): restoring them is exact, with the same dict
orders, heaps and queues, which a re-derived state would not promise. The bytes only ever travel
inside the node's own run directory, checksummed by the journal's frame.

What a core builds from itself (a dispatch table of its own bound methods) is not state: it names
those attributes in `DERIVED` and rebuilds them in `derive()`, which restore() calls."""

from __future__ import annotations

import io
import pickle
from typing import Protocol, runtime_checkable

from cluster.audit import Explanation

# Modules that moved (#18's structural step): a snapshot written before names its objects' classes
# by the old paths, and must still restore (a run upgraded in place recovers from it).
MOVED_MODULES = {"cluster.ladder": "cluster.rules.ladder", "cluster.prices": "cluster.rules.prices",
                 "cluster.funding": "cluster.rules.funding", "cluster.units": "cluster.rules.units",
                 "nodes.risk.adl": "cluster.rules.adl"}


# ... and classes that moved to another module of the same package (the risk core's split)
MOVED_CLASSES = {("nodes.risk.ledger", "LiqExec"): ("nodes.risk.state", "LiqExec")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module, name = MOVED_CLASSES.get((module, name), (module, name))
        return super().find_class(MOVED_MODULES.get(module, module), name)


def load_state(data: bytes):
    """A snapshot's bytes back into objects, old module paths followed to where they live now."""
    return _Unpickler(io.BytesIO(data)).load()


class IllegalTransition(Exception):
    """An event that a lifecycle's transition table has no row for in its subject's state (the
    style of h11's `_state.py`): raised by the core before it changed anything, so its state is as
    it was. The shell counts and logs it and journals `explanation()`: a node never dies on a
    message, and a bug upstream (or here) is seen rather than ignored."""

    def __init__(self, state: str, event: str, *, machine: str, subject: str,
                 numbers: dict | None = None) -> None:
        super().__init__(f"{machine}: no transition for {event} in state {state!r} ({subject})")
        self.state, self.event, self.machine, self.subject = state, event, machine, subject
        self.numbers = numbers or {}

    def explanation(self, node: str, ts_ns: int) -> Explanation:
        return Explanation(ts_ns=ts_ns, node=node, rule=f"{self.machine}.illegal_transition",
                           subject=self.subject, decision="ignored",
                           numbers={"state": self.state, "event": self.event, **self.numbers})


def allowed(table: dict[str, dict[str, str]], state: str, event: str, *, machine: str,
            subject: str, numbers: dict | None = None) -> str:
    """The state `event` moves a subject in `state` to, by `table` (state -> event -> next state);
    IllegalTransition when the table has no such row."""
    after = table.get(state, {}).get(event)
    if after is None:
        raise IllegalTransition(state, event, machine=machine, subject=subject, numbers=numbers)
    return after


class Snapshottable:
    DERIVED: tuple[str, ...] = ()

    def derive(self) -> None:
        """Rebuild the attributes named in DERIVED from the rest of the state."""

    def snapshot(self) -> bytes:
        state = {k: v for k, v in self.__dict__.items() if k not in self.DERIVED}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        state = load_state(data)
        self.__dict__.clear()
        self.__dict__.update(state)
        self.derive()



# ---------------------------------------------------------------------- the shape of a core
#
# Every node's core is pure (no IO, no clock, no randomness: its time comes in with its inputs) and
# sits under a thin shell (nodes/<node>/service.py). What they share is declared below, and each
# core names the protocols it meets in its class line (tests/unit/test_core_shape.py checks them):
#
#   core                                 inputs                          protocols
#   risk        nodes/risk/ledger.py     handle(msg, now_ns) -> effects   JournaledCore
#   matching    nodes/matching/engine.py handle(cmd) -> events           JournaledCore
#   oracle      nodes/oracle/index.py    handle(msg, now_ns) -> effects  EffectCore, SnapshotCore
#   liquidator  nodes/liquidator/engine.py handle(msg, now_ns) -> effects EffectCore, TimedCore
#   surveillance nodes/surveillance/core.py handle(msg, now_ns);         HashedCore, TimedCore
#                                        tick(now_ns) -> alerts
#   (the oracle and the liquidator run under cluster/feed.py's CoreFeed; their clock is a
#   ClockTick input, which calls publish(now_ns) / tick(now_ns))
#
# An effect is (destination node, message); "audit" is the audit journal (Explanation records,
# always made by the core). Risk and matching are journaled (cluster/runner.py replays their
# inputs, so `handle` is all that may change them); the others are rebuilt from their feeds.


Effects = list[tuple[str, object]]


@runtime_checkable
class HashedCore(Protocol):
    """Its state as a digest: equal for equal input histories (replay and standby checks)."""

    def state_hash(self) -> str: ...


@runtime_checkable
class SnapshotCore(Protocol):
    """Its whole state as bytes, and back (Snapshottable does it for a core of plain objects)."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class TimedCore(Protocol):
    """A core that acts on time passing as well as on inputs: the shell calls tick(now_ns)."""

    def tick(self, now_ns: int) -> list: ...


@runtime_checkable
class EffectCore(Protocol):
    """One entry for every input, its time given: handle(msg, now_ns) -> [(destination, msg)].
    A timer is an input too (ClockTick). The shell's runner (cluster/feed.py, or
    cluster/runner.py for a journaled core) feeds it and routes the effects."""

    def handle(self, msg, now_ns: int) -> list: ...


@runtime_checkable
class JournaledCore(HashedCore, SnapshotCore, Protocol):
    """A core whose every state change comes through handle() (cluster/runner.py journals each
    input before its effects leave): replaying the journal on a snapshot gives the same state and
    the same state_hash(). Risk's handle takes the input's time and returns effects; matching's
    is clockless and returns engine events, which its shell routes."""

    def handle(self, msg, *args) -> list: ...
