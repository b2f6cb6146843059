"""Risk takes account operations only from the gateway, and re-checks each against its own key
table (#20), on the real cluster:
- a Routed pushed into risk's inbox with any key but the gateway's (the run's tools key, which
  CurveZMQ lets in; matching's) is refused whole at the inbox, even naming the admin's key or
  borrowing the gateway's sequenced link (cluster/senders.py);
- one that does come with the gateway's key (a compromised or buggy gateway) but claims scopes
  its key does not have, or names a revoked key, is refused by risk's key table with the gateway's
  reason and numbers;
and neither moves anything; a forged key table is not even decoded; the journal, key table
included, replays to the live state."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster import curve
from cluster.client import Client
from cluster.protocol import Deposit, KeyTable, LinkSeq, Routed, SetLeverage, Withdraw
from cluster.signing import KEY_FILE_CHECK_MS, key_id
from cluster.verify import verify_node
from tests.e2e.helpers import final_hash, log_events, poll

pytestmark = pytest.mark.e2e

EVERY_SCOPE = ("read", "trade", "transfer", "admin")


async def account_view(cluster, account: str):
    async with Client(cluster.endpoint(), api_key=cluster.api_key(account)) as client:
        view = await client.account_view()
        return view.balance, view.available, [(p.symbol, p.qty) for p in view.positions]


def test_a_routed_from_any_key_but_the_gateways_is_refused_at_risks_inbox(cluster):
    """The attack an outside review found: the tools' key pushing the admin's request (its own
    account, its real key, the admin scope) depositing into alice's account passed risk's key
    table, which is right to pass it: the key is real and has the scope. Now no frame of it is
    read unless it comes with the gateway's key, and the same frame from the gateway's key does
    move money (the control: the frame is potent, what refuses it is its sender)."""
    topo = cluster.topo
    admin = key_id(cluster.api_key("admin"))
    before = asyncio.run(account_view(cluster, "alice"))
    deposit = Routed(ref=10**15 + 11, account="admin", body=Deposit(account="alice", amount=10**12),
                     scopes=EVERY_SCOPE, key_id=admin)
    curve.push_to_inbox(topo, "risk", [deposit])  # the tools' key
    # the gateway's own sequenced link and numbers, borrowed: by the tools, then by matching
    borrowed = [LinkSeq(link="gateway->risk", first=10**9, count=1), deposit]
    curve.push_to_inbox(topo, "risk", borrowed)
    curve.push_to_inbox(topo, "risk", borrowed, role="matching")

    def refused():
        return log_events(cluster, "risk", "frame_refused")

    assert poll(lambda: len(refused()) >= 3, 15), refused()
    reasons = sorted((r["sender"], r["reason"], r["link"]) for r in refused())
    assert reasons == [("matching", "link_not_senders", "gateway->risk"),
                       ("tools", "sender_not_allowed", ""),  # (not even decoded)
                       ("tools", "sender_not_allowed", "")], reasons
    assert asyncio.run(account_view(cluster, "alice")) == before  # nothing moved

    def risk_stats():  # (heartbeats carry them)
        return cluster.status()["nodes"]["risk"]["stats"]

    assert poll(lambda: risk_stats().get("frames_refused", 0) >= 3, 10), risk_stats()
    assert risk_stats()["errors"] == 0 and cluster.status()["nodes"]["risk"]["restarts"] == 0
    # the control: from the gateway's key, the same request is applied
    curve.push_to_inbox(topo, "risk", [deposit], role="gateway")
    assert poll(lambda: asyncio.run(account_view(cluster, "alice"))[0] == before[0] + 10**12, 10)


def test_a_forged_routed_from_the_gateways_key_is_refused_by_risks_own_key_table(cluster):
    topo = cluster.topo
    alice_key = cluster.api_key("alice")  # the topology's: trade only
    assert tuple(topo.accounts["alice"].scopes) == ("trade",)
    # a transfer key for alice, made and then revoked as an operator does
    made = cluster.cli_json("keys", "create", "alice", "--scopes", "transfer,trade")
    cluster.cli_json("keys", "revoke", made["api_key"])
    assert poll(lambda: any(r.get("revoked") == 1 for r in
                            log_events(cluster, "risk", "key_table_applied")), 10), \
        log_events(cluster, "risk", "key_table_applied")

    def alice_view():
        return account_view(cluster, "alice")

    before = asyncio.run(alice_view())
    # first a key table of its own, giving alice's key every scope: no inbox takes a KeyTable
    # (only risk's shell makes one), so the frame is refused at decode and counted
    curve.push_to_inbox(topo, "risk", [KeyTable(keys={key_id(alice_key): ("alice", EVERY_SCOPE)})],
                        role="gateway")
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
    curve.push_to_inbox(topo, "risk", forged, role="gateway")  # past the inbox's sender check

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
        curve.push_to_inbox(handle.topo, "risk", [Routed(
            ref=10**15 + 9, account="alice", body=Withdraw(account="alice", amount=10**6),
            scopes=EVERY_SCOPE, key_id=key_id(made["api_key"]))], role="gateway",
            endpoint=handle.topo.nodes["risk"].standby_inbox)

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
