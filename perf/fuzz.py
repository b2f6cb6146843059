"""Hostile frames against a running venue: the gateway's client socket and every node's internal
inbox get random bytes, truncated and oversized frames, valid msgpack of wrong shapes (including
messages with the right type tag and wrong fields) and signed requests with one bit flipped.

What must hold (the report's `checks`, all true or the run fails):
- no node died or restarted, and no node counted an error in its handlers (a node never dies on
  a message, and never answers one with `internal_error`);
- every frame sent to the gateway on a session was answered with a reason (frames past libzmq's
  size limit, sent on throwaway connections, end that connection and nothing else);
- every frame sent to an internal inbox that its decoder refuses was counted by that node
  (`bad_frames`); a frame that decodes to real messages is a forgery, sent with the tools' CURVE
  key, and must be refused whole by the inbox's sender table (`frames_refused`,
  cluster/senders.py); with CURVE off nothing authenticates a sender, so none is sent;
- the venue's state is what it was: every account's cash, fees, positions and open orders, and
  every book, equal before and after.

    python -m perf.fuzz [--frames 100000] [--seed 1]     (make fuzz: perf/results/fuzz.{json,md})

The suite runs a short version (tests/e2e/test_fuzz.py) against its own cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import typing
from collections import Counter
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from cluster import curve, senders
from cluster import protocol
from cluster.client import Client
from cluster.protocol import (
    BUY, SELL, ClockTick, Codec, Deposit, Error, FeedControl, GetAccount, IndexMark, LinkSeq,
    NodeInbound, PlaceOrder, Routed, Signed, Trade,
)
from cluster.runstate import read_status
from cluster.signing import create_key, key_id, secret_for

RESULTS = Path(__file__).resolve().parent / "results"
MAX_CLIENT_MESSAGE = 1024 * 1024  # the gateway's libzmq limit (nodes/gateway/service.py)
CHUNK = 200  # frames sent before waiting for their answers
ANSWER_WAIT_S = 10.0
CLIENT_KINDS = ("random_bytes", "wrong_shape", "tagged_wrong_fields", "truncated", "bit_flipped",
                "oversized")
# "forged": a real frame, whole, as another node would send it (with CURVE on, only the inbox's
# sender check stands between it and the core)
INTERNAL_KINDS = ("random_bytes", "wrong_shape", "tagged_wrong_fields", "truncated", "forged")


def _tags(union) -> list[tuple[str, list[str]]]:
    """(type tag, field names) of each message type in a protocol union."""
    out = []
    for t in typing.get_args(union):
        info = msgspec.inspect.type_info(t)
        out.append((t.__name__, [f.name for f in info.fields]))
    return out


CLIENT_TAGS = _tags(protocol.ClientRequest)
NODE_TAGS = _tags(NodeInbound)


def _value(rng: random.Random, depth: int = 0):
    """Any msgpack value, weighted to the ones decoders get wrong: edges of integers, strings
    that are not text, deep nesting."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return rng.choice((0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, 2**31, -(2**31)))
    if choice == 1:
        return rng.randrange(-(2**40), 2**40)
    if choice == 2:
        return rng.choice((0.5, -1e308, float("inf"), float("nan")))
    if choice == 3:
        return rng.choice(("", "BTC-PERP", "x" * rng.randrange(1, 300), "\u0000", "é" * 5))
    if choice == 4:
        return rng.randbytes(rng.randrange(0, 40))
    if choice == 5:
        return rng.choice((None, True, False))
    if choice == 6:
        return rng.choice(("GTC", "IOC", "FOK", "buy", "cross", "isolated", "limit"))
    if choice == 7:
        return msgspec.msgpack.Ext(rng.randrange(-128, 128), rng.randbytes(rng.randrange(0, 9)))
    if choice in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def _key(rng: random.Random):
    """A map key: mostly strings, sometimes what no struct field is (numbers, bytes, None)."""
    if rng.random() < 0.8:
        return f"k{rng.randrange(9)}"
    return rng.choice((0, -1, 2**63 - 1, 1.5, b"\xff", None, True))


def _encode(value) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, TypeError, msgspec.EncodeError):
        return msgspec.msgpack.encode([value] if not isinstance(value, list) else [])


def _tagged(rng: random.Random, tags) -> dict:
    """A message with a real type tag and fields of the wrong type, missing, or unknown."""
    tag, names = rng.choice(tags)
    msg = {"type": tag}
    for name in names:
        if rng.random() < 0.7:
            msg[name] = _value(rng, 1)
    if rng.random() < 0.3:
        msg[f"x{rng.randrange(99)}"] = _value(rng, 1)
    return msg


def _corrupt(rng: random.Random, kind: str, valid: bytes, tags) -> bytes:
    if kind == "forged":
        return valid
    if kind == "random_bytes":
        return rng.randbytes(rng.choice((0, 1, 2, 3, 8, 64, 700, 5000)))
    if kind == "wrong_shape":
        return _encode(_value(rng) if rng.random() < 0.5 else [_value(rng, 1)
                                                               for _ in range(rng.randrange(1, 4))])
    if kind == "tagged_wrong_fields":
        return _encode([_tagged(rng, tags) for _ in range(rng.randrange(1, 4))])
    if kind == "truncated":
        return valid[:rng.randrange(0, len(valid))]
    if kind == "bit_flipped":
        at = rng.randrange(len(valid) * 8)
        flipped = bytearray(valid)
        flipped[at // 8] ^= 1 << (at % 8)
        return bytes(flipped)
    if kind == "oversized":  # over the gateway's frame limit, under libzmq's: answered
        return _encode([{"type": "Ping", "pad": "p" * rng.randrange(70_000, MAX_CLIENT_MESSAGE // 2)}])
    raise ValueError(kind)


# ---------------------------------------------------------------------------------- the venue


def _project(view, orders) -> dict:
    """An account's state that no mark or clock moves: cash, fees, positions, open orders."""
    return {
        "balance": view.balance, "fees_paid": view.fees_paid,
        "isolated_margin": view.isolated_margin, "open_orders": view.open_orders,
        "positions": sorted((p.symbol, p.qty, p.cost, p.mode, p.leverage) for p in view.positions),
        "orders": sorted((o.order_id, o.symbol, o.side, o.price, o.qty)
                         for o in orders.orders),
    }


async def venue_state(clients: dict[str, Client], symbols: list[str]) -> dict:
    state = {}
    for name, client in clients.items():
        state[name] = _project(await client.account_view(), await client.open_orders())
    any_client = next(iter(clients.values()))
    for symbol in symbols:
        book = await any_client.book(symbol, depth=50)
        state[f"book:{symbol}"] = {"bids": book.bids, "asks": book.asks}
    return state


def node_stats(run_dir: Path) -> dict[str, dict]:
    status = read_status(run_dir) or {"nodes": {}}
    return {name: {"pid": n.get("pid"), "restarts": n.get("restarts", 0),
                   "exit_code": n.get("exit_code"), "stats": dict(n.get("stats") or {})}
            for name, n in status["nodes"].items()}


# ---------------------------------------------------------------------------------- the run


class Tally:
    """The answers a fuzzing session got, by reason."""

    def __init__(self, client: Client) -> None:
        self.answers = 0
        self.refused = 0
        self.reasons: Counter = Counter()
        original = client._dispatch

        self.not_refusals: list[str] = []

        def dispatch(msg) -> None:
            self.answers += 1
            self.refused += type(msg) is Error
            self.reasons[msg.reason if type(msg) is Error else type(msg).__name__] += 1
            if type(msg) is not Error and len(self.not_refusals) < 20:
                self.not_refusals.append(repr(msg)[:300])
            original(msg)

        client._dispatch = dispatch


async def fuzz_gateway(endpoint: str, api_key: str, secret: bytes, frames: int,
                       rng: random.Random) -> dict:
    """`frames` hostile frames on one signed session; every one answered with a reason."""
    sent: Counter = Counter()
    async with Client(endpoint, api_key=api_key, secret=secret, timeout=10) as client:
        await client.account_view()
        started_ns = time.time_ns()  # (the window the cores are watched in: between the probes)
        tally = Tally(client)
        price = 1
        for start in range(0, frames, CHUNK):
            before = tally.refused
            n = min(CHUNK, frames - start)
            for _ in range(n):
                kind = rng.choice(CLIENT_KINDS)
                order = PlaceOrder(req_id=start + 1, symbol="BTC-PERP", side=rng.choice((BUY, SELL)),
                                   qty=1, price=price)
                valid = client._codec.encode([client.signed(order)]) \
                    if kind in ("truncated", "bit_flipped") else b""  # (only these start from it)
                frame = _corrupt(rng, kind, valid, CLIENT_TAGS)
                sent[kind] += 1
                await client._sock.send(frame)
            deadline = time.monotonic() + ANSWER_WAIT_S
            while tally.refused - before < n and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if tally.refused - before < n:
                return {"sent": dict(sent), "answers": tally.answers, "refused": tally.refused,
                        "reasons": dict(tally.reasons), "unanswered_chunk_at": start}
        ended_ns = time.time_ns()
        await client.account_view()  # the session still serves
    return {"sent": dict(sent), "answers": tally.answers, "refused": tally.refused,
            "reasons": dict(tally.reasons),
            "not_refusals": tally.not_refusals, "window_ns": (started_ns, ended_ns)}


def fuzz_too_big(endpoint: str, count: int) -> int:
    """Frames past libzmq's limit, each on its own connection: the gateway drops that connection
    (and only it). Returns how many were sent."""
    ctx = zmq.Context.instance()
    for _ in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)
        sock.connect(endpoint)
        sock.send(b"\x91" + b"\xc6" + (MAX_CLIENT_MESSAGE * 2).to_bytes(4, "big") +
                  b"\x00" * (MAX_CLIENT_MESSAGE * 2))
        sock.close()
    return count


def internal_valid_frames(topo) -> list[bytes]:
    """Real internal frames: truncated, and sent whole as forgeries (a deposit as the gateway
    would route the admin's, with the admin's real key, so that only its sender refuses it, also
    on the gateway's own link; a fill; a mark; a timer tick; a feed shock)."""
    enc = msgspec.msgpack.encode
    admin = next((a for a in topo.accounts.values() if "admin" in a.scopes), None)
    deposit = Routed(ref=10**15, account=admin.name if admin else "mm1",
                     body=Deposit(account="mm1", amount=10**12), scopes=("admin",),
                     key_id=key_id(admin.api_key) if admin else "0" * 64)
    fill = Trade(seq=10**9, trade_id=10**9, symbol="BTC-PERP", price=30_000, qty=5, taker_side=1,
                 taker_order_id=1, taker_account="mm1", taker_remaining=0, maker_order_id=2,
                 maker_account="mm2", maker_remaining=0)
    return [enc([IndexMark(symbol="BTC-PERP", index=30_000, mark=30_001, last=30_000, seq=9,
                           ts_ns=time.time_ns(), sources=5, mode="normal")]),
            enc([ClockTick()]),
            enc([FeedControl(action="shock", symbol="BTC-PERP", ppm=-500_000)]),
            enc([deposit]),
            enc([LinkSeq(link="gateway->risk", first=10**9, count=1), deposit]),
            enc([LinkSeq(link="matching->risk", first=10**9, count=1), fill])]


def _push(ctx, keyring, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a connection: is anyone listening?
    if keyring is not None:
        keyring.client(sock, endpoint)
    sock.connect(endpoint)
    return sock


def fuzz_internal(topo, frames: int, rng: random.Random) -> dict[str, dict]:
    """Garbage and forgeries to every node's inbox; returns per node what was sent, how much
    its decoder must refuse and how much its sender check must.

    With CURVE on, each inbox gets two connections: one with the key of a role that does send
    it messages (its decoder is tested: only frames that decode to nothing go there, never a
    real message), and one with the tools' key, for the forgeries (real frames, whole), which
    its sender check must refuse. With CURVE off there is one plain connection, and no forgery
    is sent: nothing could tell it from the real thing."""
    codec = Codec(NodeInbound)
    tools = curve.load(topo, curve.TOOLS)
    valid = internal_valid_frames(topo)
    ctx = zmq.Context.instance()
    targets = {name: node.inbox for name, node in topo.nodes.items() if getattr(node, "inbox", "")}
    targets.update({f"{name}.b": node.standby_inbox for name, node in topo.nodes.items()
                    if getattr(node, "standby", False)})  # a standby's inbox is a door too
    out: dict[str, dict] = {}
    listening = {}
    for name, endpoint in sorted(targets.items()):
        node = name.partition(".")[0]
        flows = senders.allowed(node, topo.nodes, topo.failover.witness) if tools else None
        peer = None if flows is None else sorted(r for r in flows if r != curve.TOOLS)[0]
        garbage = _push(ctx, curve.load(topo, peer) if peer else None, endpoint)
        if garbage.poll(2000, zmq.POLLOUT):
            forger = _push(ctx, tools, endpoint) if tools else None
            listening[name] = (node, flows, peer, garbage, forger)
        else:  # a node with no inbox (the oracle only subscribes)
            garbage.close(linger=0)
            out[name] = {"sent": {}, "must_refuse": 0, "empty_batches": 0, "not_sent_valid": 0,
                         "no_listener": True}
    per_node = max(1, frames // max(1, len(listening)))
    for name, (node, flows, peer, garbage, forger) in listening.items():
        sent: Counter = Counter()
        refused = empty = skipped = forged = 0
        while sum(sent.values()) < per_node:
            kind = rng.choice(INTERNAL_KINDS)
            frame = _corrupt(rng, kind, rng.choice(valid), NODE_TAGS)
            try:
                decoded = codec.decode(frame)
            except (msgspec.DecodeError, msgspec.ValidationError):
                decoded = None
            if decoded:  # a real message: a forgery, which only the sender's role refuses
                if forger is None or senders.refusal(flows, curve.TOOLS, decoded, node) is None:
                    skipped += 1  # (CURVE off, or a feed shock the tools may send: not sent)
                    continue
                forged += 1
                forger.send(frame)
            else:
                if decoded is None:
                    refused += 1
                else:
                    empty += 1  # an empty batch: decodes, carries nothing
                garbage.send(frame)
            sent[kind] += 1
        for sock in (garbage, forger):
            if sock is not None:
                sock.close()
        out[name] = {"sent": dict(sent), "must_refuse": refused, "empty_batches": empty,
                     "forged": forged, "not_sent_valid": skipped, "garbage_from": peer or "plain"}
    return out


async def _clients(topo, run_dir: Path, accounts: list[str]) -> dict[str, Client]:
    clients = {}
    for name in accounts:
        key = topo.accounts[name].api_key
        client = Client(topo.nodes["gateway"].client, api_key=key, secret=secret_for(run_dir, key),
                        timeout=10)
        await client.connect()
        clients[name] = client
    return clients


async def _seed_state(clients: dict[str, Client], topo) -> None:
    """Resting orders on both sides, so that books and open orders are not empty."""
    price = topo.symbols["BTC-PERP"].initial_price
    mm = clients[next(iter(clients))]
    await mm.place("BTC-PERP", BUY, 2, price - price // 20)
    await mm.place("BTC-PERP", SELL, 3, price + price // 20)


async def wait_counted(run_dir: Path, before: dict, internal: dict, timeout: float) -> dict:
    """Per node, how many frames it refused at decode (`bad_frames`) and by sender
    (`frames_refused`), once it has counted what it must (heartbeats carry both)."""
    deadline = time.monotonic() + timeout

    def grew(now: dict, name: str, stat: str) -> int:
        return (now.get(name, {}).get("stats", {}).get(stat, 0)
                - before.get(name, {}).get("stats", {}).get(stat, 0))

    while True:
        now = node_stats(run_dir)
        counted = {name: {"bad_frames": grew(now, name, "bad_frames"),
                          "frames_refused": grew(now, name, "frames_refused")}
                   for name in internal}
        if all(counted_all(counted[n], internal[n]) for n in internal) or \
                time.monotonic() > deadline:
            return counted
        await asyncio.sleep(0.2)


def counted_all(counted: dict, sent: dict) -> bool:
    """A node counted every garbage frame it was sent, and refused every forged one (where the
    tools' role sends it nothing, every frame: `forged` counts them all)."""
    return (counted["bad_frames"] >= sent["must_refuse"]
            and counted["frames_refused"] >= sent.get("forged", 0))


# What may reach a core while the fuzz runs: the venue's own timer, marks and funding, and what
# the cores and the liquidator say to each other. Nothing from a client: every client frame is
# refused at the gateway, so nothing comes on a gateway's link, and nothing unsequenced but these.
OWN_INPUTS = {"ClockTick", "IndexMark", "Regime", "FundingRate",
              "KeyTable"}  # (risk's key table, from its own shell: never from an inbox)


def core_inputs_during(run_dir: Path, topo, windows: list[tuple[int, int]]) -> dict[str, dict]:
    """Per journaled instance: the inputs it journaled in the windows (the journal's own
    timestamps), by source, and those no legitimate source explains ("foreign"). A core's state
    is a function of its journal (audit verify replays it to the live state hash), so a fuzz
    that put no input in it changed none of its state."""
    from cluster.config import JOURNALED_NODES
    from cluster.journal import read_frames
    decode = msgspec.msgpack.Decoder(protocol.JournalInbound).decode
    out = {}
    for node in JOURNALED_NODES:
        for instance in topo.instances(node):
            directory = Path(run_dir) / "journal" / instance
            if not directory.exists():
                continue
            by_source: Counter[str] = Counter()
            foreign: list[str] = []
            run_link, run_left = "", 0
            for frame in read_frames(directory):
                try:
                    msg = decode(frame.payload)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    msg = None  # (a journal holds only what its decoder took: never expected)
                if type(msg) is LinkSeq:
                    run_link, run_left = msg.link, msg.count
                    continue
                name = type(msg).__name__ if msg is not None else "undecodable"
                if type(msg) is protocol.Routed:  # a client's request: which, and whose
                    name = f"Routed {type(msg.body).__name__} ({msg.account})"
                source = run_link if run_left else "unsequenced"
                run_left = max(0, run_left - 1)
                if not any(start <= frame.ts_ns <= end for start, end in windows):
                    continue
                by_source[f"{source}: {name}"] += 1
                if source.startswith("gateway->") or (source == "unsequenced"
                                                      and name not in OWN_INPUTS):
                    foreign.append(f"seq {frame.seq} {source}: {name}")
            out[instance] = {"inputs": sum(by_source.values()), "by_source": dict(by_source),
                             "foreign": foreign[:20], "foreign_count": len(foreign)}
    return out


async def run(topo, run_dir: Path, frames: int, seed: int, too_big: int = 3) -> dict:
    """Fuzz a running venue; the report, with `ok` true when every check holds."""
    rng = random.Random(seed)
    started = time.monotonic()
    accounts = [a for a in topo.accounts][:4]
    clients = await _clients(topo, run_dir, accounts)
    try:
        await _seed_state(clients, topo)
        symbols = sorted(topo.symbols)
        state_before = await venue_state(clients, symbols)
        nodes_before = node_stats(run_dir)
        # A signed key of its own, for the hostile session (trade scope: only a valid signature
        # would let a request through).
        api_key, secret = create_key(run_dir, accounts[0], ["trade"], require_signature=True)
        deadline = time.monotonic() + 10
        while True:  # the gateway reads the key file every 500 ms
            try:
                async with Client(topo.nodes["gateway"].client, api_key=api_key,
                                  secret=bytes.fromhex(secret), timeout=5):
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        client_frames = frames * 6 // 10
        gateway = await fuzz_gateway(topo.nodes["gateway"].client, api_key, bytes.fromhex(secret),
                                     client_frames, rng)
        internal_started_ns = time.time_ns()
        big = fuzz_too_big(topo.nodes["gateway"].client, too_big)
        internal = fuzz_internal(topo, frames - client_frames, rng)
        counted = await wait_counted(run_dir, nodes_before, internal, timeout=15)
        await asyncio.sleep(0.5)
        nodes_after = node_stats(run_dir)
        # the hostile session's frames (between its two probes), then the internal frames
        core_inputs = core_inputs_during(run_dir, topo, [  # (to now: a late one counts too)
            gateway.pop("window_ns", (0, 0)), (internal_started_ns, time.time_ns())])
        state_after = await venue_state(clients, symbols)
    finally:
        for client in clients.values():
            await client.close()
    sent_client = sum(gateway["sent"].values())
    checks = {
        "no_node_died_or_restarted": all(
            nodes_after.get(n, {}).get("pid") == b["pid"] and
            nodes_after.get(n, {}).get("restarts") == b["restarts"] for n, b in nodes_before.items()),
        "no_handler_errors": all(
            nodes_after.get(n, {}).get("stats", {}).get("errors", 0) == b["stats"].get("errors", 0)
            for n, b in nodes_before.items()),
        "every_client_frame_refused_with_a_reason": "unanswered_chunk_at" not in gateway
        and gateway["refused"] >= sent_client,
        "no_internal_error_answers": gateway["reasons"].get("internal_error", 0) == 0,
        "every_refused_internal_frame_counted": all(
            counted[n]["bad_frames"] >= internal[n]["must_refuse"] for n in internal),
        "every_forged_internal_frame_refused_by_sender": all(
            counted[n]["frames_refused"] >= internal[n].get("forged", 0) for n in internal),
        "state_unchanged": state_before == state_after,
        "no_core_input_from_the_fuzz": bool(core_inputs) and not any(
            c["foreign_count"] for c in core_inputs.values()),
    }
    report = {
        "seed": seed, "frames": frames, "seconds": round(time.monotonic() - started, 1),
        "gateway": {**gateway, "too_big_connections": big}, "internal": {
            n: {**internal[n], "counted_bad_frames": counted[n]["bad_frames"],
                "counted_frames_refused": counted[n]["frames_refused"]} for n in internal},
        "core_inputs_during_the_fuzz": core_inputs,
        "checks": checks, "ok": all(checks.values()),
    }
    if not checks["state_unchanged"]:
        report["state_diff"] = {k: {"before": state_before.get(k), "after": state_after.get(k)}
                                for k in set(state_before) | set(state_after)
                                if state_before.get(k) != state_after.get(k)}
    return report


def markdown(report: dict) -> str:
    g = report["gateway"]
    lines = [f"# perpx fuzz (seed {report['seed']}, {report['frames']:,} frames, "
             f"{report['seconds']} s)", "",
             "| target | frames sent | must be refused by the decoder (the rest: empty "
             "batches) | must be refused by sender (forged, or any from a role that sends it "
             "nothing) | refused or counted |",
             "|---|---|---|---|---|",
             f"| gateway (signed session) | {sum(g['sent'].values()):,} | all | "
             f"| {g['refused']:,} refusals |"]
    for name, n in sorted(report["internal"].items()):
        if n.get("no_listener"):
            lines.append(f"| {name} inbox | (not bound: nothing listens) | | |")
            continue
        lines.append(f"| {name} inbox | {sum(n['sent'].values()):,} | {n['must_refuse']:,} | "
                     f"{n.get('forged', 0):,} | {n['counted_bad_frames']:,} bad_frames, "
                     f"{n.get('counted_frames_refused', 0):,} refused by sender |")
    lines += ["", "Gateway answers by reason: " + ", ".join(
        f"{k} {v:,}" for k, v in sorted(g["reasons"].items(), key=lambda kv: -kv[1])), "",
        "| check | holds |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else '**NO**'} |" for k, v in report["checks"].items()]
    lines += ["", "What the journaled cores took in while the fuzz ran (their journals; a core's "
              "state is a function of its journal):", "",
              "| core | inputs | by source | foreign |", "|---|---:|---|---:|"]
    lines += [f"| {n} | {c['inputs']:,} | " + ", ".join(
        f"{k} {v:,}" for k, v in sorted(c["by_source"].items())) + f" | {c['foreign_count']} |"
        for n, c in sorted(report["core_inputs_during_the_fuzz"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--curve-off", action="store_true",
                        help="internal links without CurveZMQ: anyone local reaches the decoders")
    parser.add_argument("--standby", action="store_true", help="risk and matching with standbys")
    args = parser.parse_args(argv)
    from perf.cluster_load import Cluster

    with Cluster(optional=("surveillance",), curve=not args.curve_off,
                 standby=args.standby) as cluster:
        report = asyncio.run(run(cluster.topo, cluster.run_dir, args.frames, args.seed))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "fuzz.md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {RESULTS / 'fuzz.json'}, fuzz.md")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
