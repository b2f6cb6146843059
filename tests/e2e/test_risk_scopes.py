"""Risk re-checks every account operation by its own key table (#20), on the real cluster: a Routed
forged on the gateway -> risk link (sent with the run's tools key, which CurveZMQ lets in) that
claims scopes its key does not have, or names a revoked key, is refused at risk with the
gateway's reason and numbers, and moves nothing; a forged key table is not even decoded; the
journal, key table included, replays to the live state."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import zmq

from cluster import curve
from cluster.client import Client
from cluster.protocol import Deposit, KeyTable, Routed, SetLeverage, Withdraw
from cluster.signing import KEY_FILE_CHECK_MS, key_id
from cluster.verify import verify_node
from tests.e2e.helpers import final_hash, log_events, poll

pytestmark = pytest.mark.e2e

EVERY_SCOPE = ("read", "trade", "transfer", "admin")


def test_a_forged_routed_at_risk_is_refused_by_risks_own_key_table(cluster):
    topo = cluster.topo
    alice_key = cluster.api_key("alice")  # the topology's: trade only
    assert tuple(topo.accounts["alice"].scopes) == ("trade",)
    # a transfer key for alice, made and then revoked as an operator does
    made = cluster.cli_json("keys", "create", "alice", "--scopes", "transfer,trade")
    cluster.cli_json("keys", "revoke", made["api_key"])
    assert poll(lambda: any(r.get("revoked") == 1 for r in
                            log_events(cluster, "risk", "key_table_applied")), 10), \
        log_events(cluster, "risk", "key_table_applied")

    async def alice_view():
        async with Client(cluster.endpoint(), api_key=alice_key) as alice:
            view = await alice.account_view()
            return view.balance, view.available, [(p.symbol, p.qty) for p in view.positions]

    before = asyncio.run(alice_view())
    # first a key table of its own, giving alice's key every scope: no inbox takes a KeyTable
    # (only risk's shell makes one), so the frame is refused at decode and counted
    curve.push_as_tools(topo, "risk", [KeyTable(keys={key_id(alice_key): ("alice", EVERY_SCOPE)})])
    assert poll(lambda: log_events(cluster, "risk", "bad_frame"), 10)
    forged = [
        # alice's trade-only key claiming every scope: a withdrawal, a deposit
        Routed(ref=10**15 + 1, account="alice", body=Withdraw(account="alice", amount=10**6),
               scopes=EVERY_SCOPE, key_id=key_id(alice_key)),
        Routed(ref=10**15 + 2, account="alice", body=Deposit(account="alice", amount=10**12),
               scopes=EVERY_SCOPE, key_id=key_id(alice_key)),
        # the revoked key, with the scope it had
        Routed(ref=10**15 + 3, account="alice", body=Withdraw(account="alice", amount=10**6),
               scopes=EVERY_SCOPE, key_id=key_id(made["api_key"])),
        # no key named at all (what risk accepted before, trusting `scopes`)
        Routed(ref=10**15 + 4, account="alice", body=SetLeverage(symbol="BTC-PERP", leverage=3),
               scopes=EVERY_SCOPE),
    ]
    curve.push_as_tools(topo, "risk", forged)

    def refusals():
        decisions = cluster.cli_json("explain", "account", "alice")["decisions"]
        return [d for d in decisions if d.get("rule") in (
            "risk.missing_scope", "risk.key_revoked", "risk.invalid_api_key")]

    poll(lambda: len(refusals()) >= 4, 15)
    found = refusals()
    assert len(found) == 4, found
    by_rule: dict = {}
    for d in found:
        by_rule.setdefault(d["rule"], []).append(d)
    scope = sorted(by_rule["risk.missing_scope"], key=lambda d: d["numbers"]["request"])
    assert [(d["numbers"]["request"], d["numbers"]["required"], d["numbers"]["scopes"])
            for d in scope] == [("Deposit", "admin", "trade"),
                                ("Withdraw", "transfer or admin", "trade")], scope
    (revoked,) = by_rule["risk.key_revoked"]
    assert revoked["numbers"]["key_account"] == "alice"
    (unknown,) = by_rule["risk.invalid_api_key"]
    assert unknown["numbers"]["key_id"] == ""
    assert asyncio.run(alice_view()) == before  # nothing moved ...
    applied = [d["rule"] for d in cluster.cli_json("explain", "account", "alice")["decisions"]
               if d["node"] == "risk" and d["decision"] == "applied"]
    assert applied == [], applied  # ... and no setting changed
    assert cluster.status()["nodes"]["risk"]["restarts"] == 0

    # the journal, with the key tables risk read, replays to the state the node ended in
    cluster.down()
    replayed = verify_node("risk", cluster.run_dir / "journal" / "risk", topo)
    assert replayed["ok"] and replayed["state_hash"] == final_hash(cluster.run_dir, "risk"), replayed


def test_a_promoted_standby_holds_its_primarys_key_table(tmp_path):
    """The key table reaches risk's standby as the journaled input it is: after the primary is
    killed, the promoted standby refuses the revoked key without having read the key file for
    it (it logs no key table of its own), and both journals replay to one state."""
    from tests.e2e.test_failover import in_sync, primary, started_pairs

    handle = started_pairs(tmp_path, "risk")
    try:
        made = handle.cli_json("keys", "create", "alice", "--scopes", "transfer,trade")
        handle.cli_json("keys", "revoke", made["api_key"])
        assert poll(lambda: any(r.get("revoked") == 1 for r in
                                log_events(handle, "risk", "key_table_applied")), 10)
        assert poll(lambda: in_sync(handle, "risk"), 20)
        old, epoch = primary(handle, "risk")
        assert old == "risk"
        handle.cli("netsim", "fault", "risk", "kill", "--primary", check=True)
        assert poll(lambda: (primary(handle, "risk") or ("", 0))[0] == "risk.b", 20), \
            handle.status()["nodes"]["risk.b"]
        assert log_events(handle, "risk.b", "failover_promoted")  # (its log is where we look)
        time.sleep(KEY_FILE_CHECK_MS / 1000 * 2)  # (its own look at the file, had it needed one)
        assert log_events(handle, "risk.b", "key_table_applied") == []
        sock = curve.tools_socket(zmq.Context.instance(), zmq.PUSH, handle.topo,
                                  handle.topo.nodes["risk"].standby_inbox)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.send(msgspec.msgpack.encode([Routed(
            ref=10**15 + 9, account="alice", body=Withdraw(account="alice", amount=10**6),
            scopes=EVERY_SCOPE, key_id=key_id(made["api_key"]))]))
        sock.close()

        def refused():
            decisions = handle.cli_json("explain", "account", "alice")["decisions"]
            return [d for d in decisions if d["rule"] == "risk.key_revoked"]

        assert poll(refused, 10), handle.cli_json("explain", "account", "alice")
        handle.down()
        verified = handle.cli_json("audit", "verify", str(handle.run_dir))
        pairs = {p["node"]: p for p in verified["pairs"]}
        assert pairs["risk"]["equal"], pairs["risk"]
    finally:
        handle.down()
