"""The one node shell every perpx process runs in: uvloop + pyzmq, drain-mode receive, batching.

Receive: recv with NOBLOCK until EAGAIN (up to MAX_BATCH frames), hand the whole batch to the node,
then flush every output once; only when a socket is empty do we await its readiness. One await per
message is ~10x slower on this host class (PERF-NOTES.md).

Send: outputs are queued per destination during a batch and leave as one frame per destination (a
msgpack array of messages), so a busy node answers ten messages with one frame.

The shell owns IO, clocks and signals; the node's logic gets decoded messages and `now` values.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from cluster import curve, senders
from cluster.audit import AuditJournal, Explanation
from cluster.config import JOURNALED_NODES, Topology
from cluster.logs import configure
from cluster.links import LinkReceiver, LinkSender
from cluster.stats import labeled, power_of_two_keys
from cluster.protocol import (
    Codec, Heartbeat, LinkSeq, NetsimTable, NodeInbound, PrimaryIs, Ready, ResendFrom,
    StandbyDetached, WitnessQuery, WitnessReply, encode_one, wire_safe,
)
from netsim.shaper import PUB_LINKS, Shaper

MAX_BATCH = 512
BATCH_KEYS = power_of_two_keys("batch_frames", MAX_BATCH)  # cluster/stats.py
HWM = 100_000
BACKSTOP_MS = 20
# The journaled cores (cluster/runner.py). Every link from or to one is sequenced (cluster/links.py);
# a core's own numbering survives its restarts (it replays what it sent), the others' starts again.
CORES = JOURNALED_NODES
# An idle sequenced link announces its next number this often; it is also how a failover witness
# hears an idle primary (its silence threshold must be well above this).
LINK_IDLE_S = 0.2

# The hot path calls pyzmq's Cython socket methods directly, with int flags. Its convenience layer
# costs more than the IO on this path: send() checks routing ids and groups, send_multipart()
# type-checks every part and ORs enum flags (~400 ns), recv_multipart() asks RCVMORE through
# getsockopt(), which builds a SocketOption enum (~500 ns) per part. Measured per client message:
# ROUTER receive 1,670 -> 740 ns, ROUTER reply 1,800 -> 330 ns.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
NOBLOCK = int(zmq.NOBLOCK)
MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
SRCFD = int(zmq.SRCFD)
USER_ID = "User-Id"
# A reader kind (beside "multipart" True/False): single-part frames read with their sender's role
SENDER = "sender"
PEER_SWEEP_MS = 1000  # disconnects are also read before every batch; this catches idle periods


def send_parts(sock: zmq.Socket, parts: list) -> None:
    """A multipart message without blocking; zmq.Again / ZMQError come from the first part, so a
    refused message is never half sent."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        _send(sock, part, NOBLOCK if i == last else MORE_NOBLOCK)


def recv_parts(sock: zmq.Socket, first_has_more: bool = False) -> list[bytes]:
    """One multipart message without blocking (zmq.Again when none is queued). Parts are read as
    frames only to learn which is the last; a ROUTER's first part (the peer's identity) always has
    more, so it is read plainly."""
    parts = []
    if first_has_more:
        parts.append(_recv(sock, NOBLOCK))
    while True:
        frame = _recv(sock, NOBLOCK, False)
        parts.append(frame.bytes)
        if not frame.more:
            return parts


def recv_with_sender(sock: zmq.Socket) -> tuple[bytes, str]:
    """One single-part frame and who sent it: the role its CURVE key belongs to, which the ZAP
    handler gave the connection as its User-Id (cluster/curve.py), or "" on a plain socket."""
    frame = _recv(sock, NOBLOCK, False)
    return frame.bytes, frame.get(USER_ID) or ""


def recv_unauthenticated(sock: zmq.Socket) -> tuple[bytes, str]:
    """recv_with_sender on a plain socket (CURVE off): no role to read."""
    return _recv(sock, NOBLOCK), ""


def recv_router_parts(sock: zmq.Socket, peers: dict, by_fd: dict,
                      sweep: Callable[[], None]) -> list[bytes]:
    """recv_parts for a ROUTER whose peers are tracked: the first time an identity is seen, its
    connection's address and file descriptor are read from the frame (libzmq's metadata), so that
    the disconnect (a monitor event naming the fd) can be mapped back to the identity.

    The fd may be one a closed connection had: libzmq queues that connection's disconnect event
    before it closes the fd, so `sweep` (reading the pending disconnects) runs first."""
    identity = _recv(sock, NOBLOCK)
    parts = [identity]
    while True:
        frame = _recv(sock, NOBLOCK, False)
        parts.append(frame.bytes)
        if identity not in peers:
            sweep()
            fd = frame.get(SRCFD)
            peers[identity] = (frame.get("Peer-Address") or "local", fd)
            by_fd[fd] = identity
        if not frame.more:
            return parts


class Readiness:
    """Waits for a drained socket to have input again, on the event loop's own reader for the
    socket's ZMQ_FD. pyzmq's `await sock.poll()` cost ~47 us of CPU per wake-up here (futures,
    a Poller, its event bookkeeping), against ~24 us this way; at moderate load a node wakes for
    every few messages, so that was most of its CPU.

    ZMQ_FD only says the socket's state may have changed: libzmq clears it when it processes
    commands (any recv, send or EVENTS query), so `wait` first asks EVENTS. The reader stays
    registered (no epoll_ctl per wake-up): the FD can only stay readable while the drain loop is
    between its last recv and its next `wait`, which yields to the loop only after a full batch
    or for a full outbox. A send on the same socket may consume the signal the waiter needs:
    `poke` re-checks.
    """

    __slots__ = ("sync", "fd", "loop", "waiter")

    def __init__(self, sync: zmq.Socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sync = sync
        self.fd = sync.getsockopt(zmq.FD)
        self.loop = loop
        self.waiter: asyncio.Future | None = None
        loop.add_reader(self.fd, self._wake)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    poke = _wake

    async def wait(self, timeout_s: float | None) -> None:
        if self.sync.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        loop = self.loop
        self.waiter = loop.create_future()
        backstop = loop.call_later(timeout_s, self._wake) if timeout_s else None
        try:
            await self.waiter
        finally:
            if backstop is not None:
                backstop.cancel()
            self.waiter = None


class Outbox:
    """Messages for one PUSH/PUB destination, sent as one frame at flush. `link` is its netsim name."""

    __slots__ = ("sock", "sync", "pending", "topic", "link", "seq", "control", "sent", "endpoint",
                 "shape_link")

    def __init__(self, sock: zmq.asyncio.Socket, link: str, topic: bytes | None = None,
                 seq: LinkSender | None = None, endpoint: str = "") -> None:
        self.endpoint = endpoint  # a PUSH's peer (moved when a core's primary changes)
        self.sock = sock
        self.sync = zmq.Socket.shadow(sock.underlying)
        self.pending: list = []
        self.topic = topic
        self.link = link
        self.shape_link = link  # netsim's name: the processes at its ends (a standby's differs)
        self.seq = seq  # the link's numbering, when it is sequenced
        self.control: list = []  # messages outside the sequence (ResendFrom), sent at flush
        self.sent = False  # a numbered frame left since the last idle announcement

    def try_send(self, frame: bytes) -> bool:
        """Send without blocking. False when a PUSH peer's queue is full (the caller must wait:
        never drop); a PUB drops for slow subscribers by design and counts as sent."""
        try:
            if self.topic is None:
                _send(self.sync, frame, NOBLOCK)
            else:
                _send(self.sync, self.topic, MORE_NOBLOCK)  # PUB: never Again, so never half sent
                _send(self.sync, frame, NOBLOCK)
        except zmq.Again:
            return self.topic is not None
        return True

    def send_now(self, frame: bytes) -> None:
        """Send one frame when netsim delivers it (a callback: it cannot await)."""
        if not self.try_send(frame):
            asyncio.ensure_future(self.sock.send(frame))


class NodeShell:
    holds_until_durable = True  # flush() holds a journaled core's effects until their fsync

    def __init__(self, name: str, topo: Topology, *, log_dir: str | None = None,
                 instance: str | None = None) -> None:
        self.name = name
        # The process: the node itself, or its hot standby "<name>.b" (cluster/failover.py), which
        # binds its own endpoints and keeps its own journal, audit file and log.
        self.instance = instance or name
        self.topo = topo
        self.conf = topo.instance_endpoints(self.instance) if name in topo.nodes else None
        self.ctx = zmq.asyncio.Context()
        self.log = configure(self.instance, log_dir if log_dir is not None else topo.log_dir)
        self.audit = AuditJournal(os.path.join(topo.run_dir, "audit", f"{self.instance}.jsonl"))
        self.codec = Codec(NodeInbound)
        self.stats: dict[str, int] = {"frames_in": 0, "msgs_in": 0, "bad_frames": 0, "errors": 0}
        # (socket, multipart: True / False / SENDER, handler)
        self._readers: list[tuple[zmq.asyncio.Socket, bool | str, Callable[[list], None]]] = []
        self._outboxes: dict[str, Outbox] = {}
        self._pubs: dict[bytes, Outbox] = {}
        self._pub_sock: zmq.asyncio.Socket | None = None
        self._pub_sync: zmq.Socket | None = None
        # name -> (socket, its sync shadow, pending replies, on_gone callback or None)
        self._routers: dict[str, tuple[zmq.asyncio.Socket, zmq.Socket, list, Callable | None]] = {}
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._background: list[Callable[[], Awaitable]] = []  # a node's own servers (the REST facade)
        self._sockets: list[zmq.asyncio.Socket] = []
        self._stop: asyncio.Event | None = None  # created in run(), inside the loop
        self._dirty = False
        # A journaled core's gate (cluster/runner.py): while inputs it handled are not yet on disk,
        # what they caused is held here, and leaves when the fsync covering them has finished.
        self.durability = None
        self._sync_state = "idle"  # idle | syncing (outputs held) | synced (to release) | releasing
        self._held: list[tuple[Outbox, list]] = []
        self._held_replies: list[tuple[str, list]] = []
        self._audit_failing = False
        self.exit_code = 0  # EX_SOFTWARE (70) when a node task died: the process says it failed
        self.restarted = False  # started again by the supervisor while the cluster ran
        self._readiness: dict[zmq.asyncio.Socket, Readiness] = {}  # drained socket -> its waiter
        # A tracked ROUTER's peers: identity -> (address, fd), fd -> identity, and the monitor
        # socket that says which fd closed (client sessions are released when they close).
        self.router_peers: dict[bytes, tuple[str, int]] = {}
        self._peer_fds: dict[int, bytes] = {}
        self._peer_monitor: tuple[zmq.Socket, Callable[[bytes], None] | None] | None = None
        # netsim: None when the network simulator is compiled out (PERPX_NETSIM=off)
        self.netsim_enabled = os.environ.get("PERPX_NETSIM", "on") != "off" and bool(
            topo.supervisor.netsim)
        self.shaper: Shaper | None = None
        self._shaping_errors: set[tuple[str, int]] = set()
        self._skew_ns = 0
        # Sequenced links (cluster/links.py): what arrived on each, and this process's incarnation
        # for the links it numbers afresh at every start (a core's own numbering survives).
        self.links_in = LinkReceiver(journaled=name in CORES)
        # CurveZMQ on the internal links (cluster/curve.py): the ZAP handler is bound before any
        # server socket, so no handshake is ever accepted unchecked.
        self.keyring = curve.load(topo, name)
        self._zap: curve.ZapHandler | None = None
        if self.keyring is not None:
            self._zap = curve.ZapHandler(self.ctx, self.keyring, self.log, self.stats)
            self._sockets.append(self._zap.sock)
            self._background.append(self._zap.serve)
        self._announcing = False
        self.incarnation = 0 if name in CORES else time.time_ns()
        # Failover (cluster/failover.py). A core with a standby is "primary" or "standby"; a
        # standby binds its inbox but reads no input, subscribes to nothing and runs no timer
        # until promoted. Every node keeps, per core, the epoch it knows as current (frames of
        # an older one are refused) and when it last heard each sequenced link (a witness asks).
        self.role = "primary"
        self.epoch = 0
        self.failover = None  # this core's Replication
        self.witness = None  # failover.Witness, in the witness node
        self._fences: dict[str, int] = {}  # core -> current epoch
        # messages per sequenced link, in and out (labelled stats: cluster/stats.py), keys made once
        self._link_keys: dict[tuple[str, str], str] = {}
        self._refusals_said: set[tuple[str, int]] = set()
        self._refused_by: dict[tuple[str, str], int] = {}  # (sender, reason) -> frames refused
        self.last_heard: dict[str, int] = {}  # sequenced link -> monotonic ns of its last frame
        self._deferred: list[tuple[zmq.Socket, str]] = []  # a standby's subscriptions
        self._controls: dict[str, zmq.Socket] = {}  # endpoint -> its control PUSH (sync shadow)
        self._fenced = False
        self._first_output_logged = True
        if any(n.standby for n in topo.nodes.values()) and name == topo.failover.witness:
            from cluster.failover import Witness
            self.witness = Witness(self, topo)

    # ------------------------------------------------------------------ clocks

    def now_ns(self) -> int:
        """Wall clock for the cores, plus any clock skew netsim injects into this node."""
        return time.time_ns() + self._skew_ns

    @staticmethod
    def mono_ns() -> int:
        return time.monotonic_ns()

    # ------------------------------------------------------------------ sockets

    def _serve_internal(self, sock: zmq.Socket, only: tuple[str, ...] = ()) -> None:
        """An internal server socket: CURVE with this node's key, when the run has it on (with
        `only`: those roles' keys alone may connect)."""
        if self.keyring is not None:
            self.keyring.server(sock, only=only)

    def _connect(self, sock: zmq.Socket, endpoint: str) -> None:
        """Connect; to an internal endpoint with CURVE (this node's key, the server's)."""
        if self.keyring is not None:
            self.keyring.client(sock, endpoint)
        sock.connect(endpoint)

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 500)
        if kind in (zmq.PUSH, zmq.PUB, zmq.ROUTER, zmq.DEALER):
            sock.setsockopt(zmq.SNDHWM, HWM)
        if kind in (zmq.PULL, zmq.SUB, zmq.ROUTER, zmq.DEALER):
            sock.setsockopt(zmq.RCVHWM, HWM)
        self._sockets.append(sock)
        return sock

    def bind_inbox(self, on_messages: Callable[[list], None], runs: bool = False) -> None:
        """PULL on this node's inbox; frames are batches of NodeInbound messages. A frame on a
        sequenced link is applied once and in order (cluster/links.py). With `runs`, the handler
        gets [(header, messages)] per frame, the header saying which numbers were applied (None
        for a frame that is not sequenced): what a journaled core records to replay them."""
        sock = self._socket(zmq.PULL)
        self._serve_internal(sock)
        sock.bind(self.conf.inbox)
        self._readers.append((sock, SENDER, self._inbox_decoding(on_messages, runs)))

    def subscribe(self, endpoint: str, topics: list[bytes], on_messages: Callable[[list], None],
                  raw: Callable[[list], None] | None = None, always: bool = False) -> None:
        """SUB to a publisher. Frames are [topic, batch]; `raw` gets the frames undecoded."""
        sock = self._socket(zmq.SUB)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        # A core with a standby publishes from whichever instance is primary: hear both.
        endpoints = [endpoint] + [n.standby_pub for n in self.topo.nodes.values()
                                  if n.standby and n.pub == endpoint and n.standby_pub] + [
            n.standby_private for n in self.topo.nodes.values()
            if n.standby and n.private == endpoint and n.standby_private]
        for each in endpoints:
            if self.role == "standby" and not always:
                self._deferred.append((sock, each))  # a standby hears nothing until promoted
            else:
                self._connect(sock, each)
        if raw is not None:
            self._readers.append((sock, True, raw))
        else:
            self._readers.append((sock, True, self._decoding(on_messages, multipart=True)))

    def bind_router(self, name: str, endpoint: str, on_frames: Callable[[list], None],
                    on_gone: Callable[[bytes], None] | None = None,
                    max_message: int = -1, track_peers: bool = False,
                    curve_clients: bool = False) -> None:
        """A ROUTER for client sessions; `on_frames` gets [identity, payload] lists, `on_gone` the
        identity of a peer that has disconnected (learnt when a reply to it cannot be routed,
        and, with `track_peers`, when its connection closes). A peer that sends a message over
        `max_message` bytes is disconnected by libzmq. With `track_peers` (one ROUTER per node),
        `router_peers` gives each identity's address."""
        sock = self._socket(zmq.ROUTER)
        if curve_clients and self.keyring is not None:  # CurveZMQ, any client's key
            self.keyring.server(sock, clients=True)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable replies raise instead of vanishing
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        handler = self._shaped_inbound(f"client->{self.name}", on_frames)
        if track_peers:
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._sockets.append(monitor)
            self._peer_monitor = (zmq.Socket.shadow(monitor.underlying), on_gone)
            self.every(PEER_SWEEP_MS, self.sweep_closed_peers)
        sock.bind(endpoint)
        self._routers[name] = (sock, zmq.Socket.shadow(sock.underlying), [], on_gone)
        self._readers.append((sock, True, handler))

    def bind_pub(self, endpoint: str) -> None:
        self._pub_sock = self._socket(zmq.PUB)
        if self.name != "gateway":  # the gateway's is market data, for clients
            self._serve_internal(self._pub_sock)
        self._pub_sock.bind(endpoint)
        self._pub_sync = zmq.Socket.shadow(self._pub_sock.underlying)

    def bind_private_pub(self, endpoint: str) -> Callable[[list], None]:
        """A second PUB, apart from the one the gateway forwards to clients (matching's private
        feed to surveillance): returns a non-blocking send of [topic, payload] frames (a slow
        subscriber's frames are dropped, as PUB does)."""
        sock = self._socket(zmq.PUB)
        self._serve_internal(sock)
        sock.bind(endpoint)
        sync = zmq.Socket.shadow(sock.underlying)

        def send(frames: list) -> None:
            try:
                send_parts(sync, frames)
            except zmq.Again:
                self.stats["private_dropped"] = self.stats.get("private_dropped", 0) + 1

        return send

    def peer(self, name: str) -> None:
        """PUSH to another node's inbox (connect; queued until the peer is up)."""
        if name in self._outboxes:
            return
        sock = self._socket(zmq.PUSH)
        endpoint = self.topo.nodes[name].inbox
        self._connect(sock, endpoint)
        link = f"{self.name}->{name}"
        seq = LinkSender(link, self.incarnation) if name in CORES or self.name in CORES else None
        if seq is not None:
            seq.epoch = self.epoch
        box = self._outboxes[name] = Outbox(sock, link, seq=seq, endpoint=endpoint)
        box.shape_link = f"{self.instance}->{name}"
        if seq is not None and not self._announcing:
            self._announcing = True
            self.every(int(LINK_IDLE_S * 1000), self._announce)

    def every(self, interval_ms: int, fn: Callable[[], None], always: bool = False) -> None:
        """A timer; a standby runs only those marked `always` (its inputs come from its primary)."""
        self._timers.append((interval_ms / 1000.0, fn, always))

    def every_now(self, interval_ms: int, fn: Callable[[], None]) -> None:
        """A timer started while the node runs."""
        asyncio.ensure_future(self._timer(interval_ms / 1000.0, fn, True))

    def background(self, start: Callable[[], Awaitable]) -> None:
        """A coroutine the node runs beside its sockets (a server); like a drain task, its end
        before the node stops is a failure."""
        self._background.append(start)

    def failed(self, event: str, what: str, exc: Exception) -> None:
        """A node's core raised on one message (a bug): count it in `errors`, which heartbeats
        carry, and log it with the traceback. The caller answers that message and goes on."""
        self.stats["errors"] += 1
        self.log.error(event, message=what, error=repr(exc), exc_info=exc)

    def sweep_closed_peers(self) -> None:
        """Forget the peers whose connections closed (monitor events), telling on_gone."""
        if self._peer_monitor is None:
            return
        monitor, on_gone = self._peer_monitor
        for _ in range(100_000):  # bounded: at most this many disconnects per sweep
            try:
                event = parse_monitor_message(recv_parts(monitor))
            except zmq.Again:
                return
            identity = self._peer_fds.pop(event["value"], None)
            if identity is None:
                continue
            self.router_peers.pop(identity, None)
            if on_gone is not None:
                on_gone(identity)

    # ------------------------------------------------------------------ output (queued)

    def send(self, peer: str, message) -> None:
        self._outboxes[peer].pending.append(message)
        self._dirty = True

    def publish(self, topic: bytes, message) -> None:
        box = self._pubs.get(topic)
        if box is None:
            box = self._pubs[topic] = Outbox(self._pub_sock, PUB_LINKS.get(self.name, ""), topic)
        box.pending.append(message)
        self._dirty = True

    def publish_raw(self, frames: list) -> None:
        """Forward an already-encoded [topic, batch] (the gateway re-publishing market data),
        through this node's PUB link in netsim like everything it publishes."""
        shaper = self.shaper
        link = shaper.get(PUB_LINKS.get(self.name, "")) if shaper is not None else None
        if link is not None:
            shaper.send(link, len(frames[-1]), partial(self._publish_raw_now, frames))
        else:
            self._publish_raw_now(frames)

    def _publish_raw_now(self, frames: list) -> None:
        try:
            send_parts(self._pub_sync, frames)
        except zmq.Again:
            pass  # PUB drops for slow subscribers by design

    def reply(self, router: str, identity: bytes, message) -> None:
        self._routers[router][2].append((identity, message))
        self._dirty = True

    async def flush(self) -> None:
        self._flush_audit()  # explanations may come without any message to send
        if self._fenced:
            self.fence()
            return
        if not self._first_output_logged and self._dirty and self.role == "primary":
            self._first_output_logged = True  # a promoted standby's first output: failover time
            self.log.info("failover_first_output", epoch=self.epoch, wall_ns=time.time_ns())
        if self.durability is not None:
            if self._sync_state == "synced":  # an fsync finished: what it covers leaves first
                self._sync_state = "releasing"
                try:
                    await self._send_held()
                finally:
                    self._sync_state = "idle"
            if self._sync_state != "idle":
                # Held: these wait for the fsync (and standby) after the one in flight. What
                # carries no effect still leaves: resends of what was sent, control messages,
                # and idle announcements (a witness must go on hearing a live primary).
                await self._send_control_frames()
                return
            if self._dirty and self.durability.needs_sync():
                self._dirty = False
                self._hold()
                self._sync_state = "syncing"
                self.durability.start_sync(self._on_durable)
                return
        if not self._dirty:
            return
        self._dirty = False
        await self._send_control_frames()  # (before any new numbers on the same link)
        for boxes in (self._outboxes.values(), self._pubs.values()):
            for box in boxes:
                if box.pending:
                    messages, box.pending = box.pending, []
                    await self._send_box(box, messages)
        for name, (_, _, pending, _) in self._routers.items():
            if pending:
                replies = list(pending)
                pending.clear()
                self._send_replies(name, replies)

    async def _send_control_frames(self) -> None:
        for box in self._outboxes.values():
            if box.seq is not None and (box.control or box.seq.resend_from or box.seq.idle_due):
                await self._send_unsequenced(box)

    def _hold(self) -> None:
        """Take everything queued to send: it waits for the fsync about to start."""
        for boxes in (self._outboxes.values(), self._pubs.values()):
            for box in boxes:
                if box.pending:
                    self._held.append((box, box.pending))
                    box.pending = []
        for name, (_, _, pending, _) in self._routers.items():
            if pending:
                self._held_replies.append((name, list(pending)))
                pending.clear()

    def _on_durable(self) -> None:
        """The fsync covering what `_hold` took has finished (on the loop)."""
        self._sync_state = "synced"
        asyncio.ensure_future(self.flush())

    async def _send_held(self) -> None:
        held, self._held = self._held, []
        replies, self._held_replies = self._held_replies, []
        for box, messages in held:
            await self._send_box(box, messages)
        for name, pending in replies:
            self._send_replies(name, pending)
        self._dirty = True  # what came while the disk worked is the next fsync's (if anything)

    def _count_link(self, family: str, link: str, n: int) -> None:
        key = self._link_keys.get((family, link))
        if key is None:
            key = self._link_keys[(family, link)] = labeled(family, link)
        self.stats[key] = self.stats.get(key, 0) + n

    async def _send_box(self, box: Outbox, messages: list) -> None:
        """One PUSH/PUB frame of `messages` (numbered on a sequenced link)."""
        if box.seq is not None:
            self._count_link("link_messages_out", box.link, len(messages))
            box.sent = True
            frame = self._encode([box.seq.stamp(messages)] + messages, box.link)
        else:
            frame = self._encode(messages, box.link)
        if frame is None:
            return
        shaper = self.shaper
        link = shaper.get(box.shape_link) if shaper is not None else None
        if link is not None:
            shaper.send(link, len(frame), partial(box.send_now, frame))
        elif not box.try_send(frame):
            await box.sock.send(frame)  # the peer's queue is full: wait, never drop

    def _send_replies(self, router: str, pending: list) -> None:
        """Replies to clients of ROUTER `router`: one frame per identity."""
        sock, sync, _, gone = self._routers[router]
        by_identity: dict[bytes, list] = {}
        for identity, message in pending:
            by_identity.setdefault(identity, []).append(message)
        shaper = self.shaper
        link = shaper.get(f"{self.name}->client") if shaper is not None else None
        for identity, messages in by_identity.items():
            payload = self._encode(messages, f"{self.name}->client")
            if payload is None:
                continue
            frames = [identity, payload]
            if link is not None:
                shaper.send(link, len(frames[1]), partial(self._reply_now, sync, frames, gone))
            else:
                self._reply_now(sync, frames, gone)
        readiness = self._readiness.get(sock)
        if readiness is not None:
            readiness.poke()  # our sends may have consumed the signal its wait needs

    async def _send_unsequenced(self, box: Outbox) -> None:
        """A sequenced link's control messages, and the resends a receiver asked for (before any
        new numbers, which the receiver would otherwise take for a gap). Through the link like
        everything else on it: an announcement must not overtake the messages netsim holds."""
        frames = []
        if box.control:
            frames.append([LinkSeq(link=box.link, incarnation=box.seq.incarnation,
                                   epoch=box.seq.epoch)] + box.control)
            box.control = []
        if box.seq.idle_due:
            box.seq.idle_due = False
            if not box.pending:
                frames.append([box.seq.idle()])
        if box.seq.resend_from:
            resent = box.seq.resend_frames()
            self.stats["resent"] = self.stats.get("resent", 0) + sum(len(f) - 1 for f in resent)
            frames += resent
        shaper = self.shaper
        link = shaper.get(box.shape_link) if shaper is not None else None
        for messages in frames:
            frame = self._encode(messages, box.link)
            if frame is None:
                continue
            if link is not None:
                shaper.send(link, len(frame), partial(box.send_now, frame))
            elif not box.try_send(frame):
                await box.sock.send(frame)

    def _announce(self) -> None:
        """Idle sequenced links say their next number, so a receiver that missed the last
        messages (it restarted, or they were in the queue of a process that died) asks for them
        without waiting for traffic."""
        for box in self._outboxes.values():
            if box.seq is not None:
                if not box.sent:
                    box.seq.idle_due = True
                    self._dirty = True
                box.sent = False

    def resend(self, request: ResendFrom) -> None:
        """A receiver asked for a sequenced link's messages from `next_seq` on."""
        box = self._outboxes.get(request.link.split("->", 1)[-1])
        if box is not None and box.seq is not None and box.link == request.link:
            box.seq.resend_from = request.next_seq if not box.seq.resend_from else min(
                box.seq.resend_from, request.next_seq)
            self.stats["resend_requests"] = self.stats.get("resend_requests", 0) + 1
            self._dirty = True

    def replay_done(self, audit_mark: int) -> None:
        """After a journaled core replayed its inputs: what the replay sent on a sequenced link
        is numbered and kept for resends (the receivers already have it, or will ask for it);
        everything else it produced was said before the restart and is dropped."""
        for box in self._outboxes.values():
            if box.seq is not None and box.pending:
                box.seq.stamp(box.pending)
            box.pending = []
        for box in self._pubs.values():
            box.pending = []
        for _, _, pending, _ in self._routers.values():
            pending.clear()
        self.audit.truncate(audit_mark)
        self._dirty = False

    def journal_dir(self) -> str:
        return os.path.join(self.topo.run_dir, "journal", self.instance)

    def sequenced_outboxes(self) -> list[Outbox]:
        return [box for box in self._outboxes.values() if box.seq is not None]

    def has_pending(self) -> bool:
        return (any(box.pending for box in self._outboxes.values()) or bool(self._held)
                or self._sync_state != "idle")

    def snapshot_safe(self) -> bool:
        """Can a snapshot describe what was sent? Not while held messages are being released:
        those taken for sending but not yet numbered are in neither the resend buffers nor the
        unsent lists (everything else is: `unsent_by_link`)."""
        return self._sync_state != "releasing"

    def unsent_by_link(self) -> dict[str, list]:
        """Per sequenced link, what is numbered (next_numbers counts it) but not yet sent, in
        the order it will be: held for an fsync first, then queued."""
        out: dict[str, list] = {}
        for box, messages in self._held:
            if box.seq is not None:
                out.setdefault(box.link, []).extend(messages)
        for box in self._outboxes.values():
            if box.seq is not None and box.pending:
                out.setdefault(box.link, []).extend(box.pending)
        return out

    def next_numbers(self) -> dict[str, int]:
        """Each sequenced outgoing link's next number, counting what is queued but not yet sent
        (a snapshot taken mid-batch must not give those numbers out again)."""
        held: dict[str, int] = {}
        for box, messages in self._held:
            held[box.link] = held.get(box.link, 0) + len(messages)
        return {box.link: box.seq.next_seq + len(box.pending) + held.get(box.link, 0)
                for box in self._outboxes.values() if box.seq is not None}

    def set_next_numbers(self, numbers: dict[str, int]) -> None:
        for box in self._outboxes.values():
            if box.seq is not None and box.link in numbers:
                box.seq.next_seq = numbers[box.link]
                box.seq.buffer.clear()

    def _flush_audit(self) -> None:
        """Write the journal; say so once when writes start failing (a full disk) and once when
        they work again (the journal keeps what it could not write: cluster/audit.py)."""
        audit = self.audit
        audit.flush()
        failing = audit.last_error is not None
        if failing != self._audit_failing:
            self._audit_failing = failing
            self.stats["audit_failed_writes"] = audit.failed_writes
            if failing:
                self.log.error("audit_write_failed", error=repr(audit.last_error))
            else:
                self.log.warning("audit_write_recovered", failed_writes=audit.failed_writes,
                                 dropped=audit.dropped)

    def _encode(self, messages: list, link: str) -> bytes | None:
        """One frame for `messages`. A message msgpack cannot carry (an integer beyond 64 bits in
        a reject's numbers) must not cost the others their frame, nor the node its drain loop: such
        numbers go as decimal strings, and a message that still cannot be encoded is dropped and
        logged (None when nothing is left)."""
        try:
            return self.codec.encode(messages)
        except Exception:  # the slow path below finds which message, and why
            pass
        kept = []
        for message in messages:
            try:
                self.codec.encode([message])
                kept.append(message)
                continue
            except Exception as exc:
                error = exc
            safe = wire_safe(message)
            if safe is not None:
                try:  # and the receiver must still be able to read it as its type
                    msgspec.msgpack.decode(msgspec.msgpack.encode(safe), type=type(safe))
                    kept.append(safe)
                    self.log.warning("message_numbers_as_strings", message=type(message).__name__,
                                     link=link, error=repr(error))
                    continue
                except Exception as exc:
                    error = exc
            self.stats["unsendable"] = self.stats.get("unsendable", 0) + 1
            self.log.error("message_unsendable", message=type(message).__name__, link=link,
                           error=repr(error))
        return self.codec.encode(kept) if kept else None

    def _reply_now(self, sync: zmq.Socket, frames: list, gone=None) -> None:
        try:
            send_parts(sync, frames)
        except zmq.ZMQError as exc:
            self.stats["dropped_replies"] = self.stats.get("dropped_replies", 0) + 1
            if exc.errno == zmq.EHOSTUNREACH and gone is not None:
                gone(frames[0])  # the peer disconnected: stop sending to it

    # ------------------------------------------------------------------ netsim

    def _on_netsim(self, frames: list) -> None:
        for parts in frames:
            try:
                tables = self.codec.decode(parts[-1])
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            for table in tables:
                if type(table) is not NetsimTable:
                    continue
                try:
                    changed = self.shaper.apply(table.version, table.links, table.skew_ns)
                except Exception as exc:  # a bad table must not take the node down
                    self.log.warning("netsim_table_rejected", error=str(exc))
                    continue
                self._skew_ns = self.shaper.skew_ns
                for change in changed:
                    self.log.info("netsim_link", change=change, version=table.version,
                                  mono_ns=time.monotonic_ns())

    def _shaping_failed(self, link: str, exc: Exception) -> None:
        """A link's model raised: the message went unshaped. Said once per link and table."""
        key = (link, self.shaper.version)
        if key not in self._shaping_errors:
            self._shaping_errors.add(key)
            self.log.error("netsim_shaping_failed", link=link, version=key[1], error=repr(exc))

    def _shaped_inbound(self, link_name: str, handler):
        """Receiver-side shaping for a link whose sender is not a node (client->gateway)."""

        def handle(frames: list) -> None:
            link = self.shaper.get(link_name) if self.shaper is not None else None
            if link is None:
                return handler(frames)
            for parts in frames:
                self.shaper.send(link, len(parts[-1]), partial(self._deliver_inbound, handler, parts))

        return handle

    def _deliver_inbound(self, handler, parts: list) -> None:
        try:
            handler([parts])
        except Exception:
            self.stats["errors"] += 1
            self.log.exception("handler_error")
        asyncio.ensure_future(self.flush())

    # ------------------------------------------------------------------ input (drained)

    def _decoding(self, on_messages: Callable[[list], None], multipart: bool = False):
        decode = self.codec.decode
        stats = self.stats

        def handle(frames: list) -> None:
            messages: list = []
            for frame in frames:
                payload = frame[-1] if multipart else frame
                try:
                    messages.extend(decode(payload))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    stats["bad_frames"] += 1
                    self.log.warning("bad_frame", error=str(exc), size=len(payload))
            if messages:
                stats["msgs_in"] += len(messages)
                on_messages(messages)

        return handle

    def _inbox_decoding(self, on_messages: Callable[[list], None], runs: bool):
        """Frames of the inbox: sequenced ones through `links_in` (duplicates dropped, a gap
        asked for again), ResendFrom requests served here; the rest to the node."""
        decode = self.codec.decode
        stats = self.stats
        last_heard = self.last_heard
        fences = self._fences
        # who may send what here (cluster/senders.py); None: CURVE off, connections carry no role
        checked = (senders.allowed(self.name, self.topo.nodes, self.topo.failover.witness)
                   if self.keyring is not None else None)
        refusal = senders.refusal
        name = self.name

        def handle(frames: list) -> None:
            out: list = []
            asks: list = []
            now = self.mono_ns()
            # Read at every call, never captured: a snapshot's restore (recovery, a standby's
            # resync) replaces the receiver, and a stale one took every peer for new and asked
            # for everything again (trades applied twice after a restart from a snapshot).
            links_in = self.links_in
            for payload, sender in frames:
                if checked is not None and sender not in checked:  # (not even decoded)
                    self._refuse_frame(sender, "sender_not_allowed", [])
                    continue
                try:
                    batch = decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    stats["bad_frames"] += 1
                    self.log.warning("bad_frame", error=str(exc), size=len(payload))
                    continue
                if checked is not None:
                    why = refusal(checked, sender, batch, name)
                    if why is not None:
                        self._refuse_frame(sender, why, batch)
                        continue
                header = None
                if batch and type(batch[0]) is LinkSeq:
                    header = batch[0]
                    if header.first:  # numbered (data or an idle announcement): the sender lives
                        if fences and not self._epoch_ok(header):
                            continue
                        last_heard[header.link] = now
                    if header.first == 0:  # control: served here, not the node's input
                        for msg in batch[1:]:
                            self._on_control(msg)
                        continue
                if self.role != "primary":  # a standby takes no input but its primary's
                    if batch:  # (numbered or not: one of its own would take a number it needs)
                        stats["standby_dropped"] = stats.get("standby_dropped", 0) + 1
                    continue
                if header is not None:
                    batch = links_in.accept(header, batch[1:], now, asks)
                    if batch:
                        self._count_link("link_messages_in", header.link, len(batch))
                    if batch and header.count:
                        header = LinkSeq(link=header.link, incarnation=header.incarnation,
                                         first=header.first + header.count - len(batch),
                                         count=len(batch))
                if not batch:
                    continue
                if runs:
                    out.append((header, batch))
                else:
                    out.extend(batch)
            if links_in.given_up:
                for link, expected, resumed in links_in.given_up:
                    self.log.critical("link_messages_lost", link=link, expected=expected,
                                      resumed_at=resumed, lost=resumed - expected)
                links_in.given_up.clear()
            for sender, request in asks:
                box = self._outboxes.get(sender)
                if box is not None and box.seq is not None:
                    box.control.append(request)
                    self._dirty = True
                    stats["gaps"] = stats.get("gaps", 0) + 1
            if out:
                stats["msgs_in"] += len(out)
                on_messages(out)

        return handle

    def _refuse_frame(self, sender: str, why: str, batch: list) -> None:
        """An inbox frame its sender's role may not send (cluster/senders.py): nothing of it is
        read. Counted; explained for the first 10 of each sender and reason, then every 1,000th
        (a flood of varied frames from one sender neither floods the log nor hides another's)."""
        self.stats["frames_refused"] = self.stats.get("frames_refused", 0) + 1
        key = (sender, why)
        seen = self._refused_by[key] = self._refused_by.get(key, 0) + 1
        if seen > 10 and seen % 1000:
            return
        header = batch[0] if batch and type(batch[0]) is LinkSeq else None
        link = header.link if header else ""
        kinds = sorted({type(m).__name__ for m in batch if type(m) is not LinkSeq})
        who = sender or "unauthenticated"
        self.log.warning("frame_refused", sender=who, reason=why, link=link, messages=kinds,
                         count=seen)
        self.audit.record(Explanation(
            ts_ns=time.time_ns(), node=self.name, rule="inbox.sender_refused", subject=who,
            decision=why, numbers={"messages": len(batch) - (header is not None), "link": link,
                                   "types": ",".join(kinds), "refused_from_sender": seen}))

    # ------------------------------------------------------------------ failover (cluster/failover.py)

    def _epoch_ok(self, header: LinkSeq) -> bool:
        """A frame from a core whose epoch has been superseded is refused (fencing); a newer one
        becomes the epoch this node knows."""
        sender = header.link.partition("->")[0]
        known = self._fences.get(sender)
        if known is None:
            return True
        if header.epoch < known:
            self.stats["fenced_frames"] = self.stats.get("fenced_frames", 0) + 1
            if (header.link, header.epoch) not in self._refusals_said:  # once per link and epoch
                self._refusals_said.add((header.link, header.epoch))
                self.audit.record(Explanation(
                    ts_ns=time.time_ns(), node=self.name, rule="failover.frame_refused",
                    subject=header.link, decision="refused",
                    numbers={"epoch": header.epoch, "current_epoch": known, "first": header.first,
                             "count": header.count}))
            return False
        if header.epoch > known:
            self._fences[sender] = header.epoch
        return True

    def _on_control(self, msg) -> None:
        t = type(msg)
        if t is ResendFrom:
            if self.role == "primary":
                self.resend(msg)
        elif t is PrimaryIs:
            self.follow_primary(msg)
        elif t is WitnessQuery and self.witness is not None:
            self.witness.on_query(msg)
        elif t is WitnessReply and self.failover is not None:
            self.failover.on_witness(msg)
        elif t is StandbyDetached and self.witness is not None:
            self.witness.on_detached(msg)

    def known_epoch(self, node: str) -> int:
        return self._fences.get(node, 1)

    def set_fence(self, node: str, epoch: int) -> None:
        if epoch > self._fences.get(node, 0):
            self._fences[node] = epoch
            self.log.info("epoch_fence", node=node, epoch=epoch)

    def last_heard_from(self, node: str) -> int:
        prefix = node + "->"
        return max((t for link, t in self.last_heard.items() if link.startswith(prefix)), default=0)

    def follow_primary(self, msg: PrimaryIs) -> None:
        """A core's new primary: send it that node's inputs from now on (the sequenced link's
        resend asks fill what went to the old one), and refuse the old epoch."""
        if self.failover is not None and msg.node == self.name:
            self.failover.on_primary_is(msg)
            return
        known = self._fences.get(msg.node, 0)
        if msg.epoch < known:
            return
        self._fences[msg.node] = msg.epoch
        box = self._outboxes.get(msg.node)
        if box is None:
            return
        endpoint = self.topo.instance_endpoints(msg.instance).inbox
        if endpoint == box.endpoint:
            return
        try:
            box.sock.disconnect(box.endpoint)
        except zmq.ZMQError:
            pass
        self._connect(box.sock, endpoint)
        self.log.warning("primary_followed", node=msg.node, instance=msg.instance,
                         epoch=msg.epoch, old=box.endpoint, new=endpoint)
        box.endpoint = endpoint
        box.shape_link = f"{self.instance}->{msg.instance}"
        self.stats["primary_changes"] = self.stats.get("primary_changes", 0) + 1
        if box.seq is not None:  # say our next number at once: the new primary asks for the rest
            box.seq.idle_due = True
            self._dirty = True

    def send_control(self, target: str, message) -> None:
        """A control frame (outside any sequence) to a node or instance's inbox, at once."""
        node = target.partition(".")[0]
        if node not in self.topo.nodes:
            return
        endpoint = self.topo.instance_endpoints(target).inbox
        if not endpoint:
            return  # a node with no inbox (the REST facade) has nothing to be told
        sync = self._controls.get(endpoint)
        if sync is None:
            sock = self._socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                self._connect(sock, endpoint)
            except zmq.ZMQError as exc:
                self.log.error("control_connect_failed", endpoint=endpoint, error=repr(exc))
                return
            sync = self._controls[endpoint] = zmq.Socket.shadow(sock.underlying)
        frame = self.codec.encode([LinkSeq(link=f"{self.name}->{node}", epoch=self.epoch), message])
        shaper = self.shaper
        link = shaper.get(f"{self.instance}->{target}") if shaper is not None else None
        if link is not None:
            shaper.send(link, len(frame), partial(self._control_now, sync, frame))
        else:
            self._control_now(sync, frame)

    @staticmethod
    def _control_now(sync: zmq.Socket, frame: bytes) -> None:
        try:
            _send(sync, frame, NOBLOCK)
        except zmq.ZMQError:
            pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for box in self._outboxes.values():
            if box.seq is not None:
                box.seq.epoch = epoch

    def promote(self, epoch: int) -> None:
        """This standby is the primary now: number under the new epoch, take inputs, hear the
        subscriptions, run the timers, and say every link's next number (receivers ask for what
        the old primary never sent)."""
        self.set_epoch(epoch)
        self._fences[self.name] = epoch
        self.role = "primary"
        for sock, endpoint in self._deferred:
            self._connect(sock, endpoint)
        self._deferred.clear()
        for box in self._outboxes.values():
            if box.seq is not None:
                box.seq.idle_due = True
        self._dirty = True
        self._first_output_logged = False
        asyncio.ensure_future(self.flush())

    def fence(self) -> int:
        """Superseded: drop every output not yet sent (held for the fsync, or queued) and send
        nothing more. Returns how many messages were refused."""
        self._fenced = True
        dropped = sum(len(m) for _, m in self._held) + sum(len(m) for _, m in self._held_replies)
        self._held, self._held_replies = [], []
        for boxes in (self._outboxes.values(), self._pubs.values()):
            for box in boxes:
                dropped += len(box.pending)
                box.pending = []
                box.control = []
        for _, _, pending, _ in self._routers.values():
            dropped += len(pending)
            pending.clear()
        self._dirty = False
        return dropped

    async def _drain(self, sock: zmq.asyncio.Socket, multipart: bool, handler) -> None:
        sync = zmq.Socket.shadow(sock.underlying)
        is_router = sock.socket_type == zmq.ROUTER  # (an enum: once)
        if is_router and self._peer_monitor is not None:
            recv = partial(recv_router_parts, sync, self.router_peers, self._peer_fds,
                           self.sweep_closed_peers)
        elif multipart is SENDER:  # a role only where CURVE authenticated the connection
            recv = (partial(recv_with_sender, sync) if self.keyring is not None
                    else partial(recv_unauthenticated, sync))
        elif multipart:
            recv = partial(recv_parts, sync, is_router)
        else:
            recv = partial(_recv, sync, NOBLOCK)
        idle_timeout = BACKSTOP_MS / 1000 if is_router else None
        readiness = self._readiness[sock] = Readiness(sync, asyncio.get_running_loop())
        try:
            await self._drain_loop(recv, handler, readiness, idle_timeout)
        finally:
            readiness.close()

    async def _drain_loop(self, recv, handler, readiness: Readiness, idle_timeout) -> None:
        stats = self.stats
        while True:
            frames = []
            try:
                while len(frames) < MAX_BATCH:
                    frames.append(recv())
            except zmq.Again:
                pass
            if frames:
                stats["frames_in"] += len(frames)
                # what was waiting on the socket at this wake (its backlog, up to MAX_BATCH)
                key = BATCH_KEYS[(len(frames) - 1).bit_length()]
                stats[key] = stats.get(key, 0) + 1
                try:
                    handler(frames)
                except Exception:  # a node never dies on a message; the log says why
                    stats["errors"] += 1
                    self.log.exception("handler_error")
                await self.flush()
                if len(frames) == MAX_BATCH:
                    await asyncio.sleep(0)  # let the other sockets in
            else:
                # A socket we also send on (ROUTER) can have its signal consumed by our own
                # sends: flush() pokes its waiter after sending, the timeout is a backstop.
                await readiness.wait(idle_timeout)

    async def _timer(self, interval: float, fn: Callable[[], None], always: bool = True) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.role != "primary" and not always:
                continue
            try:
                fn()
            except Exception:
                self.stats["errors"] += 1
                self.log.exception("timer_error")
            await self.flush()

    async def _heartbeat(self) -> None:
        sup = self.topo.supervisor
        sock = self._socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 10)
        self._connect(sock, sup.control)
        pid = os.getpid()
        await sock.send(encode_one(Ready(node=self.instance, pid=pid)))
        seq = 0
        while True:
            seq += 1
            try:
                sock.send(encode_one(Heartbeat(node=self.instance, pid=pid, seq=seq,
                                               mono_ns=time.monotonic_ns(), stats=dict(self.stats))),
                          zmq.NOBLOCK)
            except zmq.Again:
                pass
            await asyncio.sleep(sup.heartbeat_ms / 1000.0)

    async def run(self, on_stop: Callable[[], None] | None = None) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.netsim_enabled:
            self.shaper = Shaper(self.instance, loop, clock_of=self.name)
            self.shaper.on_error = self._shaping_failed
            self.subscribe(self.topo.supervisor.netsim, [b""], None, raw=self._on_netsim,
                           always=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [asyncio.create_task(self._drain(s, m, h)) for s, m, h in self._readers]
        tasks += [asyncio.create_task(self._timer(i, f, a)) for i, f, a in self._timers]
        tasks += [asyncio.create_task(start()) for start in self._background]
        tasks.append(asyncio.create_task(self._heartbeat()))
        for task in tasks:
            task.add_done_callback(self._task_ended)
        self.log.info("node_started", endpoints={
            "inbox": self.conf.inbox if self.conf else "", "pub": self.conf.pub if self.conf else ""})
        await self._stop.wait()
        self.log.info("node_stopping", stats=self.stats)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if on_stop is not None:
            on_stop()  # a journaled core's runner closes its journal: on disk, so what is held
        if self._sync_state == "syncing" and not self._fenced:  # may leave
            self._sync_state = "synced"
        await self.flush()
        if self.shaper is not None:
            self.shaper.close()
        self.audit.close()
        for sock in self._sockets:
            sock.close(linger=200)
        self.ctx.term()

    def _task_ended(self, task: asyncio.Task) -> None:
        """A drain, timer or heartbeat task ended by itself: a bug below the handlers. A node that
        stopped reading a socket must not look alive, so it stops, logged, and the supervisor
        applies the node's failure policy (restart, or stop the cluster)."""
        if task.cancelled() or (self._stop is not None and self._stop.is_set()):
            return
        exc = task.exception()
        self.exit_code = 70
        self.stats["errors"] += 1
        self.log.critical("node_task_died", task=task.get_coro().__qualname__, error=repr(exc),
                          exc_info=exc)
        self.stop()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


