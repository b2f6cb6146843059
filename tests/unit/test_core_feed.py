"""cluster/feed.py, the runner of the oracle's and the liquidator's cores: effects routed by
destination in the core's order, the shell's hook after each, and a core that raises on one input
costs that input alone (counted, logged; an illegal transition journaled)."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.core import IllegalTransition
from cluster.feed import CoreFeed
from cluster.recording import RecordingShell
from tests.unit.pipeline import TOPO

NOTE = Explanation(ts_ns=1, node="t", rule="t.rule", subject="s", decision="d")


class Core:
    def __init__(self) -> None:
        self.seen: list = []

    def handle(self, msg, now_ns: int) -> list:
        self.seen.append((msg, now_ns))
        if msg == "bug":
            raise KeyError("x")
        if msg == "illegal":
            raise IllegalTransition("closed", "reduce result", machine="m", subject="liq-1")
        return [("audit", NOTE), ("pub", msg), ("risk", msg)]


def test_effects_are_routed_in_order_and_a_raising_input_costs_itself_alone():
    shell = RecordingShell(TOPO.nodes["liquidator"])
    shell.now_ns = lambda: 42
    core, hooked = Core(), []
    feed = CoreFeed(shell, core, "liquidator", topic=lambda msg: b"t." + msg.encode(),
                    on_effect=lambda dest, msg: hooked.append((dest, len(shell.sent))))
    feed.on_messages(["a", "bug", "illegal", "b"])
    assert [m for m, _ in core.seen] == ["a", "bug", "illegal", "b"]
    assert {now for _, now in core.seen} == {42}  # one time for the batch
    assert shell.sent == [(b"t.a", "a"), ("risk", "a"), (b"t.b", "b"), ("risk", "b")]
    assert hooked == [("audit", 0), ("pub", 1), ("risk", 2), ("audit", 2), ("pub", 3), ("risk", 4)]
    assert shell.stats["errors"] == 2
    rules = [e.rule for e in shell.explained]
    assert rules == ["t.rule", "m.illegal_transition", "t.rule"]
    illegal = shell.explained[1]
    assert (illegal.node, illegal.ts_ns, illegal.subject) == ("liquidator", 42, "liq-1")
    assert illegal.numbers == {"state": "closed", "event": "reduce result"}

