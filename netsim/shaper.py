"""Sender-side shaping inside a node: the IO half of netsim.

A node's transport asks `Shaper.link(name)` for each outgoing frame; with no shaping configured on
that link it gets None and sends directly (the whole cost of netsim when it is off). A shaped link
turns the frame into a delivery time (netsim.link.Link) and the Pump delivers it then.

Why a thread: libuv (uvloop) timers have millisecond resolution, too coarse for 150 us of jitter.
The pump thread sleeps until the earliest due time (nanosleep: ~60-100 us late on this host class)
and hands the send back to the event loop with call_soon_threadsafe, so sockets stay on the loop's
thread. Removing shaping from a link flushes what it holds (never drops it).
"""

from __future__ import annotations

import ctypes
import heapq
import sys
import threading
import time
from collections.abc import Callable

import msgspec

from netsim.link import Link, LinkSettings

SWITCH_INTERVAL_S = 0.00005
HANDOFF_NS = 30_000  # measured: pump wake-up to the send on the loop thread, median

# The wiring of the cluster, as netsim names its directed links.
PUB_LINKS = {"feeds": "feeds->oracle", "oracle": "oracle->subscribers",
             "matching": "matching->subscribers", "gateway": "gateway->subscribers"}
CLIENT_LINKS = ("client->gateway", "gateway->client")
PEERS = {
    "gateway": ("risk", "matching"), "risk": ("matching", "gateway", "liquidator"),
    "matching": ("risk", "gateway"), "liquidator": ("risk", "gateway"), "oracle": (), "feeds": (),
}


# A core with a hot standby (cluster/failover.py) runs as two processes, "<core>" and "<core>.b":
# a link names the processes at its ends, so a fault can cut one instance off (a partition
# between the primary and the gateway, or between the primary and its standby) and not the other.
STANDBY_CORES = ("risk", "matching")


def _instances(node: str) -> tuple[str, ...]:
    return (node, f"{node}.b") if node in STANDBY_CORES else (node,)


def known_links() -> list[str]:
    links = [f"{x}->{y}" for a, peers in PEERS.items() for b in peers
             for x in _instances(a) for y in _instances(b)]
    pairs = [f"{x}->{y}" for core in STANDBY_CORES for x in _instances(core)
             for y in _instances(core) if x != y]
    return sorted(links + pairs + list(PUB_LINKS.values()) + list(CLIENT_LINKS))


def unreliable(link: str) -> bool:
    """Market data links (PUB/SUB) lose messages; the others retransmit (TCP-like)."""
    return link in PUB_LINKS.values()


class Pump:
    """One per process: delivers callbacks at their due time (monotonic ns) on the event loop."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="netsim-pump", daemon=True)
        self._thread.start()

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (due_ns, self._seq, fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    def _run(self) -> None:
        _precise_timers()
        while True:
            with self._cv:
                while not self._stop and not self._heap:
                    self._cv.wait()
                if self._stop:
                    return
                due = self._heap[0][0] - HANDOFF_NS  # the hand-off to the loop takes about that
                wait = due - time.monotonic_ns()
                if wait > 0:
                    self._cv.wait(timeout=wait / 1e9)
                    continue  # re-check: an earlier message may have arrived
                batch = []
                now = time.monotonic_ns()
                while self._heap and self._heap[0][0] - HANDOFF_NS <= now:
                    batch.append(heapq.heappop(self._heap)[2])
            self.loop.call_soon_threadsafe(_run_all, batch)


def _precise_timers() -> None:
    """Linux lets a sleeping thread wake up to 50 us late (timer slack); ask for 1 ns."""
    try:
        ctypes.CDLL("libc.so.6").prctl(29, 1)  # PR_SET_TIMERSLACK, for this thread
    except OSError:
        pass


def _run_all(batch: list[Callable[[], None]]) -> None:
    for fn in batch:
        fn()


class Shaper:
    """The links this node sends on, configured from the supervisor's NetsimTable."""

    def __init__(self, node: str, loop, clock_of: str | None = None) -> None:
        self.node = node  # the process: a core's standby ("risk.b") has links of its own
        self.clock_of = clock_of or node  # whose clock skew applies (the node's)
        self.loop = loop
        self.links: dict[str, Link] = {}
        self.version = -1
        self.skew_ns = 0
        self._pump: Pump | None = None
        self._held: dict[str, list[Callable[[], None]]] = {}
        self.on_error: Callable[[str, Exception], None] | None = None  # (link, error)

    def mine(self, link: str) -> bool:
        src, _, dst = link.partition("->")
        if dst.startswith("client:"):  # one client's link: its proxy shapes it (netsim/proxy.py)
            return False
        return src == self.node or (link == "client->gateway" and self.node == "gateway")

    def apply(self, version: int, links: dict[str, dict], skew: dict[str, int]) -> list[str]:
        """Take a new table; return a description of what changed here (for the log)."""
        if version == self.version:
            return []
        self.version = version
        self.skew_ns = skew.get(self.clock_of, 0)
        changed = []
        wanted = {name: settings for name, spec in links.items() if self.mine(name)
                  for settings in (msgspec.convert(spec, LinkSettings),)
                  if not settings.is_zero() or name in self._held}
        for name in list(self.links):
            if name not in wanted:
                self._release(name)
                del self.links[name]
                changed.append(f"{name}: cleared")
        for name, settings in wanted.items():
            link = self.links.get(name)
            if link is None:
                self.links[name] = Link(name, settings, reliable=not unreliable(name))
            else:
                was_down = link.settings.down
                link.configure(settings)
                if was_down and not settings.down:
                    self._release(name)
            changed.append(f"{name}: {msgspec.json.encode(settings).decode()}")
        if self.links and self._pump is None:
            # The pump thread must get the GIL soon after its wake-up time; with Python's default
            # 5 ms switch interval a busy loop thread would hold it that long.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._pump = Pump(self.loop)
        return changed

    def get(self, name: str) -> Link | None:
        return self.links.get(name) if self.links else None

    def send(self, link: Link, size: int, deliver: Callable[[], None]) -> None:
        try:
            due = link.schedule(time.monotonic_ns(), size)
        except Exception as exc:  # a failing model costs the message its shaping, not the node
            link.stats["errors"] = link.stats.get("errors", 0) + 1
            if self.on_error is not None:
                self.on_error(link.name, exc)
            deliver()
            return
        if due is not None:
            self._pump.at(due, deliver)
        elif link.settings.down and link.held and len(link.held) > len(self._held.get(link.name, ())):
            self._held.setdefault(link.name, []).append(deliver)

    def _release(self, name: str) -> None:
        """Partition healed or shaping removed: held messages go out, in order."""
        link = self.links[name]
        held = self._held.pop(name, [])
        if not held:
            link.held = []
            return
        for index, due in link.heal(time.monotonic_ns()):
            self._pump.at(due, held[index])

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: dict(link.stats) for name, link in self.links.items()}

    def close(self) -> None:
        if self._pump is not None:
            self._pump.stop()
