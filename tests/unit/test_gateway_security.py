"""Gateway security (#20): what is served before logon, session caps per address and per key,
failed logons paced then locked out (with the numbers), sessions released when they close."""

from __future__ import annotations

from cluster.protocol import (
    Error, GetAccount, GetBook, Logon, LogonAck, PlaceOrder, Ping, Pong, Routed,
)
from nodes.gateway.sessions import Gateway, LogonPolicy

KEYS = {"k-alice": ("alice", ("trade",)), "k-bob": ("bob", ("trade",)),
        "k-view": ("viewer", ("read",))}
MS = 1_000_000


def answer(effects):
    (effect,) = effects
    return effect[-1]


def test_before_logon_only_logon_and_a_local_ping_are_served():
    gw = Gateway(KEYS, {"BTC-PERP": {}})
    pong = answer(gw.on_request(b"x", Ping(req_id=4, hops=[("gateway", 7)]), 0, "1.2.3.4"))
    assert type(pong) is Pong and pong.req_id == 4 and pong.hops == [("gateway", 7)]
    for request in (Ping(req_id=5, full=True), GetBook(req_id=6, symbol="BTC-PERP"),
                    GetAccount(req_id=7), PlaceOrder(req_id=8, symbol="BTC-PERP", side=1, qty=1)):
        refused = answer(gw.on_request(b"x", request, 0, "1.2.3.4"))
        assert (refused.reason, refused.req_id) == ("not_logged_on", request.req_id), refused
    assert gw.refs == {}  # nothing went further than the gateway
    assert type(answer(gw.on_request(b"x", Logon(api_key="k-view"), 0, "1.2.3.4"))) is LogonAck
    assert type(answer(gw.on_request(b"x", Ping(req_id=5, full=True), 0))) is Routed
    assert type(answer(gw.on_request(b"x", GetBook(req_id=6, symbol="BTC-PERP"), 0))) is Routed


def test_sessions_are_capped_per_address_and_per_key_and_a_closed_one_frees_its_place():
    gw = Gateway(KEYS, {}, policy=LogonPolicy(max_sessions_per_ip=3, max_sessions_per_key=2))
    for i in range(2):
        assert type(answer(gw.on_request(b"a%d" % i, Logon(api_key="k-alice"), 0, "10.0.0.1"))) \
            is LogonAck
    refused = answer(gw.on_request(b"a2", Logon(req_id=3, api_key="k-alice"), 0, "10.0.0.2"))
    assert (refused.reason, refused.detail) == ("too_many_sessions", {
        "per": "key", "sessions": 2, "limit": 2, "account": "alice"})
    # logging on again on a session already open takes no second place
    assert type(answer(gw.on_request(b"a1", Logon(api_key="k-alice"), 0, "10.0.0.1"))) is LogonAck
    assert type(answer(gw.on_request(b"b0", Logon(api_key="k-bob"), 0, "10.0.0.1"))) is LogonAck
    refused = answer(gw.on_request(b"v0", Logon(api_key="k-view"), 0, "10.0.0.1"))
    assert (refused.reason, refused.detail) == ("too_many_sessions", {
        "per": "ip", "sessions": 3, "limit": 3, "ip": "10.0.0.1"})
    assert gw.disconnected(b"a0") == "alice"
    assert type(answer(gw.on_request(b"v0", Logon(api_key="k-view"), 0, "10.0.0.1"))) is LogonAck
    assert gw.sessions_by_ip == {"10.0.0.1": 3} and gw.sessions_by_key["k-alice"] == 1


def test_thousands_of_sessions_that_close_leave_nothing_behind():
    gw = Gateway(KEYS, {}, policy=LogonPolicy(max_sessions_per_ip=5000,
                                              max_sessions_per_key=5000))
    identities = [b"s%d" % i for i in range(4000)]
    for i, identity in enumerate(identities):
        gw.on_request(identity, Logon(api_key="k-alice"), 0, f"10.0.{i % 7}.1")
    assert len(gw.sessions) == 4000
    for identity in identities:
        gw.disconnected(identity)
    assert (gw.sessions, gw.by_account, gw.sessions_by_ip, gw.sessions_by_key) == ({}, {}, {}, {})


def test_failed_logons_are_paced_per_address_then_locked_out_with_the_numbers():
    policy = LogonPolicy(free_failures=2, delay_ms=100, max_failures=5, lockout_ms=60_000)
    gw = Gateway(KEYS, {}, policy=policy)
    gw.wall_offset_ns = 1_000_000 * MS  # the wall clock reads 1,000,000 ms at injected time 0
    ip, now = "6.6.6.6", 0
    waits = []
    for attempt in range(1, 6):
        refused = answer(gw.on_request(b"x", Logon(api_key="guess"), now, ip))
        assert refused.reason == "invalid_api_key" and refused.detail["attempts"] == attempt
        waits.append(refused.detail["retry_after_ms"])
        if waits[-1]:
            assert refused.detail["until_ms"] == 1_000_000 + (now // MS) + waits[-1]
            # paced: even the right key is not looked at before the wait is over
            early = answer(gw.on_request(b"y", Logon(api_key="k-alice"), now + waits[-1] * MS - 1,
                                         ip))
            assert early.reason == ("logon_locked_out" if attempt == 5 else "logon_delayed")
            assert early.detail["retry_after_ms"] == 1 and early.detail["attempts"] == attempt
        now += waits[-1] * MS
    assert waits == [0, 0, 100, 200, 60_000]  # free, free, then doubling, then the lockout
    # another address is not affected; this one is let in once the lockout is over
    assert type(answer(gw.on_request(b"z", Logon(api_key="k-bob"), 0, "7.7.7.7"))) is LogonAck
    assert type(answer(gw.on_request(b"y", Logon(api_key="k-alice"), now, ip))) is LogonAck


def test_the_wait_after_failures_is_bounded_by_the_lockout():
    policy = LogonPolicy(free_failures=0, delay_ms=1000, max_failures=10_000, lockout_ms=5000)
    assert [policy.wait_ms(n) for n in (1, 2, 3, 4, 100, 10_000)] == [1000, 2000, 4000, 5000,
                                                                       5000, 5000]


def test_remembered_failed_addresses_are_bounded(monkeypatch):
    from nodes.gateway import sessions
    monkeypatch.setattr(sessions, "MAX_TRACKED_ADDRESSES", 50)
    gw = Gateway(KEYS, {})
    for i in range(500):
        gw.on_request(b"x", Logon(api_key="guess"), i, f"10.1.{i // 256}.{i % 256}")
    assert len(gw.logon_failures) == 50 and "10.1.1.243" in gw.logon_failures  # the newest kept
    assert isinstance(answer(gw.on_request(b"x", Logon(api_key="k-bob"), 999, "10.1.1.243")),
                      LogonAck)
    assert not isinstance(answer(gw.on_request(b"q", Ping(), 0)), Error)
