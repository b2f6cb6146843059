"""CurveZMQ on the client endpoint (#20, `[nodes.gateway] client_curve = true`): a client that
brings the gateway's public key (RUN/gateway.pub) logs on, trades and is answered; one that does
not gets no handshake, so nothing it sends is read; the CLI (including a key made over the wire,
whose secret travels in the answer) and the REST facade reach the gateway through it."""

from __future__ import annotations

import asyncio
import os
import stat
import tomllib

import ccxt
import pytest

from cluster import config, curve
from cluster.client import Client, RequestFailed, venue_client
from cluster.protocol import BUY
from cluster.signing import secret_for
from tests.conftest import ClusterHandle, stop_and_reap
from tests.e2e.test_ccxt import ccxt_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def venue(tmp_path):
    handle = ClusterHandle(tmp_path)
    raw = tomllib.loads(handle.config_path.read_text())
    raw["nodes"]["gateway"]["client_curve"] = True
    handle.config_path.write_text(config._dump_toml(raw))
    handle.topo = config.load(handle.config_path, run_dir=str(handle.run_dir))
    try:
        handle.up()
        yield handle
    finally:
        stop_and_reap(handle)


def test_clients_speak_curve_to_the_gateway(venue):
    topo = venue.topo
    published = (venue.run_dir / curve.GATEWAY_PUBLIC)
    key = curve.client_server_key(topo)
    assert key and published.read_bytes().strip() == key
    assert stat.S_IMODE(os.stat(published).st_mode) == 0o644  # public: clients read it
    alice = venue.api_key("alice")
    price = topo.symbols["BTC-PERP"].initial_price

    async def with_key():
        async with venue_client(topo, api_key=alice,
                                secret=secret_for(venue.run_dir, alice)) as client:
            view = await client.account_view()
            report = await client.place("BTC-PERP", BUY, 1, price - price // 10)
            return view.account, report

    account, report = asyncio.run(with_key())
    assert account == "alice" and type(report).__name__ == "Report", report

    async def without_key():  # a plain client: the handshake fails, the logon is never read
        async with Client(topo.nodes["gateway"].client, api_key=alice, timeout=2):
            pass

    with pytest.raises((RequestFailed, TimeoutError, asyncio.TimeoutError)):
        asyncio.run(without_key())

    # the CLI reads the key from the run; a key made over the wire comes back encrypted
    assert venue.cli_json("account", "show", "alice")["account"] == "alice"
    made = venue.cli_json("keys", "create", "alice", "--scopes", "trade",
                          "--api-key", venue.api_key("admin"))
    assert made["api_key"] and made["secret"]

    # the REST facade is the gateway's client too
    ex = ccxt.binanceusdm(ccxt_config("http://" + topo.nodes["rest"].http, alice,
                                      secret_for(venue.run_dir, alice).hex()))
    balance = ex.fetch_balance()
    assert "USDT" in balance
