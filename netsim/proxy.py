"""A netsim link for one client: a TCP proxy in front of the gateway (toxiproxy-style).

netsim shapes links between nodes inside the nodes' transports, and `client->gateway` inside the
gateway for every client at once. A single client's network path is shaped where a network
engineer would put it: on the path, not in either end. The client connects to this proxy instead
of the gateway; each direction of its TCP connections is one netsim link,

    client:NAME->gateway     (its requests)
    gateway->client:NAME     (the gateway's answers and, on its market-data port, the marks)

scheduled by netsim.link.Link (the same latency models, bandwidth, partition) and configured from
the supervisor's netsim table like every node's links (`perpx netsim set client:mm1->gateway
--latency 50ms`, or a scenario's `set` step). Neither the gateway nor the client changes, and the
byte stream is carried as it is, so the ZMTP handshake, heartbeats and every frame see the same
delay. Being TCP, a link is reliable: loss becomes an RTO's delay, never a lost byte, and a full
queue waits (on_full = "drop" would cut a stream in the middle of a frame, so it blocks here).

Every chunk's delay from arrival to being written on is measured (`stats`): that, not the
setting, is what a report shows as the latency applied.

Run as a process: `python -m netsim.proxy --config TOPO --run-dir VAR --client mm1
--upstream client=tcp://127.0.0.1:P --upstream pub=tcp://127.0.0.1:Q --stats FILE`; it prints
one JSON line with its listening endpoints once it is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import deque

import msgspec

from netsim.link import Link, LinkSettings

NAME = re.compile(r"[a-z0-9_-]{1,40}")
CHUNK = 65_536
STATS_EVERY_S = 0.5
DELAYS_KEPT = 20_000  # per direction and setting: the most recent chunk delays measured
UNSHAPED = "unshaped"
END = (0, b"", 0, "")  # a stream's end, queued behind its last chunk


def client_links(name: str) -> tuple[str, str]:
    """(requests link, answers link) of the client `name`."""
    return f"client:{name}->gateway", f"gateway->client:{name}"


def client_link_name(link: str) -> str | None:
    """The client a per-client link belongs to, or None when `link` is not one."""
    for prefix, suffix in (("client:", "->gateway"), ("gateway->client:", "")):
        if link.startswith(prefix) and link.endswith(suffix):
            name = link[len(prefix):len(link) - len(suffix)]
            if NAME.fullmatch(name):
                return name
    return None


DEFAULT = msgspec.to_builtins(LinkSettings())


def describe(raw: dict) -> str:
    """A setting in the words it was set with: its fields that differ from the defaults
    ("latency 200ms", "latency {model: lognormal, ...}, loss 0.01"); "unshaped" for none."""
    words = []
    for key, value in sorted(raw.items()):
        if DEFAULT.get(key) == value:
            continue
        if key == "latency" and isinstance(value, dict) and value.get("model") == "constant":
            words.append(f"latency {value.get('latency')}")
        else:
            words.append(f"{key} {json.dumps(value, sort_keys=True)}")
    return ", ".join(words) or UNSHAPED


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * q // 100) - 1)]


class Direction:
    """One direction of every proxied connection of the client: one netsim Link, one order."""

    def __init__(self, name: str) -> None:
        self.link = Link(name, LinkSettings(), reliable=True)
        self.setting = UNSHAPED  # as the table gave it, as a key of `measured`
        self.held: list[tuple[asyncio.Queue, bytes, int, str]] = []  # while partitioned
        # per setting: the delay of each chunk handed over while it was in force (the last ones)
        self.measured: dict[str, deque[float]] = {UNSHAPED: deque(maxlen=DELAYS_KEPT)}
        self.ends: list[asyncio.Queue] = []  # streams that ended while bytes were held
        self.chunks = self.bytes = 0

    def configure(self, raw: dict) -> None:
        settings = msgspec.convert({**raw, "on_full": "block"}, LinkSettings)
        was_down = self.link.settings.down
        self.link.configure(settings)
        self.setting = describe(raw)
        self.measured.setdefault(self.setting, deque(maxlen=DELAYS_KEPT))
        if was_down and not settings.down:
            self.release()

    def offer(self, queue: asyncio.Queue, chunk: bytes) -> None:
        now = time.monotonic_ns()
        due = self.link.schedule(now, len(chunk))
        if due is None:  # partitioned (a reliable link loses nothing): held until the heal
            self.held.append((queue, chunk, now, self.setting))
            return
        queue.put_nowait((due, chunk, now, self.setting))

    def end(self, queue: asyncio.Queue) -> None:
        """The stream's end keeps its place behind what it sent before (held ones included)."""
        if any(q is queue for q, *_ in self.held):
            self.ends.append(queue)
        else:
            queue.put_nowait(END)

    def release(self) -> None:
        held, self.held = self.held, []
        for index, due in self.link.heal(time.monotonic_ns()):
            queue, chunk, handed, setting = held[index]
            queue.put_nowait((due, chunk, handed, setting))
        ends, self.ends = self.ends, []
        for queue in ends:
            queue.put_nowait(END)

    def stats(self) -> dict:
        """Chunks and bytes carried, and per setting the measured delays of its chunks (ms)."""
        measured = {}
        for setting, delays in self.measured.items():
            d = list(delays)
            if d:
                measured[setting] = {"chunks": len(d), "p50": round(percentile(d, 50), 2),
                                     "p99": round(percentile(d, 99), 2), "min": round(min(d), 2),
                                     "max": round(max(d), 2)}
        return {"link": self.link.name, "now": self.setting, "chunks": self.chunks,
                "bytes": self.bytes, "measured_ms": measured}


class ClientLinkProxy:
    """Listens on loopback for each upstream endpoint; forwards through the client's links."""

    def __init__(self, client: str, upstreams: dict[str, tuple[str, int]]) -> None:
        if not NAME.fullmatch(client):
            raise ValueError(f"client name {client!r} is not [a-z0-9_-]{{1,40}}")
        self.client = client
        self.upstreams = upstreams
        up, down = client_links(client)
        self.up, self.down = Direction(up), Direction(down)
        self.listening: dict[str, str] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self.version = -1

    def apply(self, version: int, links: dict[str, dict]) -> None:
        """A netsim table: this client's two links as the table has them (absent: unshaped)."""
        if version == self.version:
            return
        self.version = version
        for direction in (self.up, self.down):
            direction.configure(links.get(direction.link.name, {}))

    async def start(self) -> dict[str, str]:
        for label, (host, port) in self.upstreams.items():
            server = await asyncio.start_server(
                lambda r, w, h=host, p=port: self._spawn(self._connection(r, w, h, p)),
                "127.0.0.1", 0)
            self._servers.append(server)
            self.listening[label] = "tcp://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        return self.listening

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, c_reader, c_writer, host: str, port: int) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(host, port)
        except OSError:
            c_writer.close()
            return
        up_q: asyncio.Queue = asyncio.Queue()
        down_q: asyncio.Queue = asyncio.Queue()
        parts = [self._read(c_reader, self.up, up_q), self._write(up_q, u_writer, self.up),
                 self._read(u_reader, self.down, down_q), self._write(down_q, c_writer, self.down)]
        tasks = [asyncio.ensure_future(p) for p in parts]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:  # either side closed: close both (what a proxy in the path would do)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (c_writer, u_writer):
                w.close()

    async def _read(self, reader, direction: Direction, queue: asyncio.Queue) -> None:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                direction.end(queue)
                await asyncio.Event().wait()  # the writer's end closes the connection
            direction.offer(queue, chunk)

    async def _write(self, queue: asyncio.Queue, writer, direction: Direction) -> None:
        while True:
            due, chunk, handed, setting = await queue.get()
            if not chunk:
                return
            wait_ns = due - time.monotonic_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            writer.write(chunk)
            direction.measured[setting].append((time.monotonic_ns() - handed) / 1e6)
            direction.chunks += 1
            direction.bytes += len(chunk)
            await writer.drain()

    def stats(self) -> dict:
        return {"client": self.client, "listening": self.listening, "version": self.version,
                "links": {d.link.name: d.stats() for d in (self.up, self.down)}}

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def parse_tcp(endpoint: str) -> tuple[str, int]:
    match = re.fullmatch(r"tcp://(127\.0\.0\.1|localhost):(\d+)", endpoint)
    if not match:
        raise ValueError(f"{endpoint!r}: the proxy forwards to loopback tcp endpoints only")
    return match.group(1), int(match.group(2))


async def _follow_table(proxy: ClientLinkProxy, topo) -> None:
    """The supervisor's netsim table, as every node follows it."""
    import zmq
    import zmq.asyncio

    from cluster import curve
    from cluster.protocol import Codec, NetsimTable

    ctx = zmq.asyncio.Context()
    sock = curve.tools_socket(ctx, zmq.SUB, topo, topo.supervisor.netsim)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    codec = Codec(NetsimTable)
    try:
        while True:
            parts = await sock.recv_multipart()
            try:
                tables = codec.decode(parts[-1])
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            for table in tables:
                if type(table) is NetsimTable:
                    try:
                        proxy.apply(table.version, table.links)
                    except (msgspec.ValidationError, ValueError):
                        pass  # the supervisor checked it; a bad one leaves the links as they were
    finally:
        sock.close()
        ctx.term()


async def main_async(args) -> int:
    from cluster import config

    topo = config.load(args.config, run_dir=args.run_dir)
    upstreams = {}
    for item in args.upstream:
        label, _, endpoint = item.partition("=")
        upstreams[label] = parse_tcp(endpoint)
    proxy = ClientLinkProxy(args.client, upstreams)
    listening = await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    follower = asyncio.ensure_future(_follow_table(proxy, topo))

    def save() -> None:
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(proxy.stats(), f)
        os.replace(tmp, args.stats)

    print(json.dumps({"ready": True, "pid": os.getpid(), "listening": listening}), flush=True)
    try:
        while not stop.is_set():
            if args.stats:
                save()
            try:
                await asyncio.wait_for(stop.wait(), STATS_EVERY_S)
            except asyncio.TimeoutError:
                pass
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await proxy.close()
        if args.stats:
            save()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netsim.proxy", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="the cluster's topology TOML")
    p.add_argument("--run-dir", required=True, help="the cluster's run directory")
    p.add_argument("--client", required=True, help="the client's name in its links (e.g. mm1)")
    p.add_argument("--upstream", action="append", required=True,
                   help="LABEL=tcp://127.0.0.1:PORT, one per gateway endpoint to forward")
    p.add_argument("--stats", default="", help="a JSON file the measured delays are written to")
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
