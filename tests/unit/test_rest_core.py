"""The REST facade's pure pieces: unit conversion and order translation (binance.py), signing and
request weight (auth.py), and the order/fill records (records.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cluster import config
from cluster.protocol import BUY, SELL, Fill, OrderAccepted, OrderCancelled, PlaceOrder, Trade
from nodes.rest import binance as bn
from nodes.rest.auth import WeightLimiter, load_secrets, sign, verify
from nodes.rest.binance import ApiError, Market, refusal
from nodes.rest.records import AccountRecords, SymbolRecords, algo_json, order_json

TOPO = config.load()
BTC = Market(TOPO.symbols["BTC-PERP"], "USDT", TOPO.atom)  # tick 0.1, lot 0.001


def test_symbol_ids_and_exact_units():
    assert BTC.id == "BTCUSDT" and BTC.spec.name == "BTC-PERP"
    assert BTC.ticks("30000.1") == 300_001 and BTC.ticks("50000") == 500_000
    assert BTC.lots("0.01") == 10 and BTC.lots("1.000") == 1000
    assert BTC.price(300_001) == "30000.1" and BTC.qty(10) == "0.01"
    assert BTC.quote_value(300_001 * 10) == "300.001"  # 30000.1 x 0.01, exact


@pytest.mark.parametrize("text, filt", [("30000.05", "PRICE_FILTER"), ("0", "PRICE_FILTER"),
                                        ("-1", "PRICE_FILTER")])
def test_off_grid_price_is_refused_never_rounded(text, filt):
    with pytest.raises(ApiError) as err:
        BTC.ticks(text)
    assert (err.value.status, err.value.code) == (400, -1013) and filt in err.value.msg


def test_off_grid_qty_and_garbage():
    with pytest.raises(ApiError) as err:
        BTC.lots("0.0015")
    assert err.value.code == -1013 and "LOT_SIZE" in err.value.msg and "0.001" in err.value.msg
    for bad in ("abc", "NaN", "1e999999999"):
        with pytest.raises(ApiError) as err:
            BTC.lots(bad)
        assert err.value.code in (-1100, -1013)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**9))
def test_units_round_trip(ticks, lots):
    assert BTC.ticks(BTC.price(ticks)) == ticks
    assert BTC.lots(BTC.qty(lots)) == lots


def form(**kw) -> dict:
    return {k: str(v) for k, v in kw.items()}


def test_order_translation():
    req = bn.order_request(BTC, form(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.01",
                                     price="30000", timeInForce="GTX", newClientOrderId="x-abc"))
    assert req == PlaceOrder(symbol="BTC-PERP", side=BUY, qty=10, type="limit", price=300_000,
                             tif="GTC", post_only=True, client_order_id="x-abc")
    req = bn.order_request(BTC, form(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.5",
                                     reduceOnly="true"))
    assert (req.type, req.side, req.qty, req.reduce_only, req.price) == ("market", SELL, 500, True, 0)
    req = bn.order_request(BTC, form(symbol="BTCUSDT", side="SELL", type="STOP_MARKET", quantity="0.01",
                                     triggerPrice="29000", workingType="MARK_PRICE",
                                     clientAlgoId="x-stop"), algo=True)
    assert (req.type, req.trigger_price, req.trigger_by, req.client_order_id) == (
        "stop_market", 290_000, "mark", "x-stop")
    req = bn.order_request(BTC, form(symbol="BTCUSDT", side="BUY", type="TAKE_PROFIT_MARKET",
                                     quantity="0.01", stopPrice="29000"))
    assert (req.type, req.trigger_by) == ("take_profit_market", "last")


@pytest.mark.parametrize("params, code", [
    (dict(side="BUY", type="LIMIT", quantity="0.01"), -1102),  # no price
    (dict(side="BUY", type="LIMIT", quantity="0.01", price="30000", timeInForce="GTD"), -1100),
    (dict(side="UP", type="LIMIT", quantity="0.01", price="30000"), -1100),
    (dict(side="BUY", type="TRAILING_STOP_MARKET", quantity="0.01"), -1116),
    (dict(side="BUY", type="MARKET", quantity="0.01", price="30000"), -1106),
    (dict(side="BUY", type="STOP_MARKET", quantity="0.01"), -1102),  # no trigger
    (dict(side="BUY", type="MARKET", quantity="0.01", reduceOnly="yes"), -1100),
    (dict(side="BUY", type="MARKET", quantity="0.01", positionSide="LONG"), -4061),
    (dict(side="BUY", type="MARKET", quantity="0.01", newClientOrderId="x" * 37), -1100),
])
def test_bad_orders_get_codes(params, code):
    with pytest.raises(ApiError) as err:
        bn.order_request(BTC, {"symbol": "BTCUSDT", **params})
    assert err.value.code == code and err.value.status == 400


def test_refusals_carry_numbers_and_ccxt_classes():
    e = refusal("insufficient_margin", {"required": 5, "available": 3})
    assert (e.status, e.code, e.msg) == (400, -2019, bn.INSUFFICIENT)
    e = refusal("post_only_would_take", {"price": 1})
    assert e.msg == "Order would immediately match and take."  # ccxt: OrderImmediatelyFillable
    e = refusal("price_out_of_band", {"price": 1, "max_price": 2})
    assert (e.code, e.msg) == (-2010, "price_out_of_band: price=1, max_price=2")
    e = refusal("rate_limited", {"retry_after_ms": 1500})
    assert (e.status, e.code, e.retry_after_s) == (429, -1003, 2)
    assert refusal("banned", {}).status == 418
    assert refusal("unknown_order", {}).code == -2011
    assert refusal("unknown_order", {}, unknown_order_code=-2013).msg == "Order does not exist."


def test_brackets_are_the_ladder():
    brackets = BTC.brackets()["brackets"]
    assert [b["initialLeverage"] for b in brackets] == [t.max_leverage for t in BTC.spec.tiers]
    assert brackets[1]["notionalFloor"] == 50_000 and brackets[1]["cum"] == 50.0
    assert brackets[0]["maintMarginRatio"] == 0.004


# ---------------------------------------------------------------------------- auth

SECRETS = {"k1": "secret-k1"}  # (the facade reads them from the run's key file: test_ccxt)
NOW = 1_800_000_000_000


def test_the_facade_takes_its_secrets_from_the_run_key_file(tmp_path):
    """#20's key file is the one key store: a key made with `perpx keys create` signs REST
    requests with its secret's hex text; a revoked or Ed25519 key has no REST secret."""
    from cluster.signing import create_key, ensure_key_file, revoke_key, secret_for

    ensure_key_file(tmp_path, ["demo-a"])
    made, secret = create_key(tmp_path, "alice", ["trade"])
    gone, _ = create_key(tmp_path, "alice", ["read"])
    revoke_key(tmp_path, gone)
    create_key(tmp_path, "alice", ["read"], ed25519=True)
    secrets = load_secrets("", str(tmp_path))
    assert secrets == {"demo-a": secret_for(tmp_path, "demo-a").hex(), made: secret}
    query = f"timestamp={NOW}&symbol=BTCUSDT"
    assert verify(f"{query}&signature={sign(secret, query)}", made, secrets, NOW)["symbol"] == \
        "BTCUSDT"


def signed(query: str, secret: str = "secret-k1") -> str:
    return f"{query}&signature={sign(secret, query)}"


def test_signature_and_window():
    params = verify(signed(f"timestamp={NOW}&symbol=BTCUSDT&recvWindow=10000"), "k1", SECRETS, NOW + 50)
    assert params["symbol"] == "BTCUSDT"
    cases = [
        (signed(f"timestamp={NOW}&symbol=BTCUSDT", "other"), "k1", -1022),  # wrong secret
        (signed(f"timestamp={NOW}&symbol=BTCUSDT") + "&qty=9", "k1", -1022),  # appended unsigned
        (signed(f"timestamp={NOW}").replace("timestamp", "timestamP"), "k1", -1022),  # tampered
        (f"timestamp={NOW}", "k1", -1102),  # no signature
        (signed(f"timestamp={NOW - 6000}"), "k1", -1021),  # older than the 5 s default window
        (signed(f"timestamp={NOW + 1500}"), "k1", -1021),  # ahead of the server
        (signed(f"timestamp={NOW}"), "nobody", -2015),
        (signed(f"timestamp={NOW}"), "", -2014),
        (signed(f"timestamp={NOW}&recvWindow=70000"), "k1", -1131),
    ]
    for raw, key, code in cases:
        with pytest.raises(ApiError) as err:
            verify(raw, key, SECRETS, NOW)
        assert err.value.code == code, raw


def test_weight_limit_per_minute():
    lim = WeightLimiter(10)
    minute = NOW - NOW % 60_000
    assert lim.charge("a", 8, minute) == 8
    assert lim.charge("b", 10, minute) == 10  # per address
    with pytest.raises(ApiError) as err:
        lim.charge("a", 3, minute + 59_500)
    assert (err.value.status, err.value.code, err.value.retry_after_s) == (429, -1003, 1)
    assert "used 8, this request 3" in err.value.msg
    for _ in range(60):
        try:
            lim.charge("a", 3, minute + 100)
        except ApiError as exc:
            last = exc
    assert last.status == 418  # kept going after 429s
    assert lim.charge("a", 3, minute + 60_000) == 3  # the next minute starts afresh


# ---------------------------------------------------------------------------- records

def place(order_id=7, **kw):
    req = PlaceOrder(symbol="BTC-PERP", side=BUY, qty=30, price=300_000, **kw)
    return req, OrderAccepted(seq=1, ref=1, order_id=order_id, account="a", symbol="BTC-PERP",
                              side=BUY, price=300_000, qty=30)


def fill(order_id, price, qty, remaining, trade_id=1):
    return Fill(seq=2, trade_id=trade_id, order_id=order_id, account="a", symbol="BTC-PERP", side=BUY,
                price=price, qty=qty, remaining=remaining, liquidity="taker", fee=150)


def test_fill_before_its_acceptance_and_exact_average():
    recs = AccountRecords()
    req, accepted = place(client_order_id="x-1")
    recs.on_event(fill(7, 300_001, 10, 20), 1000)  # a fill overtook the answer
    rec = recs.placed(req, accepted, 1001)
    recs.on_event(fill(7, 300_002, 20, 0, trade_id=2), 1002)
    out = order_json(rec, BTC)
    assert out["status"] == "FILLED" and out["executedQty"] == "0.03" and out["origQty"] == "0.03"
    # (30000.1 x 0.01 + 30000.2 x 0.02) / 0.03 = 30000.1666..., exact in ticks, never a float
    assert out["cumQuote"] == "900.005" and out["avgPrice"].startswith("30000.16666")
    assert recs.find(0, "x-1") is rec


def test_ioc_remainder_expires_and_cancel_cancels():
    recs = AccountRecords()
    req, accepted = place(tif="IOC")
    rec = recs.placed(req, accepted, 1)
    recs.on_event(OrderCancelled(seq=3, ref=0, order_id=7, account="a", symbol="BTC-PERP",
                                 remaining=30, reason="ioc_remainder"), 2)
    assert rec.status == "EXPIRED" and rec.final
    req, accepted = place(order_id=8, type="stop_market", trigger_price=290_000)
    rec = recs.placed(req, accepted, 3)
    assert algo_json(rec, BTC)["algoStatus"] == "NEW"
    recs.on_event(OrderCancelled(seq=4, ref=1, order_id=8, account="a", symbol="BTC-PERP",
                                 remaining=30, reason="user"), 4)
    assert algo_json(rec, BTC)["algoStatus"] == "CANCELED"


def test_an_order_answered_by_its_cancel_without_a_client_id():
    """An IOC / FOK the book cannot fill is answered with OrderCancelled, which has no client
    order id: the first version read one and answered 500 to every such order sent without
    newClientOrderId (ccxt always sends one, a plain HTTP client need not)."""
    recs = AccountRecords()
    req = PlaceOrder(symbol="BTC-PERP", side=BUY, qty=30, price=290_000, tif="IOC")
    rec = recs.placed(req, OrderCancelled(seq=1, ref=1, order_id=9, account="a", symbol="BTC-PERP",
                                          remaining=30, reason="ioc_remainder"), 5)
    assert (rec.status, rec.qty, rec.filled, rec.client_order_id) == ("EXPIRED", 30, 0, "")


def test_klines_from_trades():
    recs = SymbolRecords()
    for ms, price, qty in [(60_000, 100, 1), (60_500, 120, 2), (119_999, 90, 1), (180_000, 110, 5)]:
        recs.on_message(Trade(seq=1, trade_id=ms, symbol="BTC-PERP", price=price, qty=qty, taker_side=1,
                              taker_order_id=1, taker_account="a", taker_remaining=0, maker_order_id=2,
                              maker_account="b", maker_remaining=0), ms)
    rows = recs.klines(60_000, None, None, 10)
    assert [r[:6] for r in rows] == [[60_000, 100, 120, 90, 90, 4], [180_000, 110, 110, 110, 110, 5]]
    assert rows[0][6] == 100 + 240 + 90 and rows[0][7] == 3
    assert recs.klines(60_000, 61_000, None, 10)[0][0] == 180_000  # none older than start
    assert len(recs.klines(60_000, None, None, 1)) == 1
    assert [r[0] for r in recs.klines(120_000, None, None, 10)] == [0, 120_000]


# ---------------------------------------------------------------------------- streams

def test_depth_events_show_a_missing_delta_in_pu():
    """pu is the venue's previous update (U - 1), not the facade's previous event: a delta lost on
    the way to the facade must reach the client as pu != its last u (the old code sent the
    facade's last u, and ccxt applied the next event across the hole)."""
    from cluster.protocol import BookDelta
    from nodes.rest.streams import Connection, Streams

    streams = Streams({"BTC-PERP": BTC})
    conn = Connection()
    conn.subs.add("btcusdt@depth")
    streams.connections.add(conn)

    def delta(seq, price):
        return BookDelta(seq=seq, symbol="BTC-PERP", book_seq=seq, side=BUY, price=price, qty=5)

    streams.on_market_data([delta(1, 100), delta(2, 101)], 0)
    streams.on_market_data([delta(3, 102), delta(5, 104), delta(6, 105)], 0)  # 4 never arrived
    events = [conn.queue.get_nowait() for _ in range(conn.queue.qsize())]
    assert [(e["U"], e["u"], e["pu"]) for e in events] == [(1, 2, 0), (3, 3, 2), (5, 6, 4)]
    assert events[2]["b"] == [["10.4", "0.005"], ["10.5", "0.005"]] and events[2]["a"] == []


@pytest.mark.parametrize("http, ok", [("127.0.0.1:7720", True), ("localhost:80", True),
                                      ("7720", False), ("127.0.0.1:", False), ("h:99999", False),
                                      ("tcp://127.0.0.1:7720", False)])
def test_rest_http_endpoint_is_checked(tmp_path, http, ok):
    text = config.DEFAULT_CONFIG.read_text().replace('http = "127.0.0.1:7720"', f'http = "{http}"')
    path = tmp_path / "topology.toml"
    path.write_text(text)
    if ok:
        assert config.load(path).nodes["rest"].http == http
    else:
        with pytest.raises(config.ConfigError, match="nodes.rest.http"):
            config.load(path)
