"""The portfolio margin mode is admin-enabled (#24): an admin-scoped key allows an account the mode
(SetPortfolioAccess), only then may the account's own trade key select it; withdrawn while in
use, the account goes back to cross margin unless that leaves it short of its initial
requirement. Risk checks the admin scope by its own key table; the permission is journaled input,
in the state hash and snapshots, and a snapshot from before it existed still restores."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from cluster.protocol import (
    Ack, AmendOrder, Error, GetAccount, IndexMark, OrderRejected, PlaceOrder, Reply, Routed, SetAccountMarginMode,
    SetPortfolioAccess,
)
from cluster.signing import key_id, topology_keys
from nodes.risk.keys import key_table_input
from nodes.risk.ledger import RiskEngine
from tests.unit.test_portfolio_margin import BTC, ETH, P_BTC, P_ETH, USD, allow, body, hedged
from tests.unit.test_risk_keys import ADMIN_KEY, ENTRIES, TOPO, TRADE_KEY, engine

ALICE_KEY = TOPO.accounts["alice"].api_key


def answer(effects: list):
    ((_, reply),) = [e for e in effects if e[0] == "gateway"]
    assert type(reply) is Reply
    return reply.body


def routed(account: str, api_key: str, request) -> Routed:
    return Routed(ref=1, account=account, body=request, key_id=key_id(api_key))


def test_only_an_admin_key_enables_and_only_then_the_trade_key_selects_portfolio():
    risk = engine()
    before = risk.state_hash()
    # the account's own trade key may not select it yet: the reason names who can enable it
    err = answer(risk.handle(routed("alice", TRADE_KEY, SetAccountMarginMode(mode="portfolio")), 5))
    assert type(err) is Error and err.reason == "portfolio_not_enabled"
    assert err.detail["account"] == "alice" and "admin" in err.detail["enabled_by"]
    assert "perpx account portfolio enable alice" in err.detail["enabled_by"]
    # nor enable it for itself: risk's key table says the key has no admin scope, whatever the
    # message claims
    forged = Routed(ref=1, account="alice", body=SetPortfolioAccess(account="alice", enabled=True),
                    scopes=("trade", "admin"), key_id=key_id(TRADE_KEY))
    err = answer(risk.handle(forged, 5))
    assert (err.reason, err.detail["required"]) == ("missing_scope", "admin")
    assert risk.state_hash() == before  # refusals change nothing
    ack = answer(risk.handle(routed("admin", ADMIN_KEY, SetPortfolioAccess(
        account="alice", enabled=True)), 5))
    assert type(ack) is Ack and ack.action == "portfolio_access_changed"
    assert ack.detail == {"account": "alice", "enabled": 1, "was_enabled": 0,
                          "by": "admin", "margin_mode": "cross"}
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ack), type=Ack) == ack  # (on the wire)
    assert risk.state_hash() != before  # the permission is state
    view = answer(risk.handle(routed("alice", TRADE_KEY, GetAccount()), 5))
    assert (view.portfolio_enabled, view.margin_mode) == (True, "cross")
    ack = answer(risk.handle(routed("alice", TRADE_KEY, SetAccountMarginMode(mode="portfolio")), 5))
    assert type(ack) is Ack and risk.accounts["alice"].portfolio is True
    # an unknown target is refused with its name
    err = answer(risk.handle(routed("admin", ADMIN_KEY, SetPortfolioAccess(
        account="nobody", enabled=True)), 5))
    assert (err.reason, err.detail) == ("unknown_account", {"account": "nobody"})


def test_withdrawn_in_use_the_account_goes_back_to_cross():
    pipe = hedged(100_000)
    allow(pipe, "alice")
    assert type(body(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Ack)) is Ack
    acct = pipe.risk.accounts["alice"]
    portfolio_mm = pipe.risk.maintenance_margin(acct)
    ack = body(pipe.request("mm", SetPortfolioAccess(account="alice", enabled=False)), Ack)
    d = ack.detail
    assert (d["enabled"], d["was_enabled"], d["from"], d["to"], d["margin_mode"]) == (
        0, 1, "portfolio", "cross", "cross")
    assert (acct.portfolio, acct.portfolio_enabled) == (False, False)
    assert d["maintenance_margin"] == pipe.risk.maintenance_margin(acct) < portfolio_mm
    # and the account's key may not select it again
    err = body(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Error)
    assert err.reason == "portfolio_not_enabled"
    # withdrawn from an account in cross mode: the flag only
    allow(pipe, "carol")
    ack = body(pipe.request("mm", SetPortfolioAccess(account="carol", enabled=False)), Ack)
    assert (ack.detail["margin_mode"], ack.detail["was_enabled"]) == ("cross", 1)
    assert "from" not in ack.detail


def test_withdrawal_refused_while_cross_margin_would_leave_the_account_short():
    """The account is under water in portfolio mode after a fall (available < 0): switching it
    to cross by an admin's hand would not cover it either; refused with the numbers, and nothing
    changes (the liquidator, not the admin, deals with it)."""
    pipe = hedged(100_000)
    allow(pipe, "alice")
    assert type(body(pipe.request("alice", SetAccountMarginMode(mode="portfolio")), Ack)) is Ack
    pipe.mark(BTC, P_BTC * 85 // 100)  # BTC -15 %: 90,000 of equity gone on 20 BTC
    acct = pipe.risk.accounts["alice"]
    acct.portfolio = False
    cross_available = pipe.risk.available(acct)
    acct.portfolio = True
    assert cross_available < 0
    before = pipe.risk.state_hash()
    err = body(pipe.request("mm", SetPortfolioAccess(account="alice", enabled=False)), Error)
    d = err.detail
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(err), type=Error) == err
    assert err.reason == "portfolio_disable_insufficient_margin"
    assert (d["account"], d["from"], d["to"], d["by"]) == ("alice", "portfolio", "cross", "mm")
    assert (d["available"], d["required"]) == (cross_available, -cross_available)
    assert d["position_margin_now"] == pipe.risk.position_margin(acct)  # the portfolio IM
    assert (acct.portfolio, acct.portfolio_enabled) == (True, True)
    assert pipe.risk.state_hash() == before
    assert any(e.rule == "risk.portfolio_disable_insufficient_margin" for e in pipe.audit)


def test_the_permission_replays_restores_and_an_older_snapshot_keeps_the_mode_in_use():
    def history(risk: RiskEngine) -> None:
        risk.handle(IndexMark(symbol=BTC, index=P_BTC, mark=P_BTC, last=0, seq=1, ts_ns=1), 0)
        for account, request in (("z", SetPortfolioAccess(account="a", enabled=True)),
                                 ("a", SetAccountMarginMode(mode="portfolio")),
                                 ("z", SetPortfolioAccess(account="b", enabled=True)),
                                 ("a", PlaceOrder(symbol=BTC, side=1, qty=10, price=P_BTC))):
            risk.handle(Routed(ref=1, account=account, body=request), 0)

    deposits = {"a": 100_000 * USD, "b": 100_000 * USD, "c": 100_000 * USD, "z": 0}
    one, two = RiskEngine(TOPO.symbols, deposits), RiskEngine(TOPO.symbols, deposits)
    history(one)
    history(two)
    assert one.state_hash() == two.state_hash()
    restored = RiskEngine(TOPO.symbols, {})
    restored.restore(one.snapshot())
    assert restored.state_hash() == one.state_hash()
    assert [restored.accounts[n].portfolio_enabled for n in "abc"] == [True, True, False]
    # a snapshot written before the permission existed: its accounts have no such slot
    for acct in one.accounts.values():
        del acct.portfolio_enabled
    old = RiskEngine(TOPO.symbols, {})
    old.restore(one.snapshot())
    # a (in portfolio mode) chose it under the old rule and keeps it; b and c have none
    assert [(old.accounts[n].portfolio, old.accounts[n].portfolio_enabled) for n in "abc"] == [
        (True, True), (False, False), (False, False)]
    assert old.state_hash() != two.state_hash()  # (b's permission came after that rule)


def test_the_shell_key_table_gives_the_topology_admin_the_scope():
    """The topology's `admin` account (scopes = ["admin"]) may enable; its table entry is the
    one risk's shell builds from the topology."""
    table = key_table_input(topology_keys(TOPO), ENTRIES)
    assert table.keys[key_id(TOPO.accounts["admin"].api_key)] == ("admin", ("admin",))
    risk = engine()
    ack = answer(risk.handle(routed("admin", TOPO.accounts["admin"].api_key, SetPortfolioAccess(
        account="alice", enabled=True)), 5))
    assert type(ack) is Ack
    ack = answer(risk.handle(routed("alice", ALICE_KEY, SetAccountMarginMode(mode="portfolio")), 5))
    assert type(ack) is Ack


# ------------------------------------------------------------------ what an order's fill asks


def _portfolio_account(deposit_usd: int):
    pipe = hedged(deposit_usd)
    allow(pipe, "alice")
    switched = pipe.request("alice", SetAccountMarginMode(mode="portfolio"))
    return pipe, any(type(r.body) is Ack for r in switched)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(87_500, 130_000), st.sampled_from([BTC, ETH]), st.sampled_from([1, -1]),
       st.one_of(st.integers(1, 45_000), st.sampled_from([20_000, 22_500, 11_250, 10_000])),
       st.integers(-150, 150))
def test_an_admitted_order_s_fill_never_leaves_a_portfolio_account_short(
        deposit_usd, symbol, side, lots, offset_bps):
    """Admitted, an order of a portfolio account (no other open orders) that fills whole at its
    worst price, marks unchanged, leaves `available` >= 0: the grid's requirement of the position
    after the fill was asked for at admission, not the per-symbol IM the order holds. Refused,
    it says by how much (the numbers add up) and changes nothing."""
    pipe, switched = _portfolio_account(deposit_usd)
    assume(switched)
    acct = pipe.risk.accounts["alice"]
    assert pipe.risk.available(acct) >= 0 and not acct.orders
    mark = pipe.risk.marks[symbol]
    price = mark + mark * offset_bps // 10_000
    pipe.request("mm", PlaceOrder(symbol=symbol, side=-side, qty=lots, price=price))
    before = (acct.balance, {s: p.qty for s, p in acct.positions.items()})
    replies = pipe.request("alice", PlaceOrder(symbol=symbol, side=side, qty=lots, price=price))
    refused = [r.event for r in replies if type(getattr(r, "event", None)) is OrderRejected]
    if refused:
        err = refused[0]
        assert err.reason == "insufficient_margin", err
        assert (acct.balance, {s: p.qty for s, p in acct.positions.items()}) == before
        d = err.detail
        if d.get("margin_mode") == "portfolio":
            event("refused by the what-if")
            assert d["required"] == d["initial_margin_after_fill"] - d["initial_margin_now"] + \
                d["fee_and_loss"] > d["available"]
        return
    event("admitted")
    assert not acct.orders, "the order filled whole against the maker"
    assert pipe.risk.available(acct) >= 0, (pipe.risk.available(acct), symbol, side, lots, price)


def test_closing_the_hedge_leg_is_refused_where_the_per_symbol_im_would_let_it_through():
    """The hedged account with 90,000 USD in portfolio mode: buying back the 225 ETH short frees
    its per-symbol IM (the old check passed it) but leaves long BTC alone, which the grid prices
    at the crisis regime's full 12 % move, more than the equity covers after the fill."""
    pipe, switched = _portfolio_account(90_000)
    assert switched
    acct = pipe.risk.accounts["alice"]
    available = pipe.risk.available(acct)
    pipe.request("mm", PlaceOrder(symbol=ETH, side=-1, qty=22_500, price=P_ETH))
    before = pipe.risk.state_hash()
    err = body(pipe.request("alice", PlaceOrder(symbol=ETH, side=1, qty=22_500, price=P_ETH)),
               OrderRejected)
    d = err.detail
    assert (err.reason, d["margin_mode"], d["position_change"]) == (
        "insufficient_margin", "portfolio", 22_500)
    assert d["initial_margin_now"] == pipe.risk.position_margin(acct) > 0
    assert d["initial_margin_after_fill"] == pipe.risk.portfolio_initial_after(acct, ETH, 22_500)
    assert d["initial_margin_after_fill"] > d["initial_margin_now"]  # the hedge's offset gone
    assert d["available"] == available and d["required"] > available
    assert pipe.risk.state_hash() == before


def test_an_amend_that_grows_into_the_hedge_leg_s_close_is_refused_the_same_way():
    pipe, switched = _portfolio_account(90_000)
    assert switched
    acct = pipe.risk.accounts["alice"]
    pipe.request("alice", PlaceOrder(symbol=ETH, side=1, qty=100, price=P_ETH - 1_000))
    (order,) = acct.orders.values()
    before = pipe.risk.state_hash()
    err = body(pipe.request("alice", AmendOrder(symbol=ETH, order_id=order.order_id,
                                                qty=22_500)), OrderRejected)
    d = err.detail
    assert (err.reason, d["margin_mode"], d["order_id"], d["position_change"]) == (
        "insufficient_margin", "portfolio", order.order_id, 22_500)
    assert d["available"] == pipe.risk.available(acct) + order.reserve  # its own reserve freed
    assert pipe.risk.state_hash() == before
    # a small amend that keeps the hedge is let through
    replies = pipe.request("alice", AmendOrder(symbol=ETH, order_id=order.order_id, qty=200))
    assert not [r for r in replies if type(getattr(r, "event", None)) is OrderRejected]
