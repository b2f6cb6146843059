"""The REST facade's request handling: Binance-USDⓈ-M routes -> perpx requests through one gateway
session per API key (cluster/client.py, the real protocol: every check, limit and netsim link of
the venue applies), answers in Binance's shapes (nodes/rest/binance.py, records.py).

`Facade.handle(method, path, query, body, api_key, address)` is the whole HTTP surface, independent
of the server that carries it (nodes/rest/service.py puts it on uvicorn).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Awaitable, Callable
from urllib.parse import parse_qsl

import zmq.asyncio

from cluster.book_mirror import BookMirror
from cluster import curve
from cluster.client import Client, Forwarding, RequestFailed
from cluster.config import Topology
from cluster.protocol import (
    MARKET_TYPES, Ack, AccountView, BookDelta, BookLevels, CancelOrder, Error, Fill, GetAccount,
    GetOrders, MaintenanceAlert, OrderAccepted,
    OrderCancelled, OrderRejected, OrdersCancelled, OrdersView, Report, SetLeverage,
    SetMarginMode,
)
from nodes.rest import binance as bn
from nodes.rest.auth import WeightLimiter, load_secrets, verify
from nodes.rest.binance import ApiError, Market, refusal
from nodes.rest.records import (
    AccountRecords, OrderRecord, SymbolRecords, algo_json, order_json, trade_json,
)
from nodes.rest.streams import Streams

FINAL_WAIT_S = 1.0  # an IOC / FOK / market order is answered once final (newOrderRespType RESULT)
SESSION_IDLE_S = 300.0  # a client address's session unused this long is ended (the gateway's
# session cap per key counts addresses in use)
BOOK_WAIT_S = 2.0  # a book copy out of sync resyncs from the next published snapshot (every 1 s)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyRecords:
    """What the facade learnt of one API key's account from execution reports, shared by that
    key's sessions (one per client address), with the user data stream listeners."""

    def __init__(self) -> None:
        self.records = AccountRecords()
        self.listeners: list[Callable[[object, OrderRecord | None], None]] = []  # user data streams
        self.changed = asyncio.Event()
        self.feeder: Session | None = None  # the one session whose unasked reports are taken


class Session:
    """One gateway session: an API key as used from one client address (with forwarding; else
    one per key). Every session of an account gets each of its events once (the direct answer
    to the requester, a copy to the others), so only the key's feeder session takes the reports
    nobody asked for, and calls the listeners; a requester takes its own answers into the
    shared records too (answers only set states: taking one twice changes nothing)."""

    def __init__(self, client: Client, shared: KeyRecords, address: str = "") -> None:
        self.client = client
        self.shared = shared
        self.records = shared.records
        self.changed = shared.changed
        self.address = address
        self.pump: asyncio.Task | None = None
        self.used_s = time.monotonic()  # its last request (idle sessions are ended)

    async def run_pump(self) -> None:
        while True:
            report = await self.client.reports.get()
            if self.shared.feeder is self:
                self.take(report.event)

    async def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        await self.client.close()

    def take(self, event) -> OrderRecord | None:
        rec = self.records.on_event(event, now_ms())
        if self.shared.feeder is self:
            for listener in self.shared.listeners:
                listener(event, rec)
        self.changed.set()
        return rec


def _gateway_secret(secret: str) -> bytes | None:
    """The gateway's HMAC key for a secret the facade holds as text: the key file's bytes (its
    hex text decoded); a secret from a TOML file that is not hex signs nothing (unsigned keys)."""
    try:
        return bytes.fromhex(secret) or None
    except ValueError:
        return None


class Facade:
    def __init__(self, topo: Topology, *, quote: str = "USDT", weight_per_minute: int = 2400,
                 secrets_file: str = "", timeout: float = 5.0) -> None:
        self.topo = topo
        self.quote = quote
        self.markets = {name: Market(spec, quote, topo.atom) for name, spec in topo.symbols.items()}
        self.by_id = {m.id: m for m in self.markets.values()}
        self.symbols = {name: SymbolRecords() for name in topo.symbols}
        self.books = {name: BookMirror(name) for name in topo.symbols}
        self.secrets_file = secrets_file
        self.secrets = load_secrets(secrets_file, topo.run_dir)
        self.limiter = WeightLimiter(weight_per_minute)
        self.timeout = timeout
        self.gateway_key = curve.client_server_key(topo)  # CurveZMQ to the gateway (client_curve)
        # (api key, client address) -> its gateway session; the address is "" without forwarding
        self.sessions: dict[tuple[str, str], Session] = {}
        self.keys: dict[str, KeyRecords] = {}
        self._logons: dict[tuple[str, str], asyncio.Future] = {}
        self.forwarder: tuple[str, bytes] | None = None  # the facade's forwarding key, secret
        self._forward_lock = asyncio.Lock()
        self._load_forwarder()
        self.ctx = zmq.asyncio.Context()
        self.stats = {"requests": 0, "errors": 0, "orders": 0, "sessions": 0}
        self.request_counts: dict[tuple[str, int], int] = {}  # (route, status) -> count
        self.book_listeners: list[Callable[[str, list], None]] = []  # depth streams
        self.market_listeners: list[Callable[[object], None]] = []  # trades, marks
        self.routes: dict[tuple[str, str], tuple[Callable[..., Awaitable], bool, int]] = {}
        self._route_table()
        self.streams = Streams(self.markets)
        self._account_updates: set[str] = set()  # api keys with an ACCOUNT_UPDATE pending

    # ------------------------------------------------------------------ market data (from the shell)

    def on_market_data(self, messages: list) -> None:
        ms = now_ms()
        self.streams.on_market_data(messages, ms)
        touched: dict[str, list] = {}
        for msg in messages:
            if type(msg) is MaintenanceAlert:
                for api_key, shared in self.keys.items():
                    if shared.feeder is not None and shared.feeder.client.account == msg.account:
                        self.streams.user_event(api_key, msg, None, self.quote, ms)
                continue
            symbol = getattr(msg, "symbol", None)
            if symbol not in self.symbols:
                continue
            kind = type(msg)
            if kind is BookDelta or kind is BookLevels:
                mirror = self.books[symbol]
                was = mirror.book_seq
                mirror.feed([msg])
                if mirror.book_seq != was:
                    touched.setdefault(symbol, []).append(msg)
                continue
            self.symbols[symbol].on_message(msg, ms)
            for listener in self.market_listeners:
                listener(msg)
        for symbol, msgs in touched.items():
            for listener in self.book_listeners:
                listener(symbol, msgs)

    # ------------------------------------------------------------------ sessions

    def _load_forwarder(self) -> None:
        """The facade's forwarding key (`rest-forwarder`, made at `cluster up`): with it each REST
        client's gateway session is logged on for the client's own address, so the gateway's
        per-address limits, session caps and allow-lists apply to it. Without it (a secrets file,
        or a run made before it) every client of a key shares one session from the facade's."""
        self.forwarder = None
        if self.secrets_file:
            return
        from cluster.scopes import FORWARD
        from cluster.signing import FORWARDER_KEY, load_keys

        entry = load_keys(self.topo.run_dir).get(FORWARDER_KEY)
        if entry is not None and FORWARD in entry.scopes and entry.secret and not entry.revoked:
            self.forwarder = (FORWARDER_KEY, entry.secret)

    async def session(self, api_key: str, address: str = "") -> Session:
        slot = (api_key, address if self.forwarder is not None else "")
        found = self.sessions.get(slot)
        if found is not None:
            return found
        pending = self._logons.get(slot)
        if pending is None:
            pending = self._logons[slot] = asyncio.ensure_future(self._log_on(*slot))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._logons.pop(slot, None)

    async def _log_on(self, api_key: str, address: str) -> Session:
        gw = self.topo.nodes["gateway"]
        # the user's own key, signing when the key asks for signed requests (the same secret)
        secret = self.secrets.get(api_key, "")
        forwarding = None
        if self.forwarder is not None:
            forwarding = Forwarding(*self.forwarder, address, self._forward_lock)
        client = Client(gw.client, api_key=api_key, timeout=self.timeout, ctx=self.ctx,
                        secret=_gateway_secret(secret), forwarding=forwarding,
                        server_key=self.gateway_key)
        try:
            await client.connect()
        except RequestFailed as exc:
            await client.close()
            raise refusal(exc.error.reason, exc.error.detail) from None
        except asyncio.TimeoutError:
            await client.close()
            raise ApiError(503, -1007, "Timeout waiting for response from backend server. "
                           "Send status unknown; execution status unknown.") from None
        shared = self.keys.get(api_key)
        if shared is None:
            shared = self.keys[api_key] = KeyRecords()
            shared.listeners.append(lambda event, rec: self._user_event(api_key, event, rec))
        session = Session(client, shared, address)
        if shared.feeder is None:
            shared.feeder = session
        session.pump = asyncio.create_task(session.run_pump())
        self.sessions[(api_key, address)] = session
        self.stats["sessions"] += 1
        return session

    def expire_idle(self, idle_s: float = SESSION_IDLE_S) -> int:
        """End the sessions no request used for `idle_s`, so that the gateway's per-key session
        cap counts the client addresses still in use; a key's feeder stays while a user data
        stream of the key is open. Returns how many ended."""
        now = time.monotonic()
        streaming = {c.api_key for c in self.streams.connections}
        idle = [slot for slot, s in self.sessions.items() if now - s.used_s > idle_s and not (
            slot[0] in streaming and self.keys[slot[0]].feeder is s)]
        for slot in idle:
            self._end(slot)
        return len(idle)

    def _end(self, slot: tuple[str, str]) -> None:
        """Close one session; its key's reports come through another of its sessions, if any."""
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        shared = self.keys[slot[0]]
        if shared.feeder is session:
            shared.feeder = next((s for (k, _), s in self.sessions.items() if k == slot[0]), None)
        asyncio.ensure_future(session.close())

    def _user_event(self, api_key: str, event, rec) -> None:
        if not any(c.api_key == api_key for c in self.streams.connections):
            return
        self.streams.user_event(api_key, event, rec, self.quote, now_ms())
        session = self.keys[api_key].feeder
        if type(event) is Fill and api_key not in self._account_updates and session is not None:
            self._account_updates.add(api_key)  # one AccountView for a burst of fills
            asyncio.ensure_future(self._account_update(api_key, session))

    async def _account_update(self, api_key: str, session: Session) -> None:
        try:
            await asyncio.sleep(0.01)
            view = await self.ask(session, GetAccount())
            self.streams.account_update(api_key, view, self.quote, now_ms())
        except ApiError:
            pass  # the next fill tries again
        finally:
            self._account_updates.discard(api_key)

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()

    async def ask(self, session: Session, message):
        """One request to the venue; its Error as Binance's refusal, a timeout as -1007."""
        try:
            answer = await session.client.request(message, raise_on_error=False)
        except asyncio.TimeoutError:
            raise ApiError(503, -1007, "Timeout waiting for response from backend server. "
                           "Send status unknown; execution status unknown.") from None
        if type(answer) is Error:
            raise refusal(answer.reason, answer.detail)
        return answer

    # ------------------------------------------------------------------ the HTTP surface

    async def handle(self, method: str, path: str, query: str, body: str, api_key: str,
                     address: str) -> tuple[int, object, dict[str, str]]:
        """(status, JSON-able body, extra headers) for one request; never raises."""
        self.stats["requests"] += 1
        route = self.routes.get((method, path))
        headers: dict[str, str] = {}
        try:
            if route is None:
                known = any(p == path for _, p in self.routes)
                raise ApiError(405 if known else 404, -1000 if known else -5000,
                               f"{method} {path} is not served here" if known else f"Path {path}, Method {method} is invalid")
            handler, signed, weight = route
            raw = query if method in ("GET", "DELETE") or not body else (body if not query else query + "&" + body)
            if callable(weight):
                weight = weight(dict(parse_qsl(raw)))
            used = self.limiter.charge(address, weight, now_ms())
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            if signed:
                payload = body if method in ("POST", "PUT") and body else query
                params = verify(payload, api_key, self.secrets, now_ms())
                session = await self.session(api_key, address)
                session.used_s = time.monotonic()
                result = await handler(session, params)
            else:
                params = dict(parse_qsl(raw, keep_blank_values=True))
                if path == "/fapi/v1/listenKey":
                    result = await handler(api_key, params, method, address)
                else:
                    result = await handler(params)
            status = 200
        except ApiError as exc:
            self.stats["errors"] += 1
            status, result = exc.status, exc.body()
            if exc.retry_after_s:
                headers["Retry-After"] = str(exc.retry_after_s)
            headers.setdefault("X-MBX-USED-WEIGHT-1M", str(self.limiter.used(address)))
        except Exception as exc:  # a facade bug: answered in Binance's shape, never a dead node
            self.stats["errors"] += 1
            status, result = 500, {"code": -1000, "msg": f"An unknown error occurred while processing "
                                   f"the request ({type(exc).__name__}: {str(exc)[:200]})."}
        key = (path if route else "unknown", status)
        self.request_counts[key] = self.request_counts.get(key, 0) + 1
        return status, result, headers

    def _route_table(self) -> None:
        r = self.routes
        v1 = "/fapi/v1/"
        for path, fn, weight in (
                ("exchangeInfo", self.exchange_info, 1), ("time", self.server_time, 1),
                ("ping", self.ping, 1), ("depth", self.depth, depth_weight),
                ("ticker/24hr", self.ticker, 1), ("ticker/bookTicker", self.book_ticker, 2),
                ("ticker/price", self.ticker_price, 1),
                ("premiumIndex", self.premium_index, 1), ("fundingRate", self.funding_rates, 1),
                ("aggTrades", self.agg_trades, 20), ("trades", self.agg_trades, 5),
                ("klines", self.klines, 2), ("markPriceKlines", self.mark_klines, 2)):
            r[("GET", v1 + path)] = (fn, False, weight)
        for method, path, fn, weight in (
                ("POST", "order", self.new_order, 1), ("DELETE", "order", self.cancel_order, 1),
                ("GET", "order", self.query_order, 1),
                ("POST", "algoOrder", self.new_algo_order, 1),
                ("DELETE", "algoOrder", self.cancel_algo_order, 1),
                ("GET", "algoOrder", self.query_algo_order, 1),
                ("GET", "openOrders", self.open_orders, 1), ("GET", "openOrder", self.open_order, 1),
                ("GET", "openAlgoOrders", self.open_algo_orders, 1),
                ("DELETE", "allOpenOrders", self.cancel_all, 1),
                ("DELETE", "algoOpenOrders", self.cancel_all_algo, 1),
                ("GET", "allOrders", self.all_orders, 5), ("GET", "userTrades", self.user_trades, 5),
                ("POST", "leverage", self.set_leverage, 1), ("POST", "marginType", self.set_margin_type, 1),
                ("GET", "leverageBracket", self.leverage_bracket, 1), ("GET", "income", self.income, 30),
                ("GET", "positionSide/dual", self.position_mode, 30),
                ("GET", "multiAssetsMargin", self.multi_assets, 30),
                ("GET", "accountConfig", self.account_config, 5),
                ("GET", "symbolConfig", self.symbol_config, 5),
                ("GET", "balance", self.balance, 5)):
            r[(method, v1 + path)] = (fn, True, weight)
        for version in ("/fapi/v2/", "/fapi/v3/"):
            r[("GET", version + "account")] = (self.account, True, 5)
            r[("GET", version + "balance")] = (self.balance, True, 5)
            r[("GET", version + "positionRisk")] = (self.position_risk, True, 5)
        for method in ("POST", "PUT", "DELETE"):
            r[(method, v1 + "listenKey")] = (self.listen_key, False, 1)

    # ------------------------------------------------------------------ helpers

    def market(self, params: dict, required: bool = True) -> Market | None:
        sid = params.get("symbol")
        if not sid:
            if required:
                raise bn.missing("symbol")
            return None
        market = self.by_id.get(sid)
        if market is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return market

    def markets_of(self, params: dict) -> list[Market]:
        market = self.market(params, required=False)
        return [market] if market else list(self.markets.values())

    @staticmethod
    def limit(params: dict, default: int, cap: int = 1000) -> int:
        value = bn.parse_ms(params, "limit", default)
        if not 1 <= value <= cap:
            raise ApiError(400, -1130, f"Data sent for parameter 'limit' is not valid: {value} (1..{cap}).")
        return value

    # ------------------------------------------------------------------ public

    async def exchange_info(self, params: dict) -> dict:
        return {"timezone": "UTC", "serverTime": now_ms(), "futuresType": "U_MARGINED",
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                "intervalNum": 1, "limit": self.limiter.per_minute}],
                "assets": [{"asset": self.quote, "marginAvailable": True}],
                "symbols": [m.exchange_info() for m in self.markets.values()]}

    async def server_time(self, params: dict) -> dict:
        return {"serverTime": now_ms()}

    async def ping(self, params: dict) -> dict:
        return {}

    async def synced_book(self, market: Market) -> BookMirror:
        mirror = self.books[market.spec.name]
        deadline = asyncio.get_running_loop().time() + BOOK_WAIT_S
        while not mirror.synced and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if not mirror.synced:
            raise ApiError(503, -1001, "Internal error; unable to process your request. Please try "
                           "again. (the book copy is out of sync and no snapshot came within "
                           f"{BOOK_WAIT_S} s)")
        return mirror

    async def depth(self, params: dict) -> dict:
        market = self.market(params)
        limit = self.limit(params, 500)
        mirror = await self.synced_book(market)
        bids, asks = mirror.levels(limit)
        return {"lastUpdateId": mirror.book_seq, "E": now_ms(), "T": now_ms(),
                "bids": [[market.price(p), market.qty(q)] for p, q in bids],
                "asks": [[market.price(p), market.qty(q)] for p, q in asks]}

    def _ticker(self, market: Market) -> dict:
        now = now_ms()
        trades = [(t, tr) for t, tr in self.symbols[market.spec.name].trades if t >= now - 86_400_000]
        row = {"symbol": market.id, "closeTime": now, "openTime": now - 86_400_000, "count": len(trades)}
        if not trades:
            return {**row, "lastPrice": "0", "openPrice": "0", "highPrice": "0", "lowPrice": "0",
                    "volume": "0", "quoteVolume": "0", "priceChange": "0", "priceChangePercent": "0",
                    "weightedAvgPrice": "0", "lastQty": "0"}
        prices = [tr.price for _, tr in trades]
        lots = sum(tr.qty for _, tr in trades)
        tick_lots = sum(tr.price * tr.qty for _, tr in trades)
        first, last = prices[0], prices[-1]
        return {**row, "lastPrice": market.price(last), "openPrice": market.price(first),
                "highPrice": market.price(max(prices)), "lowPrice": market.price(min(prices)),
                "volume": market.qty(lots), "quoteVolume": market.quote_value(tick_lots),
                "priceChange": market.price(last - first) if last >= first else "-" + market.price(first - last),
                "priceChangePercent": format((Decimal(last - first) * 100 / first).quantize(Decimal("0.001")), "f"),
                "weightedAvgPrice": market.price((Decimal(tick_lots) / lots).quantize(Decimal(1))),
                "lastQty": market.qty(trades[-1][1].qty), "firstId": trades[0][1].trade_id,
                "lastId": trades[-1][1].trade_id}

    async def ticker(self, params: dict):
        rows = [self._ticker(m) for m in self.markets_of(params)]
        return rows[0] if params.get("symbol") else rows

    async def ticker_price(self, params: dict):
        rows = [{"symbol": r["symbol"], "price": r["lastPrice"], "time": r["closeTime"]}
                for r in (self._ticker(m) for m in self.markets_of(params))]
        return rows[0] if params.get("symbol") else rows

    async def book_ticker(self, params: dict):
        rows = []
        for market in self.markets_of(params):
            mirror = await self.synced_book(market)
            bids, asks = mirror.levels(1)
            bid, ask = (bids or [(0, 0)])[0], (asks or [(0, 0)])[0]
            rows.append({"symbol": market.id, "bidPrice": market.price(bid[0]), "bidQty": market.qty(bid[1]),
                         "askPrice": market.price(ask[0]), "askQty": market.qty(ask[1]),
                         "time": now_ms(), "lastUpdateId": mirror.book_seq})
        return rows[0] if params.get("symbol") else rows

    def _premium(self, market: Market) -> dict:
        rec = self.symbols[market.spec.name]
        spec = market.spec
        interval_ms = spec.funding_interval_s * 1000
        now = now_ms()
        last_rate = rec.funding[-1][1].rate_e9 if rec.funding else 0
        mark = rec.mark
        return {"symbol": market.id,
                "markPrice": market.price(mark.mark) if mark else "0",
                "indexPrice": market.price(mark.index) if mark else "0",
                "estimatedSettlePrice": market.price(mark.index) if mark else "0",
                "lastFundingRate": format((Decimal(last_rate) / 10**9).normalize(), "f"),
                "interestRate": format((Decimal(spec.interest_e9) / 10**9).normalize(), "f"),
                # the oracle's schedule (nodes/oracle/index.py): whole multiples of the interval
                "nextFundingTime": (now // interval_ms + 1) * interval_ms,
                "time": rec.mark_ms or now}

    async def premium_index(self, params: dict):
        rows = [self._premium(m) for m in self.markets_of(params)]
        return rows[0] if params.get("symbol") else rows

    async def funding_rates(self, params: dict) -> list:
        start, end = bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime")
        limit = self.limit(params, 100)
        rows = []
        for market in self.markets_of(params):
            for ms, rate in self.symbols[market.spec.name].funding:
                if (start is None or ms >= start) and (end is None or ms <= end):
                    rows.append({"symbol": market.id, "fundingTime": ms,
                                 "fundingRate": format((Decimal(rate.rate_e9) / 10**9).normalize(), "f"),
                                 "markPrice": market.price(rate.mark)})
        rows.sort(key=lambda r: r["fundingTime"])
        return rows[:limit] if start is not None else rows[-limit:]

    async def agg_trades(self, params: dict) -> list:
        market = self.market(params)
        limit = self.limit(params, 500)
        start, end = bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime")
        from_id = bn.parse_ms(params, "fromId")
        rows = [{"a": tr.trade_id, "p": market.price(tr.price), "q": market.qty(tr.qty),
                 "f": tr.trade_id, "l": tr.trade_id, "T": ms, "m": tr.taker_side < 0}
                for ms, tr in self.symbols[market.spec.name].trades
                if (start is None or ms >= start) and (end is None or ms <= end)
                and (from_id is None or tr.trade_id >= from_id)]
        return rows[:limit] if (start is not None or from_id is not None) else rows[-limit:]

    async def klines(self, params: dict, mark: bool = False) -> list:
        market = self.market(params)
        interval = params.get("interval") or bn.missing_raise("interval")
        interval_ms = bn.INTERVALS.get(interval)
        if interval_ms is None:
            raise ApiError(400, -1120, f"Invalid interval {interval!r}.")
        limit = self.limit(params, 500, 1500)
        rows = self.symbols[market.spec.name].klines(
            interval_ms, bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime"), limit, mark)
        return [[r[0], market.price(r[1]), market.price(r[2]), market.price(r[3]), market.price(r[4]),
                 market.qty(r[5]), r[0] + interval_ms - 1, market.quote_value(r[6]), r[7], "0", "0", "0"]
                for r in rows]

    async def mark_klines(self, params: dict) -> list:
        return await self.klines(params, mark=True)

    # ------------------------------------------------------------------ orders

    async def _place(self, session: Session, params: dict, algo: bool) -> OrderRecord:
        market = self.market(params)
        req = bn.order_request(market, params, algo=algo)
        self.stats["orders"] += 1
        answer = await self.ask(session, req)
        event = answer.event if type(answer) is Report else None
        if type(event) is OrderRejected:
            raise refusal(event.reason, event.detail)
        if type(event) not in (OrderAccepted, OrderCancelled):
            raise ApiError(500, -1000, f"unexpected answer {type(event or answer).__name__}")
        rec = session.records.placed(req, event, now_ms())
        immediate = req.type in MARKET_TYPES and not req.trigger_price or req.tif != "GTC"
        if immediate and params.get("newOrderRespType", "RESULT") != "ACK":
            await self._until_final(session, rec)
        return rec

    async def _until_final(self, session: Session, rec: OrderRecord) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINAL_WAIT_S
        while not rec.final and loop.time() < deadline:
            session.changed.clear()
            try:
                await asyncio.wait_for(session.changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break

    async def new_order(self, session: Session, params: dict) -> dict:
        algo = any(params.get(k) not in (None, "", "0") for k in ("stopPrice", "triggerPrice"))
        rec = await self._place(session, params, algo=False)
        return order_json(rec, self.markets[rec.symbol]) if not algo else algo_json(rec, self.markets[rec.symbol])

    async def new_algo_order(self, session: Session, params: dict) -> dict:
        if params.get("algoType", "CONDITIONAL") != "CONDITIONAL":
            raise bn.bad_param("algoType", params.get("algoType"), "legal value is CONDITIONAL")
        rec = await self._place(session, params, algo=True)
        return algo_json(rec, self.markets[rec.symbol])

    async def _cancel(self, session: Session, params: dict, algo: bool) -> OrderRecord:
        market = self.market(params)
        req = bn.cancel_request(market, params, algo)
        try:
            answer = await self.ask(session, req)
        except ApiError as exc:
            if exc.code == -2010:
                raise ApiError(400, -2011, f"Unknown order sent. ({exc.msg})") from None
            raise
        event = answer.event if type(answer) is Report else None
        if type(event) is OrderRejected:
            raise refusal(event.reason, event.detail, unknown_order_code=-2011)
        rec = session.take(event) if type(event) is OrderCancelled else None
        if rec is None:
            rec = await self._lookup(session, market, req.order_id, req.client_order_id, -2011)
            rec.status = "CANCELED"
        return rec

    async def cancel_order(self, session: Session, params: dict) -> dict:
        rec = await self._cancel(session, params, algo=False)
        return order_json(rec, self.markets[rec.symbol])

    async def cancel_algo_order(self, session: Session, params: dict) -> dict:
        rec = await self._cancel(session, params, algo=True)
        return {**algo_json(rec, self.markets[rec.symbol]), "code": "200", "msg": "success"}

    async def cancel_all(self, session: Session, params: dict) -> dict:
        market = self.market(params)
        answer = await self.ask(session, bn.cancel_all_request(market))
        if type(answer) is Report and type(answer.event) is OrdersCancelled:
            session.take(answer.event)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def cancel_all_algo(self, session: Session, params: dict) -> dict:
        """Cancels the symbol's untriggered stop / take-profit orders only."""
        market = self.market(params)
        view = await self.ask(session, GetOrders(symbol=market.spec.name))
        for order in view.orders:
            if order.status == "untriggered":
                answer = await self.ask(session, CancelOrder(symbol=market.spec.name, order_id=order.order_id))
                if type(answer) is Report and type(answer.event) is OrderCancelled:
                    session.take(answer.event)
        return {"code": 200, "msg": "success"}

    async def _lookup(self, session: Session, market: Market, order_id: int, client_id: str,
                      unknown_code: int) -> OrderRecord:
        """An order from the facade's records, else from the venue's open orders (an order placed
        before this facade started, or by another client of the account)."""
        rec = session.records.find(order_id, client_id)
        if rec is not None and rec.symbol == market.spec.name:
            return rec
        view: OrdersView = await self.ask(session, GetOrders(symbol=market.spec.name))
        for order in view.orders:
            if order.order_id == order_id or (client_id and order.client_order_id == client_id):
                return self._from_view(session, order)
        raise refusal("unknown_order", {"order_id": order_id, "client_order_id": client_id},
                      unknown_order_code=unknown_code)

    def _from_view(self, session: Session, order) -> OrderRecord:
        rec = session.records.find(order.order_id, "")
        if rec is None:
            rec = session.records._order(order.order_id, order.symbol, now_ms())
            rec.side, rec.type, rec.price, rec.qty = order.side, order.type, order.price, order.qty
            rec.trigger_price, rec.reduce_only = order.trigger_price, order.reduce_only
            rec.client_order_id = order.client_order_id
            rec.filled = order.qty - order.remaining
            if rec.filled:
                rec.status = "PARTIALLY_FILLED"
        return rec

    async def query_order(self, session: Session, params: dict) -> dict:
        market = self.market(params)
        oid, coid = bn.order_ref(params)
        rec = await self._lookup(session, market, oid, coid, -2013)
        return order_json(rec, market)

    async def query_algo_order(self, session: Session, params: dict) -> dict:
        market = self.market(params)
        oid, coid = bn.order_ref(params, algo=True)
        rec = await self._lookup(session, market, oid, coid, -2013)
        return algo_json(rec, market)

    async def open_order(self, session: Session, params: dict) -> dict:
        rec = await self._lookup(session, self.market(params), *bn.order_ref(params), -2013)
        if rec.final:
            raise ApiError(400, -2013, "Order does not exist.")
        return order_json(rec, self.markets[rec.symbol])

    async def _open(self, session: Session, params: dict, untriggered: bool) -> list:
        market = self.market(params, required=False)
        view: OrdersView = await self.ask(session, GetOrders(symbol=market.spec.name if market else ""))
        rows = []
        for order in view.orders:
            if (order.status == "untriggered") != untriggered:
                continue
            rec = self._from_view(session, order)
            m = self.markets[order.symbol]
            rows.append(algo_json(rec, m) if untriggered else order_json(rec, m))
        return rows

    async def open_orders(self, session: Session, params: dict) -> list:
        return await self._open(session, params, untriggered=False)

    async def open_algo_orders(self, session: Session, params: dict) -> list:
        return await self._open(session, params, untriggered=True)

    async def all_orders(self, session: Session, params: dict) -> list:
        market = self.market(params)
        start, end = bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime")
        from_id = bn.parse_ms(params, "orderId")
        limit = self.limit(params, 500)
        rows = [order_json(rec, market) for rec in session.records.orders.values()
                if rec.symbol == market.spec.name and (start is None or rec.time >= start)
                and (end is None or rec.time <= end) and (from_id is None or rec.order_id >= from_id)]
        return rows[:limit] if (start is not None or from_id is not None) else rows[-limit:]

    async def user_trades(self, session: Session, params: dict) -> list:
        market = self.market(params)
        start, end = bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime")
        from_id = bn.parse_ms(params, "fromId")
        order_id = bn.parse_ms(params, "orderId")
        limit = self.limit(params, 500)
        rows = [trade_json(ms, fill, market, self.quote) for ms, fill in session.records.fills
                if fill.symbol == market.spec.name and (start is None or ms >= start)
                and (end is None or ms <= end) and (from_id is None or fill.trade_id >= from_id)
                and (order_id is None or fill.order_id == order_id)]
        return rows[:limit] if (start is not None or from_id is not None) else rows[-limit:]

    # ------------------------------------------------------------------ account

    async def _view(self, session: Session) -> AccountView:
        return await self.ask(session, GetAccount())

    def _asset(self, view: AccountView) -> dict:
        money = self.markets[next(iter(self.markets))].money
        im = view.order_margin + view.position_margin
        unrealized = sum(p.unrealized_pnl for p in view.positions)
        return {"asset": self.quote, "walletBalance": money(view.wallet_balance),
                "unrealizedProfit": money(unrealized), "marginBalance": money(view.equity),
                "maintMargin": money(view.maintenance_margin), "initialMargin": money(im),
                "positionInitialMargin": money(view.position_margin),
                "openOrderInitialMargin": money(view.order_margin),
                "crossWalletBalance": money(view.balance), "crossUnPnl": money(unrealized),
                "availableBalance": money(view.available), "maxWithdrawAmount": money(view.available),
                "marginAvailable": True, "updateTime": now_ms()}

    def _positions(self, view: AccountView, all_symbols: bool) -> list:
        by_symbol = {p.symbol: p for p in view.positions}
        rows = []
        for name, market in self.markets.items():
            p = by_symbol.get(name)
            if p is None and not all_symbols:
                continue
            money = market.money
            if p is None:
                rows.append({"symbol": market.id, "positionSide": "BOTH", "positionAmt": "0",
                             "entryPrice": "0", "breakEvenPrice": "0", "markPrice": "0",
                             "unRealizedProfit": "0", "liquidationPrice": "0", "isolatedMargin": "0",
                             "isolatedWallet": "0", "notional": "0", "initialMargin": "0",
                             "maintMargin": "0", "leverage": str(market.spec.default_leverage),
                             "marginType": "cross", "marginAsset": self.quote, "updateTime": now_ms()})
                continue
            qty = market.qty(abs(p.qty))
            notional = market.quote_value(abs(p.qty) * p.mark) if p.mark else "0"
            rows.append({
                "symbol": market.id, "positionSide": "BOTH",
                "positionAmt": ("-" if p.qty < 0 else "") + qty,
                "entryPrice": market.price(Decimal(p.entry_price)), "breakEvenPrice": "0",
                "markPrice": market.price(p.mark) if p.mark else "0",
                "unRealizedProfit": money(p.unrealized_pnl),
                "liquidationPrice": market.price(p.liquidation_price) if p.liquidation_price else "0",
                "isolatedMargin": money(p.isolated_margin) if p.mode == "isolated" else "0",
                "isolatedWallet": money(p.isolated_margin) if p.mode == "isolated" else "0",
                "notional": ("-" if p.qty < 0 and notional != "0" else "") + notional,
                "initialMargin": money(p.initial_margin), "maintMargin": money(p.maintenance_margin),
                "leverage": str(p.leverage), "marginType": p.mode, "marginAsset": self.quote,
                "adlQuantile": p.adl_quantile, "updateTime": now_ms()})
        return rows

    async def account(self, session: Session, params: dict) -> dict:
        view = await self._view(session)
        asset = self._asset(view)
        totals = {"total" + k[0].upper() + k[1:]: asset[k] for k in (
            "walletBalance", "unrealizedProfit", "marginBalance", "maintMargin", "initialMargin",
            "positionInitialMargin", "openOrderInitialMargin", "crossWalletBalance", "crossUnPnl")}
        return {**totals, "availableBalance": asset["availableBalance"],
                "maxWithdrawAmount": asset["maxWithdrawAmount"], "assets": [asset],
                "positions": self._positions(view, all_symbols=False)}

    async def balance(self, session: Session, params: dict) -> list:
        asset = self._asset(await self._view(session))
        return [{"accountAlias": session.client.account, "asset": self.quote,
                 "balance": asset["walletBalance"], "crossWalletBalance": asset["crossWalletBalance"],
                 "crossUnPnl": asset["crossUnPnl"], "availableBalance": asset["availableBalance"],
                 "maxWithdrawAmount": asset["maxWithdrawAmount"], "marginAvailable": True,
                 "updateTime": asset["updateTime"]}]

    async def position_risk(self, session: Session, params: dict) -> list:
        rows = self._positions(await self._view(session), all_symbols=True)
        market = self.market(params, required=False)
        return [r for r in rows if market is None or r["symbol"] == market.id]

    async def set_leverage(self, session: Session, params: dict) -> dict:
        market = self.market(params)
        leverage = bn.parse_ms(params, "leverage") or bn.missing_raise("leverage")
        if not 1 <= leverage <= 1000:
            raise ApiError(400, -4028, f"Leverage {leverage} is not valid")
        await self.ask(session, SetLeverage(symbol=market.spec.name, leverage=leverage))
        allowed = [t for t in market.spec.tiers if t.max_leverage >= leverage]
        return {"symbol": market.id, "leverage": leverage,
                "maxNotionalValue": market.money(allowed[-1].cap) if allowed else "0"}

    async def set_margin_type(self, session: Session, params: dict) -> dict:
        market = self.market(params)
        kind = params.get("marginType", "").upper()
        mode = {"ISOLATED": "isolated", "CROSSED": "cross", "CROSS": "cross"}.get(kind)
        if mode is None:
            raise bn.bad_param("marginType", params.get("marginType"), "legal values are ISOLATED and CROSSED")
        try:
            ack: Ack = await self.ask(session, SetMarginMode(symbol=market.spec.name, mode=mode))
        except ApiError as exc:
            if "mode_change_with_position_or_orders" in exc.msg:
                raise ApiError(400, -4048, f"Margin type cannot be changed if there exists position "
                               f"or open orders. ({exc.msg})") from None
            raise
        if ack.detail.get("from") == ack.detail.get("to"):
            raise ApiError(400, -4046, "No need to change margin type.")
        return {"code": 200, "msg": "success"}

    async def leverage_bracket(self, session: Session, params: dict):
        rows = [m.brackets() for m in self.markets_of(params)]
        return rows[0] if params.get("symbol") else rows

    async def income(self, session: Session, params: dict) -> list:
        """FUNDING_FEE (the venue's funding ledger, latest 20 per account); COMMISSION and
        REALIZED_PNL (a fill that closes part of a position: its realized PnL as risk booked it,
        before the fee) from the fills this facade's session of the key received."""
        market = self.market(params, required=False)
        kind = params.get("incomeType")
        start, end = bn.parse_ms(params, "startTime"), bn.parse_ms(params, "endTime")
        limit = self.limit(params, 100)
        rows = []
        if kind in (None, "FUNDING_FEE"):
            view = await self._view(session)
            for entry in view.funding:
                m = self.markets.get(entry.symbol)
                if m is None or (market and m is not market):
                    continue
                rows.append({"symbol": m.id, "incomeType": "FUNDING_FEE", "income": m.money(entry.payment),
                             "asset": self.quote, "info": "FUNDING_FEE", "time": entry.ts_ns // 1_000_000,
                             "tranId": entry.ts_ns // 1000, "tradeId": ""})
        if kind in (None, "COMMISSION", "REALIZED_PNL"):
            for ms, fill in session.records.fills:
                m = self.markets[fill.symbol]
                if market and m is not market:
                    continue
                # tranIds: 4 per trade (its two sides, commission and realized PnL of each)
                tran = fill.trade_id * 4 + 2 * (fill.side > 0)
                if kind != "REALIZED_PNL":
                    rows.append({"symbol": m.id, "incomeType": "COMMISSION",
                                 "income": m.money(-fill.fee), "asset": self.quote,
                                 "info": "COMMISSION", "time": ms, "tranId": tran,
                                 "tradeId": str(fill.trade_id)})
                if kind != "COMMISSION" and fill.realized_pnl:
                    rows.append({"symbol": m.id, "incomeType": "REALIZED_PNL",
                                 "income": m.money(fill.realized_pnl), "asset": self.quote,
                                 "info": "REALIZED_PNL", "time": ms, "tranId": tran + 1,
                                 "tradeId": str(fill.trade_id)})
        rows = [r for r in rows if (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
        rows.sort(key=lambda r: r["time"])
        return rows[:limit] if start is not None else rows[-limit:]

    async def position_mode(self, session: Session, params: dict) -> dict:
        return {"dualSidePosition": False}

    async def multi_assets(self, session: Session, params: dict) -> dict:
        return {"multiAssetsMargin": False}

    async def account_config(self, session: Session, params: dict) -> dict:
        return {"feeTier": 0, "canTrade": True, "canDeposit": False, "canWithdraw": False,
                "dualSidePosition": False, "multiAssetsMargin": False, "updateTime": now_ms()}

    async def symbol_config(self, session: Session, params: dict) -> list:
        view = await self._view(session)
        return [{"symbol": r["symbol"], "marginType": "ISOLATED" if r["marginType"] == "isolated" else "CROSSED",
                 "isAutoAddMargin": False, "leverage": int(r["leverage"]), "maxNotionalValue": "0"}
                for r in self._positions(view, all_symbols=True)
                if not params.get("symbol") or r["symbol"] == params["symbol"]]

    def reload_secrets(self) -> int:
        """Read the key file again (keys created, rotated or revoked while the facade runs);
        sessions of a key whose secret changed or went are ended. Returns how many changed."""
        fresh = load_secrets(self.secrets_file, self.topo.run_dir)
        changed = [k for k in set(self.secrets) | set(fresh) if self.secrets.get(k) != fresh.get(k)]
        self.secrets = fresh
        forwarder = self.forwarder
        self._load_forwarder()
        for slot in [s for s in self.sessions if s[0] in changed or self.forwarder != forwarder]:
            self._end(slot)  # (a rotated forwarding key: every session logs on afresh)
        return len(changed)

    async def listen_key(self, api_key: str, params: dict, method: str = "POST",
                         address: str = "") -> dict:
        """POST: a listenKey for the key's user data stream (valid 60 min, PUT extends it);
        DELETE: closes it. Sent with X-MBX-APIKEY only, unsigned (as Binance)."""
        if api_key not in self.secrets:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if method == "DELETE":
            self.streams.close_listen_key(api_key)
            return {}
        await self.session(api_key, address)  # its reports start flowing now
        return {"listenKey": self.streams.new_listen_key(api_key, now_ms())}


def depth_weight(params: dict) -> int:
    """Binance's weight of GET /fapi/v1/depth by limit."""
    try:
        limit = int(params.get("limit", 500))
    except ValueError:
        return 2
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20

