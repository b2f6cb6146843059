"""Signed requests on the real cluster (#20): keys' secrets in the run's 0600 key file; a replayed,
an expired, a wrong-scope and a non-allowed-address request each refused with the numbers."""

from __future__ import annotations

import asyncio
import json
import stat
import time

import pytest

from cluster.client import Client, RequestFailed
from cluster.protocol import Deposit, GetAccount, Signed, encode_one
from cluster.signing import FORWARDER_KEY, sign
from tests.conftest import ClusterHandle, stop_and_reap

pytestmark = pytest.mark.e2e


@pytest.fixture
def signing_cluster(tmp_path):
    handle = ClusterHandle(tmp_path)
    handle.run_dir.mkdir(parents=True)
    # alice's key must sign everything and may only come from 127.0.0.1
    (handle.run_dir / "keys.json").write_text(json.dumps({"keys": {handle.api_key("alice"): {
        "secret": "ab" * 32, "require_signature": True, "allow": ["127.0.0.1/32"]}}}))
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


def test_signed_requests_and_each_refusal_with_its_numbers(signing_cluster):
    cluster = signing_cluster
    keys = cluster.run_dir / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    entries = json.loads(keys.read_text())["keys"]
    # made at up: the accounts' keys, and the REST facade's forwarding key (#25)
    assert set(entries) == {a.api_key for a in cluster.topo.accounts.values()} | {FORWARDER_KEY}
    assert entries[FORWARDER_KEY]["scopes"] == ["forward"]
    assert entries[FORWARDER_KEY]["require_signature"] is True
    assert "secret" not in cluster.config_path.read_text()
    secret = bytes.fromhex(entries[cluster.api_key("alice")]["secret"])

    async def run():
        with pytest.raises(RequestFailed) as unsigned:
            async with Client(cluster.endpoint(), api_key=cluster.api_key("alice")):
                pass
        assert unsigned.value.error.reason == "signature_required"
        async with Client(cluster.endpoint(), api_key=cluster.api_key("alice"),
                          secret=secret) as alice:
            assert (await alice.account_view()).account == "alice"
            # a replay: the same signed bytes twice
            body = encode_one(GetAccount(req_id=0))
            ts_ms, nonce = time.time_ns() // 1_000_000, alice.next_nonce()
            frame = encode_one([Signed(ts_ms=ts_ms, nonce=nonce, body=body,
                                       sig=sign(secret, alice.session, ts_ms, nonce, body))])
            await alice.send_raw(frame)
            assert type(await alice.recv_any(5)).__name__ == "AccountView"
            await alice.send_raw(frame)
            replay = await alice.recv_any(5)
            assert (replay.reason, replay.detail["nonce"], replay.detail["last_nonce"]) == (
                "replayed_request", nonce, nonce)
            # expired: signed 6 s ago
            old_ms, nonce = time.time_ns() // 1_000_000 - 6000, alice.next_nonce()
            await alice.send_raw(encode_one([Signed(
                ts_ms=old_ms, nonce=nonce, body=body,
                sig=sign(secret, alice.session, old_ms, nonce, body))]))
            stale = await alice.recv_any(5)
            assert stale.reason == "stale_request" and stale.detail["timestamp"] == old_ms
            assert stale.detail["recv_window"] == 5000
            assert 5000 < stale.detail["server_time"] - old_ms < 60_000
            # wrong scope: a trade key moving money
            with pytest.raises(RequestFailed) as scope:
                await alice.request(Deposit(account="alice", amount=1))
            assert (scope.value.error.reason, scope.value.error.detail["required"]) == (
                "missing_scope", "admin")
        # from an address outside the key's allow-list (127.0.0.2, a second loopback address)
        port = cluster.endpoint().rsplit(":", 1)[1]
        with pytest.raises(RequestFailed) as outside:
            async with Client(f"tcp://127.0.0.2:0;127.0.0.1:{port}",
                              api_key=cluster.api_key("alice"), secret=secret):
                pass
        assert outside.value.error.detail == {"ip": "127.0.0.2", "allow": "127.0.0.1/32",
                                              "account": "alice"}
        # the CLI signs with the key file's secret
        shown = cluster.cli_json("account", "show", "alice")
        assert shown

    asyncio.run(run())


def test_keys_made_rotated_and_revoked_with_the_cli_while_the_cluster_runs(signing_cluster):
    """`perpx keys create` makes a key the running gateway takes (its scopes, signed); `rotate`
    refuses what the old secret signs; `revoke` ends a live session at its next request."""
    cluster = signing_cluster
    made = cluster.cli_json("keys", "create", "bob", "--scopes", "read")
    assert made["require_signature"] and made["scopes"] == ["read"]
    listed = cluster.cli_json("keys", "list")
    assert listed[made["api_key"]]["account"] == "bob" and "secret" not in listed[made["api_key"]]

    async def logged_on(api_key: str, secret: bytes, deadline_s: float = 15) -> Client:
        """The gateway reads the key file within a second or so: poll with a deadline."""
        deadline = time.monotonic() + deadline_s
        while True:
            client = Client(cluster.endpoint(), api_key=api_key, secret=secret)
            try:
                await client.connect()
                return client
            except RequestFailed as exc:
                await client.close()
                if exc.error.reason != "invalid_api_key" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5 + exc.error.detail.get("retry_after_ms", 0) / 1000)

    async def run():
        bob = await logged_on(made["api_key"], bytes.fromhex(made["secret"]))
        try:
            assert (await bob.account_view()).account == "bob"
            with pytest.raises(RequestFailed) as scope:
                await bob.place("BTC-PERP", 1, qty=1, price=300_000)
            assert scope.value.error.reason == "missing_scope"
            cluster.cli_json("keys", "rotate", made["api_key"])
            deadline = time.monotonic() + 15
            while True:  # once the file is read again, the old secret's signatures are refused
                try:
                    await bob.account_view()
                except RequestFailed as exc:
                    assert exc.error.reason == "invalid_signature"
                    break
                assert time.monotonic() < deadline, "the rotation was never taken"
                await asyncio.sleep(0.2)
            rotated = json.loads((cluster.run_dir / "keys.json").read_text())["keys"]
            bob.set_secret(bytes.fromhex(rotated[made["api_key"]]["secret"]))
            assert (await bob.account_view()).account == "bob"
            cluster.cli_json("keys", "revoke", made["api_key"])
            deadline = time.monotonic() + 15
            while True:
                try:
                    await bob.account_view()
                except RequestFailed as exc:
                    assert exc.error.reason == "key_revoked"
                    break
                assert time.monotonic() < deadline, "the revocation was never taken"
                await asyncio.sleep(0.2)
        finally:
            await bob.close()
        # an Ed25519 key: the key file keeps its public half; the SDK signs with the private one
        ed = cluster.cli_json("keys", "create", "bob", "--scopes", "read", "--ed25519")
        stored = json.loads((cluster.run_dir / "keys.json").read_text())["keys"][ed["api_key"]]
        assert "secret" not in stored and ed["secret"] not in json.dumps(stored)
        deadline = time.monotonic() + 15
        while True:
            try:
                async with Client(cluster.endpoint(), api_key=ed["api_key"],
                                  ed25519_key=bytes.fromhex(ed["secret"])) as signed_ed:
                    assert (await signed_ed.account_view()).account == "bob"
                break
            except RequestFailed as exc:
                assert exc.error.reason == "invalid_api_key" and time.monotonic() < deadline
                await asyncio.sleep(0.5 + exc.error.detail.get("retry_after_ms", 0) / 1000)

    asyncio.run(run())
