"""A node never loses a batch to one message: when a core raises on a message (a bug), the node
logs and counts it, answers it with `internal_error`, and still handles the rest of its batch."""

from __future__ import annotations

from cluster import config
from cluster.protocol import (
    Cancel, Error, Logon, LogonAck, NewOrder, OrderAccepted, OrderCancelled, OrderRejected,
    PlaceOrder, Reply, Routed, encode_one,
)
from cluster.recording import RecordingShell
from cluster.signing import key_id
from nodes.gateway import service as gateway_service
from nodes.gateway.sessions import Gateway
from nodes.matching import service as matching_service
from nodes.matching.engine import MatchingEngine
from nodes.risk import service as risk_service
from nodes.risk.ledger import RiskEngine

TOPO = config.load()
S = "BTC-PERP"


def test_matching_refuses_the_command_its_engine_raised_on_and_handles_the_rest(monkeypatch):
    real = MatchingEngine._cancel

    def buggy(self, cmd, out):
        if cmd.order_id == 666:
            raise RuntimeError("a bug")
        return real(self, cmd, out)

    monkeypatch.setattr(MatchingEngine, "_cancel", buggy)  # before build(): dispatch binds it
    shell = RecordingShell(TOPO.nodes["matching"])
    matching_service.build(shell, TOPO)
    price = TOPO.symbols[S].initial_price
    shell.inbox([NewOrder(ref=1, order_id=1, account="a", symbol=S, side=1, qty=1, price=price),
                 Cancel(ref=2, account="a", symbol=S, order_id=666),
                 Cancel(ref=3, account="a", symbol=S, order_id=1)])
    to_risk = [m for peer, m in shell.sent if peer == "risk"]
    assert [type(m) for m in to_risk] == [OrderAccepted, OrderRejected, OrderCancelled]
    assert (to_risk[1].ref, to_risk[1].order_id, to_risk[1].reason) == (2, 666, "internal_error")
    assert to_risk[2].ref == 3 and shell.stats["errors"] == 1
    assert [(lvl, ev) for lvl, ev, _ in shell.log.events] == [("error", "command_failed")]


def test_risk_answers_the_request_its_engine_raised_on_and_handles_the_rest(monkeypatch):
    real = RiskEngine._place

    def buggy(self, acct, ref, body, now_ns, out):
        if ref == 2:
            raise RuntimeError("a bug")
        return real(self, acct, ref, body, now_ns, out)

    monkeypatch.setattr(RiskEngine, "_place", buggy)
    shell = RecordingShell(TOPO.nodes["risk"])
    risk_service.build(shell, TOPO)
    price = TOPO.symbols[S].initial_price
    shell.inbox([Routed(ref=ref, account="mm1", body=PlaceOrder(req_id=ref, symbol=S, side=1,
                                                                 qty=1, price=price),
                        key_id=key_id(TOPO.accounts["mm1"].api_key))  # (the gateway's naming)
                 for ref in (1, 2, 3)])
    assert [m.ref for peer, m in shell.sent if peer == "matching"] == [1, 3]
    answers = [m for peer, m in shell.sent if peer == "gateway"]
    assert len(answers) == 1 and type(answers[0]) is Reply and answers[0].ref == 2
    assert type(answers[0].body) is Error and answers[0].body.reason == "internal_error"
    assert shell.stats["errors"] == 1
    assert [(lvl, ev) for lvl, ev, _ in shell.log.events if lvl != "info"] == [
        ("error", "message_failed")]  # (info: its start, the key table it read)


def test_gateway_answers_the_request_it_raised_on_and_serves_the_rest(monkeypatch):
    real = Gateway.on_request

    def buggy(self, identity, msg, *args):
        if getattr(msg, "req_id", 0) == 2:
            raise RuntimeError("a bug")
        return real(self, identity, msg, *args)

    monkeypatch.setattr(Gateway, "on_request", buggy)
    shell = RecordingShell(TOPO.nodes["gateway"])
    gateway_service.build(shell, TOPO)
    me = b"client-1"
    shell.router([[me, encode_one(Logon(req_id=9, api_key=TOPO.accounts["mm1"].api_key))]])
    price = TOPO.symbols[S].initial_price
    shell.router([[me, encode_one(PlaceOrder(req_id=r, symbol=S, side=1, qty=1, price=price))]
                  for r in (1, 2, 3)])
    to_risk = [m for peer, m in shell.sent if peer == "risk"]
    assert [m.body.req_id for m in to_risk] == [1, 3]
    to_client = [m for peer, m in shell.sent if peer == "client"]
    assert type(to_client[0]) is LogonAck
    assert [(type(m), m.reason, m.req_id) for m in to_client[1:]] == [(Error, "internal_error", 2)]
    assert shell.stats["errors"] == 1


def test_liquidator_keeps_the_rest_of_its_batch_when_its_engine_raises(monkeypatch):
    from cluster.protocol import AccountRisk, IndexMark
    from nodes.liquidator import service as liquidator_service
    from nodes.liquidator.engine import LiquidationEngine

    real = LiquidationEngine.on_account
    seen = []

    def buggy(self, msg):
        if msg.account == "bad":
            raise RuntimeError("a bug")
        seen.append(msg.account)
        return real(self, msg)

    monkeypatch.setattr(LiquidationEngine, "on_account", buggy)
    shell = RecordingShell(TOPO.nodes["liquidator"])
    liquidator_service.build(shell, TOPO)
    risk = [AccountRisk(account=a, balance=10**12, positions={}) for a in ("bad", "bob")]
    shell.inbox(risk + [IndexMark(symbol=S, index=1, mark=1, last=0, seq=1, ts_ns=0)])
    assert seen == ["bob"] and shell.stats["errors"] == 1
    assert [(lvl, ev) for lvl, ev, _ in shell.log.events] == [("error", "message_failed")]
