"""Garbage at the gateway's client socket: each gets an error with a reason; nothing changes; the
gateway keeps serving."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from cluster.client import Client
from cluster.protocol import AccountView, Error

pytestmark = pytest.mark.e2e

WRONG_TYPED = [
    msgspec.msgpack.encode(["PlaceOrder", "not-an-int", "BTC-PERP", 1, 1]),
    msgspec.msgpack.encode([["PlaceOrder", 0, "BTC-PERP", 7, 1]]),  # side 7
    msgspec.msgpack.encode([["PlaceOrder", 0, "BTC-PERP", 1, 0]]),  # qty 0
    msgspec.msgpack.encode([["PlaceOrder", 0, "BTC-PERP", 1, -5, "limit", 300000]]),
    msgspec.msgpack.encode([["NoSuchMessage", 1, 2, 3]]),
    msgspec.msgpack.encode({"t": "PlaceOrder", "qty": "abc"}),
    msgspec.msgpack.encode([["Logon", 0, 12345]]),  # api_key not a string
    msgspec.msgpack.encode([["CancelOrder", 0, "BTC-PERP", -1]]),
    msgspec.msgpack.encode([["PlaceOrder", 0, "BTC-PERP", 1, 1, "limit", 300000, "GTC", False, False,
                             "abc"]]).replace(b"abc", b"a\xffc"),  # a string that is not UTF-8
    msgspec.msgpack.encode(42),
    msgspec.msgpack.encode([]),
    b"",
]


async def test_random_bytes_and_wrong_types_get_reasons_and_change_nothing(cluster):
    rng = random.Random(1234)
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    async with Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
        before = await bob.account_view()
        reasons = []
        for payload in garbage + WRONG_TYPED:
            await bob.send_raw(payload)
            answer = await bob.recv_any(timeout=5)
            assert type(answer) is Error, (payload, answer)
            assert answer.reason in ("malformed_message", "invalid_message"), answer
            reasons.append(answer.reason)
            # the next good request is served
            assert type(await bob.account_view()) is AccountView
        assert len(reasons) == len(garbage) + len(WRONG_TYPED)
        after = await bob.account_view()
        # (the rate-limit usage an answer carries counts the garbage too: not account state)
        assert msgspec.structs.replace(after, req_id=0, usage={}) == \
            msgspec.structs.replace(before, req_id=0, usage={})
    status = cluster.status()
    assert status["nodes"]["gateway"]["state"] == "running"
    assert status["nodes"]["gateway"]["restarts"] == 0


async def test_multipart_messages_get_a_reason_and_later_messages_stay_aligned(cluster):
    """A client message must be exactly one payload frame. Extra parts are refused as one message,
    and the gateway still reads the next message from its first part (frame boundaries kept)."""
    import zmq
    import zmq.asyncio

    from cluster.protocol import Codec, Logon, LogonAck

    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.endpoint())
    answers = Codec(Error | LogonAck)
    logon = msgspec.msgpack.encode([Logon(req_id=9, api_key=cluster.api_key("bob"))])
    try:
        for parts in ([logon, logon], [b"", logon], [logon, b"x", b"y"]):
            await sock.send_multipart(parts)
            (answer,) = answers.decode(await asyncio.wait_for(sock.recv(), 5))
            assert type(answer) is Error and answer.reason == "malformed_message", (parts, answer)
            assert "payload frame" in answer.detail["error"]
        await sock.send(logon)
        (answer,) = answers.decode(await asyncio.wait_for(sock.recv(), 5))
        assert type(answer) is LogonAck and answer.req_id == 9 and answer.account == "bob"
    finally:
        sock.close()
        ctx.term()


async def test_cancel_by_an_unknown_client_order_id_is_refused_and_the_venue_keeps_serving(cluster):
    """Once crashed matching's handler (and with it the rest of that batch)."""
    async with Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
        report = await bob.cancel("BTC-PERP", client_order_id="never-sent")
        assert type(report.event).__name__ == "OrderRejected", report
        assert report.event.reason == "unknown_order"
        assert type(await bob.account_view()) is AccountView
    status = cluster.status()
    assert status["nodes"]["matching"]["restarts"] == 0
    assert status["nodes"]["matching"]["state"] == "running"


async def test_an_oversized_frame_is_refused_and_a_huge_one_drops_only_its_connection(cluster):
    import zmq
    import zmq.asyncio

    from cluster.protocol import Codec

    ctx = zmq.asyncio.Context()
    answers = Codec(Error)
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(cluster.endpoint())
        await sock.send(b"\x00" * 100_000)  # over the gateway's frame limit: refused, with why
        (answer,) = answers.decode(await asyncio.wait_for(sock.recv(), 5))
        assert answer.reason == "frame_too_large" and "65536" in answer.detail["error"]
        await sock.send(b"\x00" * (2 * 1024 * 1024))  # over libzmq's limit: the peer is dropped
        assert await sock.poll(1000) == 0
        sock.close()
        async with Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
            assert type(await bob.account_view()) is AccountView
    finally:
        ctx.destroy(linger=0)
    assert cluster.status()["nodes"]["gateway"]["restarts"] == 0


async def test_an_order_whose_numbers_overflow_64_bits_is_refused_and_the_venue_keeps_serving(cluster):
    """qty and price are each within the wire's 2**62, but the notional a refusal reports is not:
    it used to kill risk's drain loop, and the venue stopped answering everyone."""
    from cluster.protocol import OrderRejected, PlaceOrder

    async with Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
        report = await bob.request(PlaceOrder(symbol="BTC-PERP", side=1, qty=2**62, price=2**62))
        assert type(report.event) is OrderRejected and report.event.reason == "position_limit"
        assert int(report.event.detail["notional_after"]) > 2**64  # exact, as a decimal string
        assert type(await bob.account_view()) is AccountView
    nodes = cluster.status()["nodes"]
    assert all(n["state"] == "running" and n["restarts"] == 0 for n in nodes.values())
