"""The witness's vote (cluster/failover.py): a standby's promotion is granted only when the witness
has not heard the primary for witness_silence_ms either, only to an epoch newer than the one it
knows, each epoch once, and never to a standby that lacks inputs a detached primary went on with;
a primary asking about its epoch learns the current one."""

from __future__ import annotations

import time

from cluster import config
from cluster.failover import Witness
from cluster.protocol import StandbyDetached, WitnessQuery


class Shell:
    name = "gateway"

    def __init__(self) -> None:
        self.heard: dict[str, int] = {}
        self.fences: dict[str, int] = {}
        self.sent: list = []
        self.records: list = []
        self.audit = self

    def record(self, explanation) -> None:
        self.records.append(explanation)

    def last_heard_from(self, node: str) -> int:
        return self.heard.get(node, 0)

    def known_epoch(self, node: str) -> int:
        return self.fences.get(node, 1)

    def set_fence(self, node: str, epoch: int) -> None:
        self.fences[node] = max(self.fences.get(node, 0), epoch)

    def send_control(self, target: str, message) -> None:
        self.sent.append((target, message))


def witness(tmp_path, silence_ms: int = 450):
    topo = config.load(run_dir=str(tmp_path))
    topo = config.msgspec.structs.replace(topo, failover=config.msgspec.structs.replace(
        topo.failover, witness_silence_ms=silence_ms))
    shell = Shell()
    return Witness(shell, topo), shell


def ask(w, shell, epoch, propose=True, next_seq=100, instance="risk.b"):
    w.on_query(WitnessQuery(node="risk", instance=instance, epoch=epoch, propose=propose,
                            next_seq=next_seq))
    target, reply = shell.sent[-1]
    assert target == instance
    return reply


def test_a_primary_still_heard_is_not_replaced(tmp_path):
    w, shell = witness(tmp_path)
    shell.heard["risk"] = time.monotonic_ns() - 100_000_000  # heard 100 ms ago
    reply = ask(w, shell, 2)
    assert not reply.granted and reply.reason == "primary_heard" and reply.epoch == 1
    assert 90 <= reply.silent_ms < 450 and shell.fences == {}


def test_a_silent_primary_is_replaced_once_per_epoch_and_the_old_epoch_is_fenced(tmp_path):
    w, shell = witness(tmp_path)
    shell.heard["risk"] = time.monotonic_ns() - 800_000_000
    first = ask(w, shell, 2)
    assert first.granted and first.epoch == 2 and shell.fences == {"risk": 2}
    again = ask(w, shell, 2, instance="risk")  # the other instance, same epoch: no
    assert not again.granted and again.reason == "epoch_not_newer"
    # the old primary asks which epoch is current: it learns it was superseded
    assert ask(w, shell, 1, propose=False, instance="risk").epoch == 2
    assert [r.decision for r in shell.records] == ["granted", "refused"]
    assert shell.records[0].numbers["silent_ms"] >= 800


def test_a_standby_behind_a_detached_primary_is_refused(tmp_path):
    w, shell = witness(tmp_path)
    w.on_detached(StandbyDetached(node="risk", epoch=1, next_seq=500))
    shell.heard["risk"] = time.monotonic_ns() - 5_000_000_000
    behind = ask(w, shell, 2, next_seq=499)
    assert not behind.granted and behind.reason == "standby_behind"
    caught_up = ask(w, shell, 2, next_seq=500)
    assert caught_up.granted


def test_never_having_heard_the_primary_counts_from_the_witness_start(tmp_path):
    w, shell = witness(tmp_path, silence_ms=10_000)
    reply = ask(w, shell, 2)  # nothing heard yet, but the witness only just started
    assert not reply.granted and reply.reason == "primary_heard"
