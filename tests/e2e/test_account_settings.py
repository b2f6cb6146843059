"""Account settings, transfers and scopes through the CLI and the real processes."""

from __future__ import annotations

import asyncio

import pytest

from cluster.client import Client, RequestFailed
from cluster.protocol import BUY, Deposit

pytestmark = pytest.mark.e2e


def test_settings_transfers_and_scopes(cluster):
    ok = cluster.cli_json("account", "deposit", "alice", "--amount", "2500.5")
    assert ok["action"] == "deposit" and ok["detail"]["amount"] == 2_500_500_000
    lev = cluster.cli_json("account", "leverage", "alice", "--symbol", "BTC-PERP", "--leverage", "50")
    assert lev["detail"]["to"] == 50
    too_high = cluster.cli_json("account", "leverage", "alice", "--symbol", "BTC-PERP",
                                "--leverage", "200", ok=False)
    assert too_high["error"] == "leverage_above_tier_max"
    mode = cluster.cli_json("account", "mode", "alice", "--symbol", "ETH-PERP", "--mode", "isolated")
    assert mode["detail"] == {"symbol": "ETH-PERP", "from": "cross", "to": "isolated"}
    no_pos = cluster.cli_json("account", "margin", "alice", "--symbol", "ETH-PERP", "--amount", "10",
                              ok=False)
    assert no_pos["error"] == "no_isolated_position"
    too_much = cluster.cli_json("account", "withdraw", "alice", "--amount", "1000000", ok=False)
    assert too_much["error"] == "withdrawal_exceeds_available"
    view = cluster.cli_json("account", "show", "alice")
    assert view["human"]["balance"] == "102500.5"

    async def scopes():
        async with Client(cluster.endpoint(), api_key=cluster.api_key("admin")) as admin, \
                Client(cluster.endpoint(), api_key=cluster.api_key("bob")) as bob:
            with pytest.raises(RequestFailed) as denied:
                await admin.place("BTC-PERP", BUY, qty=1, price=300_000)
            assert denied.value.error.reason == "missing_scope"
            with pytest.raises(RequestFailed) as denied:
                await bob.request(Deposit(account="bob", amount=1))
            assert denied.value.error.detail["required"] == "admin"

    asyncio.run(scopes())
