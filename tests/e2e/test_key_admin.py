"""`perpx keys create|rotate|revoke --api-key ADMIN_KEY` (#20): an admin's signed request through
the gateway makes, rotates and revokes keys in the run's key file, served by at once (gateway and
risk); a non-admin key is refused; the file path keeps working."""

from __future__ import annotations

import asyncio

import pytest

from cluster.client import Client, RequestFailed
from cluster.protocol import BUY

pytestmark = pytest.mark.e2e


def test_keys_over_the_wire_by_an_admin_key(cluster):
    admin = ("--api-key", cluster.api_key("admin"))
    made = cluster.cli_json("keys", "create", "alice", "--scopes", "read", *admin)
    api_key, secret = made["api_key"], bytes.fromhex(made["secret"])
    assert made["account"] == "alice" and made["require_signature"]

    async def view(key_secret: bytes):
        async with Client(cluster.endpoint(), api_key=api_key, secret=key_secret) as client:
            account = (await client.account_view()).account  # through risk: it knows the key
            with pytest.raises(RequestFailed) as trade:
                await client.place("BTC-PERP", BUY, 1, cluster.topo.symbols["BTC-PERP"].initial_price)
            return account, trade.value.error.reason

    # the new key works at once, for what its scope allows
    assert asyncio.run(view(secret)) == ("alice", "missing_scope")

    # a key without the admin scope may not make one
    denied = cluster.cli("keys", "create", "bob", "--scopes", "trade", "--api-key",
                         cluster.api_key("alice"), "--json")
    assert denied.returncode == 1 and "missing_scope" in denied.stdout, denied

    rotated = cluster.cli_json("keys", "rotate", api_key, *admin)
    new_secret = bytes.fromhex(rotated["secret"])
    with pytest.raises(RequestFailed) as old:
        asyncio.run(view(secret))
    assert old.value.error.reason == "invalid_signature"
    assert asyncio.run(view(new_secret))[0] == "alice"

    cluster.cli_json("keys", "revoke", api_key, *admin)
    with pytest.raises(RequestFailed) as gone:
        asyncio.run(view(new_secret))
    assert gone.value.error.reason == "invalid_api_key"

    decisions = cluster.cli_json("explain", "account", "alice")["decisions"]
    done = [(d["rule"], d["numbers"]["api_key"], d["numbers"]["by"]) for d in decisions
            if d["rule"] in ("gateway.key_created", "gateway.key_rotated", "gateway.key_revoked")]
    assert done == [("gateway.key_created", api_key, "admin"),
                    ("gateway.key_rotated", api_key, "admin"),
                    ("gateway.key_revoked", api_key, "admin")], done
    assert not [d for d in decisions if "secret" in d["numbers"]]  # never journaled

    # the file path, with no key: as before
    local = cluster.cli_json("keys", "create", "bob", "--scopes", "read")
    listed = cluster.cli_json("keys", "list")
    assert listed[local["api_key"]]["account"] == "bob" and listed[api_key]["revoked"]
