"""A hot standby for a journaled core (risk, matching), fenced by epochs.

Two processes run one core: "<node>" and "<node>.b". One is the primary: it journals its inputs
(cluster/runner.py) and streams every batch, as written, to the other over the replication link
(a ROUTER on each instance's `repl` endpoint; the standby connects a DEALER to the primary's).
The standby journals the same frames under the same sequence numbers and applies them to its
own core as a replay does (what it would send is numbered into the resend buffers, not sent), so
at every input sequence both hold the same state; it acknowledges what is on its disk.

When an effect leaves: the primary holds what a batch caused until the batch is on its own disk
and, while a standby is in sync, acknowledged by the standby too. So anything a client was told
is in two journals. A standby that is catching up (or gone) is not waited for: acknowledgements
then rest on the primary's disk alone, and the primary says so (`standby_detached`).

Promotion (the ZeroMQ guide's Binary Star, with the witness as the third vote): the standby
promotes itself when it has had no beat from the primary for `promote_after_ms` *and* the
witness (a client-facing node, the gateway by default) has not heard from the primary for
`witness_silence_ms` either. The witness grants each epoch once, and from then on refuses frames
of a lower epoch from that node. A partition between the pair alone therefore never makes two
primaries: the witness still hears the old one and says no.

Fencing: every frame on a sequenced link carries its sender's epoch. The new primary announces
itself (`PrimaryIs`) to every node, which send that node's inputs to it from then on and refuse
frames of an older epoch. The old primary, if it was only paused, wakes into a world where its
standby no longer acknowledges: its held effects wait, its ack timeout asks the witness which
epoch is current, and a higher one makes it drop everything it held (counted: `fenced_sends`)
and exit; the supervisor starts it again as the new standby, which catches up from the new
primary's journal, or from a snapshot of its state when the journals diverge.

Every promotion, detachment, fencing and catch-up is an explanation record (rule `failover.*`)
with the epoch, the input sequence and the time it took.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections import deque
from itertools import islice
from pathlib import Path

import msgspec
import zmq

from cluster.audit import Explanation
from cluster.protocol import (
    Codec, LinkSeq, PrimaryIs, ReplAck, ReplBatch, ReplBeat, ReplHello, ReplMsg, ReplRole,
    ReplSnapshot, StandbyDetached, WitnessQuery, WitnessReply,
)

CHUNK = 2000  # journal frames per catch-up message
DRAIN = 512  # replication messages handled per wake (then one fsync and one acknowledgement)
REATTACH_AFTER_S = 1.0  # a repeated hello sooner than this is not a new attach
RECENT_INPUTS = 100_000  # the primary keeps its latest inputs in memory for catching a standby up
HELLO_EVERY_S = 0.2
STARTUP_GRACE_S = 5.0
EPOCH_FILE = "epoch"
FENCED_EXIT = 75  # EX_TEMPFAIL: superseded, start me again (as a standby)


def other_instance(instance: str) -> str:
    node, _, b = instance.partition(".")
    return node if b else f"{node}.b"


def frame_mark(ts_ns: int, payload: bytes) -> int:
    """What identifies an input in a journal beside its number: two histories that diverged
    (a primary's unreplicated tail) differ here."""
    return zlib.crc32(payload, ts_ns & 0xFFFFFFFF)


def read_epoch(directory: Path) -> int:
    try:
        return int((directory / EPOCH_FILE).read_text())
    except (OSError, ValueError):
        return 0


def write_epoch(directory: Path, epoch: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (EPOCH_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(str(epoch))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / EPOCH_FILE)


class Replication:
    """One instance's side of the pair: streams and waits for acks as primary, follows and
    promotes as standby. Owned by the core's runner; the shell routes control messages here."""

    def __init__(self, runner, shell, topo) -> None:
        self.runner = runner
        self.shell = shell
        self.topo = topo
        self.conf = topo.failover
        self.node = shell.name
        self.instance = shell.instance
        self.other = other_instance(self.instance)
        self.log = shell.log
        self.journal = runner.journal
        directory = Path(shell.journal_dir())
        self.dir = directory
        stored = read_epoch(directory)
        if shell.role == "primary":
            self.epoch = max(stored, 1)
        else:
            self.epoch = stored
        write_epoch(directory, self.epoch)
        if shell.role == "primary":
            shell.set_epoch(self.epoch)
            shell.set_fence(self.node, self.epoch)
        self.codec = Codec(ReplMsg)
        # primary side
        self.recent: deque = deque(maxlen=RECENT_INPUTS)  # (ts_ns, payload) of the latest inputs
        self.recent_next = self.journal.next_seq  # the seq after recent[-1]
        self.standby_id: bytes | None = None
        self.standby_state = "none"  # none | catching_up | in_sync | detached
        self.attached_at = -1e9
        self.catch_up_target = 0
        self.catch_up_started = 0.0
        self.acked = 0  # the standby has every input below this on disk
        self.last_ack = 0.0
        self.waiters: deque = deque()  # (upto, callback, since)
        self.checking_since = 0.0  # a witness query about our epoch is out
        self.stepped_aside = False  # the witness is not heard: no beats (see _witness_lost)
        # standby side
        self.last_beat = 0.0
        self.primary_epoch = 0
        self.primary_seen = False
        self.proposed_at = 0.0
        self.proposed_epoch = 0  # the epoch our last promotion query asked for
        self.last_input_ts = 0
        self.synced = False  # our primary said we are in sync (it waits for our acks)
        self.ack_due = False  # journaled inputs not yet acknowledged
        self.unapplied: list[tuple[int, list]] = []  # (first seq, inputs) journaled, not applied
        self.last_mark: int | None = None  # frame_mark of our last journaled input
        self.applied_batches = 0
        self.started = time.monotonic()
        self.fenced = False
        stats = shell.stats
        stats["epoch"] = self.epoch
        stats["role_primary"] = 1 if shell.role == "primary" else 0
        for key in ("standby_lag_inputs", "standby_lag_ms", "fenced_sends", "promotions"):
            stats.setdefault(key, 0)
        self._router = None
        self._dealer = None
        shell.failover = self
        shell.background(self._serve)

    # ------------------------------------------------------------------ sockets

    def _sockets(self) -> None:
        shell = self.shell
        me = self.topo.instance_endpoints(self.instance).repl
        peer = self.topo.instance_endpoints(self.other).repl
        self._router = shell._socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        shell._serve_internal(self._router, only=(self.node,))  # the other instance alone
        self._router.bind(me)
        self._dealer = shell._socket(zmq.DEALER)
        shell._connect(self._dealer, peer)

    def _send_router(self, message) -> None:
        if self.standby_id is None or self.stepped_aside or \
                self._shaped(f"{self.instance}->{self.other}"):
            return
        try:
            self._router.send_multipart([self.standby_id, self.codec.encode([message])],
                                        zmq.NOBLOCK)
        except zmq.ZMQError:  # the standby's queue is full or it is gone: it will say hello
            self.shell.stats["repl_dropped"] = self.shell.stats.get("repl_dropped", 0) + 1

    def _send_dealer(self, message) -> None:
        if self._shaped(f"{self.instance}->{self.other}"):
            return  # netsim cut the pair's link (each side drops what it would send)
        try:
            self._dealer.send(self.codec.encode([message]), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _shaped(self, link: str) -> bool:
        """Is netsim's link between the pair (`risk->risk.b`, `risk.b->risk`) down? The
        replication link honours partitions only (it is not latency-shaped)."""
        shaper = self.shell.shaper
        found = shaper.get(link) if shaper is not None else None
        return found is not None and bool(found.settings.down)

    async def _serve(self) -> None:
        self._sockets()
        reader = asyncio.create_task(self._read(self._router, routed=True))
        follower = asyncio.create_task(self._read(self._dealer, routed=False))
        try:
            while True:
                await asyncio.sleep(self.conf.beat_ms / 1000)
                try:
                    self.tick()
                except Exception:
                    self.shell.stats["errors"] += 1
                    self.log.exception("failover_tick_failed")
                await self.shell.flush()
        finally:
            reader.cancel()
            follower.cancel()

    async def _read(self, sock, routed: bool) -> None:
        """Drain what the socket holds, handle it, then (a standby) one fsync and one ack for all
        of it: a group commit, so a standby keeps up with a primary that streams many small
        batches (one fsync per batch held the primary's every answer behind the standby's disk)."""
        decode = self.codec.decode
        while True:
            frames = [await sock.recv_multipart()]
            while len(frames) < DRAIN:
                try:
                    frames.append(await sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            for parts in frames:
                try:
                    messages = decode(parts[-1])
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.shell.stats["bad_frames"] += 1
                    continue
                for message in messages:
                    try:
                        if routed:
                            self.on_router(parts[0], message)
                        else:
                            self.on_dealer(message)
                    except Exception:
                        self.shell.stats["errors"] += 1
                        self.log.exception("failover_message_failed",
                                           message=type(message).__name__)
            if self.ack_due:
                self.ack_due = False
                if self.journal.policy != "off":  # (a benchmark's journal is never fsynced)
                    self.journal.sync()  # everything journaled above, on our disk, then said so
                self._send_dealer(ReplAck(instance=self.instance, epoch=self.epoch,
                                          next_seq=self.journal.next_seq))
            self.apply_journaled()  # (with no await since the ack: nothing sees it unapplied)
            await self.shell.flush()

    # ------------------------------------------------------------------ the timer

    def tick(self) -> None:
        if self.fenced:
            return
        now = time.monotonic()
        if self.shell.role == "primary":
            self._primary_tick(now)
        else:
            self._standby_tick(now)

    def _witness_lost(self) -> bool:
        """A primary that has not heard the witness (the gateway: its clients) for twice the
        witness's own silence threshold steps aside: it stops beating, so the standby, if the
        witness can still reach it, takes over. It goes on beating once it hears the witness."""
        heard = self.shell.last_heard_from(self.conf.witness)
        if not heard:
            return False  # not yet heard at all (a start): nothing to conclude
        lost = (time.monotonic_ns() - heard) // 1_000_000 > 2 * self.conf.witness_silence_ms
        if lost != self.stepped_aside:
            self.stepped_aside = lost
            self._explain("stepped_aside" if lost else "witness_heard_again", {
                "input_seq": self.journal.next_seq - 1,
                "witness_silent_ms": (time.monotonic_ns() - heard) // 1_000_000})
        return lost

    def _primary_tick(self, now: float) -> None:
        if self.standby_id is not None and self.standby_state != "detached" and \
                not self._witness_lost() and not self._shaped(f"{self.instance}->{self.other}"):
            self._send_router(ReplBeat(epoch=self.epoch, next_seq=self.journal.next_seq,
                                       in_sync=self.standby_state == "in_sync"))
        self.shell.stats["standby_in_sync"] = int(self.standby_state == "in_sync")
        lag = self.journal.next_seq - max(self.acked, 1) if self.standby_state != "none" else 0
        self.shell.stats["standby_lag_inputs"] = max(0, lag)
        oldest = self.waiters[0][2] if self.waiters else 0.0
        self.shell.stats["standby_lag_ms"] = int((now - oldest) * 1000) if oldest else 0
        if oldest and now - oldest >= self.conf.ack_timeout_ms / 1000:
            if not self.checking_since or now - self.checking_since >= self.conf.ack_timeout_ms / 1000:
                self.checking_since = now
                self.shell.send_control(self.conf.witness, WitnessQuery(
                    node=self.node, instance=self.instance, epoch=self.epoch, propose=False,
                    next_seq=self.journal.next_seq))

    def _standby_tick(self, now: float) -> None:
        if not self.primary_seen or now - self.last_beat >= HELLO_EVERY_S * 2:
            self._hello()
        silent = now - (self.last_beat or self.started)
        if self.primary_seen and not self.synced:
            # A standby still catching up may lack inputs whose effects its primary already let
            # out (it does not wait for a standby that is not in sync): it never takes over. If
            # the primary is gone, the primary comes back from its own journal instead.
            return
        # Never having heard a primary (a start, or both instances down) is not the same as
        # losing one: wait STARTUP_GRACE_S before asking to take over.
        wait = self.conf.promote_after_ms / 1000 if self.primary_seen else max(
            STARTUP_GRACE_S, 5 * self.conf.promote_after_ms / 1000)
        if silent >= wait and now - self.proposed_at >= 0.2:
            self.proposed_at = now
            self.proposed_epoch = max(self.epoch, self.primary_epoch) + 1
            self.shell.send_control(self.conf.witness, WitnessQuery(
                node=self.node, instance=self.instance, epoch=self.proposed_epoch,
                propose=True, next_seq=self.journal.next_seq))

    def _hello(self) -> None:
        if self.last_mark is None:
            frame = self._frame(self.journal.next_seq - 1) if self.journal.next_seq > 1 else None
            self.last_mark = frame_mark(*frame) if frame is not None else 0
        last = self.last_mark
        self._send_dealer(ReplHello(instance=self.instance, epoch=self.epoch,
                                    next_seq=self.journal.next_seq, last_crc=last))

    def _frame(self, seq: int):
        """Input `seq` as (ts_ns, payload), from memory (None when it is not there: the journal
        is never scanned on the node's loop; a standby that far behind gets our state)."""
        oldest = self.recent_next - len(self.recent)
        return self.recent[seq - oldest] if oldest <= seq < self.recent_next else None

    # ------------------------------------------------------------------ primary

    def _recent_from(self, seq: int) -> list | None:
        """Our inputs from `seq` on, from memory (None: not all of them are there)."""
        oldest = self.recent_next - len(self.recent)
        if seq < oldest or seq > self.recent_next:
            return None
        return list(islice(self.recent, seq - oldest, None))

    def _remember(self, first: int, items: list) -> None:
        if first != self.recent_next:
            self.recent.clear()  # (a gap in what we kept: start the memory again here)
        self.recent.extend(items)
        self.recent_next = first + len(items)

    def stream(self, first: int, items: list) -> None:
        """A batch just journaled: to the standby, as written (and kept for catch-ups)."""
        self._remember(first, items)
        if self.standby_id is None or self.standby_state in ("none", "detached"):
            return
        if self.stepped_aside or self._shaped(f"{self.instance}->{self.other}"):
            return
        self._send_router(ReplBatch(epoch=self.epoch, first=first, items=items))

    def after_durable(self, upto: int, release) -> None:
        """The primary's fsync covering inputs up to `upto` finished: release what they caused
        now, or once the standby in sync has them too."""
        if self.standby_state != "in_sync" or self.acked > upto:
            release()
            return
        self.waiters.append((upto, release, time.monotonic()))

    def _release(self, upto_exclusive: int | None) -> None:
        waiters = self.waiters
        while waiters and (upto_exclusive is None or waiters[0][0] < upto_exclusive):
            waiters.popleft()[1]()
        if not waiters:
            self.checking_since = 0.0

    def on_router(self, identity: bytes, msg) -> None:
        t = type(msg)
        if t is ReplHello:
            if msg.epoch > self.epoch:
                self.fence(f"the other instance is at epoch {msg.epoch}", msg.epoch)
                return
            if self.stepped_aside:
                return  # no witness: let the standby take over if the witness can reach it
            if self.shell.role != "primary":
                self._router_reply(identity, ReplRole(instance=self.instance, role=self.shell.role,
                                                     epoch=self.epoch, next_seq=self.journal.next_seq))
                return
            self._attach(identity, msg)
        elif t is ReplAck and self.shell.role == "primary":
            if identity != self.standby_id or msg.next_seq > self.journal.next_seq:
                # not our standby's, or acknowledging inputs we never wrote: never counted
                self.shell.stats["acks_refused"] = self.shell.stats.get("acks_refused", 0) + 1
                return
            if msg.epoch > self.epoch:
                self.fence(f"the standby acknowledged under epoch {msg.epoch}", msg.epoch)
                return
            self.acked = max(self.acked, msg.next_seq)
            self.last_ack = time.monotonic()
            if self.standby_state == "catching_up" and self.acked >= self.catch_up_target:
                self.standby_state = "in_sync"
                took = int((time.monotonic() - self.catch_up_started) * 1000)
                self._explain("standby_in_sync", {"input_seq": self.acked - 1, "catch_up_ms": took,
                                                  "standby": msg.instance})
            self._release(self.acked)

    def _router_reply(self, identity: bytes, message) -> None:
        if self._shaped(f"{self.instance}->{self.other}"):
            return
        try:
            self._router.send_multipart([identity, self.codec.encode([message])], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _attach(self, identity: bytes, hello: ReplHello) -> None:
        """A standby said hello: stream it what it lacks (from our journal, or our state when
        the journals diverged or ours no longer reaches back that far), then live batches."""
        # (A hello while we stream means the standby hears no beats or lost frames, e.g. across
        # a cut of the pair's link: start again from where it says it is; it skips repeats.)
        started = time.monotonic()
        if identity == self.standby_id and started - self.attached_at < REATTACH_AFTER_S and \
                self.standby_state != "detached":
            return  # a hello sent before our stream reached it: the stream is on its way
        journal = self.journal
        self.standby_id = identity
        self.standby_state = "catching_up"
        self.catch_up_started = started
        self.catch_up_target = journal.next_seq
        start = hello.next_seq
        self.acked = min(start, journal.next_seq)
        resync = start > journal.next_seq
        if not resync and start > 1:
            frame = self._frame(start - 1)
            resync = frame is None or frame_mark(*frame) != hello.last_crc
        sent = 0
        held = None if resync else self._recent_from(start)
        if held is None or self.recent_next != journal.next_seq:
            resync = True  # not all in memory: our state instead (never a journal scan here)
        else:
            for first in range(0, len(held), CHUNK):
                part = held[first:first + CHUNK]
                self._send_router(ReplBatch(epoch=self.epoch, first=start + first, items=part))
                sent += len(part)
        if resync and not self.shell.snapshot_safe():
            self.standby_state = "none"  # mid-release: our numbering is not describable; the
            self.standby_id = None  # standby says hello again in a moment
            return
        if resync:
            from cluster.runner import snapshot_state
            seq = journal.next_seq - 1
            state = snapshot_state(self.runner.core, self.shell)
            self._send_router(ReplSnapshot(epoch=self.epoch, seq=seq, ts_ns=time.time_ns(),
                                           state=state))
        self._explain("standby_attached", {
            "standby": hello.instance, "from_seq": start, "to_seq": journal.next_seq - 1,
            "by": "snapshot" if resync else "journal", "frames": sent,
            "ms": int((time.monotonic() - started) * 1000)})
        if journal.next_seq == start and not resync:
            self.standby_state = "in_sync"
        self.attached_at = time.monotonic()

    def on_witness(self, reply: WitnessReply) -> None:
        """The witness's answer: to our promotion (standby) or about our epoch (primary). Only
        an answer about this node counts, and a grant only for the epoch we asked for while we
        may take over (in sync, or never having heard a primary)."""
        if self.fenced or reply.node != self.node:
            return
        if self.shell.role == "primary":
            if not self.checking_since:
                return
            if reply.epoch > self.epoch:
                self.fence(f"the witness knows epoch {reply.epoch}", reply.epoch)
                return
            self._detach(reply)
            return
        if not reply.granted:
            self.shell.stats["promotions_refused"] = self.shell.stats.get(
                "promotions_refused", 0) + 1
            if reply.epoch > self.primary_epoch:
                self.primary_epoch = reply.epoch
            return
        if reply.epoch != self.proposed_epoch or (self.primary_seen and not self.synced):
            self.shell.stats["grants_unasked"] = self.shell.stats.get("grants_unasked", 0) + 1
            return
        self.promote(reply)

    def _detach(self, reply: WitnessReply) -> None:
        """Our standby has not acknowledged for ack_timeout_ms and we are still the primary:
        go on alone (acknowledged on our disk only), and tell the witness how far we are, so
        that it will not promote a standby that lacks these inputs."""
        waited = int((time.monotonic() - self.waiters[0][2]) * 1000) if self.waiters else 0
        self.standby_state = "detached"
        self.standby_id = None
        self.shell.send_control(self.conf.witness, StandbyDetached(
            node=self.node, epoch=self.epoch, next_seq=self.journal.next_seq))
        self._explain("standby_detached", {"input_seq": self.journal.next_seq - 1,
                                           "acked_seq": self.acked - 1, "waited_ms": waited,
                                           "witness_silent_ms": reply.silent_ms})
        self.shell.stats["detachments"] = self.shell.stats.get("detachments", 0) + 1
        self._release(None)

    # ------------------------------------------------------------------ standby

    def on_dealer(self, msg) -> None:
        t = type(msg)
        if self.shell.role == "primary":
            if t in (ReplBatch, ReplBeat, ReplSnapshot) and msg.epoch > self.epoch:
                self.fence(f"another primary streams under epoch {msg.epoch}", msg.epoch)
            elif t in (ReplBatch, ReplBeat, ReplSnapshot):
                # a superseded primary still streaming to us: say who we are
                self._send_dealer(ReplRole(instance=self.instance, role="primary",
                                           epoch=self.epoch, next_seq=self.journal.next_seq))
            return
        if t is ReplRole:
            if msg.role == "primary" and msg.epoch > self.epoch:
                self.primary_epoch = msg.epoch
            return
        if msg.epoch < max(self.epoch, self.primary_epoch):
            self.shell.stats["fenced_frames"] = self.shell.stats.get("fenced_frames", 0) + 1
            return
        self.primary_epoch = msg.epoch
        if msg.epoch > self.epoch:
            self.epoch = msg.epoch
            write_epoch(self.dir, self.epoch)
            self.shell.stats["epoch"] = self.epoch
        self.last_beat = time.monotonic()
        self.primary_seen = True
        self.shell.stats["repl_in"] = self.shell.stats.get("repl_in", 0) + 1
        if t is ReplBeat:
            self.synced = msg.in_sync
            self.shell.stats["standby_in_sync"] = int(msg.in_sync)
        if t is ReplBatch:
            self._journal(msg)
        elif t is ReplSnapshot:
            self.apply_journaled()
            self._restore(msg)
        elif t is ReplBeat and msg.next_seq > self.journal.next_seq + 0 and not self.applied_batches:
            self._hello()  # we are behind and nothing is streaming: ask

    def apply_journaled(self) -> None:
        """Apply what the drain journaled. The acknowledgement goes first: it says the inputs are
        on our disk (all a failover needs: a standby applies its journal before it serves), and
        the primary, which holds its answers until then, need not also wait for our apply."""
        pending, self.unapplied = self.unapplied, []
        for seq, items in pending:
            try:
                self.runner.apply_replicated(seq, items)
            except Exception:
                # Acknowledged and on our disk, but not in our state: this process must not go
                # on (nor be promoted) with a state behind its journal. Its restart replays them.
                self.log.exception("standby_apply_failed", first_seq=seq, inputs=len(items))
                self.synced = False
                self.shell.exit_code = 70
                self.shell.stop()
                return

    def _journal(self, batch: ReplBatch) -> None:
        journal = self.journal
        items = batch.items
        if batch.first > journal.next_seq:
            self._hello()  # a gap (lost while the link was cut): ask from where we are
            return
        skip = journal.next_seq - batch.first
        if skip >= len(items):
            return
        if skip:
            items = items[skip:]
        first = journal.next_seq
        self.unapplied.append((self.runner.journal_replicated(items), items))
        self._remember(first, items)  # (promoted, we catch our own next standby up from memory)
        self.applied_batches += 1
        self.last_input_ts = items[-1][0]
        self.last_mark = frame_mark(*items[-1])
        self.ack_due = True  # (after the drain: one fsync, one ack)

    def _restore(self, snap: ReplSnapshot) -> None:
        started = time.monotonic()
        self.runner.restore_replicated(snap.seq, snap.ts_ns, snap.state)
        self.last_mark = None  # (the snapshot has no frame: a later hello reads none and resyncs)
        self._explain("standby_resynced", {"input_seq": snap.seq,
                                           "ms": int((time.monotonic() - started) * 1000),
                                           "state_bytes": len(snap.state)})
        self._send_dealer(ReplAck(instance=self.instance, epoch=self.epoch,
                                  next_seq=self.journal.next_seq))

    def promote(self, reply: WitnessReply) -> None:
        now = time.monotonic()
        silent_ms = int((now - (self.last_beat or self.started)) * 1000)
        self.apply_journaled()  # (empty: the drain applies before it awaits; kept as the rule)
        self.epoch = reply.epoch
        write_epoch(self.dir, self.epoch)
        self.standby_state = "none"
        self.standby_id = None
        self.shell.promote(self.epoch)
        self.shell.stats.update(epoch=self.epoch, role_primary=1)
        self.shell.stats["promotions"] = self.shell.stats.get("promotions", 0) + 1
        self.announce()
        self._explain("promoted", {
            "input_seq": self.journal.next_seq - 1, "beat_silence_ms": silent_ms,
            "witness": self.conf.witness, "witness_silent_ms": reply.silent_ms,
            "last_input_ts_ns": self.last_input_ts, "promoted_ts_ns": time.time_ns()})
        self.shell.every_now(self.conf.announce_ms, self.announce)

    def announce(self) -> None:
        """Tell every other process where this node's inputs go now (repeated: a node that
        restarts, or missed it, learns it within announce_ms)."""
        if self.shell.role != "primary" or self.fenced:
            return
        message = PrimaryIs(node=self.node, instance=self.instance, epoch=self.epoch,
                            next_seq=self.journal.next_seq)
        for name in self.topo.nodes:
            for instance in self.topo.instances(name):
                if instance != self.instance:
                    self.shell.send_control(instance, message)

    # ------------------------------------------------------------------ fencing

    def on_primary_is(self, msg: PrimaryIs) -> None:
        if msg.node != self.node or msg.instance == self.instance:
            return
        if msg.epoch > self.epoch and self.shell.role == "primary":
            self.fence(f"{msg.instance} is primary at epoch {msg.epoch}", msg.epoch)
        elif msg.epoch >= self.primary_epoch and self.shell.role != "primary":
            self.primary_epoch = msg.epoch

    def fence(self, why: str, epoch: int) -> None:
        """Superseded: nothing more leaves this process. What it held is dropped (its inputs are
        not acknowledged: the new primary has them, or the client learns the outcome from it)."""
        if self.fenced:
            return
        self.fenced = True
        dropped = self.shell.fence()
        self.shell.stats["fenced_sends"] = self.shell.stats.get("fenced_sends", 0) + dropped
        self._explain("fenced", {"epoch": self.epoch, "new_epoch": epoch, "why": why,
                                 "refused_sends": dropped,
                                 "input_seq": self.journal.next_seq - 1})
        self.shell.audit.flush()
        self.log.warning("fenced", epoch=self.epoch, new_epoch=epoch, why=why,
                         refused_sends=dropped)
        self.shell.exit_code = FENCED_EXIT
        self.shell.stop()

    def _explain(self, what: str, numbers: dict) -> None:
        numbers = {"epoch": self.epoch, "instance": self.instance, **numbers}
        self.shell.audit.record(Explanation(
            ts_ns=time.time_ns(), node=self.node, rule=f"failover.{what}", subject=self.instance,
            decision=what, numbers={k: v if isinstance(v, int) else str(v)
                                    for k, v in numbers.items()}))
        self.log.info(f"failover_{what}", **numbers)


class Witness:
    """The third vote, in a client-facing node's shell: grants a standby's promotion only when
    this node has not heard the primary for `witness_silence_ms` either, each epoch once; then
    refuses frames of older epochs from that node (the shell's fence)."""

    def __init__(self, shell, topo) -> None:
        self.shell = shell
        self.conf = topo.failover
        self.detached_at: dict[str, int] = {}
        self.started_ns = time.monotonic_ns()

    def silent_ms(self, node: str) -> int:
        heard = self.shell.last_heard_from(node) or self.started_ns  # never: since we started
        return (time.monotonic_ns() - heard) // 1_000_000

    def on_query(self, q: WitnessQuery) -> None:
        shell = self.shell
        known = shell.known_epoch(q.node)
        silent = self.silent_ms(q.node)
        granted, reason = False, ""
        if q.propose:
            if q.epoch <= known:
                reason = "epoch_not_newer"
            elif silent < self.conf.witness_silence_ms:
                reason = "primary_heard"
            elif q.next_seq < self.detached_at.get(q.node, 0):
                reason = "standby_behind"
            else:
                granted = True
                shell.set_fence(q.node, q.epoch)
                self.detached_at.pop(q.node, None)
                known = q.epoch
            shell.audit.record(Explanation(
                ts_ns=time.time_ns(), node=shell.name, rule="failover.witness",
                subject=q.instance, decision="granted" if granted else "refused",
                numbers={"node": q.node, "epoch": q.epoch, "known_epoch": known,
                         "silent_ms": silent, "silence_needed_ms": self.conf.witness_silence_ms,
                         "standby_next_seq": q.next_seq, "reason": reason or "granted"}))
        shell.send_control(q.instance, WitnessReply(node=q.node, granted=granted, epoch=known,
                                                    silent_ms=min(silent, 1 << 30), reason=reason))

    def on_detached(self, msg: StandbyDetached) -> None:
        if msg.epoch >= self.shell.known_epoch(msg.node):
            self.detached_at[msg.node] = max(self.detached_at.get(msg.node, 0), msg.next_seq)


def control_frame(link: str, epoch: int, message) -> list:
    return [LinkSeq(link=link, epoch=epoch), message]
