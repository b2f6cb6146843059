"""REST clients at the gateway under their own addresses (#25): the facade logs each client's
session on for the client's address through its forwarding key, so the gateway's per-address
limits and a key's allow-list apply to the real client; an ordinary client that claims a
forwarded address is refused."""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import pytest

from cluster.client import Client
from cluster.protocol import Error, Logon, LogonAck
from cluster.signing import FORWARDER_KEY, secret_for
from nodes.rest.auth import sign
from tests.conftest import ClusterHandle, stop_and_reap
from tests.e2e.helpers import poll

pytestmark = pytest.mark.e2e

# ip_weight: 30 tokens, 1 a second back: six GET account (weight 5 at the gateway) use it up
IP_WEIGHT = {"limit": 1, "window_ms": 1000, "burst": 30}


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    handle = ClusterHandle(tmp_path_factory.mktemp("rest-addresses"),
                           node_settings={"gateway": {"rate_limits": {"ip_weight": IP_WEIGHT}}})
    host, port = handle.topo.nodes["rest"].http.rsplit(":", 1)
    handle.http = (host, int(port))
    try:
        handle.up()
        yield handle
    finally:
        stop_and_reap(handle)


def rest(venue, source: str, key: str, secret: str, path: str = "/fapi/v2/account"):
    """A signed GET from the loopback address `source`: (HTTP status, JSON body)."""
    query = f"timestamp={int(time.time() * 1000)}"
    query += f"&signature={sign(secret, query)}"
    conn = http.client.HTTPConnection(*venue.http, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", f"{path}?{query}", headers={"X-MBX-APIKEY": key})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_an_ordinary_client_that_claims_a_forwarded_address_is_refused(venue):
    async def run():
        async with Client(venue.endpoint()) as plain:  # not logged on
            claim = Logon(api_key=venue.api_key("alice"), forwarded_for="127.0.0.2")
            refused = await plain.request(claim, raise_on_error=False)
            assert type(refused) is Error and refused.reason == "forwarding_not_allowed"
            assert refused.detail["forwarded_for"] == "127.0.0.2"
            assert refused.detail["required"] == "forward" and refused.detail["attempts"] == 1
            # logged on with a trading key: still refused, and the session stays alice's own
            ack = await plain.request(Logon(api_key=venue.api_key("alice")))
            assert type(ack) is LogonAck
            refused = await plain.request(claim, raise_on_error=False)
            assert (refused.reason, refused.detail["session_scopes"]) == (
                "forwarding_not_allowed", "trade")
            # the forwarding key itself logs on only signed with its secret
            forwarder = await plain.request(Logon(api_key=FORWARDER_KEY), raise_on_error=False)
            assert (type(forwarder), forwarder.reason) == (Error, "signature_required")
        async with Client(venue.endpoint(), api_key=venue.api_key("alice")) as alice:
            assert (await alice.account_view()).account == "alice"

    asyncio.run(run())
    journal = (venue.run_dir / "audit" / "gateway.jsonl").read_text()
    assert "gateway.forwarding_not_allowed" in journal


def test_two_rest_clients_from_different_addresses_get_separate_address_buckets(venue):
    key = venue.api_key("bob")
    secret = secret_for(venue.run_dir, key).hex()
    answers = []
    for _ in range(12):  # 127.0.0.2 uses up its address's weight at the gateway
        status, body = rest(venue, "127.0.0.2", key, secret)
        answers.append((status, body))
        if status == 429:
            break
    status, body = answers[-1]
    assert (status, body["code"]) == (429, -1003), answers
    assert "rule=ip_weight" in body["msg"], body
    assert sum(s == 200 for s, _ in answers) >= 3  # (the first ones passed)
    # the same key from 127.0.0.3: its own address's bucket, untouched
    status, body = rest(venue, "127.0.0.3", key, secret)
    assert status == 200 and "totalWalletBalance" in body, body


def test_an_allow_list_for_127_0_0_2_refuses_127_0_0_3_through_rest(venue):
    made = venue.cli_json("keys", "create", "taker1", "--scopes", "read,trade", "--allow",
                          "127.0.0.2/32")
    key, secret = made["api_key"], made["secret"]
    # the facade and the gateway read the key file every 500 ms
    ok = poll(lambda: rest(venue, "127.0.0.2", key, secret)[0] == 200, 5.0, 0.2)
    assert ok, rest(venue, "127.0.0.2", key, secret)
    status, body = rest(venue, "127.0.0.3", key, secret)
    assert (status, body["code"]) == (401, -2015), body
    assert "ip_not_allowed" in body["msg"] and "127.0.0.3" in body["msg"], body
