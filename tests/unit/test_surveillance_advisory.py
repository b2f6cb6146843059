"""Surveillance is advisory by construction: the same inputs give matching and risk the same state
hash and the same messages to every venue node, with and without a surveillance node in the
topology; the node's shell connects to no node; the private feed carries every engine event."""

from __future__ import annotations

import msgspec

from cluster import config
from cluster.protocol import (
    AccountRisk, Codec, EngineBatch, NewOrder, NodeInbound, Notice, PlaceOrder, Routed,
    SetLeverage, Trade,
)
from cluster.recording import RecordingShell
from cluster.signing import key_id
from nodes.matching import service as matching_service
from nodes.risk import service as risk_service
from nodes.surveillance import service as surveillance_service
from nodes.surveillance.feed import TOPIC

WITH = config.load()
WITHOUT = msgspec.structs.replace(
    WITH, nodes={n: c for n, c in WITH.nodes.items() if n != "surveillance"})
S = "BTC-PERP"
PRICE = WITH.symbols[S].initial_price


def final_hash(shell, on_stop, event: str) -> str:
    on_stop()
    return [f for _, e, f in shell.log.events if e == event][0]["state_hash"]


def matching_run(topo):
    shell = RecordingShell(topo.nodes["matching"])
    on_stop = matching_service.build(shell, topo)
    cmds = [NewOrder(ref=1, order_id=1, account="mm1", symbol=S, side=-1, qty=5, price=PRICE),
            NewOrder(ref=2, order_id=2, account="alice", symbol=S, side=1, qty=2, price=PRICE),
            NewOrder(ref=3, order_id=3, account="bob", symbol=S, side=1, qty=1, price=PRICE - 50)]
    shell.inbox(cmds)
    return shell, final_hash(shell, on_stop, "matching_final_state")


def test_matching_same_state_and_outputs_with_and_without_surveillance():
    with_shell, with_hash = matching_run(WITH)
    without_shell, without_hash = matching_run(WITHOUT)
    assert with_hash == without_hash
    venue = [(p, m) for p, m in with_shell.sent if p != "private"]
    assert venue == without_shell.sent  # risk and market data see exactly the same
    assert not [p for p, _ in without_shell.sent if p == "private"]  # no feed without the node


def test_private_feed_carries_each_commands_events_with_accounts():
    shell = RecordingShell(WITH.nodes["matching"])
    timers = []
    real_every = shell.every
    shell.every = lambda ms, fn, always=False: timers.append(fn) or real_every(ms, fn)
    matching_service.build(shell, WITH)
    shell.inbox([NewOrder(ref=1, order_id=1, account="mm1", symbol=S, side=-1, qty=5, price=PRICE),
                 NewOrder(ref=2, order_id=2, account="alice", symbol=S, side=1, qty=2,
                          price=PRICE)])
    for fn in timers:
        if getattr(fn, "__self__", None).__class__.__name__ == "PrivateFeed":
            fn()
    frames = [m for p, m in shell.sent if p == "private"]
    assert len(frames) == 1 and frames[0][0] == TOPIC
    batches = Codec(NodeInbound).decode(frames[0][1])
    assert [type(b) for b in batches] == [EngineBatch, EngineBatch]
    trade = [e for e in batches[1].events if type(e) is Trade][0]
    assert (trade.maker_account, trade.taker_account) == ("mm1", "alice")


def risk_run(topo):
    shell = RecordingShell(topo.nodes["risk"])
    on_stop = risk_service.build(shell, topo)
    alice = key_id(topo.accounts["alice"].api_key)  # the key the gateway names to risk
    shell.inbox([Routed(ref=1, account="alice", body=SetLeverage(symbol=S, leverage=50),
                        key_id=alice),
                 Routed(ref=2, account="alice", body=PlaceOrder(symbol=S, side=1, qty=3,
                                                                price=PRICE), key_id=alice)])
    return shell, final_hash(shell, on_stop, "risk_final_state")


def test_risk_same_state_and_outputs_with_and_without_surveillance_and_copies_settings():
    (with_shell, with_hash), (without_shell, without_hash) = risk_run(WITH), risk_run(WITHOUT)
    assert with_hash == without_hash
    venue = [(p, m) for p, m in with_shell.sent if p != "surveillance"]
    assert venue == without_shell.sent
    assert with_shell.explained == without_shell.explained
    copied = [m for p, m in with_shell.sent if p == "surveillance"]
    notice = [m for m in copied if type(m) is Notice][0]
    assert (notice.rule, notice.subject, notice.numbers["to"]) == ("risk.leverage_changed",
                                                                   "alice", 50)
    assert all(type(m) in (Notice, AccountRisk) for m in copied)


def test_surveillance_shell_connects_to_no_node(tmp_path):
    topo = config.load(run_dir=str(tmp_path))
    shell = RecordingShell(topo.nodes["surveillance"])
    peers = []
    shell.peer = peers.append
    shell.send = lambda peer, msg: peers.append(peer)
    surveillance_service.build(shell, topo)()
    assert peers == []
