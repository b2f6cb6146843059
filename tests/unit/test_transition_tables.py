"""The lifecycle tables (#18): the order lifecycle risk keeps (nodes/risk/order_events.py) and the
liquidation path the liquidator runs (nodes/liquidator/engine.py). Every (state, event) pair is
tried: a pair the table lists is carried out, any other raises IllegalTransition naming the state
and the event, before anything changed (the state hash is the same). The legal pairs are listed
here, so a row added to or dropped from a table is a decision someone made. The shells count,
log and journal an illegal event and go on."""

from __future__ import annotations

import pytest

from cluster.core import IllegalTransition
from cluster.protocol import (
    AccountRisk, AmendOrder, IndexMark, LiquidationResult, NewOrder, OrderAccepted, OrderAmended,
    OrderCancelled, OrderRejected, OrdersCancelled, OrderTriggered, PlaceOrder, Routed,
)
from cluster.recording import RecordingShell
from nodes.liquidator import engine as liq_engine
from nodes.liquidator import service as liq_service
from nodes.liquidator.engine import (
    LIQUIDATION_TABLE, Liquidation, LiquidationEngine, LiquidatorConf,
)
from nodes.risk import service as risk_service
from nodes.risk.order_events import ORDER_TABLE
from nodes.risk.state import LiqExec
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

SYMBOL = "BTC-PERP"
PRICE = TOPO.symbols[SYMBOL].initial_price
USD = 1_000_000
LIQ_ORDER = 9_000_001  # a liquidation step's IOC

ORDER_LEGAL = {
    ("pending", "OrderAccepted"), ("pending", "OrderRejected"), ("pending", "OrderCancelled"),
    ("pending", "OrderAccepted (duplicate)"), ("pending", "OrderRejected (duplicate)"),
    ("pending", "OrderCancelled (duplicate)"),
    ("open", "OrderRejected"), ("open", "OrderCancelled"), ("open", "OrdersCancelled"),
    ("open", "OrderAmended"), ("open", "OrderTriggered"),
    ("amending", "OrderRejected"), ("amending", "OrderCancelled"), ("amending", "OrdersCancelled"),
    ("amending", "OrderAmended"), ("amending", "OrderTriggered"),
    ("gone", "OrderRejected"),
    ("liquidation", "OrderAccepted"), ("liquidation", "OrderRejected"),
    ("liquidation", "OrderCancelled"),
}
ORDER_EVENTS = ("OrderAccepted", "OrderRejected", "OrderCancelled", "OrdersCancelled",
                "OrderAmended", "OrderTriggered", "OrderAccepted (duplicate)",
                "OrderRejected (duplicate)", "OrderCancelled (duplicate)")
ORDER_STATES = ("pending", "open", "amending", "gone", "liquidation")


def engine_with(state: str) -> tuple[RiskEngine, int, int]:
    """A risk core holding one order of account `a` in `state`: (core, order id, its ref)."""
    risk = RiskEngine(TOPO.symbols, {"a": 500_000 * USD, "b": 500_000 * USD},
                      max_mark_age_ns=10**18)
    risk.handle(IndexMark(symbol=SYMBOL, index=PRICE, mark=PRICE, last=PRICE, seq=1, ts_ns=1), 0)
    if state == "gone":
        return risk, 4242, 77
    if state == "liquidation":
        risk.liq_orders[LIQ_ORDER] = LiqExec(5)
        return risk, LIQ_ORDER, -5
    out = risk.handle(Routed(ref=7, account="a", body=PlaceOrder(
        symbol=SYMBOL, side=1, qty=10, price=PRICE - 100)), 0)
    cmd = out[0][1]
    assert type(cmd) is NewOrder
    if state != "pending":
        risk.handle(OrderAccepted(seq=1, ref=7, order_id=cmd.order_id, account="a", symbol=SYMBOL,
                                  side=1, price=PRICE - 100, qty=10), 0)
    if state == "amending":
        risk.handle(Routed(ref=8, account="a", body=AmendOrder(
            symbol=SYMBOL, order_id=cmd.order_id, qty=40)), 0)
        assert risk.orders[cmd.order_id].hold > 0
    return risk, cmd.order_id, 7


def event(name: str, order_id: int, ref: int):
    kind, duplicate = name.removesuffix(" (duplicate)"), name.endswith("(duplicate)")
    common = dict(seq=2, account="a", symbol=SYMBOL)
    if kind == "OrderAccepted":
        return OrderAccepted(ref=ref, order_id=order_id, side=1, price=PRICE - 100, qty=10,
                             duplicate=duplicate, **common)
    if kind == "OrderRejected":
        return OrderRejected(ref=ref, order_id=order_id, reason="unknown_order",
                             duplicate=duplicate, **common)
    if kind == "OrderCancelled":
        return OrderCancelled(ref=ref, order_id=order_id, remaining=10, reason="user",
                              duplicate=duplicate, **common)
    if kind == "OrdersCancelled":
        return OrdersCancelled(ref=ref, orders=[(order_id, 10)], reason="mass_cancel", **common)
    if kind == "OrderAmended":
        return OrderAmended(ref=ref, order_id=order_id, price=PRICE - 100, qty=40, remaining=40,
                            priority_kept=True, **common)
    return OrderTriggered(order_id=order_id, trigger_by="mark", trigger_price=PRICE,
                          observed_price=PRICE, **common)


def test_the_order_table_is_the_listed_one():
    assert {(s, e) for s, row in ORDER_TABLE.items() for e in row} == ORDER_LEGAL


@pytest.mark.parametrize("state", ORDER_STATES)
@pytest.mark.parametrize("name", ORDER_EVENTS)
def test_every_order_event_in_every_state(state, name):
    risk, order_id, ref = engine_with(state)
    if name.endswith("(duplicate)") and state != "pending":
        ref = 31337  # a duplicate's subject is the placement under its ref: none is pending
    before = risk.state_hash()
    ev = event(name, order_id, ref)
    if (state if not name.endswith("(duplicate)") else
            "pending" if ref in risk.pending else "gone", name) in ORDER_LEGAL:
        out = risk.handle(ev, 0)
        assert any(dest == "gateway" or dest == "liquidator" for dest, _ in out)
        held, owed = risk.conservation()
        assert held == owed
    else:
        with pytest.raises(IllegalTransition) as raised:
            risk.handle(ev, 0)
        expected_state = state if not name.endswith("(duplicate)") else "gone"
        assert (raised.value.state, raised.value.event) == (expected_state, name)
        assert risk.state_hash() == before  # refused before anything changed


def test_a_refusal_sent_to_another_account_leaves_the_order_it_names_alone():
    """b's cancel of a's order id is refused to b; a's amend hold stays held until the amend's
    own answer (before the table, b's refusal released a's hold: a could spend that margin
    twice in between). Fails on the old code."""
    risk, order_id, _ = engine_with("amending")
    order = risk.orders[order_id]
    hold, margin = order.hold, risk.accounts["a"].order_margin
    risk.handle(OrderRejected(seq=3, ref=99, order_id=order_id, account="b", symbol=SYMBOL,
                              reason="unknown_order"), 0)
    assert (order.hold, risk.accounts["a"].order_margin) == (hold, margin)


LIQ_LEGAL = {
    ("trigger", "cancel"),
    ("cancel", "cancel result"), ("cancel", "restored"), ("cancel", "closed"),
    ("cancel", "reduce"), ("cancel", "backstop"),
    ("reduce", "reduce result"), ("reduce", "restored"), ("reduce", "closed"),
    ("reduce", "reduce"), ("reduce", "backstop"),
    ("backstop", "backstop result"), ("backstop", "closed"), ("backstop", "insurance"),
    ("backstop", "adl"),
    ("insurance", "insurance result"), ("insurance", "closed"), ("insurance", "incomplete"),
    ("adl", "adl result"), ("adl", "closed"), ("adl", "last_resort"),
    ("last_resort", "insurance result"), ("last_resort", "closed"),
    ("last_resort", "incomplete"),
    ("unknown", "cancel result"), ("unknown", "reduce result"), ("unknown", "backstop result"),
    ("unknown", "insurance result"), ("unknown", "adl result"),
}
LIQ_STATES = ("trigger", "cancel", "reduce", "backstop", "insurance", "adl", "last_resort",
              "restored", "closed", "incomplete")
KINDS = ("cancel", "reduce", "backstop", "insurance", "adl")
LIQ_EVENTS = tuple(f"{k} result" for k in KINDS) + (
    "cancel", "reduce", "backstop", "insurance", "adl", "last_resort", "restored", "closed",
    "incomplete")


def liquidator_with(state: str) -> tuple[LiquidationEngine, Liquidation]:
    engine = LiquidationEngine(TOPO.symbols, LiquidatorConf(), id_base=0)
    engine.on_account(AccountRisk(account="a", balance=1_000 * USD,
                                  positions={SYMBOL: (10, 10 * PRICE * 100)}, isolated={},
                                  insurance_fund=0, leverage={SYMBOL: 20}, portfolio=False))
    engine.on_mark(IndexMark(symbol=SYMBOL, index=PRICE, mark=PRICE, last=PRICE, seq=1, ts_ns=1))
    liq = Liquidation(1, "a", "a", SYMBOL)
    if state in liq_engine.FINISHED:
        liq.phase, liq.status = "reduce", state
    else:
        liq.phase = state
        engine.active["a"] = liq
    engine.by_id[1] = liq
    return engine, liq


def test_the_liquidation_table_is_the_listed_one():
    assert {(s, e) for s, row in LIQUIDATION_TABLE.items() for e in row} == LIQ_LEGAL
    assert set(LIQUIDATION_TABLE) == set(LIQ_STATES) | {"unknown"}


@pytest.mark.parametrize("state", LIQ_STATES)
@pytest.mark.parametrize("name", LIQ_EVENTS)
def test_every_liquidation_move_in_every_state(state, name):
    engine, liq = liquidator_with(state)
    if (state, name) in LIQ_LEGAL:
        engine._move(liq, name)
        assert liq.state == LIQUIDATION_TABLE[state][name]
    else:
        with pytest.raises(IllegalTransition) as raised:
            engine._move(liq, name)
        assert (raised.value.state, raised.value.event) == (state, name)
        fresh = liquidator_with(state)[1]  # unchanged
        assert (liq.phase, liq.status) == (fresh.phase, fresh.status)


@pytest.mark.parametrize("state", LIQ_STATES + ("unknown",))
@pytest.mark.parametrize("kind", KINDS)
def test_every_step_result_in_every_state(state, kind):
    """Risk's answers: the one the state awaits moves it on (here: the position is closed), a
    result for a liquidation this engine never started changes nothing, any other raises."""
    engine, liq = liquidator_with("cancel" if state == "unknown" else state)
    result = LiquidationResult(liquidation_id=2 if state == "unknown" else 1, kind=kind,
                               account="a", symbol=SYMBOL, qty=10, notional=0, fee=0,
                               fund_delta=0, position_after=0)
    if (state, f"{kind} result") in LIQ_LEGAL:
        out = engine.on_result(result, 0)
        if state == "unknown":
            assert out == [] and liq.state == "cancel"
        else:
            assert liq.state == "closed" and "a" not in engine.active
    else:
        with pytest.raises(IllegalTransition) as raised:
            engine.on_result(result, 0)
        assert (raised.value.state, raised.value.event) == (state, f"{kind} result")
        assert liq.state == state and engine.committed == {}


def test_the_risk_shell_counts_logs_and_journals_an_illegal_event_and_goes_on():
    shell = RecordingShell(TOPO.nodes["risk"])
    shell.journal_path = None
    risk_service.build(shell, TOPO)
    account = sorted(TOPO.accounts)[0]
    stray = OrderAccepted(seq=1, ref=0, order_id=4242, account=account, symbol=SYMBOL, side=1,
                          price=PRICE, qty=1)
    shell.inbox([stray])
    assert shell.stats["errors"] == 1
    [record] = [e for e in shell.explained if e.rule == "risk.order.illegal_transition"]
    assert record.subject == "order-4242"
    assert (record.numbers["state"], record.numbers["event"]) == ("gone", "OrderAccepted")
    assert not [m for _, m in shell.sent if type(getattr(m, "event", None)) is OrderAccepted]
    shell.inbox([OrderRejected(seq=2, ref=0, order_id=4242, account=account, symbol=SYMBOL,
                               reason="order_not_open")])  # a quiet row: reported, no error
    assert shell.stats["errors"] == 1
    assert [m for _, m in shell.sent if type(getattr(m, "event", None)) is OrderRejected]


def test_the_liquidator_shell_journals_an_illegal_result_and_goes_on(monkeypatch):
    def refuse(self, result, now_ns):
        raise IllegalTransition("closed", "reduce result", machine="liquidation",
                                subject=f"liq-{result.liquidation_id}")

    monkeypatch.setattr(LiquidationEngine, "on_result", refuse)
    shell = RecordingShell(TOPO.nodes["liquidator"])
    liq_service.build(shell, TOPO)
    result = LiquidationResult(liquidation_id=3, kind="reduce", account="a", symbol=SYMBOL,
                               qty=0, notional=0, fee=0, fund_delta=0, position_after=1)
    shell.inbox([result, result])
    assert shell.stats["errors"] == 2
    assert [e.rule for e in shell.explained] == ["liquidation.illegal_transition"] * 2
    assert shell.explained[0].numbers == {"state": "closed", "event": "reduce result"}


def test_only_the_amends_own_answer_releases_its_hold():
    """The account's cancel naming its order with the wrong symbol, sent just before an amend
    that grows it: matching refuses the cancel, then amends. Risk held the amend's margin from the
    amend until its answer; before, the cancel's refusal released it, and until the amend's
    answer arrived the account could spend 1,363,045,500 atoms it had committed (another order
    in between was checked against it). Fails on the old code."""
    from cluster.protocol import CancelOrder, MarkPrice
    from nodes.matching.engine import MatchingEngine

    risk = RiskEngine(TOPO.symbols, {"b": 20_000 * USD}, max_mark_age_ns=10**18)
    matching = MatchingEngine(TOPO.symbols)

    def through_matching(effects):
        return [ev for dest, msg in effects if dest == "matching"
                for ev in matching.handle(msg) if type(ev).__name__ != "BookDelta"]

    risk.handle(IndexMark(symbol=SYMBOL, index=PRICE, mark=PRICE, last=PRICE, seq=1, ts_ns=1), 0)
    matching.handle(MarkPrice(symbol=SYMBOL, mark=PRICE))
    for ev in through_matching(risk.handle(Routed(ref=1, account="b", body=PlaceOrder(
            symbol=SYMBOL, side=1, qty=100, price=PRICE - 100)), 0)):
        risk.handle(ev, 0)
    [order_id] = risk.orders
    acct = risk.accounts["b"]
    cancel = risk.handle(Routed(ref=2, account="b", body=CancelOrder(
        symbol="ETH-PERP", order_id=order_id)), 0)
    amend = risk.handle(Routed(ref=3, account="b", body=AmendOrder(
        symbol=SYMBOL, order_id=order_id, qty=1_000)), 0)
    committed = risk.available(acct)
    refused, amended = through_matching(cancel) + through_matching(amend)
    assert (type(refused), type(amended)) == (OrderRejected, OrderAmended)
    risk.handle(refused, 0)
    assert risk.available(acct) == committed  # the hold stands
    risk.handle(amended, 0)
    assert risk.available(acct) == committed and risk.orders[order_id].hold == 0
    assert risk.pending == {}


def test_an_amends_refusal_releases_its_hold():
    risk, order_id, _ = engine_with("amending")
    acct = risk.accounts["a"]
    before = risk.available(acct)
    risk.handle(OrderRejected(seq=3, ref=8, order_id=order_id, account="a", symbol=SYMBOL,
                              reason="qty_out_of_range"), 0)
    assert risk.orders[order_id].hold == 0 and risk.available(acct) > before
    assert risk.pending == {}
