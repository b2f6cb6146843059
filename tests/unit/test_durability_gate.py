"""A journaled core's effects never leave before the inputs that caused them are on disk, even
though the fsync runs in the background while the node handles the next batches (the pipelined
group commit: cluster/runner.py, NodeShell.flush). What is held leaves in the order it was made,
as soon as the fsync covering it has finished."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import config, curve
from cluster.journal import Journal
from cluster.recording import RecordingLog
from cluster.transport import NodeShell


class ManualDisk:
    """The runner's side of the gate, with fsyncs that finish when the test says."""

    def __init__(self) -> None:
        self.written = 0  # inputs journaled (written, maybe not on disk)
        self.durable = 0  # inputs on disk
        self.in_flight: tuple[int, object] | None = None
        self.syncs = 0

    def needs_sync(self) -> bool:
        return self.durable < self.written

    def start_sync(self, on_durable) -> None:
        assert self.in_flight is None, "two fsyncs at once"
        self.in_flight = (self.written, on_durable)
        self.syncs += 1

    def finish(self) -> bool:
        if self.in_flight is None:
            return False
        upto, on_durable = self.in_flight
        self.in_flight = None
        self.durable = upto
        on_durable()
        return True


class Wire:
    """What left the shell: (link or router, message) in order, checked as it leaves."""

    def __init__(self, shell: NodeShell, disk: ManualDisk) -> None:
        self.sent: list = []
        self.disk = disk

        async def send_box(box, messages):
            self.leave(box.link, messages)

        def send_replies(router, pending):
            self.leave(router, [m for _, m in pending])

        shell._send_box = send_box
        shell._send_replies = send_replies

    def leave(self, where: str, messages: list) -> None:
        for m in messages:
            assert m["input"] <= self.disk.durable, f"{m} left before input {m['input']} was on disk"
            self.sent.append((where, m["n"]))


def make_shell(tmp_path) -> NodeShell:
    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    shell = NodeShell("risk", topo, log_dir=str(tmp_path))
    shell.log = RecordingLog()
    shell.peer("gateway")
    shell.bind_router("clients", "inproc://durability-gate-test", lambda frames: None)
    return shell


def close(shell: NodeShell) -> None:
    shell.audit.close()
    for sock in shell._sockets:
        sock.close(linger=0)
    shell.ctx.term()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_held_until_the_fsync_covering_them_ends_then_in_order(tmp_path):
    shell = make_shell(tmp_path)
    disk = ManualDisk()
    shell.durability = disk
    wire = Wire(shell, disk)

    async def run():
        disk.written = 1
        shell.send("gateway", {"input": 1, "n": 1})
        await shell.flush()
        assert wire.sent == [] and disk.in_flight == (1, disk.in_flight[1])  # fsync of 1 started
        disk.written = 2  # the next batch is handled while the disk works
        shell.send("gateway", {"input": 2, "n": 2})
        shell.reply("clients", b"id", {"input": 2, "n": 3})
        await shell.flush()
        assert wire.sent == [] and disk.syncs == 1  # held; no second fsync while one runs
        disk.finish()
        await settle()
        assert wire.sent == [("risk->gateway", 1)]  # what the fsync covered, and only that
        assert disk.in_flight is not None and disk.in_flight[0] == 2  # the next one started
        disk.finish()
        await settle()
        assert wire.sent == [("risk->gateway", 1), ("risk->gateway", 2), ("clients", 3)]
        shell.send("gateway", {"input": 2, "n": 4})  # nothing new journaled: leaves at once
        await shell.flush()
        assert wire.sent[-1] == ("risk->gateway", 4) and disk.syncs == 2

    try:
        asyncio.run(run())
    finally:
        close(shell)


STEPS = st.lists(st.sampled_from(["input", "silent_input", "query", "fsync_done", "flush"]),
                 min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_any_interleaving_of_inputs_outputs_and_fsyncs_keeps_effects_behind_the_disk(
        tmp_path_factory, steps):
    shell = make_shell(tmp_path_factory.mktemp("gate"))
    disk = ManualDisk()
    shell.durability = disk
    wire = Wire(shell, disk)
    made: list = []

    async def run():
        n = 0
        for step in steps:
            if step in ("input", "silent_input", "query"):
                if step != "query":
                    disk.written += 1
                if step != "silent_input":
                    n += 1
                    where = "risk->gateway" if n % 3 else "clients"
                    message = {"input": disk.written, "n": n}
                    if where == "clients":
                        shell.reply("clients", b"id", message)
                    else:
                        shell.send("gateway", message)
                    made.append((where, n))
                await shell.flush()  # as the drain loop does after each batch
            elif step == "fsync_done":
                disk.finish()
                await settle()
            else:
                await shell.flush()
        while disk.finish():  # the disk catches up: everything leaves
            await settle()
        await shell.flush()
        await settle()

    try:
        asyncio.run(run())
    finally:
        close(shell)
    # in order per destination, and nothing lost or sent twice
    for where in ("risk->gateway", "clients"):
        assert [n for w, n in wire.sent if w == where] == [n for w, n in made if w == where]


def test_a_deferred_journal_is_durable_only_once_its_fsync_has_finished(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    journal = Journal(tmp_path / "j", deferred=True)
    with ThreadPoolExecutor(1) as pool:
        journal.append_batch([(1, b"a"), (2, b"b")])
        assert journal.unsynced and journal.durable_seq == 0
        future, upto = journal.start_sync(pool)
        journal.append_batch([(3, b"c")])  # written while the fsync runs: not covered by it
        future.result()
        journal.synced(upto)
        assert (upto, journal.durable_seq, journal.unsynced) == (2, 2, True)
        future, upto = journal.start_sync(pool)
        future.result()
        journal.synced(upto)
        assert journal.durable_seq == 3 and not journal.unsynced
    journal.close()
    assert [f.payload for f in journal.read()] == [b"a", b"b", b"c"]
    inline = Journal(tmp_path / "k")  # not deferred: durable when append_batch returns
    inline.append_batch([(1, b"a")])
    assert inline.durable_seq == 1 and not inline.unsynced
    inline.close()
