"""The CLI's terminal text: aligned columns, and every renderer reads only what the JSON holds."""

from __future__ import annotations

from cluster import render


def test_table_aligns_text_left_and_numbers_right():
    lines = render.table([["BTC-PERP", "0.01", "-"], ["ETH", "-12.5", "7"]], ["symbol", "qty", "n"])
    assert lines == ["symbol    qty    n", "--------  -----  -", "BTC-PERP   0.01  -",
                     "ETH       -12.5  7"]


def test_status_account_and_book():
    status = {"cluster": "c", "state": "running", "run_dir": "/r", "failure": None,
              "client_endpoint": "tcp://h:1", "market_data_endpoint": "tcp://h:2",
              "nodes": {"risk": {"state": "running", "pid": 7, "alive": True, "restarts": 1,
                                 "heartbeat_age_ms": 40, "stats": {"msgs_in": 9, "errors": 0}}},
              "events": [{"event": "node_died", "node": "risk", "how": "signal SIGKILL",
                          "wall_ns": 1, "mono_ns": 2}]}
    text = render.cluster_status(status)
    assert "cluster c: running" in text and "node_died risk how=signal SIGKILL" in text
    assert any(line.split()[:3] == ["risk", "running", "7"] for line in text.splitlines())
    view = {"account": "bob", "collateral": "USDC", "open_orders": 1, "positions": [],
            "human": {k: "1" for k in ("equity", "available", "wallet_balance", "position_margin",
                                        "order_margin", "maintenance_margin", "fees_paid")}}
    assert "no positions" in render.account(view)
    book = {"symbol": "X", "book_seq": 3, "prices": None,
            "bids": [{"price": "9", "qty": "1"}], "asks": []}
    text = render.book(book)
    assert "no mark from the oracle yet" in text and text.splitlines()[-1].split() == ["1", "9"]
