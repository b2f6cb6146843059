"""Gateway security on the real cluster (#20): nothing but logon and a local ping before logon,
sessions capped per key and released when their connections close, failed logons paced."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster.client import Client, RequestFailed
from cluster.protocol import GetBook, Logon

pytestmark = pytest.mark.e2e


async def refusal(client: Client, request) -> RequestFailed:
    with pytest.raises(RequestFailed) as caught:
        await client.request(request)
    return caught.value


def test_before_logon_a_connection_gets_a_local_ping_and_nothing_else(cluster):
    async def run():
        async with Client(cluster.endpoint()) as anon:
            pong = await anon.ping()
            assert [n for n, _ in pong.hops] == ["gateway"]
            for request in (GetBook(symbol="BTC-PERP"),):
                assert (await refusal(anon, request)).error.reason == "not_logged_on"
            with pytest.raises(RequestFailed) as full:
                await anon.ping(full=True)
            assert full.value.error.detail["request"] == "Ping(full)"
            await anon.request(Logon(api_key=cluster.api_key("viewer")))
            assert [n for n, _ in (await anon.ping(full=True)).hops] == [
                "gateway", "risk", "matching", "risk", "gateway"]

    asyncio.run(run())


def test_sessions_per_key_are_capped_and_closed_ones_free_their_place(cluster):
    limit = cluster.topo.nodes["gateway"].max_sessions_per_key
    key = cluster.api_key("alice")

    async def run():
        clients = [Client(cluster.endpoint(), api_key=key, keepalive=0) for _ in range(limit)]
        for c in clients:
            await c.connect()
        extra = Client(cluster.endpoint(), keepalive=0)
        await extra.connect()
        refused = await refusal(extra, Logon(api_key=key))
        assert (refused.error.reason, refused.error.detail["sessions"],
                refused.error.detail["limit"]) == ("too_many_sessions", limit, limit)
        for c in clients:
            await c.close()
        # No logout was sent: the gateway learns of the closed connections from libzmq.
        deadline = time.monotonic() + 10
        while True:
            try:
                await extra.request(Logon(api_key=key))
                break
            except RequestFailed as exc:
                assert exc.error.reason == "too_many_sessions"
                assert time.monotonic() < deadline, "closed sessions were never released"
                await asyncio.sleep(0.1)
        await extra.close()

    asyncio.run(run())


def test_wrong_keys_are_paced_with_the_numbers(cluster):
    gw = cluster.topo.nodes["gateway"]

    async def run():
        async with Client(cluster.endpoint()) as guesser:
            answers = [(await refusal(guesser, Logon(api_key=f"guess-{i}"))).error
                       for i in range(gw.free_logon_failures + 2)]
        assert [a.reason for a in answers] == ["invalid_api_key"] * (gw.free_logon_failures + 1) \
            + ["logon_delayed"]
        assert answers[-2].detail["attempts"] == gw.free_logon_failures + 1
        assert 0 < answers[-1].detail["retry_after_ms"] <= gw.logon_delay_ms
        assert answers[-1].detail["until_ms"] >= time.time() * 1000 - 5000

    asyncio.run(run())
