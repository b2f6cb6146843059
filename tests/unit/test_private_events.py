"""Issue 17, the leak: public market data names no account, and an account's margin alerts go
only to that account's sessions (as its fills do), never to a public topic."""

from __future__ import annotations

from cluster import config
from cluster.client import _server_codec
from cluster.protocol import (
    Codec, Logon, MaintenanceAlert, MarketData, NewOrder, Report, Trade, encode_one,
)
from cluster.recording import RecordingShell
from nodes.gateway import service as gateway_service
from nodes.matching import service as matching_service

TOPO = config.load()
S = "BTC-PERP"


def test_leak_public_trades_name_no_account():
    shell = RecordingShell(TOPO.nodes["matching"])
    matching_service.build(shell, TOPO)
    price = TOPO.symbols[S].initial_price
    shell.inbox([NewOrder(ref=1, order_id=1, account="mm2", symbol=S, side=-1, qty=5, price=price),
                 NewOrder(ref=2, order_id=2, account="taker1", symbol=S, side=1, qty=5, price=price)])
    public = [m for peer, m in shell.sent if peer == b"md." + S.encode() and type(m) is Trade]
    private = [m for peer, m in shell.sent if peer == "risk" and type(m) is Trade]
    assert len(public) == len(private) == 1
    assert (private[0].taker_account, private[0].maker_account) == ("taker1", "mm2")  # risk's copy
    assert (public[0].taker_account, public[0].maker_account) == ("", "")
    assert (public[0].price, public[0].qty, public[0].taker_side, public[0].trade_id) == \
        (price, 5, 1, private[0].trade_id)
    # what an anonymous subscriber decodes from the wire: no account name anywhere in it
    wire = Codec(MarketData).encode([public[0]])
    assert b"taker1" not in wire and b"mm2" not in wire


def test_leak_margin_alerts_go_only_to_the_accounts_own_sessions():
    shell = RecordingShell(TOPO.nodes["gateway"])
    gateway_service.build(shell, TOPO)
    sessions = {b"bob-1": "bob", b"bob-2": "bob", b"alice-1": "alice"}
    for identity, account in sessions.items():
        shell.router([[identity, encode_one(Logon(req_id=1, api_key=TOPO.accounts[account].api_key))]])
    shell.sent.clear()
    sent_to = []
    shell.reply = lambda router, identity, message: sent_to.append((identity, message))
    alert = MaintenanceAlert(account="bob:BTC-PERP", equity=10, maintenance_margin=20, forced_fee=1,
                             marks={S: 300_000}, ts_ns=5)
    shell.inbox([alert, MaintenanceAlert(account="alice", equity=1, maintenance_margin=2,
                                         forced_fee=0, marks={}, ts_ns=6)])
    assert shell.sent == []  # nothing published: before, `alert.bob:BTC-PERP` on the public PUB
    assert sorted((i, m.account, m.event.account) for i, m in sent_to) == [
        (b"alice-1", "alice", "alice"), (b"bob-1", "bob", "bob:BTC-PERP"),
        (b"bob-2", "bob", "bob:BTC-PERP")]
    # and the SDK decodes it as one of the account's reports
    report = next(m for i, m in sent_to if i == b"bob-1")
    decoded, = _server_codec().decode(_server_codec().encode([report]))
    assert type(decoded) is Report and decoded.event == alert
