"""An inbox reads a frame only from a role that sends it those messages (cluster/senders.py): the
table's answers, and the shell refusing a forged frame whole, counted and explained once."""

from __future__ import annotations

import json
import typing

import zmq

from cluster import config, curve, senders
from cluster.protocol import (
    Deposit, FeedControl, LinkSeq, NodeInbound, NewOrder, OrderAccepted, Pong, PrimaryIs, Reply,
    ResendFrom, Routed, StandbyDetached, Trade, WitnessQuery, WitnessReply,
)
from cluster.recording import RecordingLog
from tests.unit.shell_inbox import risk_inbox

NODES = ("gateway", "risk", "matching", "oracle", "liquidator", "feeds", "surveillance")
DEPOSIT = Routed(ref=1, account="alice", body=Deposit(account="alice", amount=10**12),
                 key_id="f" * 64)


def refusal(receiver: str, sender: str, batch: list, witness: str = "gateway") -> str | None:
    return senders.refusal(senders.allowed(receiver, NODES, witness), sender, batch, receiver)


def test_only_the_gateway_puts_a_client_request_into_risk():
    assert refusal("risk", "gateway", [DEPOSIT]) is None
    assert refusal("risk", "gateway", [LinkSeq(link="gateway->risk", first=5, count=1),
                                       DEPOSIT]) is None
    for role in ("tools", "supervisor", "oracle", "liquidator", "surveillance", "matching"):
        assert refusal("risk", role, [DEPOSIT]) is not None, role
    assert refusal("risk", "tools", [DEPOSIT]) == "sender_not_allowed"
    assert refusal("risk", "matching", [DEPOSIT]) == "message_not_allowed"
    assert refusal("risk", "", [DEPOSIT]) == "sender_not_allowed"  # no role: not a node's


def test_a_frame_cannot_borrow_another_nodes_link():
    fill = Trade(seq=1, trade_id=1, symbol="BTC-PERP", price=1, qty=1, taker_side=1,
                 taker_order_id=2, taker_account="b", taker_remaining=0, maker_order_id=1,
                 maker_account="a", maker_remaining=0)
    assert refusal("risk", "matching", [LinkSeq(link="matching->risk", first=1, count=1),
                                        fill]) is None
    assert refusal("risk", "gateway", [LinkSeq(link="matching->risk", first=1, count=1),
                                       fill]) == "link_not_senders"
    # a link header alone (an idle announcement) is the sender's own too
    assert refusal("gateway", "liquidator", [LinkSeq(link="risk->gateway", first=9)]) == \
        "link_not_senders"


def test_one_message_outside_the_flow_refuses_the_whole_frame():
    order = NewOrder(ref=1, order_id=1, account="a", symbol="BTC-PERP", side=1, qty=1, price=1)
    accepted = OrderAccepted(seq=1, ref=1, order_id=1, account="a", symbol="BTC-PERP", side=1,
                             price=1, qty=1)
    assert refusal("matching", "risk", [order]) is None
    assert refusal("matching", "risk", [order, accepted]) == "message_not_allowed"


def test_control_messages_speak_for_their_sender():
    """The review's findings: any core's key could announce another node's primary (fencing the
    gateway off it), any node's could grant a promotion, ask for another link's resend."""
    announce = PrimaryIs(node="risk", instance="risk.b", epoch=2, next_seq=1)
    for receiver in NODES:
        assert refusal(receiver, "risk", [LinkSeq(link="risk->" + receiver), announce]) is None
        assert refusal(receiver, "gateway", [announce]) == "message_not_allowed"  # not a core
        assert refusal(receiver, "tools", [announce]) is not None
        # matching's key naming risk (or risk's instance): not its own announcement
        assert refusal(receiver, "matching", [announce]) == "names_another_node"
        assert refusal(receiver, "matching", [PrimaryIs(node="matching", instance="risk.b",
                                                        epoch=2)]) == "names_another_node"
    detached = StandbyDetached(node="risk", epoch=2, next_seq=10**12)
    assert refusal("gateway", "risk", [detached]) is None
    assert refusal("gateway", "matching", [detached]) == "names_another_node"
    query = WitnessQuery(node="risk", instance="risk.b", epoch=3, propose=True, next_seq=1)
    assert refusal("gateway", "risk", [query]) is None
    assert refusal("gateway", "matching", [query]) == "names_another_node"
    # only the witness answers a witness query
    answer = WitnessReply(node="risk", granted=True, epoch=2, silent_ms=900)
    assert refusal("risk", "gateway", [LinkSeq(link="gateway->risk"), answer]) is None
    for role in ("oracle", "liquidator", "matching", "feeds"):
        assert refusal("risk", role, [answer]) == "message_not_allowed", role
    assert refusal("risk", "matching", [answer], witness="matching") is None
    # a resend ask is for the asker's own incoming link from the receiver
    assert refusal("risk", "gateway", [ResendFrom(link="risk->gateway", next_seq=1)]) is None
    assert refusal("risk", "gateway", [ResendFrom(link="risk->matching", next_seq=1)]) == \
        "names_another_node"


def test_the_tools_may_shock_a_feed_and_nothing_else():
    shock = FeedControl(action="shock", symbol="BTC-PERP", ppm=-80_000)
    assert refusal("feeds", "tools", [shock]) is None
    assert refusal("feeds", "supervisor", [shock]) is None
    for receiver in NODES:
        if receiver != "feeds":
            assert refusal(receiver, "tools", [shock]) is not None, receiver


def test_the_table_names_only_decodable_messages_and_real_roles():
    decodable = set(typing.get_args(NodeInbound))
    roles = set(NODES) | {curve.TOOLS, "supervisor"}
    for receiver, by_sender in senders.FLOWS.items():
        assert receiver in NODES
        for sender, types in by_sender.items():
            assert sender in roles, sender
            assert types <= decodable, types - decodable
    assert (senders.FROM_CORES | senders.FROM_NODES | senders.FROM_WITNESS) <= decodable
    assert set(senders.NAMING) <= senders.FROM_CORES | senders.FROM_NODES


def test_the_inbox_refuses_a_forged_frame_whole_counted_and_explained_within_bounds(tmp_path):
    shell, handle, got = risk_inbox(tmp_path)
    frame = shell.codec.encode([DEPOSIT])
    try:
        # the tools' role sends risk nothing: refused before its frame is even decoded, and a
        # flood of them is said 10 times, then every 1,000th
        handle([(frame, "tools")] * 1100)
        assert got == []
        assert shell.stats["frames_refused"] == 1100
        said = [fields for _, event, fields in shell.log.events if event == "frame_refused"]
        assert len(said) == 11 and {f["sender"] for f in said} == {"tools"}, len(said)
        assert said[-1]["count"] == 1000
        # ... which hides nothing another sender does: matching's key with a client request
        handle([(frame, "matching")])
        said = [fields for _, event, fields in shell.log.events if event == "frame_refused"]
        assert said[-1]["sender"] == "matching" and said[-1]["reason"] == "message_not_allowed"
        assert said[-1]["messages"] == ["Routed"]
        shell.audit.close()
        records = [json.loads(line) for line in
                   (tmp_path / "audit" / "risk.jsonl").read_text().splitlines()]
        refused = [r for r in records if r["rule"] == "inbox.sender_refused"]
        assert len(refused) == 12
        assert refused[0]["subject"] == "tools" and refused[0]["decision"] == "sender_not_allowed"
        assert refused[-1]["numbers"]["types"] == "Routed"
        handle([(frame, "gateway")])  # the same frame from the gateway is read
        assert [m for _, batch in got for m in batch] == [DEPOSIT]
        reply = shell.codec.encode([Reply(ref=1, body=Pong())])
        handle([(reply, "")])  # an unauthenticated connection (no role): refused
        assert shell.stats["frames_refused"] == 1102
    finally:
        shell.ctx.destroy(linger=0)


def test_the_zap_answer_names_the_keys_role_and_lets_any_client_key_into_the_client_domain(
        tmp_path):
    from zmq.utils import z85

    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    ring = curve.load(topo, curve.TOOLS)
    zap = curve.ZapHandler(zmq.Context.instance(), ring, RecordingLog())
    try:
        def ask(domain: bytes, key: bytes) -> list[bytes]:
            return zap.answer([b"1.0", b"7", domain, b"127.0.0.1", b"", b"CURVE", key])

        gateway = z85.decode(ring.publics["gateway"].encode())
        assert ask(b"", gateway)[2:5] == [b"200", b"OK", b"gateway"]
        tools = z85.decode(ring.publics[curve.TOOLS].encode())
        assert ask(b"", tools)[4] == b"tools"
        stranger = z85.decode(zmq.curve_keypair()[0])
        assert ask(b"", stranger)[2] == b"400"  # an internal socket: the cluster's keys only
        assert ask(curve.CLIENTS_DOMAIN, stranger)[2:5] == [b"200", b"OK", b"client"]
        assert zap.answer([b"1.0", b"8", curve.CLIENTS_DOMAIN, b"a", b"", b"PLAIN", b"u", b"p"]
                          )[2] == b"400"
    finally:
        zap.close()


def test_a_socket_for_some_roles_lets_in_their_keys_alone(tmp_path):
    """A core's replication socket takes its other instance's key only (the tools' key could
    fence either instance with a hello, or forge the standby's acknowledgements), and the
    supervisor's admin socket the tools' only (a node's key could kill or pause nodes)."""
    from zmq.utils import z85

    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    ring = curve.load(topo, "risk")
    zap = curve.ZapHandler(zmq.Context.instance(), ring, RecordingLog())
    try:
        def ask(domain: bytes, role: str) -> bytes:
            key = z85.decode(ring.publics[role].encode())
            return zap.answer([b"1.0", b"7", domain, b"a", b"", b"CURVE", key])[2]

        repl = curve.ONLY + b"risk"
        assert ask(repl, "risk") == b"200"
        assert [ask(repl, r) for r in ("tools", "gateway", "matching")] == [b"400"] * 3
        admin = curve.ONLY + b"tools"
        assert ask(admin, "tools") == b"200" and ask(admin, "oracle") == b"400"
    finally:
        zap.close()


def test_each_role_holds_its_own_secret_only(tmp_path):
    """The review's first finding: one keyring file held every role's secret, so whoever had
    the tools' key had the gateway's too. Each secret is now its own 0600 file, and a role's
    keyring carries its own secret alone."""
    import os
    import stat

    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    folder = curve.keyring_dir(topo.run_dir)
    secrets = {p.stem: p.read_bytes() for p in folder.glob("*.secret")}
    assert set(secrets) == {*topo.nodes, "supervisor", curve.TOOLS}
    assert len(set(secrets.values())) == len(secrets)
    for path in folder.glob("*.secret"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    tools = curve.load(topo, curve.TOOLS)
    assert tools.secret == secrets[curve.TOOLS]
    assert not any(secret in (folder / "public.json").read_bytes() for secret in secrets.values())
    assert not hasattr(tools, "keys")  # no table of every role's secrets to reach for
