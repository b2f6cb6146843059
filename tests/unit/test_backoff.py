"""The SDK's backoff (#20, cluster/backoff.py): full jitter within its bounds, retry_after_ms
honoured, only what is safe sent again, every retry bounded; the client-side bucket paces exactly;
and a Client against a throttling server gets its answer after the waits it was told."""

from __future__ import annotations

import asyncio
import random
import time

import msgspec
import pytest
import zmq
import zmq.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.backoff import Backoff
from cluster.client import Client, _server_codec
from cluster.config import Rule
from cluster.protocol import (
    Ack, CancelOrder, ClientRequest, Codec, Error, GetAccount, GetLimits, PlaceOrder,
)

MS = 1_000_000
ORDER = PlaceOrder(symbol="BTC-PERP", side=1, qty=1, price=1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(1, 1000), st.integers(1, 60_000), st.integers(0, 2**32))
def test_full_jitter_stays_within_zero_and_the_capped_exponential(attempt, base, cap, seed):
    backoff = Backoff(base_ms=base, cap_ms=cap, rand=random.Random(seed))
    assert 0 <= backoff.jitter_ms(attempt) <= min(cap, base * 2**attempt)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 3), st.integers(0, 2**32))
def test_a_throttled_request_of_any_kind_waits_at_least_what_it_was_told(retry_after, attempt, seed):
    backoff = Backoff(base_ms=50, cap_ms=1000, max_attempts=5, max_wait_ms=10**9,
                      rand=random.Random(seed))
    delay = backoff.retry_ms(ORDER, attempt, 0, reason="rate_limited", retry_after_ms=retry_after)
    assert retry_after <= delay <= retry_after + min(1000, 50 << attempt)


def test_what_is_not_safe_or_not_allowed_is_not_sent_again():
    backoff = Backoff(max_attempts=3, max_wait_ms=1000, rand=random.Random(1))
    assert backoff.retry_ms(ORDER, 0, 0, timed_out=True) is None  # it may have been carried out
    assert backoff.retry_ms(CancelOrder(symbol="BTC-PERP", order_id=1), 0, 0, timed_out=True) \
        is not None
    assert backoff.retry_ms(GetAccount(), 0, 0, reason="insufficient_margin") is None
    assert backoff.retry_ms(GetAccount(), 2, 0, timed_out=True) is None  # out of attempts
    assert backoff.retry_ms(ORDER, 0, 0, reason="banned", retry_after_ms=5000) is None  # too long
    assert backoff.retry_ms(ORDER, 0, 0, reason="rate_limited", retry_after_ms=-1) is None
    assert backoff.retry_ms(GetAccount(), 0, 1001, timed_out=True) is None  # out of time
    assert backoff.retries == 1


def test_the_client_side_bucket_paces_exactly():
    backoff = Backoff(rate=Rule(limit=10, window_ms=1000, burst=4))  # 4 at once, then one per 100 ms
    assert [backoff.pace_ms(GetLimits(), 0) for _ in range(4)] == [0, 0, 0, 0]
    assert backoff.pace_ms(GetLimits(), 0) == 100
    assert backoff.pace_ms(GetLimits(), 60 * MS) == 40
    assert backoff.pace_ms(GetLimits(), 100 * MS) == 0  # taken
    # a weight above the burst can never be held: sent unpaced (the gateway tells why)
    assert backoff.pace_ms(GetAccount(), 100 * MS) == 0 and backoff.paced_ms == 140


def test_a_client_with_backoff_gets_its_answer_after_the_throttles_it_was_told():
    async def run():
        ctx = zmq.asyncio.Context()
        server = ctx.socket(zmq.ROUTER)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        requests, answers = Codec(ClientRequest), _server_codec()
        seen: list[float] = []

        async def serve():
            for n in range(3):
                identity, frame = await server.recv_multipart()
                (req,) = requests.decode_request(frame)
                seen.append(time.monotonic())
                answer = (Error(req_id=req.req_id, reason="rate_limited",
                                detail={"retry_after_ms": 80}) if n < 2
                          else Ack(req_id=req.req_id, action="limits"))
                await server.send_multipart([identity, answers.encode([answer])])

        task = asyncio.create_task(serve())
        client = Client(f"tcp://127.0.0.1:{port}", ctx=ctx, timeout=5,
                        backoff=Backoff(base_ms=10, cap_ms=20, rand=random.Random(3)))
        await client.connect()
        try:
            answer = await client.request(GetLimits())
        finally:
            await client.close()
            await task
            server.close(0)
            ctx.term()
        assert type(answer) is Ack and client.backoff.retries == 2
        assert all(later - earlier >= 0.08 for earlier, later in zip(seen, seen[1:]))

    asyncio.run(run())
