"""Binance-USDⓈ-M WebSocket streams of the facade, for ccxt.pro: market streams (`<symbol>@depth`,
`@aggTrade`, `@trade`, `@markPrice`) and the user data stream of a listenKey (ORDER_TRADE_UPDATE,
ALGO_UPDATE, ACCOUNT_UPDATE, MARGIN_CALL).

Depth events carry the venue's own book sequence numbers: U and u are the first and last BookDelta
book_seq of the event (a run of consecutive numbers), pu = U - 1, the venue's update before it. A
delta the facade never received (market data is a PUB: a lossy link drops it) makes pu differ from
the client's last u, which is exactly how a Binance client detects a gap and re-snapshots (REST
depth's lastUpdateId is the book_seq of the facade's copy of the book).

A connection's queue is bounded: a client that does not read is disconnected, never allowed to
grow the facade's memory.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal

from cluster.protocol import (
    BookDelta, Fill, IndexMark, MaintenanceAlert, OrderCancelled, OrderTriggered, Trade,
)
from nodes.rest.binance import Market
from nodes.rest.records import OrderRecord, algo_json, order_json

QUEUE_LIMIT = 10_000
LISTEN_KEY_TTL_MS = 60 * 60 * 1000


class Connection:
    def __init__(self, api_key: str | None = None) -> None:
        self.subs: set[str] = set()  # "btcusdt@depth", "btcusdt@aggTrade", "btcusdt@markPrice"
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self.api_key = api_key  # a user data stream's key
        self.overflowed = False

    def push(self, event: dict) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the writer sees it and closes the connection


def stream_name(param: str) -> str | None:
    """'btcusdt@depth@100ms' -> 'btcusdt@depth' (update speeds are accepted and ignored)."""
    parts = param.split("@")
    if len(parts) < 2 or parts[1] not in ("depth", "aggTrade", "trade", "markPrice"):
        return None
    return f"{parts[0].lower()}@{parts[1]}"


def consecutive_runs(deltas: list[BookDelta]) -> list[list[BookDelta]]:
    """Split at every missing book_seq, so that each event's pu tells the client of the gap."""
    runs: list[list[BookDelta]] = []
    for d in deltas:
        if runs and d.book_seq == runs[-1][-1].book_seq + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def depth_event(market: Market, run: list[BookDelta], now_ms: int) -> dict:
    first, last = run[0].book_seq, run[-1].book_seq
    return {"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": market.id, "U": first, "u": last,
            "pu": first - 1,
            "b": [[market.price(d.price), market.qty(d.qty)] for d in run if d.side > 0],
            "a": [[market.price(d.price), market.qty(d.qty)] for d in run if d.side < 0]}


class Streams:
    def __init__(self, markets: dict[str, Market]) -> None:
        self.markets = markets
        self.connections: set[Connection] = set()
        self.listen_keys: dict[str, tuple[str, int]] = {}  # listenKey -> (api key, expiry ms)
        self.sent = 0

    # ------------------------------------------------------------------ listen keys

    def new_listen_key(self, api_key: str, now_ms: int) -> str:
        for key, (owner, _) in self.listen_keys.items():
            if owner == api_key:  # Binance returns the same key while it is valid
                self.listen_keys[key] = (api_key, now_ms + LISTEN_KEY_TTL_MS)
                return key
        key = secrets.token_hex(32)
        self.listen_keys[key] = (api_key, now_ms + LISTEN_KEY_TTL_MS)
        return key

    def owner(self, listen_key: str, now_ms: int) -> str | None:
        found = self.listen_keys.get(listen_key)
        if found is None or found[1] < now_ms:
            return None
        return found[0]

    def close_listen_key(self, api_key: str) -> None:
        for key in [k for k, (owner, _) in self.listen_keys.items() if owner == api_key]:
            del self.listen_keys[key]

    # ------------------------------------------------------------------ market streams

    def _fan_out(self, stream: str, event: dict) -> None:
        for conn in self.connections:
            if stream in conn.subs:
                conn.push(event)
                self.sent += 1

    def _wanted(self, stream: str) -> bool:
        return any(stream in conn.subs for conn in self.connections)

    def on_market_data(self, messages: list, now_ms: int) -> None:
        deltas: dict[str, list[BookDelta]] = {}
        for msg in messages:
            kind = type(msg)
            market = self.markets.get(getattr(msg, "symbol", ""))
            if market is None:
                continue
            if kind is BookDelta:
                deltas.setdefault(msg.symbol, []).append(msg)
            elif kind is Trade:
                stream = market.id.lower()
                if self._wanted(stream + "@aggTrade"):
                    self._fan_out(stream + "@aggTrade", {
                        "e": "aggTrade", "E": now_ms, "s": market.id, "a": msg.trade_id,
                        "p": market.price(msg.price), "q": market.qty(msg.qty), "f": msg.trade_id,
                        "l": msg.trade_id, "T": now_ms, "m": msg.taker_side < 0})
                if self._wanted(stream + "@trade"):  # ccxt.pro's watch_trades on futures
                    self._fan_out(stream + "@trade", {
                        "e": "trade", "E": now_ms, "T": now_ms, "s": market.id, "t": msg.trade_id,
                        "p": market.price(msg.price), "q": market.qty(msg.qty), "X": "MARKET",
                        "m": msg.taker_side < 0})
            elif kind is IndexMark and self._wanted(market.id.lower() + "@markPrice"):
                self._fan_out(market.id.lower() + "@markPrice", {
                    "e": "markPriceUpdate", "E": now_ms, "s": market.id, "p": market.price(msg.mark),
                    "i": market.price(msg.index), "P": market.price(msg.index), "r": "0", "T": 0})
        for symbol, batch in deltas.items():
            market = self.markets[symbol]
            stream = market.id.lower() + "@depth"
            if self._wanted(stream):
                for run in consecutive_runs(batch):
                    self._fan_out(stream, depth_event(market, run, now_ms))

    # ------------------------------------------------------------------ user data

    def user_event(self, api_key: str, event, rec: OrderRecord | None, quote: str, now_ms: int) -> None:
        conns = [c for c in self.connections if c.api_key == api_key]
        if not conns:
            return
        kind = type(event)
        out: list[dict] = []
        if kind is MaintenanceAlert:  # the liquidator found equity at or below maintenance
            m = next(iter(self.markets.values()))
            out.append({"e": "MARGIN_CALL", "E": now_ms, "cw": m.money(event.equity), "p": [
                {"s": self.markets[s].id, "ps": "BOTH", "mp": self.markets[s].price(mark),
                 "mm": m.money(event.maintenance_margin)}
                for s, mark in event.marks.items() if s in self.markets]})
        elif rec is not None:
            market = self.markets[rec.symbol]
            if rec.algo and not rec.triggered and not rec.filled:
                body = algo_json(rec, market)
                out.append({"e": "ALGO_UPDATE", "T": now_ms, "E": now_ms, "o": {
                    "caid": body["clientAlgoId"], "aid": rec.order_id, "at": "CONDITIONAL",
                    "o": body["orderType"], "s": market.id, "S": body["side"], "ps": "BOTH",
                    "f": body["timeInForce"], "q": body["quantity"], "X": body["algoStatus"],
                    "ai": "", "tp": body["triggerPrice"], "p": body["price"],
                    "wt": body["workingType"], "R": rec.reduce_only, "tt": 0}})
            else:
                body = order_json(rec, market)
                fill = event if kind is Fill else None
                execution = "TRADE" if fill else (
                    "EXPIRED" if rec.status == "EXPIRED" else "CANCELED" if kind is OrderCancelled
                    else "NEW")
                out.append({"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": {
                    "s": market.id, "c": rec.client_order_id, "S": body["side"], "o": body["type"],
                    "f": body["timeInForce"], "q": body["origQty"], "p": body["price"],
                    "ap": body["avgPrice"], "sp": body["stopPrice"], "x": execution, "X": rec.status,
                    "i": rec.order_id, "l": market.qty(fill.qty) if fill else "0",
                    "z": body["executedQty"], "L": market.price(fill.price) if fill else "0",
                    "N": quote, "n": market.money(fill.fee) if fill else "0", "T": now_ms,
                    "t": fill.trade_id if fill else 0, "m": bool(fill and fill.liquidity == "maker"),
                    "R": rec.reduce_only, "wt": body["workingType"], "ot": body["origType"] or body["type"],
                    "ps": "BOTH", "cp": False, "rp": "0"}})
                if kind is OrderTriggered:
                    out[-1]["o"]["x"] = "NEW"
        for conn in conns:
            for item in out:
                conn.push(item)
                self.sent += 1

    def account_update(self, api_key: str, view, quote: str, now_ms: int) -> None:
        """ACCOUNT_UPDATE after a fill: the wallet and the account's positions (an AccountView)."""
        conns = [c for c in self.connections if c.api_key == api_key]
        if not conns:
            return
        market0 = next(iter(self.markets.values()))
        positions = []
        for p in view.positions:
            m = self.markets.get(p.symbol)
            if m is None:
                continue
            positions.append({"s": m.id, "pa": ("-" if p.qty < 0 else "") + m.qty(abs(p.qty)),
                              "ep": m.price(Decimal(p.entry_price)), "cr": "0",
                              "up": m.money(p.unrealized_pnl), "mt": p.mode,
                              "iw": m.money(p.isolated_margin), "ps": "BOTH"})
        event = {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms, "a": {
            "m": "ORDER", "B": [{"a": quote, "wb": market0.money(view.wallet_balance),
                                 "cw": market0.money(view.balance), "bc": "0"}], "P": positions}}
        for conn in conns:
            conn.push(event)
