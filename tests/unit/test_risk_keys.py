"""Risk re-checks the scope of every account operation by its own key table (#20), whatever scopes
the Routed claims: a forged message from a trade-only key moves nothing, a revoked or unknown key
is refused, and the table is an input like any other (replayed, snapshotted, hashed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import load
from cluster.protocol import (
    Deposit, Error, GetAccount, KeyTable, Logon, NewOrder, PlaceOrder, Reply, Routed, SetLeverage,
    SetPortfolioAccess, Withdraw,
)
from cluster.scopes import REQUIRED_SCOPES, SCOPES
from cluster.signing import KeyEntry, key_id, topology_keys
from nodes.gateway.sessions import Gateway
from nodes.risk.keys import key_table_input
from nodes.risk.ledger import RiskEngine

TOPO = load()
SYMBOL = "BTC-PERP"
PRICE = TOPO.symbols[SYMBOL].initial_price
TRADE_KEY, ADMIN_KEY, GONE_KEY, MOVER_KEY = "k-trade", "k-admin", "k-gone", "k-mover"
# the run's key file as risk's shell reads it: made keys, one revoked, the topology's own
ENTRIES = {
    TRADE_KEY: KeyEntry(b"\1" * 32, account="alice", scopes=("trade",)),
    ADMIN_KEY: KeyEntry(b"\2" * 32, account="admin", scopes=("admin",)),
    GONE_KEY: KeyEntry(b"\3" * 32, account="alice", scopes=("trade", "transfer"), revoked=True),
    MOVER_KEY: KeyEntry(b"\4" * 32, account="alice", scopes=("transfer",)),
}


def engine() -> RiskEngine:
    risk = RiskEngine(TOPO.symbols, {a.name: a.deposit for a in TOPO.accounts.values()})
    risk.handle(KeyTable(keys={}), 0)  # (replaced below: an empty table refuses everything)
    risk.handle(key_table_input(topology_keys(TOPO), ENTRIES), 0)
    return risk


def refusal(effects: list) -> Error:
    """The one answer to the gateway, an Error; and nothing went anywhere but the audit."""
    answers = [e for dest, e in effects if dest == "gateway"]
    assert len(answers) == 1 and type(answers[0]) is Reply and type(answers[0].body) is Error, \
        effects
    assert {dest for dest, _ in effects} <= {"gateway", "audit"}, effects
    return answers[0].body


def test_forged_scopes_from_a_trade_only_key_are_refused_and_change_nothing():
    risk = engine()
    before = risk.state_hash()
    forged = ("trade", "transfer")  # what the message claims; the key has trade only
    for body in (Withdraw(account="alice", amount=1_000_000),
                 Deposit(account="alice", amount=10**12)):
        error = refusal(risk.handle(Routed(ref=1, account="alice", body=body, scopes=forged + (
            "admin",), key_id=key_id(TRADE_KEY)), 5))
        assert error.reason == "missing_scope"
        assert error.detail == {"request": type(body).__name__,
                                "required": "admin" if type(body) is Deposit else "transfer or admin",
                                "scopes": "trade"}  # risk's table, not the message
    assert risk.state_hash() == before
    # what the key may do still passes: an order goes to matching
    out = risk.handle(Routed(ref=2, account="alice", body=PlaceOrder(
        symbol=SYMBOL, side=1, qty=1, price=PRICE), scopes=forged, key_id=key_id(TRADE_KEY)), 5)
    assert [type(e) for dest, e in out if dest == "matching"] == [NewOrder]


def test_a_revoked_an_unknown_and_another_accounts_key_are_refused():
    risk = engine()
    before = risk.state_hash()
    everything = ("read", "trade", "transfer", "admin")
    cases = (
        (GONE_KEY, "alice", "key_revoked", {"account": "alice", "key_account": "alice"}),
        ("never-made", "alice", "invalid_api_key", {"account": "alice",
                                                    "key_id": key_id("never-made")}),
        (TRADE_KEY, "bob", "key_revoked", {"account": "bob", "key_account": "alice"}),
    )
    for api_key, account, reason, numbers in cases:
        for body in (Withdraw(account=account, amount=1), GetAccount(),
                     SetLeverage(symbol=SYMBOL, leverage=2)):
            error = refusal(risk.handle(Routed(ref=3, account=account, body=body,
                                               scopes=everything, key_id=key_id(api_key)), 5))
            assert error.reason == reason, (api_key, body, error)
            assert {k: error.detail[k] for k in numbers} == numbers
    # a Routed that names no key at all (what an old or forged sender sends) is unknown
    error = refusal(risk.handle(Routed(ref=4, account="alice", body=Withdraw(
        account="alice", amount=1), scopes=everything), 5))
    assert error.reason == "invalid_api_key"
    assert risk.state_hash() == before


def test_transfer_moves_only_the_keys_own_account_and_admin_any():
    risk = engine()
    bob, alice = risk.accounts["bob"].balance, risk.accounts["alice"].balance
    error = refusal(risk.handle(Routed(ref=5, account="alice", body=Withdraw(
        account="bob", amount=7), scopes=("transfer",), key_id=key_id(MOVER_KEY)), 5))
    assert (error.reason, error.detail) == ("not_your_account", {
        "account": "bob", "session_account": "alice", "required": "admin", "scopes": "transfer"})
    assert risk.accounts["bob"].balance == bob
    risk.handle(Routed(ref=6, account="alice", body=Withdraw(account="alice", amount=7),
                       key_id=key_id(MOVER_KEY)), 5)
    assert risk.accounts["alice"].balance == alice - 7
    risk.handle(Routed(ref=7, account="admin", body=Withdraw(account="bob", amount=7),
                       key_id=key_id(ADMIN_KEY)), 5)
    assert risk.accounts["bob"].balance == bob - 7
    # with no key table (a core driven directly), the message's scopes are checked the same way
    bare = RiskEngine(TOPO.symbols, {"alice": 100, "bob": 100})
    error = refusal(bare.handle(Routed(ref=8, account="alice", body=Withdraw(
        account="bob", amount=7), scopes=("transfer",)), 5))
    assert error.reason == "not_your_account" and bare.accounts["bob"].balance == 100


def test_the_key_table_is_an_input_replayed_and_snapshotted_like_any_other():
    """A revocation between two requests: a replay of the same inputs, and a copy restored from
    a snapshot taken before it, end in the same state and give the same answers."""
    withdraw = Routed(ref=9, account="alice", body=Withdraw(account="alice", amount=3),
                      key_id=key_id(MOVER_KEY))
    revoked = dict(ENTRIES, **{MOVER_KEY: KeyEntry(b"\4" * 32, account="alice",
                                                   scopes=("transfer",), revoked=True)})
    inputs = [withdraw, key_table_input(topology_keys(TOPO), revoked), withdraw]
    first, second = engine(), engine()
    copy = RiskEngine(TOPO.symbols, {})
    copy.restore(first.snapshot())
    answers = []
    for risk in (first, second, copy):
        answers.append([[e.body for dest, e in risk.handle(msg, 9) if dest == "gateway"]
                        for msg in inputs])
    assert first.state_hash() == second.state_hash() == copy.state_hash()
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0][0].action == "withdrawal" and answers[0][2][0].reason == "key_revoked"
    assert first.accounts["alice"].balance == TOPO.accounts["alice"].deposit - 3


def test_the_gateway_and_risk_name_a_key_alike_and_agree_on_its_scopes():
    """The Routed the gateway makes for a session of a key made in the key file passes risk's
    check by the table risk builds from the same file; the topology's own keys too."""
    gateway = Gateway(topology_keys(TOPO), {SYMBOL: {}}, keys=ENTRIES)
    risk = engine()
    for api_key, account in ((TRADE_KEY, "alice"), (TOPO.accounts["bob"].api_key, "bob")):
        identity = api_key.encode()
        gateway.on_request(identity, Logon(req_id=1, api_key=api_key), 0, "127.0.0.1")
        ((to, routed),) = gateway.on_request(identity, GetAccount(req_id=2), 0, "127.0.0.1")
        assert to == "risk" and routed.key_id == key_id(api_key) and api_key not in routed.key_id
        ((_, answer),) = [e for e in risk.handle(routed, 1) if e[0] == "gateway"]
        assert answer.body.account == account


SCOPE_SETS = st.lists(st.sampled_from(SCOPES), unique=True, max_size=4).map(tuple)
BODIES = st.sampled_from([
    PlaceOrder(symbol=SYMBOL, side=1, qty=1, price=PRICE), GetAccount(),
    SetLeverage(symbol=SYMBOL, leverage=2), Withdraw(account="alice", amount=1),
    Withdraw(account="bob", amount=1), Deposit(account="bob", amount=1),
    SetPortfolioAccess(account="bob", enabled=True)])


@settings(max_examples=200, deadline=None)
@given(SCOPE_SETS, SCOPE_SETS, SCOPE_SETS, BODIES, st.sampled_from(["k1", "k2", "k3", ""]),
       st.sampled_from(["alice", "bob"]))
def test_what_the_message_claims_never_decides(held, claimed, other_claim, body, key, account):
    """Whatever scopes a Routed claims, risk's answer is the one its table gives the key: the
    same for any claim, and a pass exactly when the key is the account's and its scopes allow
    the request (an admin's on another account's balance)."""
    from nodes.risk.keys import KeyScopes

    keys = KeyScopes()
    keys.set(KeyTable(keys={"k1": ("alice", held), "k2": ("bob", ("admin",))},
                      revoked={"k3": "alice"}))
    answer, *others = [keys.refusal(Routed(ref=1, account=account, body=body, scopes=claim,
                                           key_id=key)) for claim in (claimed, other_claim, None)]
    assert others == [answer, answer], (answer, others)
    found = {"k1": ("alice", held), "k2": ("bob", ("admin",))}.get(key)
    may = (found is not None and found[0] == account
           and any(s in found[1] for s in REQUIRED_SCOPES[type(body)])
           and (getattr(body, "account", account) == account or "admin" in found[1]))
    assert (answer is None) == may, (answer, held, body, key, account)


def test_a_snapshot_from_before_the_key_table_restores_with_none_told():
    """A run upgraded in place: its risk snapshot has no `keys`; it restores, judges a Routed by
    the message's scopes as it did, and takes the table its shell then hands it."""
    import pickle

    old = engine()
    state = {k: v for k, v in vars(old).items() if k != "keys"}
    risk = RiskEngine(TOPO.symbols, {})
    risk.restore(pickle.dumps(state))
    assert risk.keys.table is None
    withdraw = Routed(ref=1, account="alice", body=Withdraw(account="alice", amount=1),
                      scopes=("trade",))
    assert refusal(risk.handle(withdraw, 5)).reason == "missing_scope"
    risk.handle(key_table_input(topology_keys(TOPO), ENTRIES), 5)
    assert refusal(risk.handle(withdraw, 5)).reason == "invalid_api_key"  # (it names no key)


def test_a_restored_key_table_works_out_what_it_allows_by_the_scope_rule_in_force(monkeypatch):
    # A snapshot keeps the table, not what it allowed: an upgrade that tightens a scope must not
    # go on allowing by the old rule (nothing journals a new table until the key file changes).
    import pickle

    from cluster import scopes
    from cluster.protocol import KeyTable, PlaceOrder
    from nodes.risk import keys as risk_keys
    table = risk_keys.KeyScopes()
    table.set(KeyTable(keys={"k1": ("alice", ("trade",))}, revoked={}))
    assert PlaceOrder in table.allowed["k1"]
    data = pickle.dumps(table)
    tightened = {**scopes.REQUIRED_SCOPES, PlaceOrder: ("admin",)}
    monkeypatch.setattr(risk_keys, "REQUIRED_SCOPES", tightened)
    restored = pickle.loads(data)
    assert restored.table == table.table and PlaceOrder not in restored.allowed["k1"]
