"""Any bytes at a decoder: a list of messages, or msgspec's DecodeError / ValidationError, never
another exception (msgspec raises UnicodeDecodeError for a string that is not UTF-8, which would
escape every handler that catches the two). The helpers that explain a refusal never raise."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.protocol import ClientRequest, Codec, NodeInbound, PlaceOrder, Routed
from nodes.gateway.invalid import describe_invalid, readable_req_ids

CLIENT = Codec(ClientRequest)
NODE = Codec(NodeInbound)
VALID = msgspec.msgpack.encode([PlaceOrder(req_id=5, symbol="BTC-PERP", side=1, qty=3, price=9,
                                           client_order_id="abc")])


def check(frame: bytes) -> None:
    for decode in (CLIENT.decode_request, NODE.decode):
        try:
            assert isinstance(decode(frame), list)
        except msgspec.ValidationError as exc:
            assert isinstance(describe_invalid(frame, exc), str)
        except msgspec.DecodeError:
            pass
    assert all(type(i) is int and i > 0 for i in readable_req_ids(frame))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(frame):
    check(frame)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_a_valid_request_with_bytes_changed(edits):
    frame = bytearray(VALID)
    for at, value in edits:
        frame[at] = value
    check(bytes(frame))


msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=12),
              st.sampled_from(["PlaceOrder", "Ping", "Logon", "CancelOrder", "GetBook"])),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(msgpack_values)
def test_any_msgpack_shape(msgspec_value):
    """Well-formed msgpack of any shape: lists where tags go, dicts, nesting, huge ints."""
    check(msgspec.msgpack.encode(msgspec_value))


@pytest.mark.parametrize("raw", [
    [[["PlaceOrder"], 5]], [[{"t": 1}, 5]], [[None, 5]], [["PlaceOrder"]], [[]], [["Ping", -1]],
    [["Ping", True]], ["PlaceOrder", 2**63 - 1, "x", 9], {"PlaceOrder": 1},
])
def test_odd_shapes_where_a_request_should_be(raw):
    """Found by the fuzz above in CI: a list where the tag should be (unhashable) raised."""
    check(msgspec.msgpack.encode(raw))


def test_a_string_that_is_not_utf8_is_a_decode_error():
    routed = msgspec.msgpack.encode([Routed(ref=1, account="abc", body=PlaceOrder(
        symbol="BTC-PERP", side=1, qty=1))])
    for decode, frame in ((CLIENT.decode_request, VALID), (NODE.decode, routed)):
        frame = frame.replace(b"abc", b"a\xffc")
        try:
            decode(frame)
        except msgspec.DecodeError as exc:
            assert "UTF-8" in str(exc)
        else:
            raise AssertionError("decoded")
