"""Matching explains in the audit journal every order it refuses and every cancel or resize it
decides (self-trade prevention, reduce-only, protection), with the numbers that decided; an IOC's
unfilled rest, a user's cancel and fills are not explanations."""

from __future__ import annotations

from cluster import config
from cluster.protocol import Cancel, MarkPrice, NewOrder, SetPosition
from cluster.recording import RecordingShell
from cluster.reports import incident
from nodes.matching import service as matching_service

TOPO = config.load()
S = "BTC-PERP"
P = TOPO.symbols[S].initial_price


def venue():
    shell = RecordingShell(TOPO.nodes["matching"])
    matching_service.build(shell, TOPO)
    shell.inbox([MarkPrice(symbol=S, mark=P, index=P)])
    return shell


def order(oid: int, account: str, side: int, price: int, qty: int = 1, **kw) -> NewOrder:
    return NewOrder(ref=oid, order_id=oid, account=account, symbol=S, side=side, qty=qty,
                    price=price, **kw)


def rules(shell) -> list[tuple[str, str, str]]:
    return [(e.rule, e.subject, e.decision) for e in shell.explained]


def test_rejects_and_venue_decided_cancels_are_explained_with_their_numbers():
    shell = venue()
    shell.inbox([order(1, "a", -1, P + 10),
                 order(2, "b", 1, P * 2),  # outside the band
                 order(3, "b", 1, P + 10, post_only=True),  # would take order 1
                 order(4, "a", 1, P + 10, tif="IOC"),  # self-trade: cancel_taker
                 order(5, "c", 1, P - 500, tif="IOC"),  # nothing to take: its rest is cancelled
                 Cancel(ref=6, account="a", symbol=S, order_id=1)])  # the user's own cancel
    assert rules(shell) == [("matching.price_out_of_band", "b", "reject"),
                            ("matching.post_only_would_take", "b", "reject"),
                            ("matching.self_trade_prevention", "a", "cancel")]
    band, post_only, stp = (e.numbers for e in shell.explained)
    assert band["order_id"] == 2 and band["price"] == P * 2 and band["max_price"] < P * 2
    assert post_only["maker_order_id"] == 1 and post_only["maker_price"] == P + 10
    assert stp["maker_order_id"] == 1 and stp["mode"] == "cancel_taker" and stp["symbol"] == S


def test_a_reduce_only_order_pulled_when_the_position_goes_is_explained():
    shell = venue()
    shell.inbox([SetPosition(account="a", symbol=S, qty=2),
                 order(1, "a", -1, P + 10, qty=2, reduce_only=True),
                 SetPosition(account="a", symbol=S, qty=1),
                 SetPosition(account="a", symbol=S, qty=0)])
    assert rules(shell) == [("matching.reduce_only_resize", "a", "resize"),
                            ("matching.reduce_only_position_changed", "a", "cancel")]
    assert shell.explained[0].numbers["remaining"] == 1


def test_the_incident_report_counts_them():
    shell = venue()
    shell.inbox([order(1, "a", -1, P + 10), order(2, "a", 1, P + 10, tif="IOC"),
                 order(3, "b", 1, P * 2)])
    report = incident(shell.explained, None, None)
    assert report["rejects_by_rule"] == {"matching.price_out_of_band": 1}
    assert report["venue_cancels_by_rule"] == {"matching.self_trade_prevention": 1}


def test_triggers_fills_and_mass_cancels_pass_through_unexplained_and_without_errors():
    from cluster.protocol import MassCancel

    shell = venue()
    shell.inbox([order(1, "a", -1, P + 10, qty=5),
                 order(2, "b", 1, 0, type="stop_market", trigger_price=P + 5, tif="IOC"),
                 MarkPrice(symbol=S, mark=P + 6, index=P + 6),  # triggers order 2: it buys from 1
                 order(3, "a", -1, P + 20), MassCancel(ref=9, account="a", symbol=S)])
    sent = [type(m).__name__ for peer, m in shell.sent if peer == "risk"]
    assert "OrderTriggered" in sent and "Trade" in sent and "OrdersCancelled" in sent, sent
    assert shell.explained == [] and shell.stats["errors"] == 0


def test_a_resubmitted_client_order_id_is_explained_once():
    shell = venue()
    again = order(2, "b", 1, P * 2, client_order_id="c1")  # refused: outside the band
    shell.inbox([order(1, "b", 1, P * 2, client_order_id="c1"), again])
    replies = [m for peer, m in shell.sent if peer == "risk"]
    assert [m.duplicate for m in replies] == [False, True]
    assert rules(shell) == [("matching.price_out_of_band", "b", "reject")]
