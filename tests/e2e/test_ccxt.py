"""Unmodified ccxt (4.5.90, `binanceusdm`, sync and async) against the real cluster through the REST
facade (nodes/rest/): every value it parses is compared with the venue's own view, `perpx account
show` and `perpx book` (#25's acceptance list)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import sys
import tomllib
import time
import urllib.error
import urllib.request
from decimal import Decimal

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from cluster import config
from cluster.client import Client
from cluster.protocol import BUY, SELL
from cluster.signing import secret_for
from tests.conftest import ROOT, ClusterHandle, stop_and_reap

pytestmark = pytest.mark.e2e

S = "BTC/USDT:USDT"
SYM = "BTC-PERP"
WEIGHT_PER_MINUTE = 1500  # low enough that the throttle test reaches it in ~70 depth requests
FUNDING_S = 3  # funding every 3 s, so a position pays or receives it within the test


def ccxt_config(base: str, key: str, secret: str) -> dict:
    """API-COMPAT §1's recommended config: only /fapi/* is ever reached."""
    return {
        "apiKey": key, "secret": secret, "enableRateLimit": False,
        "urls": {"api": {k: base + v for k, v in {
            "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
            "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
            "fapiData": "/futures/data"}.items()}},
        "options": {"fetchCurrencies": False, "adjustForTimeDifference": False},
    }


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    handle = ClusterHandle(tmp_path_factory.mktemp("ccxt"),
                           symbol_overrides={SYM: {"funding_interval_s": FUNDING_S}})
    raw = tomllib.loads(handle.config_path.read_text())
    raw["nodes"]["rest"]["weight_per_minute"] = WEIGHT_PER_MINUTE
    handle.config_path.write_text(config._dump_toml(raw))
    handle.topo = config.load(handle.config_path, run_dir=str(handle.run_dir))
    handle.base = "http://" + handle.topo.nodes["rest"].http
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


def rest_secret(venue, key: str) -> str:
    """The key's secret as a REST user configures it: the key file's hex text (#20)."""
    return secret_for(venue.run_dir, key).hex()


def exchange(venue, account: str, secret: str | None = None):
    key = venue.api_key(account)
    return ccxt.binanceusdm(ccxt_config(venue.base, key, secret or rest_secret(venue, key)))


def quote_book(venue, mark_ticks: int) -> list[int]:
    """mm1 quotes 5 levels a side, 20 ticks apart, 1 BTC each, around the mark (SDK, native)."""
    async def run():
        async with Client(venue.endpoint(), api_key=venue.api_key("mm1")) as mm:
            for i in range(1, 6):
                await mm.place(SYM, BUY, qty=1000, price=mark_ticks - 20 * i)
                await mm.place(SYM, SELL, qty=1000, price=mark_ticks + 20 * i)
    asyncio.run(run())


def current_mark(venue) -> int:
    async def run():
        async with Client(venue.endpoint(), market_data=venue.md_endpoint()) as c:
            return (await c.next_mark(SYM)).mark
    return asyncio.run(run())


def perpx(venue, *args: str) -> dict:
    """`perpx ARGS --json` run by the CLI's own main in this process, checked to succeed: its
    JSON. (A new interpreter per call cost ~1 s each on the loaded host, ~25 calls a run.)"""
    from cluster import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--run-dir", str(venue.run_dir), "--json"])
    assert code == 0, (args, code, out.getvalue())
    return json.loads(out.getvalue())


def account_show(venue, name: str) -> dict:
    return perpx(venue, "account", "show", name)


def test_markets_book_and_settings(venue):
    mark = current_mark(venue)
    quote_book(venue, mark)
    ex = exchange(venue, "alice")
    markets = ex.load_markets()
    m = markets[S]
    assert (m["id"], m["type"], m["settle"], m["linear"]) == ("BTCUSDT", "swap", "USDT", True)
    assert m["precision"]["price"] == 0.1 and m["precision"]["amount"] == 0.001
    assert m["limits"]["amount"]["min"] == 0.001 and m["limits"]["amount"]["max"] == 1000
    assert "ETH/USDT:USDT" in markets

    book = ex.fetch_order_book(S, 10)
    venue_book = perpx(venue, "book", SYM)
    assert [[Decimal(str(p)), Decimal(str(q))] for p, q in book["bids"]] == [
        [Decimal(lv["price"]), Decimal(lv["qty"])] for lv in venue_book["bids"]]
    assert [[Decimal(str(p)), Decimal(str(q))] for p, q in book["asks"]] == [
        [Decimal(lv["price"]), Decimal(lv["qty"])] for lv in venue_book["asks"]]
    assert book["nonce"] == venue_book["book_seq"] and len(book["bids"]) == 5

    tiers = ex.fetch_leverage_tiers([S])[S]
    ladder = venue.topo.symbols[SYM].tiers
    assert [t["maxLeverage"] for t in tiers] == [t.max_leverage for t in ladder]
    assert [t["maintenanceMarginRate"] for t in tiers] == [t.mmr_ppm / 1e6 for t in ladder]
    assert tiers[1]["minNotional"] == 50_000

    assert ex.set_leverage(10, S)["leverage"] == 10
    with pytest.raises(ccxt.MarginModeAlreadySet):
        ex.set_margin_mode("cross", S)
    assert ex.set_margin_mode("isolated", "ETH/USDT:USDT")["code"] == 200
    with pytest.raises(ccxt.BadRequest):  # 200x is above the first tier's 125x
        ex.set_leverage(200, S)


def test_orders_fills_positions_against_the_venue(venue):
    ex = exchange(venue, "alice")
    ex.load_markets()
    book = ex.fetch_order_book(S, 5)
    best_bid, best_ask = Decimal(str(book["bids"][0][0])), Decimal(str(book["asks"][0][0]))

    # a resting limit order: created, fetched, listed, cancelled
    resting = ex.create_order(S, "limit", "buy", 0.01, float(best_bid - 10),
                              params={"clientOrderId": "ccxt-rest-1"})
    assert resting["status"] == "open" and resting["clientOrderId"] == "ccxt-rest-1"
    assert ex.fetch_order(resting["id"], S)["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders(S)] == [resting["id"]]
    assert ex.cancel_order(resting["id"], S)["status"] == "canceled"
    assert ex.fetch_order(resting["id"], S)["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(resting["id"], S)

    # post-only that would take; off-grid price (sent raw: ccxt would round it itself)
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        ex.create_order(S, "limit", "buy", 0.01, float(best_ask), params={"postOnly": True})
    with pytest.raises(ccxt.InvalidOrder) as off_grid:
        ex.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                 "quantity": "0.01", "price": str(best_bid - Decimal("0.05")),
                                 "timeInForce": "GTC"})
    assert "PRICE_FILTER" in str(off_grid.value)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(S, "limit", "buy", 100, float(best_bid))

    # takers: IOC, FOK filled, FOK too large (expired), market
    ioc = ex.create_order(S, "limit", "buy", 0.02, float(best_ask), params={"timeInForce": "IOC"})
    assert (ioc["status"], ioc["filled"], ioc["average"]) == ("closed", 0.02, float(best_ask))
    fok = ex.create_order(S, "limit", "buy", 0.01, float(best_ask), params={"timeInForce": "FOK"})
    assert fok["status"] == "closed" and fok["filled"] == 0.01
    too_big = ex.create_order(S, "limit", "buy", 5, float(best_ask + 100), params={"timeInForce": "FOK"})
    assert too_big["status"] == "expired" and too_big["filled"] == 0
    market = ex.create_order(S, "market", "buy", 0.05)
    assert market["status"] == "closed" and market["filled"] == 0.05

    view = account_show(venue, "alice")
    (pos,) = [p for p in view["positions"] if p["symbol"] == SYM]
    assert Decimal(pos["qty_human"]) == Decimal("0.08")

    trades = ex.fetch_my_trades(S)
    venue_fills = {f["trade_id"]: f for f in view["fills"] if f["symbol"] == SYM}
    assert len(trades) == len(venue_fills) >= 3
    for t in trades:
        f = venue_fills[int(t["id"])]
        assert Decimal(str(t["price"])) == Decimal(f["human"]["price"])
        assert Decimal(str(t["amount"])) == Decimal(f["human"]["qty"])
        assert Decimal(str(t["fee"]["cost"])) == Decimal(f["human"]["fee"])
        assert t["takerOrMaker"] == f["liquidity"] and t["side"] == "buy"
    assert sum(Decimal(str(t["amount"])) for t in trades) == Decimal("0.08")
    assert {int(t["order"]) for t in trades} == {int(ioc["id"]), int(fok["id"]), int(market["id"])}

    positions = ex.fetch_positions([S])
    (p,) = positions
    assert p["side"] == "long" and Decimal(str(p["contracts"])) == Decimal("0.08")
    assert Decimal(str(p["entryPrice"])) == Decimal(pos["entry_price_human"])
    assert p["leverage"] == pos["leverage"] == 10 and p["marginMode"] == "cross"
    venue_liq = pos["liquidation_price_human"]  # None: the cross balance covers any move
    assert p["liquidationPrice"] == (float(venue_liq) if venue_liq else None)
    # the mark moves every 100 ms: PnL is checked against the mark of the same answer
    pnl = (Decimal(str(p["markPrice"])) - Decimal(pos["entry_price_human"])) * Decimal("0.08")
    assert abs(Decimal(str(p["unrealizedPnl"])) - pnl) <= Decimal("0.000001")

    # the wallet does not depend on the mark, but funding (every 3 s here) moves it: compared to
    # the atom when the venue showed the same wallet before and after ccxt's answer
    for _ in range(8):
        before = account_show(venue, "alice")["human"]["wallet_balance"]
        balance = ex.fetch_balance()
        after = account_show(venue, "alice")["human"]["wallet_balance"]
        if before == after:
            break
    (asset,) = balance["info"]["assets"]
    assert before == after, "funding moved the wallet during every attempt"
    assert Decimal(asset["walletBalance"]) == Decimal(after)
    assert Decimal(asset["positionInitialMargin"]) + Decimal(asset["openOrderInitialMargin"]) == \
        Decimal(str(balance["USDT"]["used"]))
    # equity = wallet + unrealized PnL, within the one answer (the mark moves between two)
    assert Decimal(str(balance["USDT"]["total"])) == \
        Decimal(asset["walletBalance"]) + Decimal(asset["unrealizedProfit"])

    # reduce-only: closes part of the long; one that would increase it is refused
    reduce = ex.create_order(S, "market", "sell", 0.01, params={"reduceOnly": True})
    assert reduce["status"] == "closed" and reduce["reduceOnly"] is True
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order(S, "market", "buy", 0.01, params={"reduceOnly": True})

    # conditional orders: the algo endpoint; listed with trigger=True, cancelled by id
    mark = Decimal(venue.topo.symbols[SYM].tick_size) * current_mark(venue)
    stop = ex.create_order(S, "stop_market", "sell", 0.01, None, params={
        "stopPrice": float((mark * Decimal("0.97")).quantize(Decimal("0.1"))), "reduceOnly": True,
        "workingType": "MARK_PRICE"})
    tp = ex.create_order(S, "market", "sell", 0.01, None, params={
        "takeProfitPrice": float((mark * Decimal("1.03")).quantize(Decimal("0.1"))), "reduceOnly": True})
    assert stop["status"] == "open" and tp["status"] == "open"
    listed = ex.fetch_open_orders(S, params={"trigger": True})
    assert sorted(o["id"] for o in listed) == sorted([stop["id"], tp["id"]])
    assert {o["type"] for o in listed} == {"market"} and all(o["triggerPrice"] for o in listed)
    assert ex.fetch_open_orders(S) == []
    with pytest.raises(ccxt.OrderImmediatelyFillable):  # a sell stop above the mark
        ex.create_order(S, "stop_market", "sell", 0.01, None, params={
            "stopPrice": float((mark * Decimal("1.02")).quantize(Decimal("0.1"))), "reduceOnly": True,
            "workingType": "MARK_PRICE"})
    ex.cancel_order(stop["id"], S, params={"trigger": True})
    assert [o["id"] for o in ex.fetch_open_orders(S, params={"trigger": True})] == [tp["id"]]

    # cancel_all_orders: every open order of the symbol, as the venue sees it
    for i in range(2):
        ex.create_order(S, "limit", "buy", 0.01, float(best_bid - 10 - i))
    ex.cancel_all_orders(S)
    assert ex.fetch_open_orders(S) == [] and ex.fetch_open_orders(S, params={"trigger": True}) == []
    assert account_show(venue, "alice")["open_orders"] == 0


def test_public_data_and_funding(venue):
    ex = exchange(venue, "alice")
    ex.load_markets()
    trades = ex.fetch_trades(S)
    assert len(trades) >= 4  # alice's takers against mm1
    ticker = ex.fetch_ticker(S)
    assert ticker["last"] == trades[-1]["price"]
    assert ticker["baseVolume"] == pytest.approx(sum(t["amount"] for t in trades))
    candles = ex.fetch_ohlcv(S, "1m")
    assert sum(Decimal(str(c[5])) for c in candles) == sum(Decimal(str(t["amount"])) for t in trades)
    assert max(c[2] for c in candles) == max(t["price"] for t in trades)

    rate = ex.fetch_funding_rate(S)
    mark = current_mark(venue) * venue.topo.symbols[SYM].tick_size
    assert abs(Decimal(str(rate["markPrice"])) - mark) / mark < Decimal("0.01")
    assert rate["fundingTimestamp"] > ex.milliseconds() - 1000

    # alice holds a long: funding settles every FUNDING_S s; both sides agree on each payment
    deadline = ex.milliseconds() + 4 * FUNDING_S * 1000
    history = []
    while ex.milliseconds() < deadline and not history:
        history = ex.fetch_funding_history(S)
        if not history:
            asyncio.run(asyncio.sleep(0.3))
    assert history, "no funding payment within 4 intervals"
    venue_funding = account_show(venue, "alice")["funding"]
    venue_by_time = {e["ts_ns"] // 1_000_000: Decimal(e["human"]["payment"]) for e in venue_funding}
    for entry in history:
        assert Decimal(str(entry["amount"])) == venue_by_time[entry["timestamp"]]
    rates = ex.fetch_funding_rate_history(S)
    assert rates and all(r["symbol"] == S for r in rates)


def test_income_realized_pnl_commission_and_funding_add_up_to_the_wallet(venue):
    """A round trip by taker2 (new to this module): income's REALIZED_PNL rows are the closing
    fills' realized PnL as `perpx account show` lists them, and every income row together is
    exactly what taker2's wallet moved by, to the atom."""
    quote_book(venue, current_mark(venue))
    atom = Decimal(str(venue.topo.atom))
    wallet_before = account_show(venue, "taker2")["wallet_balance"]
    ex = exchange(venue, "taker2")
    ex.load_markets()
    ex.create_order(S, "market", "buy", 0.05)
    ex.create_order(S, "market", "sell", 0.03)
    ex.create_order(S, "market", "sell", 0.02)  # flat again
    view = account_show(venue, "taker2")
    assert not view["positions"]
    income = ex.fapiPrivateGetIncome({"symbol": "BTCUSDT"})
    realized = {int(r["tradeId"]): Decimal(r["income"]) for r in income
                if r["incomeType"] == "REALIZED_PNL"}
    closing = {f["trade_id"]: Decimal(f["realized_pnl"]) * atom for f in view["fills"]
               if f["side"] < 0}
    assert realized and realized == {t: pnl for t, pnl in closing.items() if pnl}
    assert all(f["realized_pnl"] == 0 for f in view["fills"] if f["side"] > 0)  # opening fills
    assert sum(Decimal(r["income"]) for r in income) == \
        (view["wallet_balance"] - wallet_before) * atom
    only = ex.fapiPrivateGetIncome({"symbol": "BTCUSDT", "incomeType": "REALIZED_PNL"})
    assert {r["incomeType"] for r in only} == {"REALIZED_PNL"} and len(only) == len(realized)
    trades = ex.fetch_my_trades(S)
    assert {int(t["id"]): Decimal(t["info"]["realizedPnl"]) for t in trades
            if t["side"] == "sell"} == closing


def test_async_client_and_auth(venue):
    quote_book(venue, current_mark(venue))  # its own bids: not whatever an earlier test left

    async def run():
        key = venue.api_key("bob")
        ex = ccxt_async.binanceusdm(ccxt_config(venue.base, key, rest_secret(venue, key)))
        bad = ccxt_async.binanceusdm(ccxt_config(venue.base, key, "wrong-secret"))
        try:
            await ex.load_markets()
            bid = Decimal(str((await ex.fetch_order_book(S, 5))["bids"][0][0]))
            placed = await ex.create_order(S, "limit", "buy", 0.01, float(bid - 5))
            fetched = await ex.fetch_order(placed["id"], S)
            assert (fetched["status"], fetched["price"]) == ("open", float(bid - 5))
            balance = (await ex.fetch_balance())["USDT"]
            await ex.cancel_order(placed["id"], S)
            await bad.load_markets()  # public: no signature needed
            with pytest.raises(ccxt.AuthenticationError):
                await bad.fetch_balance()
            return balance
        finally:
            await ex.close()
            await bad.close()

    balance = asyncio.run(run())
    view = account_show(venue, "bob")
    assert Decimal(str(balance["total"])) == Decimal(view["human"]["equity"])


def test_a_key_made_with_perpx_keys_trades_over_rest_until_it_is_revoked(venue):
    """#20's key file is the facade's key store: a key `perpx keys create` makes (signed
    requests required at the gateway) works with ccxt at once, the facade signing its gateway
    session with it; revoked, it is refused."""
    made = perpx(venue, "keys", "create", "bob", "--scopes", "read,trade")
    ex = ccxt.binanceusdm(ccxt_config(venue.base, made["api_key"], made["secret"]))
    deadline = time.monotonic() + 5
    while True:  # the facade and the gateway read the key file every 500 ms
        try:
            balance = ex.fetch_balance()["USDT"]
            break
        except ccxt.AuthenticationError:
            assert time.monotonic() < deadline, "the new key was never taken"
            time.sleep(0.2)
    assert Decimal(str(balance["total"])) == Decimal(account_show(venue, "bob")["human"]["equity"])
    perpx(venue, "keys", "revoke", made["api_key"])
    deadline = time.monotonic() + 5
    while True:
        try:
            ex.fetch_balance()
        except ccxt.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the revoked key still trades"
        time.sleep(0.2)


def test_ccxt_bot_example_quotes_gets_filled_and_cleans_up(venue):
    async def clear_book():  # an ask below the mark would refuse the bot's post-only bid
        for account in ("mm1", "mm2"):
            async with Client(venue.endpoint(), api_key=venue.api_key(account)) as c:
                await c.cancel_all(SYM)

    asyncio.run(clear_book())
    key = venue.api_key("mm2")
    bot = subprocess.Popen([sys.executable, "examples/ccxt_bot.py", "--url", venue.base, "--key", key,
                            "--secret", rest_secret(venue, key), "--seconds", "3", "--interval", "0.3",
                            "--spread-bps", "0.3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    outcomes: list[str] = []

    async def take_its_bid():
        async with Client(venue.endpoint(), api_key=venue.api_key("mm2")) as mm2, \
                Client(venue.endpoint(), api_key=venue.api_key("taker1")) as taker:
            for _ in range(100):  # the bot requotes each cycle: hit its bid until one fills
                orders = (await mm2.open_orders(SYM)).orders
                bid = max((o.price for o in orders if o.side == BUY), default=0)
                if bid:  # every bid at or above the bot's, so its own is reached
                    book = await taker.book(SYM, depth=50)
                    qty = sum(q for p, q in book.bids if p >= bid)
                    if qty:  # else listed by risk, not yet on matching's book
                        taken = await taker.place(SYM, SELL, qty=qty, price=bid, tif="IOC")
                        outcomes.append(f"{type(taken.event).__name__} "
                                        f"{getattr(taken.event, 'reason', '')}")
                        if (await mm2.account_view()).fills:
                            return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the bot's bid was never filled (bot exit code {bot.poll()}, "
                                 f"the taker's IOCs: {outcomes[-5:]})")

    asyncio.run(take_its_bid())
    out, err = bot.communicate(timeout=30)
    assert bot.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("fill buy 0.01 @ ") for line in lines), lines
    assert sum(line.startswith("cycle ") for line in lines) >= 3
    assert lines[-1].endswith("open orders 0"), lines
    assert account_show(venue, "mm2")["open_orders"] == 0


def pro_exchange(venue, account: str):
    import ccxt.pro as ccxtpro

    key = venue.api_key(account)
    conf = ccxt_config(venue.base, key, rest_secret(venue, key))
    conf["urls"]["api"]["ws"] = {"linear": venue.base.replace("http://", "ws://") + "/ws"}
    return ccxtpro.binanceusdm(conf)


async def churn(venue, account: str, orders: int, price0: int, in_flight: int = 16) -> None:
    """`orders` resting orders placed and (three in four) cancelled, natively, `in_flight` at a
    time: about 1.75 x orders book updates. (One at a time, a round trip each, 700 orders took
    8.3 s of the suite on the loaded host; 16 at a time about 1.2 s.)"""
    async with Client(venue.endpoint(), api_key=venue.api_key(account)) as c:
        async def one(i: int) -> None:
            side = BUY if i % 2 else SELL
            price = price0 - 100 - i % 40 if side == BUY else price0 + 100 + i % 40
            accepted = (await c.place(SYM, side, qty=1 + i % 3, price=price)).event
            if i % 4 != 3:  # every fourth stays on the book
                await c.cancel(SYM, accepted.order_id)

        for first in range(0, orders, in_flight):
            await asyncio.gather(*(one(i) for i in range(first, min(first + in_flight, orders))))


def venue_levels(venue) -> tuple[list, list]:
    book = perpx(venue, "book", SYM, "--depth", "1000")
    return ([[float(lv["price"]), float(lv["qty"])] for lv in book["bids"]],
            [[float(lv["price"]), float(lv["qty"])] for lv in book["asks"]]), book["book_seq"]


async def caught_up(ex, venue, seconds: float = 10.0) -> tuple[dict, tuple, int]:
    """ccxt's book once its nonce reaches the venue's book_seq (read after the load stopped):
    polled with the SDK's GetBook (a `perpx book` process per poll cost ~1 s on the loaded host),
    then the levels and sequence `perpx book` shows, to compare with."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with Client(venue.endpoint(), api_key=venue.api_key("viewer")) as viewer:
        while True:
            seq = (await viewer.book(SYM, depth=1)).book_seq
            book = ex.orderbooks.get(S)
            if (book is not None and book["nonce"] == seq) or loop.time() > deadline:
                break
            try:  # the book object is updated in place; a watch returns on the next update
                await asyncio.wait_for(ex.watch_order_book(S), 0.5)
            except (asyncio.TimeoutError, ccxt.ChecksumError):
                pass
    levels, seq = await asyncio.to_thread(venue_levels, venue)
    return book, levels, seq


def test_watch_order_book_follows_1000_updates_and_recovers_from_a_gap(venue):
    mark = current_mark(venue)

    async def run():
        ex = pro_exchange(venue, "alice")
        try:
            await ex.load_markets()
            start = (await ex.watch_order_book(S))["nonce"]
            load = asyncio.create_task(churn(venue, "mm2", 700, mark))
            while not load.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ex.watch_order_book(S), 1)
            await load
            book, (bids, asks), seq = await caught_up(ex, venue)
            assert seq - start >= 1000 and book["nonce"] == seq, (start, book["nonce"], seq)
            assert [list(lv) for lv in book["bids"]] == bids and [list(lv) for lv in book["asks"]] == asks

            # a lossy market-data link: the facade misses deltas, pu shows the gap, ccxt raises
            # and a new watch re-snapshots; once healed the copy equals the venue's book again
            perpx(venue, "netsim", "set", "gateway->subscribers", "--loss", "0.5")
            load = asyncio.create_task(churn(venue, "mm2", 100, mark))
            gaps = 0
            while not load.done():
                try:
                    await asyncio.wait_for(ex.watch_order_book(S), 1)
                except ccxt.ChecksumError:
                    gaps += 1
                except asyncio.TimeoutError:
                    pass
            await load
            perpx(venue, "netsim", "clear")
            assert gaps >= 1
            await asyncio.sleep(1.5)  # the facade's copy resyncs from the next published snapshot
            await churn(venue, "mm2", 2, mark)  # updates after the heal, for ccxt to re-snapshot on
            book, (bids, asks), seq = await caught_up(ex, venue)
            assert book["nonce"] == seq
            assert [list(lv) for lv in book["bids"]] == bids and [list(lv) for lv in book["asks"]] == asks
        finally:
            await ex.close()

    asyncio.run(run())


def test_watch_orders_sees_the_fills_of_a_crossing_order(venue):
    quote_book(venue, current_mark(venue))
    venue_mark = Decimal(current_mark(venue)) * venue.topo.symbols[SYM].tick_size

    async def run():
        ex = pro_exchange(venue, "bob")
        try:
            await ex.load_markets()
            watching = asyncio.create_task(ex.watch_orders(S))
            trades_task = asyncio.create_task(ex.watch_trades(S))
            mark = await asyncio.wait_for(ex.watch_mark_price(S), 5)
            assert abs(Decimal(str(mark["markPrice"])) - venue_mark) / venue_mark < Decimal("0.01")
            await asyncio.sleep(0.3)  # the streams are subscribed (listenKey, connect)
            ask = Decimal(str((await ex.fetch_order_book(S, 5))["asks"][0][0]))
            placed = await ex.create_order(S, "limit", "buy", 0.02, float(ask + 5),
                                           params={"timeInForce": "IOC"})
            seen = {}
            deadline = asyncio.get_running_loop().time() + 5
            while asyncio.get_running_loop().time() < deadline:
                orders = await asyncio.wait_for(watching, 5)
                for o in orders:
                    seen[o["id"]] = o
                if seen.get(placed["id"], {}).get("status") == "closed":
                    break
                watching = asyncio.create_task(ex.watch_orders(S))
            streamed = seen[placed["id"]]
            assert streamed["status"] == "closed" and streamed["filled"] == 0.02
            assert streamed["average"] == placed["average"]
            trades = await ex.fetch_my_trades(S)
            mine = [t for t in trades if t["order"] == placed["id"]]
            assert sum(t["amount"] for t in mine) == 0.02
            public = await asyncio.wait_for(trades_task, 5)  # the aggTrade stream saw them too
            assert {t["price"] for t in mine} & {t["price"] for t in public}
        finally:
            await ex.close()

    asyncio.run(run())


def scrape(venue) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(venue.base + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_names_values_and_moving_counters(venue):
    quote_book(venue, current_mark(venue))
    perpx(venue, "netsim", "set", "feeds->oracle", "--latency", "1ms")
    before = scrape(venue)
    ex = exchange(venue, "alice")
    ex.load_markets()
    ex.fetch_order_book(S, 5)
    ex.create_order(S, "market", "buy", 0.01)
    gw = ("perpx_node_frames_in_total", (("node", "gateway"),))
    for _ in range(40):  # node counters come with heartbeats (200 ms) via the status file (250 ms)
        after = scrape(venue)
        if after[gw] > before[gw]:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert after[gw] > before[gw]
    route = lambda path, status="200": ("perpx_rest_requests_total", (("route", path), ("status", status)))
    assert after[route("/fapi/v1/order")] > before.get(route("/fapi/v1/order"), 0)
    assert after[route("/fapi/v1/depth")] > before.get(route("/fapi/v1/depth"), 0)
    assert after[("perpx_rest_request_seconds_count", (("route", "/fapi/v1/order"),))] >= 1
    trades = ("perpx_trades_total", (("symbol", SYM),))
    assert after[trades] > before.get(trades, 0)
    for node in ("feeds", "oracle", "matching", "risk", "liquidator", "gateway", "rest"):
        assert after[("perpx_node_up", (("node", node),))] == 1
    mark = after[("perpx_mark_price", (("symbol", SYM),))]
    assert abs(mark - float(current_mark(venue) * venue.topo.symbols[SYM].tick_size)) / mark < 0.01
    assert after[("perpx_oracle_mode", (("mode", "normal"), ("symbol", SYM)))] == 1
    assert after[("perpx_oracle_healthy_sources", (("symbol", SYM),))] >= 3
    assert after[("perpx_rest_sessions", ())] >= 1
    shaped = [labels for name, labels in after if name == "perpx_netsim_link_shaped"]
    assert [dict(labels)["link"] for labels in shaped] == ["feeds->oracle"]
    assert "1ms" in dict(shaped[0])["latency"] or "1000000" in dict(shaped[0])["latency"]
    perpx(venue, "netsim", "clear")
    for _ in range(30 * FUNDING_S):  # funding every 3 s here
        if ("perpx_funding_rate", (("symbol", SYM),)) in after:
            break
        asyncio.run(asyncio.sleep(0.1))
        after = scrape(venue)
    assert ("perpx_funding_rate", (("symbol", SYM),)) in after


def test_grafana_dashboard_queries_only_exported_metrics(venue):
    """Every metric name the example dashboard queries is one the facade's /metrics exports."""
    from prometheus_client.parser import text_string_to_metric_families

    dashboard = json.loads((ROOT / "examples/grafana/perpx-dashboard.json").read_text())
    with urllib.request.urlopen(venue.base + "/metrics", timeout=5) as answer:
        families = list(text_string_to_metric_families(answer.read().decode()))
    # a family is exported even while it has no sample (no shaped netsim link, no liquidation)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {f.name + suffix for f in families for suffix in ("", *suffixes.get(f.type, ()))}
    exported |= {s.name for f in families for s in f.samples}
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"perpx_[a-z_]+", target["expr"])}
    assert queried and queried <= exported, queried - exported


def test_bad_http_input_gets_binance_errors_and_changes_nothing(venue):
    def call(method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(venue.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    key = venue.api_key("bob")
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-MBX-APIKEY": key}

    def signed(query: str) -> bytes:
        from nodes.rest.auth import sign

        query = f"timestamp={int(time.time() * 1000)}&{query}"
        return f"{query}&signature={sign(rest_secret(venue, key), query)}".encode()

    open_before = account_show(venue, "bob")["open_orders"]
    cases = [
        (call("GET", "/fapi/v1/nothing"), 404, -5000),
        (call("PATCH", "/fapi/v1/order"), 405, -1000),
        (call("GET", "/fapi/v1/depth?symbol=NOPE"), 400, -1121),
        (call("GET", "/fapi/v1/depth"), 400, -1102),
        (call("GET", "/fapi/v1/klines?symbol=BTCUSDT&interval=7m"), 400, -1120),
        (call("GET", "/fapi/v1/depth?symbol=BTCUSDT&limit=abc"), 400, -1100),
        (call("POST", "/fapi/v1/order", signed("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=x1"
                                                 "&price=30000"), form), 400, -1100),
        (call("POST", "/fapi/v1/order", signed("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.0001"
                                                 "&price=30000"), form), 400, -1013),
        (call("POST", "/fapi/v1/order", b"\xff\xfe&signature=00", form), 400, -1022),
        (call("POST", "/fapi/v1/order", b"x" * 70_000, form), 413, -1000),
        (call("GET", "/fapi/v3/account?timestamp=1&signature=00", headers={"X-MBX-APIKEY": "nobody"}),
         401, -2015),
    ]
    for (status, body), want_status, want_code in cases:
        assert (status, body["code"]) == (want_status, want_code), body
        assert body["msg"]
    assert account_show(venue, "bob")["open_orders"] == open_before
    assert venue.status()["nodes"]["rest"]["restarts"] == 0
    assert venue.status()["nodes"]["rest"]["stats"]["errors"] == 0


def test_throttled_requests_raise(venue):
    """Last in the module: it spends this minute's request weight of 127.0.0.1."""
    ex = exchange(venue, "alice")
    ex.load_markets()
    with pytest.raises(ccxt.DDoSProtection) as throttled:
        for _ in range(WEIGHT_PER_MINUTE // 20 + 5):
            ex.fapiPublicGetDepth({"symbol": "BTCUSDT", "limit": 1000})  # weight 20
    assert "-1003" in str(throttled.value)
    assert int(ex.last_response_headers["Retry-After"]) >= 1
