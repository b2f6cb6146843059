"""The runner of a journaled core (risk, matching): every input is journaled before its effects
leave the node, a snapshot is taken now and then, and a (re)started node rebuilds its state from the
latest snapshot and the journal after it.

    inputs (drained batch) -> links_in (once, in order) -> journal (group commit) -> process(msg, now)
                                                                                  -> effects, flushed

An input is one message, or the header of a run of messages that arrived on a sequenced link (the
numbers applied: replaying it rebuilds what the node has received on each link). Each gets the next
input sequence number (the journal's), which the audit records it causes carry (`input_seq`).

Replay runs the same `process` on the same inputs with the same `now`: what it would send is
dropped, except on sequenced links, where it is numbered and kept for resends (the receivers had it,
or ask for it: cluster/links.py). So nothing a client was told is told twice, and nothing that was
journaled but not yet sent when the node died is lost.

Durability is a pipelined group commit (fsync "every_batch"): a batch is written to the journal and
handled at once, and the shell holds everything the node would send (cluster/transport.py) until a
background fsync covering that batch has finished; the batches handled meanwhile wait for the next
fsync, which starts as soon as this one ends. So the disk's ~0.2 ms per fsync overlaps the node's
work instead of adding to it, and still no effect leaves before its input is on disk.

Snapshots are taken in a forked child (copy-on-write: the node stops for the fork, not for the
pickling and the write) when `snapshot_every` inputs or `snapshot_interval_s` have passed.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from cluster.config import JournalConf
from cluster.core import load_state
from cluster.journal import Journal
from cluster.protocol import JournalInbound, LinkSeq

KEEP_FOR_RESENDS = 10_000  # last messages per sequenced link a snapshot carries


def journal_dir(run_dir: str | Path, node: str) -> Path:
    return Path(run_dir) / "journal" / node


def snapshot_state(core, shell) -> bytes:
    """The node's whole replayable state: the core, what each link delivered, and what it sent.
    What is numbered but not sent yet (held for an fsync, or queued) is in the resend lists with
    its numbers, so a snapshot never waits for the node to be idle."""
    unsent = shell.unsent_by_link() if hasattr(shell, "unsent_by_link") else {}
    return pickle.dumps({
        "core": core.snapshot(), "links_in": shell.links_in, "out": shell.next_numbers(),
        "resend": {box.link: (list(box.seq.buffer) + unsent.get(box.link, []))[-KEEP_FOR_RESENDS:]
                   for box in shell.sequenced_outboxes()},
    }, protocol=pickle.HIGHEST_PROTOCOL)


def restore_state(core, shell, data: bytes) -> None:
    state = load_state(data)
    core.restore(state["core"])
    shell.links_in = state["links_in"]
    shell.set_next_numbers(state["out"])
    for box in shell.sequenced_outboxes():
        box.seq.buffer.extend(state["resend"].get(box.link, ()))


class CoreRunner:
    def __init__(self, shell, core, process: Callable[[object, int], None],
                 conf: JournalConf) -> None:
        self.shell = shell
        self.core = core
        self.process = process
        self.conf = conf
        directory = shell.journal_dir()
        self.journal = Journal(
            directory, fsync=conf.fsync, segment_bytes=conf.segment_mb * 1024 * 1024,
            keep_snapshots=conf.keep_snapshots, clock_ns=time.monotonic_ns,
            deferred=getattr(shell, "holds_until_durable", False),
        ) if conf.enabled and directory is not None else None
        self._fsyncs: ThreadPoolExecutor | None = None
        if self.journal is not None and self.journal.deferred:
            self._fsyncs = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
            shell.durability = self  # the shell asks before anything leaves
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(JournalInbound).decode
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._child: int | None = None  # a snapshot being written
        self.recovered: dict = {}
        shell.runner = self
        # A hot standby (cluster/failover.py): this process streams to it, or follows it.
        self.repl = None
        topo = getattr(shell, "topo", None)
        node_conf = topo.nodes.get(shell.name) if topo is not None else None
        if self.journal is not None and node_conf is not None and node_conf.standby and \
                not getattr(shell, "offline", False):
            from cluster.failover import Replication
            self.repl = Replication(self, shell, topo)

    # ------------------------------------------------------------------ live inputs

    def on_runs(self, runs: list) -> None:
        """The inbox: [(header or None, messages)] as links_in applied them."""
        now = self.shell.now_ns()
        inputs: list = []
        for header, messages in runs:
            if header is not None:
                inputs.append(header)
            inputs.extend(messages)
        self._run(inputs, now)

    def on_messages(self, messages: list) -> None:
        """A subscription (marks): inputs that are not sequenced."""
        self._run(messages, self.shell.now_ns())

    def on_start(self, messages: list) -> None:
        """Inputs a node gives itself when it starts (the funding clock's start). An offline
        replay (`shell.offline`) has them in the journal already, so it does not add them."""
        if not getattr(self.shell, "offline", False) and \
                getattr(self.shell, "role", "primary") == "primary":
            self._run(messages, self.shell.now_ns())

    def _run(self, inputs: list, now: int) -> None:
        if self.repl is not None and getattr(self.shell, "role", "primary") != "primary":
            # A standby's inputs are its primary's, streamed under the primary's numbers. One of
            # its own (a stray inbox frame, a timer, its shell reading the key file) would take a
            # number the primary's stream needs: the stream's input at it would be skipped as
            # held, acknowledged all the same, and missing after a promotion.
            self.shell.stats["standby_dropped"] = self.shell.stats.get(
                "standby_dropped", 0) + len(inputs)
            return
        journal = self.journal
        audit = self.shell.audit
        process = self.process
        if journal is not None:
            encode = self._encode
            items = [(now, encode(msg)) for msg in inputs]
            seq = journal.append_batch(items)
            self._since_snapshot += len(inputs)
            if self.repl is not None:
                self.repl.stream(seq, items)
        else:
            seq = 0
        for msg in inputs:
            if seq:
                audit.input_seq = seq
                seq += 1
            if type(msg) is not LinkSeq:
                process(msg, now)
        audit.input_seq = 0

    # ------------------------------------------------------------------ durability (the shell's gate)

    def needs_sync(self) -> bool:
        """Inputs handled whose fsync has not started: their effects must wait for one."""
        return self.journal.unsynced

    def start_sync(self, on_durable: Callable[[], None]) -> None:
        """fsync what is written on the background thread; `on_durable` runs on the loop when
        it is on disk. An fsync that fails stops the node (its page cache cannot be trusted:
        the restart rebuilds from what the disk has)."""
        future, upto = self.journal.start_sync(self._fsyncs)
        loop = asyncio.get_running_loop()

        def finished(_future) -> None:
            try:
                self.journal.synced(upto)
            except OSError as exc:
                self.shell.log.critical("journal_fsync_failed", error=repr(exc), upto=upto)
                self.shell.exit_code = 70
                self.shell.stop()
                return
            if self.repl is not None:
                self.repl.after_durable(upto, on_durable)
            else:
                on_durable()

        asyncio.wrap_future(future, loop=loop).add_done_callback(finished)

    def sync_now(self) -> None:
        """Everything written on disk before returning (a stop: what is held may then leave)."""
        self.journal.sync()

    # ------------------------------------------------------------------ a standby's inputs

    def journal_replicated(self, items: list) -> int:
        """A batch its primary journaled: journal it under the same numbers (the caller fsyncs,
        once for what it drained, and acknowledges before it applies). Returns its first seq."""
        return self.journal.append_batch(items)

    def apply_replicated(self, seq: int, items: list) -> None:
        """Apply a journaled batch as a replay does (what it would send is numbered for resends,
        not sent; its explanations were written by the primary)."""
        shell = self.shell
        mark = shell.audit.mark()
        decode = self._decode
        links_in = shell.links_in
        audit = shell.audit
        try:
            for ts_ns, payload in items:
                msg = decode(payload)
                audit.input_seq = seq
                seq += 1
                if type(msg) is LinkSeq:
                    links_in.applied(msg)
                else:
                    self.process(msg, ts_ns)
        finally:  # (what a replay would send never leaves, even when it fails half-way)
            audit.input_seq = 0
            shell.replay_done(mark)
        self._since_snapshot += len(items)

    def restore_replicated(self, seq: int, ts_ns: int, state: bytes) -> None:
        """Start over from the primary's state after input `seq` (our journal diverged from its,
        or lacks what it pruned): our journal restarts there, with that snapshot."""
        restore_state(self.core, self.shell, state)
        self.journal.reset(seq)
        self.journal.write_snapshot(seq, ts_ns, state, prune=False)
        self._since_snapshot = 0

    # ------------------------------------------------------------------ recovery

    def recover(self) -> dict:
        """Restore the latest snapshot and replay the journal after it. Returns what was done
        (empty when there was nothing to recover)."""
        if self.journal is None:
            return {}
        started = time.monotonic()
        shell = self.shell
        mark = shell.audit.mark()
        snap = self.journal.latest_snapshot()
        after = 0
        if snap is not None:
            restore_state(self.core, shell, snap.payload)
            after = snap.seq
        replayed = 0
        links_in = shell.links_in
        repl = self.repl
        for frame in self.journal.read(after):
            msg = self._decode(frame.payload)
            if type(msg) is LinkSeq:
                links_in.applied(msg)
            else:
                self.process(msg, frame.ts_ns)
            replayed += 1
            if repl is not None:  # the latest inputs in memory: a standby catches up from them
                repl._remember(frame.seq, [(frame.ts_ns, frame.payload)])
        shell.replay_done(mark)
        if snap is None and not replayed:
            return {}
        self.recovered = {
            "snapshot_seq": after, "replayed": replayed, "input_seq": self.journal.next_seq - 1,
            "torn_tail_bytes": self.journal.torn.cut_bytes if self.journal.torn else 0,
            "ms": int((time.monotonic() - started) * 1000), "state_hash": self.core.state_hash(),
        }
        return self.recovered

    # ------------------------------------------------------------------ snapshots

    def maybe_snapshot(self) -> None:
        """A timer: reap a finished snapshot child; start one when enough has happened."""
        if self.journal is None:
            return
        if self._child is not None:
            pid, status = os.waitpid(self._child, os.WNOHANG)
            if pid == 0:
                return
            self._child = None
            if os.waitstatus_to_exitcode(status) == 0:
                self.journal.prune()
            else:
                self.shell.log.error("snapshot_failed", exit_code=os.waitstatus_to_exitcode(status))
        due = self._since_snapshot >= self.conf.snapshot_every or (
            self._since_snapshot and time.monotonic() - self._last_snapshot
            >= self.conf.snapshot_interval_s)
        if due and getattr(self.shell, "snapshot_safe", lambda: True)():
            self.snapshot()

    def snapshot(self, wait: bool = False) -> None:
        seq = self.journal.next_seq - 1
        self.journal.sync()  # the snapshot must never be ahead of the durable journal
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: a frozen copy of the state; pickle it, write it, leave
            code = 1
            try:
                self.journal.write_snapshot(seq, time.time_ns(), snapshot_state(self.core, self.shell),
                                            prune=False)
                code = 0
            finally:
                os._exit(code)
        self._child = pid
        if wait:
            while self._child is not None:
                self.maybe_snapshot()
                time.sleep(0.005)

    def close(self) -> None:
        if self._child is not None:
            os.waitpid(self._child, 0)
            self._child = None
        if self.journal is not None:
            self.journal.close()
        if self._fsyncs is not None:
            self._fsyncs.shutdown(wait=True)
