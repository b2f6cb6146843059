"""Gateway core: logon, scopes, routing of answers and reports, logout and session expiry; any
sequence of requests and answers, each request answered or forwarded exactly once."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import (
    Ack, CancelAll, CancelOrder, Deposit, Error, GetAccount, GetBook, GetOrders, Logon, LogonAck,
    Logout, OrderAccepted, Ping, PlaceOrder, Reply, Report, Routed, SetLeverage,
)
from cluster.recording import RecordingShell
from nodes.gateway import service as gateway_service
from nodes.gateway.invalid import readable_req_ids
from nodes.gateway.sessions import Gateway

TOPO = config.load()
KEYS = {"k-alice": ("alice", ("trade",)), "k-admin": ("admin", ("admin",)),
        "k-view": ("viewer", ("read",))}


def body(effects, i=0):
    return effects[i][-1]


def test_logon_scopes_routing_logout_and_expiry():
    gw = Gateway(KEYS, {"BTC-PERP": {}}, collateral=("USDC", "0.000001"))
    assert body(gw.on_request(b"x", Logon(api_key="nope"))).reason == "invalid_api_key"
    ack = body(gw.on_request(b"a", Logon(req_id=1, api_key="k-alice"), 0))
    assert type(ack) is LogonAck and (ack.collateral, ack.atom) == ("USDC", "0.000001")
    gw.on_request(b"a2", Logon(api_key="k-alice"), 0)
    gw.on_request(b"v", Logon(api_key="k-view"), 0)
    assert body(gw.on_request(b"v", PlaceOrder(symbol="BTC-PERP", side=1, qty=1, price=1))) \
        .reason == "missing_scope"
    assert type(body(gw.on_request(b"v", GetAccount(req_id=3)))) is Routed
    assert type(body(gw.on_request(b"v", GetOrders(req_id=4)))) is Routed  # read scope lists
    assert body(gw.on_request(b"a", Deposit(account="alice", amount=1))).detail["required"] == "admin"
    routed = body(gw.on_request(b"a", PlaceOrder(req_id=7, symbol="BTC-PERP", side=1, qty=1,
                                                 price=1), 5))
    ev = OrderAccepted(seq=1, ref=routed.ref, order_id=1, account="alice", symbol="BTC-PERP",
                       side=1, price=1, qty=1)
    out = gw.on_internal(Report(ref=routed.ref, account="alice", event=ev))
    # the requester gets it as its answer (req_id 7); the other session of the account as a report
    assert [(e[1], e[2].ref) for e in out] == [(b"a", 7), (b"a2", 0)]
    assert type(body(gw.on_request(b"a2", Logout(req_id=2), 6))) is Ack
    assert set(gw.by_account["alice"]) == {b"a"}
    assert gw.expire(now_ns=10, idle_ns=6) == ["viewer"]  # a seen at 5, viewer only at 0
    assert b"a" in gw.sessions and b"v" not in gw.sessions
    assert type(body(gw.on_request(b"v", GetAccount()))) is Error


IDENTITIES = (b"a", b"b", b"v", b"z")
identities = st.sampled_from(IDENTITIES)
requests = st.one_of(
    st.builds(Logon, req_id=st.integers(0, 9), api_key=st.sampled_from(sorted(KEYS) + ["nope"]),
              version=st.sampled_from((1, 2, 99))),
    st.builds(Logout, req_id=st.integers(0, 9)),
    st.builds(PlaceOrder, req_id=st.integers(0, 9), symbol=st.sampled_from(("BTC-PERP", "X")),
              side=st.just(1), qty=st.just(1), price=st.just(1)),
    st.builds(CancelOrder, req_id=st.integers(0, 9), symbol=st.just("BTC-PERP")),
    st.builds(CancelAll, req_id=st.integers(0, 9)),
    st.builds(GetBook, req_id=st.integers(0, 9), symbol=st.sampled_from(("BTC-PERP", "X"))),
    st.builds(GetAccount, req_id=st.integers(0, 9)),
    st.builds(Ping, req_id=st.integers(0, 9), full=st.booleans()),
    st.builds(SetLeverage, req_id=st.integers(0, 9), symbol=st.just("BTC-PERP"), leverage=st.just(5)),
    st.builds(Deposit, req_id=st.integers(0, 9), account=st.just("alice"), amount=st.just(1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("client"), identities, requests),
                          st.tuples(st.just("answer"), st.integers(0, 40), st.booleans())),
                max_size=60))
def test_every_client_request_gets_exactly_one_answer_or_one_forward(steps):
    """Logged on or not, with any scope, in any order, interleaved with answers for refs that may
    be unknown, gone or repeated: each request leads to one effect, answers never raise."""
    gw = Gateway(KEYS, {"BTC-PERP": {}})
    for kind, who, what in steps:
        if kind == "client":
            effects = gw.on_request(who, what, 0)
            assert len(effects) == 1, (what, effects)
            dest = effects[0][0]
            assert dest in ("client", "risk", "matching")
            if dest == "client":
                assert effects[0][1] == who and effects[0][2].req_id == what.req_id
        else:
            ev = OrderAccepted(seq=1, ref=who, order_id=1, account="alice", symbol="BTC-PERP",
                               side=1, price=1, qty=1)
            msg = Report(ref=who, account="alice", event=ev) if what else \
                Reply(ref=who, body=Ack(action="x"))
            for effect in gw.on_internal(msg):
                assert effect[0] == "client" and effect[1] in IDENTITIES, effect


def test_a_request_that_fails_validation_is_refused_under_its_own_req_id():
    """The client correlates answers by req_id: a refusal under req_id 0 would leave the request
    that caused it waiting until its timeout."""
    shell = RecordingShell(TOPO.nodes["gateway"])
    gateway_service.build(shell, TOPO)
    me = b"client-1"
    cases = [
        (["PlaceOrder", 7, "BTC-PERP", 1, -5], "invalid_message", [7]),  # qty below 1
        ([["PlaceOrder", 3, "BTC-PERP", 1, 1], ["GetBook", 4, "X", 0]], "invalid_message", [3, 4]),
        ([["PlaceOrder", "x", "BTC-PERP"]], "invalid_message", [0]),  # no readable id
        (["Ping", 2**63], "invalid_message", [0]),  # not an Id
        ([["NoSuchMessage", 5]], "invalid_message", [0]),  # no client request has that shape
    ]
    for raw, reason, ids in cases:
        shell.sent.clear()
        shell.router([[me, msgspec.msgpack.encode(raw)]])
        answers = [m for peer, m in shell.sent if peer == "client"]
        assert [(type(m), m.reason, m.req_id) for m in answers] == [(Error, reason, i) for i in ids]
        if ids == [7]:  # messages are arrays on the wire: the error names the field, not "$[4]"
            assert "(PlaceOrder.qty)" in answers[0].detail["error"], answers[0].detail
    shell.sent.clear()
    shell.router([[me, b"\xc1"]])  # 0xc1 is no msgpack type at all
    assert [(m.reason, m.req_id) for _, m in shell.sent] == [("malformed_message", 0)]
    assert readable_req_ids(b"\xc1") == [] and readable_req_ids(msgspec.msgpack.encode(5)) == []


def test_an_oversized_frame_is_refused_undecoded_and_a_clients_ping_hops_are_dropped():
    shell = RecordingShell(TOPO.nodes["gateway"])
    gateway_service.build(shell, TOPO)
    me = b"client-1"
    logon = Logon(req_id=1, api_key=TOPO.accounts["mm1"].api_key)
    shell.router([[me, msgspec.msgpack.encode(logon)]])
    big = msgspec.msgpack.encode([PlaceOrder(req_id=i + 2, symbol="BTC-PERP", side=1, qty=1)
                                  for i in range(3000)])
    assert len(big) > gateway_service.MAX_CLIENT_FRAME
    shell.sent.clear()
    shell.router([[me, big]])
    assert [(p, m.reason) for p, m in shell.sent] == [("client", "frame_too_large")]
    assert str(gateway_service.MAX_CLIENT_FRAME) in shell.sent[0][1].detail["error"]
    shell.sent.clear()
    forged = Ping(req_id=9, hops=[("matching", 1)] * 1000, full=True)  # hops cannot be made to grow
    shell.router([[me, msgspec.msgpack.encode(forged)]])
    (peer, routed), = shell.sent
    assert peer == "risk" and routed.body.hops == [("gateway", 0)] and routed.body.full
    shell.sent.clear()
    shell.router([[me, msgspec.msgpack.encode(Ping(req_id=10, hops=[("matching", 1)] * 1000))]])
    (peer, pong), = shell.sent  # the gateway answers a plain ping itself
    assert peer == "client" and pong.req_id == 10 and pong.hops == [("gateway", 0)]


def test_the_gateways_own_refusals_are_journaled_and_relayed_ones_are_not():
    shell = RecordingShell(TOPO.nodes["gateway"])
    gateway_service.build(shell, TOPO)
    me, admin = b"client-1", b"client-2"
    shell.router([[me, msgspec.msgpack.encode(Logon(req_id=1, api_key="wrong"))],
                  [me, msgspec.msgpack.encode(GetAccount(req_id=2))],
                  [admin, msgspec.msgpack.encode(Logon(req_id=3,
                                                       api_key=TOPO.accounts["admin"].api_key))],
                  [admin, msgspec.msgpack.encode(PlaceOrder(req_id=4, symbol="BTC-PERP", side=1,
                                                            qty=1))]])
    assert [(e.rule, e.subject, e.numbers.get("req_id")) for e in shell.explained] == [
        ("gateway.invalid_api_key", me.hex(), 1), ("gateway.not_logged_on", me.hex(), 2),
        ("gateway.missing_scope", "admin", 4)]
    assert shell.explained[2].numbers["required"] == "trade"
    shell.explained.clear()
    shell.router([[admin, b"\xc1"]])  # refused before the core: journaled the same way
    assert [(e.rule, e.subject) for e in shell.explained] == [("gateway.malformed_message", "admin")]
    shell.explained.clear()
    routed = [m for peer, m in shell.sent if peer == "risk"]
    assert routed == []  # nothing was let through
    shell.router([[admin, msgspec.msgpack.encode(Deposit(req_id=5, account="bob", amount=1))]])
    (_, deposit), = [(p, m) for p, m in shell.sent if p == "risk"]
    shell.inbox([Reply(ref=deposit.ref, body=Error(reason="unknown_account"))])  # risk's refusal
    assert shell.explained == []  # risk journaled its own


def test_a_restarted_gateway_never_reuses_a_ref_so_late_answers_cannot_reach_another_client():
    def gateway_routes(client: bytes, account: str, req_id: int):
        shell = RecordingShell(TOPO.nodes["gateway"])
        gateway_service.build(shell, TOPO)
        shell.router([[client, msgspec.msgpack.encode(
            Logon(req_id=1, api_key=TOPO.accounts[account].api_key))]])
        shell.router([[client, msgspec.msgpack.encode(
            PlaceOrder(req_id=req_id, symbol="BTC-PERP", side=1, qty=1, price=1))]])
        (routed,) = [m for p, m in shell.sent if p == "risk"]
        shell.sent.clear()
        return shell, routed

    _, before = gateway_routes(b"alice-1", "alice", 7)  # in flight when the gateway died
    restarted, after = gateway_routes(b"bob-1", "bob", 9)
    assert after.ref > before.ref
    late = Report(ref=before.ref, account="alice", event=OrderAccepted(
        seq=1, ref=before.ref, order_id=1, account="alice", symbol="BTC-PERP", side=1, price=1,
        qty=1))
    restarted.inbox([late])  # the old request's answer reaches the new gateway
    assert [(p, getattr(m, "ref", None)) for p, m in restarted.sent] == []  # bob gets nothing
