"""Output that cannot go out as it is must not cost a node its other messages, its drain loop or
its life: numbers msgpack cannot carry travel as strings, a message that still cannot be encoded
is dropped and logged, a journal the disk refuses is kept and written later, and a node task that
dies stops the node (the supervisor applies its policy) instead of leaving it deaf."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from cluster import audit as audit_module
from cluster import config, curve
from cluster.audit import AuditJournal, Explanation
from cluster.protocol import Codec, NodeInbound, OrderRejected, Report, wire_safe
from cluster.recording import RecordingLog
from cluster.transport import NodeShell

HUGE = 2**131  # a notional of a 2**62 price and a 2**62 quantity, and then some


def rejected(detail: dict) -> Report:
    return Report(ref=1, account="a", event=OrderRejected(
        seq=0, ref=1, order_id=0, account="a", symbol="BTC-PERP", reason="position_limit",
        detail=detail))


def test_wire_safe_writes_only_the_numbers_msgpack_cannot_carry_as_strings():
    safe = wire_safe(rejected({"notional_after": HUGE, "limit": 5}))
    assert safe.event.detail == {"notional_after": str(HUGE), "limit": 5}
    assert wire_safe(rejected({"limit": 2**64 - 1, "low": -(2**63)})) is None  # these fit
    assert wire_safe([1, [2**70], True]) == [1, [str(2**70)], True]
    decoded, = Codec(NodeInbound).decode(Codec(NodeInbound).encode([safe]))
    assert decoded == safe


@pytest.fixture
def shell(tmp_path):
    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    node = NodeShell("risk", topo, log_dir=str(tmp_path))
    node.log = RecordingLog()
    yield node
    node.audit.close()
    for sock in node._sockets:
        sock.close(linger=0)
    node.ctx.term()


def test_one_unencodable_message_does_not_cost_the_others_their_frame(shell):
    class Unencodable(msgspec.Struct):
        x: object

    good = rejected({"limit": 5})
    frame = shell._encode([good, rejected({"notional_after": HUGE}), Unencodable(x=object())],
                          "risk->gateway")
    first, second = Codec(NodeInbound).decode(frame)
    assert first == good and second.event.detail == {"notional_after": str(HUGE)}
    assert shell.stats["unsendable"] == 1
    assert [e for _, e, _ in shell.log.events] == ["message_numbers_as_strings",
                                                   "message_unsendable"]
    assert shell._encode([Unencodable(x=object())], "risk->gateway") is None
    # a typed field cannot take the string: dropped here rather than failing the whole frame at
    # the receiver's decoder
    from cluster.protocol import AccountRisk

    shell.stats.clear()
    risky = AccountRisk(account="a", balance=1, positions={"BTC-PERP": (1, HUGE)})
    assert Codec(NodeInbound).decode(shell._encode([risky, good], "risk->liquidator")) == [good]
    assert shell.stats["unsendable"] == 1


class FullDisk:
    def __init__(self) -> None:
        self.full, self.data = True, b""

    def write(self, data: bytes) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        self.data += data

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def record(n: int) -> Explanation:
    return Explanation(ts_ns=n, node="risk", rule="risk.x", subject="a", decision="reject")


def test_a_journal_the_disk_refuses_is_kept_bounded_and_written_later(monkeypatch):
    monkeypatch.setattr(audit_module, "MAX_UNWRITTEN", 3)
    journal = AuditJournal(None)
    journal._file = disk = FullDisk()
    for n in range(5):
        journal.record(record(n))
        journal.flush()
    assert (journal.failed_writes, journal.dropped, disk.data) == (5, 2, b"")
    assert journal.last_error is not None
    disk.full = False
    journal.flush()
    assert [msgspec.json.decode(line)["ts_ns"] for line in disk.data.splitlines()] == [2, 3, 4]
    assert journal.last_error is None


def test_the_shell_says_when_journal_writes_fail_and_when_they_recover(shell):
    shell.audit._file = disk = FullDisk()
    shell.audit.record(record(1))
    asyncio.run(shell.flush())
    shell.audit.record(record(2))
    asyncio.run(shell.flush())  # still failing: said once
    disk.full = False
    asyncio.run(shell.flush())
    assert [e for _, e, _ in shell.log.events] == ["audit_write_failed", "audit_write_recovered"]
    assert disk.data.count(b"\n") == 2


def test_a_node_task_that_dies_stops_the_node(shell):
    async def run():
        shell._stop = asyncio.Event()

        async def broken():
            raise RuntimeError("a bug below the handlers")

        task = asyncio.create_task(broken())
        task.add_done_callback(shell._task_ended)
        await asyncio.wait_for(shell._stop.wait(), 1)

    asyncio.run(run())
    assert shell.stats["errors"] == 1 and shell.exit_code == 70  # the supervisor sees a failure
    assert [(lvl, e) for lvl, e, _ in shell.log.events] == [("critical", "node_task_died")]


def test_a_journal_reopened_after_a_torn_write_starts_on_its_own_line(tmp_path):
    from cluster.audit import read

    path = tmp_path / "audit" / "risk.jsonl"
    first = AuditJournal(str(path))
    first.record(Explanation(ts_ns=1, node="risk", rule="r", subject="a", decision="d"))
    first.close()
    with open(path, "ab") as fh:
        fh.write(b'{"ts_ns": 2, "node": "ri')  # the node died part way through a write
    again = AuditJournal(str(path))
    again.record(Explanation(ts_ns=3, node="risk", rule="r", subject="a", decision="d"))
    again.close()
    records, unreadable = read(str(path))
    assert [r.ts_ns for r in records] == [1, 3] and unreadable == 1
