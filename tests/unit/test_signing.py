"""Signed requests (#20): the gateway takes a request signed with its key's secret, and refuses
any single-bit change of the signed bytes, the timestamp or the nonce, a stale timestamp, a
replayed nonce, an unsigned request on a key that requires signing, and a logon from an address
outside the key's allow-list; each refusal with the numbers."""

from __future__ import annotations

import ipaddress

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.protocol import GetAccount, Logon, LogonAck, PlaceOrder, Routed, Signed, encode_one
from cluster.signing import KeyEntry, canonical, sign, verify
from nodes.gateway.sessions import Gateway

SECRET = b"s" * 32
MS = 1_000_000
WALL_MS = 1_700_000_000_000  # the gateway's wall clock at injected time 0


def signed(message, session: int, ts_ms: int, nonce: int, secret: bytes = SECRET) -> Signed:
    body = encode_one(message)
    return Signed(req_id=message.req_id, ts_ms=ts_ms, nonce=nonce, body=body,
                  sig=sign(secret, session, ts_ms, nonce, body))


def gateway(**entry) -> Gateway:
    gw = Gateway({"k": ("alice", ("trade",)), "open": ("bob", ("trade",))}, {"BTC-PERP": {}},
                 keys={"k": KeyEntry(SECRET, **entry)})
    gw.wall_offset_ns = WALL_MS * MS
    return gw


def answer(effects):
    (effect,) = effects
    return effect[-1]


def log_on(gw: Gateway, ip: str = "10.0.0.1"):
    return answer(gw.on_request(b"me", signed(Logon(req_id=1, api_key="k"), 0, WALL_MS, 1), 0, ip))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
       st.integers(0, 2**32), st.data())
def test_any_single_bit_change_of_the_signed_bytes_timestamp_or_nonce_refuses(
        body, ts_ms, nonce, session, data):
    sig = sign(SECRET, session, ts_ms, nonce, body)
    assert verify(SECRET, session, ts_ms, nonce, body, sig)
    which = data.draw(st.sampled_from(["body", "ts", "nonce", "session", "sig"]))
    if which == "body":
        bit = data.draw(st.integers(0, len(body) * 8 - 1))
        flipped = bytearray(body)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(SECRET, session, ts_ms, nonce, bytes(flipped), sig)
    elif which == "sig":
        bit = data.draw(st.integers(0, 255))
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(SECRET, session, ts_ms, nonce, body, bytes(flipped))
    else:
        bit = 1 << data.draw(st.integers(0, 62))
        args = {"ts": (session, ts_ms ^ bit, nonce), "nonce": (session, ts_ms, nonce ^ bit),
                "session": (session ^ bit, ts_ms, nonce)}[which]
        assert not verify(SECRET, *args, body, sig)


def test_the_canonical_bytes_keep_fields_apart():
    # (a field's bytes cannot slide into its neighbour: every field has its fixed width)
    assert canonical(1, 2, 3, b"x") != canonical(1, 2, 0, b"\x03x")
    assert len(canonical(0, 0, 0, b"")) == len(b"perpx-sig-v1") + 24


def test_a_signed_session_is_served_and_every_kind_of_bad_signature_refused_with_numbers():
    gw = gateway(require_signature=True)
    ack = log_on(gw)
    assert type(ack) is LogonAck
    session = ack.session
    order = PlaceOrder(req_id=2, symbol="BTC-PERP", side=1, qty=1, price=1)
    assert type(answer(gw.on_request(b"me", signed(order, session, WALL_MS, 5), 0))) is Routed
    replay = answer(gw.on_request(b"me", signed(order, session, WALL_MS, 5), 0))
    assert (replay.reason, replay.detail["nonce"], replay.detail["last_nonce"]) == (
        "replayed_request", 5, 5)
    stale = answer(gw.on_request(b"me", signed(order, session, WALL_MS - 5001, 6), 0))
    assert stale.reason == "stale_request" and {k: stale.detail[k] for k in (
        "server_time", "timestamp", "recv_window")} == {"server_time": WALL_MS,
                                                        "timestamp": WALL_MS - 5001,
                                                        "recv_window": 5000}
    later = answer(gw.on_request(b"me", signed(order, session, WALL_MS - 5000, 7), 0))
    assert type(later) is Routed  # the edge of the window is inside it
    forged = answer(gw.on_request(b"me", signed(order, session, WALL_MS, 8, b"x" * 32), 0))
    assert forged.reason == "invalid_signature"
    other_session = answer(gw.on_request(b"me", signed(order, session + 1, WALL_MS, 9), 0))
    assert other_session.reason == "invalid_signature"
    plain = answer(gw.on_request(b"me", GetAccount(req_id=3), 0))
    assert (plain.reason, plain.detail) == ("signature_required", {"request": "GetAccount"})
    unsigned_logon = answer(gw.on_request(b"x", Logon(req_id=4, api_key="k"), 0, "10.0.0.1"))
    assert unsigned_logon.reason == "signature_required"
    # a signed logon cannot be replayed from another connection either
    again = answer(gw.on_request(b"thief", signed(Logon(req_id=1, api_key="k"), 0, WALL_MS, 1), 0,
                                 "10.0.0.9"))
    assert again.reason == "replayed_request"
    mismatch = Signed(req_id=99, ts_ms=WALL_MS, nonce=20, body=encode_one(order),
                      sig=sign(SECRET, session, WALL_MS, 20, encode_one(order)))
    assert answer(gw.on_request(b"me", mismatch, 0)).reason == "invalid_message"
    garbage = Signed(req_id=5, ts_ms=WALL_MS, nonce=21, body=b"\xc1", sig=b"")
    assert answer(gw.on_request(b"me", garbage, 0)).reason == "invalid_message"


def test_a_key_without_the_requirement_may_sign_or_not_and_its_allow_list_is_checked():
    gw = gateway(allow=(ipaddress.ip_network("127.0.0.1/32"),))
    refused = log_on(gw, "127.0.0.2")
    assert (refused.reason, refused.detail) == ("ip_not_allowed", {
        "ip": "127.0.0.2", "allow": "127.0.0.1/32", "account": "alice"})
    plain = answer(gw.on_request(b"me2", Logon(req_id=1, api_key="k"), 0, "127.0.0.2"))
    assert plain.reason == "ip_not_allowed"
    assert type(answer(gw.on_request(b"me3", Logon(req_id=1, api_key="k"), 0, "127.0.0.1"))) \
        is LogonAck
    # a key with no secret cannot sign
    body = signed(Logon(req_id=1, api_key="open"), 0, WALL_MS, 1)
    assert answer(gw.on_request(b"me4", body, 0, "1.1.1.1")).reason == "invalid_signature"


def test_the_signed_envelope_decodes_as_a_client_request():
    from cluster.protocol import ClientRequest
    frame = msgspec.msgpack.encode([signed(GetAccount(req_id=3), 1, WALL_MS, 2)])
    (decoded,) = msgspec.msgpack.Decoder(list[ClientRequest]).decode(frame)
    assert type(decoded) is Signed and decoded.req_id == 3


def test_the_key_file_makes_revokes_and_narrows_keys_for_live_sessions_too():
    """A key made in the key file logs on as its account with its scopes; when the file changes,
    a live session is served by the new scopes, and refused (then ended) once its key is revoked
    or no longer allows its address."""
    made = KeyEntry(SECRET, account="alice", scopes=("read",))
    gw = Gateway({"k": ("alice", ("trade",))}, {"BTC-PERP": {}}, keys={"new": made})
    assert answer(gw.on_request(b"s", Logon(req_id=1, api_key="new"), 0, "10.0.0.1")).account \
        == "alice"
    order = PlaceOrder(req_id=2, symbol="BTC-PERP", side=1, qty=1, price=1)
    assert answer(gw.on_request(b"s", order, 0)).reason == "missing_scope"
    assert gw.set_keys({"new": KeyEntry(SECRET, account="alice", scopes=("read", "trade"))}) == 1
    assert type(answer(gw.on_request(b"s", order, 0))) is Routed
    gw.set_keys({"new": KeyEntry(SECRET, account="alice", scopes=("trade",),
                                 allow=(ipaddress.ip_network("10.9.0.0/16"),))})
    refused = answer(gw.on_request(b"s", order, 0))
    assert (refused.reason, refused.detail["allow"]) == ("ip_not_allowed", "10.9.0.0/16")
    assert b"s" not in gw.sessions and gw.sessions_by_key.get("new", 0) == 0
    assert answer(gw.on_request(b"s", order, 0)).reason == "not_logged_on"
    # a topology key revoked in the file: refused at logon, and a live session at its next request
    assert type(answer(gw.on_request(b"t", Logon(req_id=1, api_key="k"), 0, "10.0.0.1"))) \
        is LogonAck
    gw.set_keys({"k": KeyEntry(SECRET, revoked=True)})
    assert (answer(gw.on_request(b"t", order, 0)).reason, b"t" in gw.sessions) == (
        "key_revoked", False)
    assert answer(gw.on_request(b"u", Logon(req_id=1, api_key="k"), 0, "10.0.0.1")).reason \
        == "invalid_api_key"


def test_risk_rechecks_the_scope_of_every_account_operation():
    """A Routed that says its key's scopes is refused by risk when they do not cover it, with
    the same numbers as the gateway's refusal, and moves nothing; the gateway tells risk the
    session's scopes."""
    from cluster.config import load
    from cluster.protocol import Deposit, Error, Reply, Withdraw
    from nodes.risk.ledger import RiskEngine

    topo = load()
    engine = RiskEngine(topo.symbols, {a.name: a.deposit for a in topo.accounts.values()})
    before = engine.accounts["alice"].balance
    for body, scopes in ((Withdraw(account="alice", amount=1), ("trade", "read")),
                         (Deposit(account="alice", amount=1), ("transfer",)),
                         (PlaceOrder(symbol="BTC-PERP", side=1, qty=1, price=1), ("read",))):
        effects = engine.handle(Routed(ref=7, account="alice", body=body, scopes=scopes), 0)
        (reply,) = [e for dest, e in effects if dest == "gateway"]
        assert type(reply) is Reply and type(reply.body) is Error
        assert reply.body.reason == "missing_scope"
        assert reply.body.detail["request"] == type(body).__name__
        assert not [dest for dest, _ in effects if dest in ("matching", "liquidator")]
    assert engine.accounts["alice"].balance == before
    allowed = engine.handle(Routed(ref=8, account="alice", body=Withdraw(account="alice", amount=1),
                                   scopes=("transfer",)), 0)
    assert engine.accounts["alice"].balance == before - 1, allowed
    gw = gateway()
    log_on(gw)
    routed = answer(gw.on_request(b"me", signed(GetAccount(req_id=2), 1, WALL_MS, 2), 0))
    assert routed.scopes == ("trade",)


def test_an_ed25519_key_signs_with_its_private_half_and_the_venue_keeps_only_the_public():
    from cluster.signing import ed25519_keypair, signer, sign_ed25519, verify_ed25519
    private, public = ed25519_keypair()
    gw = Gateway({}, {"BTC-PERP": {}}, keys={"ed": KeyEntry(b"", require_signature=True,
                                                             account="alice", scopes=("read",),
                                                             public_key=public)})
    gw.wall_offset_ns = WALL_MS * MS
    sign_with = signer(ed25519_key=private)

    def envelope(message, session, nonce, sign=sign_with):
        body = encode_one(message)
        return Signed(req_id=message.req_id, ts_ms=WALL_MS, nonce=nonce, body=body,
                      sig=sign(session, WALL_MS, nonce, body))

    ack = answer(gw.on_request(b"me", envelope(Logon(req_id=1, api_key="ed"), 0, 1), 0, "1.2.3.4"))
    assert type(ack) is LogonAck and ack.account == "alice"
    assert type(answer(gw.on_request(b"me", envelope(GetAccount(req_id=2), ack.session, 2), 0))) \
        is Routed
    other, _ = ed25519_keypair()
    forged = answer(gw.on_request(b"me", envelope(GetAccount(req_id=3), ack.session, 3,
                                                  signer(ed25519_key=other)), 0))
    assert forged.reason == "invalid_signature"
    hmac_signed = answer(gw.on_request(b"me", envelope(GetAccount(req_id=4), ack.session, 4,
                                                       signer(secret=public)), 0))
    assert hmac_signed.reason == "invalid_signature"  # (its public key is no HMAC secret)
    sig = sign_ed25519(private, 1, 2, 3, b"body")
    public_key = KeyEntry(b"", public_key=public).public_key
    assert verify_ed25519(public_key, 1, 2, 3, b"body", sig)
    for bit in range(0, 64 * 8, 37):  # a flipped bit of the signature
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify_ed25519(public_key, 1, 2, 3, b"body", bytes(flipped))
    assert not verify_ed25519(public_key, 1, 2, 4, b"body", sig)


def test_signed_logons_with_a_wrong_secret_or_an_unknown_key_are_paced_like_plain_ones():
    """Signing a guess must not bypass the pacing of failed logons: a wrong secret counts as a
    failed logon, an unknown key is refused invalid_api_key, and a paced address is refused
    before its signature is looked at."""
    gw = gateway()
    for attempt in range(1, 4):  # (the free failures)
        wrong = answer(gw.on_request(b"x", signed(Logon(req_id=1, api_key="k"), 0, WALL_MS,
                                                  attempt, b"w" * 32), 0, "10.0.0.5"))
        assert (wrong.reason, wrong.detail["attempts"]) == ("invalid_signature", attempt)
    unknown = answer(gw.on_request(b"x", signed(Logon(req_id=1, api_key="nope"), 0, WALL_MS, 9),
                                   0, "10.0.0.5"))
    assert (unknown.reason, unknown.detail["attempts"]) == ("invalid_api_key", 4)
    assert unknown.detail["retry_after_ms"] == 1000
    paced = answer(gw.on_request(b"x", signed(Logon(req_id=1, api_key="k"), 0, WALL_MS, 10),
                                 0, "10.0.0.5"))
    assert (paced.reason, paced.detail["retry_after_ms"]) == ("logon_delayed", 1000)
    ok = answer(gw.on_request(b"x", signed(Logon(req_id=1, api_key="k"), 0, WALL_MS, 11),
                              1000 * MS, "10.0.0.5"))
    assert type(ok) is LogonAck


def test_a_signed_full_ping_starts_its_trace_at_the_gateway_as_a_plain_one_does():
    from cluster.protocol import Ping
    gw = gateway()
    session = log_on(gw).session
    routed = answer(gw.on_request(b"me", signed(Ping(req_id=2, full=True, hops=[("x", 1)]),
                                                session, WALL_MS, 2), 77))
    assert type(routed) is Routed and routed.body.hops == [("gateway", 77)]


def test_a_signed_request_with_a_number_beyond_64_bits_is_refused_out_of_range_by_the_sdk():
    """(It crashed the CLI: the signed body was encoded outside the SDK's overflow check.)"""
    import asyncio

    import pytest

    from cluster.client import Client
    from cluster.protocol import CancelOrder
    from cluster.rules.units import UnitError

    async def run():
        client = Client("tcp://127.0.0.1:9", secret=SECRET)
        with pytest.raises(UnitError) as refused:
            await client._ask(CancelOrder(symbol="BTC-PERP", order_id=2**70))
        assert refused.value.reason == "out_of_range" and not client._waiting
        client.ctx.term()

    asyncio.run(run())


FWD_SECRET = b"f" * 32


def forwarding_gateway(**policy) -> Gateway:
    """alice's key allows 127.0.0.2 only; "fwd" is the facade's key with the forward scope."""
    from nodes.gateway.sessions import LogonPolicy

    gw = Gateway({"k": ("alice", ("trade",)), "open": ("bob", ("trade",))}, {"BTC-PERP": {}},
                 keys={"k": KeyEntry(SECRET, allow=(ipaddress.ip_network("127.0.0.2/32"),)),
                       "fwd": KeyEntry(FWD_SECRET, require_signature=True, account="rest",
                                       scopes=("forward",))},
                 policy=LogonPolicy(**policy))
    gw.wall_offset_ns = WALL_MS * MS
    return gw


def test_only_the_facades_forwarding_session_may_name_a_client_address():
    """#25: the gateway's address rules apply to a REST client's own address, which only the
    facade (a session of a key with the "forward" scope) may name; an ordinary client that
    claims one is refused with the reason and paced as a failed logon."""
    gw = forwarding_gateway()
    # an ordinary client, not logged on, and one logged on with a trading key
    claim = Logon(req_id=2, api_key="open", forwarded_for="127.0.0.2")
    refused = answer(gw.on_request(b"c", claim, 0, "10.0.0.7"))
    assert (refused.reason, refused.detail["required"], refused.detail["session_scopes"],
            refused.detail["attempts"]) == ("forwarding_not_allowed", "forward", "", 1)
    assert type(answer(gw.on_request(b"c", Logon(req_id=3, api_key="open"), 0, "10.0.0.7"))) \
        is LogonAck
    refused = answer(gw.on_request(b"c", claim, 0, "10.0.0.7"))
    assert (refused.reason, refused.detail["session_scopes"]) == ("forwarding_not_allowed", "trade")
    assert gw.sessions[b"c"].ip == "10.0.0.7" and gw.sessions[b"c"].account == "bob"  # unchanged
    # the facade: its own key (signed), then alice's logon for 127.0.0.2: the session is hers,
    # from 127.0.0.2, with 127.0.0.2's buckets; 127.0.0.3 is outside her allow-list
    fwd = answer(gw.on_request(b"f", signed(Logon(req_id=1, api_key="fwd"), 0, WALL_MS, 1,
                                            FWD_SECRET), 0, "127.0.0.1"))
    assert type(fwd) is LogonAck and gw.sessions[b"f"].scopes == ("forward",)
    own = signed(GetAccount(req_id=4), fwd.session, WALL_MS, 2, FWD_SECRET)
    assert answer(gw.on_request(b"f", own, 0, "127.0.0.1")).reason == "missing_scope"
    # every request of the forwarding session is signed: a forwarded logon by the client's key
    plain = answer(gw.on_request(b"f", Logon(req_id=5, api_key="k", forwarded_for="127.0.0.2"),
                                 0, "127.0.0.1"))
    assert plain.reason == "signature_required"

    def forwarded(req_id: int, address: str, nonce: int):
        return answer(gw.on_request(b"f", signed(Logon(req_id=req_id, api_key="k",
                                                       forwarded_for=address), 0, WALL_MS, nonce),
                                    0, "127.0.0.1"))

    bad = forwarded(5, "localhost", 1)
    assert (bad.reason, bad.detail["forwarded_for"]) == ("invalid_forwarded_address", "localhost")
    outside = forwarded(6, "127.0.0.3", 2)
    assert (outside.reason, outside.detail["ip"]) == ("ip_not_allowed", "127.0.0.3")
    assert gw.logon_failures["127.0.0.3"].count == 1 and "127.0.0.1" not in gw.logon_failures
    ok = forwarded(7, "127.0.0.2", 3)
    assert type(ok) is LogonAck and ok.account == "alice"
    session = gw.sessions[b"f"]
    assert (session.ip, session.scopes) == ("127.0.0.2", ("trade",))
    assert gw.sessions_by_ip == {"10.0.0.7": 1, "127.0.0.2": 1}  # bob's, and alice's
    # now alice's session: it may not forward again (its key has no forward scope)
    again = forwarded(8, "127.0.0.2", 4)
    assert again.reason == "forwarding_not_allowed"


def test_a_forwarded_logon_is_signed_by_the_clients_key_and_paces_the_client_address():
    gw = forwarding_gateway()
    assert type(answer(gw.on_request(b"f", signed(Logon(req_id=1, api_key="fwd"), 0, WALL_MS, 1,
                                                  FWD_SECRET), 0, "127.0.0.1"))) is LogonAck
    wrong = answer(gw.on_request(b"f", signed(Logon(req_id=2, api_key="k",
                                                    forwarded_for="127.0.0.2"),
                                              0, WALL_MS, 2, b"w" * 32), 0, "127.0.0.1"))
    assert (wrong.reason, wrong.detail["ip"]) == ("invalid_signature", "127.0.0.2")
    assert "127.0.0.1" not in gw.logon_failures  # the facade's own address is not paced
    ok = answer(gw.on_request(b"f", signed(Logon(req_id=3, api_key="k", forwarded_for="127.0.0.2"),
                                           0, WALL_MS, 3), 0, "127.0.0.1"))
    assert type(ok) is LogonAck and gw.sessions[b"f"].ip == "127.0.0.2"
    # a key the gateway does not know (yet): refused as unknown, and paced, at the client's address
    assert type(answer(gw.on_request(b"h", signed(Logon(req_id=1, api_key="fwd"), 0, WALL_MS, 6,
                                                  FWD_SECRET), 0, "127.0.0.1"))) is LogonAck
    unknown = answer(gw.on_request(b"h", signed(Logon(req_id=2, api_key="new", forwarded_for=
                                                      "127.0.0.4"), 0, WALL_MS, 7), 0, "127.0.0.1"))
    assert (unknown.reason, unknown.detail["ip"], unknown.detail["attempts"]) == (
        "invalid_api_key", "127.0.0.4", 1)
    # the forwarding key cannot be forwarded (a client address cannot gain the scope)
    assert type(answer(gw.on_request(b"g", signed(Logon(req_id=1, api_key="fwd"), 0, WALL_MS, 8,
                                                  FWD_SECRET), 0, "127.0.0.1"))) is LogonAck
    chained = answer(gw.on_request(b"g", signed(Logon(req_id=2, api_key="fwd",
                                                      forwarded_for="127.0.0.9"),
                                                0, WALL_MS, 9, FWD_SECRET), 0, "127.0.0.1"))
    assert (chained.reason, chained.detail["api_key_scopes"]) == ("forwarding_not_allowed",
                                                                  "forward")


def test_a_logon_captured_before_a_restart_is_refused_by_the_restarted_gateway():
    # #20: the nonces a gateway saw die with it. A signed logon replayed to its successor inside
    # recv_window would pass the nonce check, so the successor refuses what was signed before
    # it started, and says so; what is signed after its start is served.
    before = gateway(require_signature=True)
    captured = signed(Logon(req_id=1, api_key="k"), 0, WALL_MS - 1_000, 1)
    assert type(answer(before.on_request(b"me", captured, 0, "10.0.0.1"))) is LogonAck
    restarted = Gateway({"k": ("alice", ("trade",))}, {"BTC-PERP": {}},
                        keys={"k": KeyEntry(SECRET, require_signature=True)}, started_ms=WALL_MS)
    restarted.wall_offset_ns = WALL_MS * MS
    replayed = answer(restarted.on_request(b"thief", captured, 0, "10.0.0.9"))
    assert replayed.reason == "stale_request" and replayed.detail["gateway_started"] == WALL_MS
    assert replayed.detail["timestamp"] == WALL_MS - 1_000 and "before" in replayed.detail["why"]
    fresh = signed(Logon(req_id=1, api_key="k"), 0, WALL_MS, 2)
    assert type(answer(restarted.on_request(b"me", fresh, 0, "10.0.0.1"))) is LogonAck
