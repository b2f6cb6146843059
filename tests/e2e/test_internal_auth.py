"""An unauthenticated local process cannot inject a feed fault, a fill, a mark or a supervisor
command: the internal links are CurveZMQ, and only the run's own keys get through the handshake
(cluster/curve.py). The same frames sent with the run's tools key do get through, so what is
refused is refused for the missing key, not for its content."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import zmq

from cluster import curve
from cluster.client import Client
from cluster.protocol import (
    AdminRequest, FeedControl, Heartbeat, IndexMark, Trade, encode_one,
)
from tests.e2e.helpers import log_events, poll, shock

pytestmark = pytest.mark.e2e


def plain(kind: int, endpoint: str, serverkey: bytes | None = None) -> zmq.Socket:
    """A local process's socket: no key at all, or its own key and the server's public key
    (public keys are no secret)."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if serverkey is not None:
        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, serverkey
    sock.connect(endpoint)
    return sock


def stats(cluster, node: str) -> dict:
    return cluster.status()["nodes"][node].get("stats") or {}


def test_no_key_no_injection_and_the_tools_key_gets_through(cluster):
    topo = cluster.topo
    ring = curve.load(topo, curve.TOOLS)
    assert ring is not None, "CURVE is on by default"
    feeds_key = ring.publics["feeds"].encode()
    risk_key = ring.publics["risk"].encode()
    api_alice = cluster.api_key("alice")

    async def alice_view():
        async with Client(cluster.endpoint(), api_key=api_alice) as alice:
            view = await alice.account_view()
            return view.balance, [(p.symbol, p.qty) for p in view.positions]

    before = asyncio.run(alice_view())
    symbol = "BTC-PERP"
    price = topo.symbols[symbol].initial_price
    forged = {
        # a feed fault: every venue's price 50% down
        ("feeds", topo.nodes["feeds"].inbox, feeds_key): [
            FeedControl(action="shock", symbol=symbol, ppm=-500_000)],
        # a fill for alice and a mark, straight into risk
        ("risk", topo.nodes["risk"].inbox, risk_key): [
            Trade(seq=1, trade_id=10**9, symbol=symbol, price=price, qty=5, taker_side=1,
                  taker_order_id=2, taker_account="alice", taker_remaining=0, maker_order_id=1,
                  maker_account="bob", maker_remaining=0),
            IndexMark(symbol=symbol, index=price // 2, mark=price // 2, last=price // 2, seq=10**9,
                      ts_ns=time.time_ns(), sources=5, mode="normal")],
    }
    refused_before = {node: stats(cluster, node).get("curve_refused", 0) for node in ("feeds", "risk")}
    socks = []
    for (node, endpoint, serverkey), messages in forged.items():
        for key in (None, serverkey):  # no key; a key of its own
            sock = plain(zmq.PUSH, endpoint, key)
            socks.append((sock, messages))
    for sock, messages in socks:
        try:
            sock.send(msgspec.msgpack.encode(messages), zmq.NOBLOCK)
        except zmq.Again:
            pass  # nothing connected to queue it on: exactly the point
    # the supervisor's admin socket: a command without a key is never read
    admin = plain(zmq.DEALER, topo.supervisor.admin)
    admin.send(encode_one(AdminRequest(cmd="fault", args={"node": "risk", "op": "kill"})))
    assert not admin.poll(1500), "the supervisor answered a command from no key"
    time.sleep(1.0)  # heartbeats carry the refusal counts
    for sock, _ in socks:
        sock.close()
    admin.close()

    assert log_events(cluster, "feeds", "feed_shock") == []  # the forged shock never applied
    assert asyncio.run(alice_view()) == before  # no forged fill, no forged mark took
    for node in ("feeds", "risk"):
        refused = stats(cluster, node).get("curve_refused", 0) - refused_before[node]
        assert refused >= 1, (node, stats(cluster, node))
        assert log_events(cluster, node, "curve_refused"), node
    assert cluster.status()["nodes"]["risk"]["restarts"] == 0  # the kill command was not read

    # the control: the same kind of frame with the run's tools key is applied
    shock(cluster, symbol, -1_000)
    assert len(log_events(cluster, "feeds", "feed_shock")) == 1
    tools_admin = curve.tools_socket(zmq.Context.instance(), zmq.DEALER, topo, topo.supervisor.admin)
    tools_admin.setsockopt(zmq.LINGER, 0)
    tools_admin.send(encode_one(AdminRequest(cmd="netsim_show", args={})))
    assert tools_admin.poll(5000), "the supervisor did not answer the tools key"
    tools_admin.close()


def test_a_heartbeat_counts_only_from_the_node_it_names(cluster):
    """The supervisor's control socket takes every cluster key (the nodes' and the tools'); a
    heartbeat in risk's name, with risk's pid, from the tools' key would keep a hung risk looking
    alive. It is refused by its sender's role, and risk's own heartbeats still count."""
    topo = cluster.topo
    risk = cluster.status()["nodes"]["risk"]
    sock = curve.tools_socket(zmq.Context.instance(), zmq.PUSH, topo, topo.supervisor.control)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.send(encode_one(Heartbeat(node="risk", pid=risk["pid"], seq=10**9,
                                   mono_ns=time.monotonic_ns(), stats={})))
    sock.close()
    refused = poll(lambda: log_events(cluster, "supervisor", "control_sender_refused"), 10)
    assert refused and refused[0]["node"] == "risk" and refused[0]["sender"] == "tools", refused
    assert len(refused) == 1, refused  # the nodes' own heartbeats are never refused
    assert cluster.status()["nodes"]["risk"]["state"] == "running"
