"""Gateway core: logon, scopes, routing of answers and reports, logout and session expiry."""

from __future__ import annotations

from cluster.protocol import (
    Ack, Deposit, Error, GetAccount, Logon, LogonAck, Logout, OrderAccepted, PlaceOrder, Report,
    Routed,
)
from nodes.gateway.sessions import Gateway

KEYS = {"k-alice": ("alice", ("trade",)), "k-admin": ("admin", ("admin",)),
        "k-view": ("viewer", ("read",))}


def body(effects, i=0):
    return effects[i][-1]


def test_logon_scopes_routing_logout_and_expiry():
    gw = Gateway(KEYS, {"BTC-PERP": {}})
    assert body(gw.on_request(b"x", Logon(api_key="nope"))).reason == "invalid_api_key"
    assert type(body(gw.on_request(b"a", Logon(req_id=1, api_key="k-alice"), 0))) is LogonAck
    gw.on_request(b"a2", Logon(api_key="k-alice"), 0)
    gw.on_request(b"v", Logon(api_key="k-view"), 0)
    assert body(gw.on_request(b"v", PlaceOrder(symbol="BTC-PERP", side=1, qty=1, price=1))) \
        .reason == "missing_scope"
    assert type(body(gw.on_request(b"v", GetAccount(req_id=3)))) is Routed
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
