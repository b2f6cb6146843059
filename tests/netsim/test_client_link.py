"""One client's netsim link (netsim/proxy.py): named and checked by the controller, left alone by
the nodes' shapers, and applied to a real TCP stream by the proxy, which measures what it did."""

from __future__ import annotations

import asyncio
import time

import pytest

from netsim.control import ControlError, NetsimState
from netsim.proxy import ClientLinkProxy, client_link_name, client_links, parse_tcp
from netsim.shaper import Shaper, known_links

UP, DOWN = client_links("mm1")


def test_client_links_are_named_and_checked():
    assert (UP, DOWN) == ("client:mm1->gateway", "gateway->client:mm1")
    assert client_link_name(UP) == client_link_name(DOWN) == "mm1"
    for not_one in ("client->gateway", "client:->gateway", "client:MM 1->gateway",
                    "gateway->client:mm1->risk", "risk->client:mm1"):
        assert client_link_name(not_one) is None, not_one
    state = NetsimState()
    table = state.handle("netsim_set", {"link": UP, "settings": {"latency": "50ms"}})
    assert table["links"][UP]["latency"] == {"model": "constant", "latency": "50ms"}
    with pytest.raises(ControlError, match="unknown link"):
        state.handle("netsim_set", {"link": "client:mm 1->gateway", "settings": {}})
    with pytest.raises(ControlError, match="cannot drop"):
        state.handle("netsim_set", {"link": DOWN, "settings": {"on_full": "drop"}})
    assert UP not in known_links()  # a partition of "every link" is the nodes' links


def test_the_gateways_shaper_leaves_a_clients_link_to_its_proxy():
    shaper = Shaper("gateway", loop=None)
    assert shaper.mine("gateway->risk") and shaper.mine("client->gateway")
    assert not shaper.mine(DOWN) and not shaper.mine(UP)
    assert shaper.apply(2, {DOWN: {"latency": {"model": "constant", "latency": "50ms"}}}, {}) == []
    assert shaper.links == {}


def test_only_loopback_tcp_is_forwarded():
    assert parse_tcp("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    for bad in ("tcp://10.0.0.1:5555", "ipc:///tmp/x", "tcp://127.0.0.1"):
        with pytest.raises(ValueError):
            parse_tcp(bad)


async def _echo_server():
    async def echo(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _round_trip(reader, writer, payload: bytes, timeout_s: float = 5.0) -> float:
    t = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = b""
    while len(got) < len(payload):
        got += await asyncio.wait_for(reader.read(4096), timeout_s)
    assert got == payload
    return (time.monotonic() - t) * 1000


async def test_the_proxy_delays_each_direction_as_the_table_says_and_measures_it():
    server, port = await _echo_server()
    proxy = ClientLinkProxy("mm1", {"client": ("127.0.0.1", port)})
    try:
        host, _, p = (await proxy.start())["client"].removeprefix("tcp://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(p))
        unshaped = await _round_trip(reader, writer, b"ping")
        proxy.apply(2, {UP: {"latency": {"model": "constant", "latency": "60ms"}},
                        DOWN: {"latency": {"model": "constant", "latency": "40ms"}}})
        shaped = [await _round_trip(reader, writer, b"x%d" % i) for i in range(3)]
        stats = proxy.stats()["links"]
        up = stats[UP]["measured_ms"]["latency 60ms"]
        down = next(v for k, v in stats[DOWN]["measured_ms"].items() if "40ms" in k)
        writer.close()
    finally:
        await proxy.close()
        server.close()
    assert unshaped < 50, unshaped  # no shaping: the direct stream's time
    assert all(100 <= ms < 400 for ms in shaped), shaped  # 60 + 40 ms, with a loaded host's slack
    assert up["chunks"] == 3 and 60 <= up["p50"] < 160, up
    assert down["chunks"] == 3 and 40 <= down["p50"] < 140, down
    assert stats[UP]["measured_ms"]["unshaped"]["chunks"] == 1


async def test_a_partitioned_client_link_holds_its_bytes_in_order_until_healed():
    server, port = await _echo_server()
    proxy = ClientLinkProxy("mm1", {"client": ("127.0.0.1", port)})
    try:
        host, _, p = (await proxy.start())["client"].removeprefix("tcp://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(p))
        await _round_trip(reader, writer, b"up")
        proxy.apply(2, {UP: {"down": True}})
        writer.write(b"one,")
        writer.write(b"two,")
        await writer.drain()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(4096), 0.2)  # held: nothing reaches the server
        proxy.apply(3, {})  # healed
        got = b""
        while len(got) < 8:
            got += await asyncio.wait_for(reader.read(4096), 5.0)
        writer.close()
    finally:
        await proxy.close()
        server.close()
    assert got == b"one,two,"


async def test_a_stream_that_ends_while_partitioned_ends_after_its_held_bytes():
    received = []

    async def sink(reader, writer):
        while data := await reader.read(4096):
            received.append(data)
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    proxy = ClientLinkProxy("mm1", {"client": ("127.0.0.1", server.sockets[0].getsockname()[1])})
    try:
        host, _, p = (await proxy.start())["client"].removeprefix("tcp://").partition(":")
        _reader, writer = await asyncio.open_connection(host, int(p))
        proxy.apply(2, {UP: {"down": True}})
        writer.write(b"last words")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.1)
        assert received == []
        proxy.apply(3, {})
        for _ in range(100):  # bounded: up to 5 s
            if b"".join(received) == b"last words":
                break
            await asyncio.sleep(0.05)
    finally:
        await proxy.close()
        server.close()
    assert b"".join(received) == b"last words"


def test_a_setting_is_described_in_the_words_it_was_set_with():
    from netsim.control import NetsimState
    from netsim.proxy import describe

    table = NetsimState().handle("netsim_set", {"link": DOWN, "settings": {"latency": "200ms",
                                                                          "loss": 0.01}})
    assert describe(table["links"][DOWN]) == "latency 200ms, loss 0.01"
    assert describe({}) == "unshaped"
    assert describe({"down": True}) == "down true"
    assert describe({"latency": {"model": "lognormal", "median": "1ms", "sigma": 0.5}}) == \
        'latency {"median": "1ms", "model": "lognormal", "sigma": 0.5}'
