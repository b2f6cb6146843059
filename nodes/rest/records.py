"""What the facade remembers to answer Binance's history queries, pure: per account, its orders and
fills (from the execution reports its gateway session receives); per symbol, the venue's trades,
marks and funding rates (from the gateway's market data). The venue itself keeps only open orders
and an account's latest fills, so allOrders / userTrades / aggTrades / klines / 24h ticker cover
what happened since the facade started (bounded: the newest KEEP of each).

Times are the facade's wall clock in ms when the event arrived (perpx trades carry no timestamp).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from decimal import Decimal

from cluster.protocol import (
    SELL, Fill, FundingRate, IndexMark, OrderAccepted, OrderAmended, OrderCancelled,
    OrderRejected, OrdersCancelled, OrderTriggered, PlaceOrder, Trade,
)
from nodes.rest.binance import BINANCE_TYPES, SIDE_NAMES, Market

KEEP = 10_000


class OrderRecord:
    __slots__ = ("order_id", "symbol", "side", "type", "price", "qty", "filled", "tick_lots", "status",
                 "client_order_id", "tif", "post_only", "reduce_only", "trigger_price", "trigger_by",
                 "time", "update_time", "triggered")

    def __init__(self, order_id: int, symbol: str, now_ms: int) -> None:
        self.order_id, self.symbol = order_id, symbol
        self.side, self.type, self.price, self.qty = 1, "limit", 0, 0
        self.filled = 0  # lots
        self.tick_lots = 0  # sum of price ticks x lots filled (exact cost)
        self.status = "NEW"
        self.client_order_id, self.tif = "", "GTC"
        self.post_only = self.reduce_only = self.triggered = False
        self.trigger_price, self.trigger_by = 0, "mark"
        self.time = self.update_time = now_ms

    @property
    def final(self) -> bool:
        return self.status in ("FILLED", "CANCELED", "EXPIRED", "REJECTED")

    @property
    def algo(self) -> bool:
        return self.trigger_price > 0


class AccountRecords:
    """One account's orders and fills, fed by its execution reports in any order: a fill may come
    before the answer that accepted its order (the answer then fills in the order's terms)."""

    def __init__(self) -> None:
        self.orders: OrderedDict[int, OrderRecord] = OrderedDict()
        self.by_client: dict[str, int] = {}
        self.fills: deque[tuple[int, Fill]] = deque(maxlen=KEEP)  # (time ms, fill)

    def _order(self, order_id: int, symbol: str, now_ms: int) -> OrderRecord:
        rec = self.orders.get(order_id)
        if rec is None:
            rec = self.orders[order_id] = OrderRecord(order_id, symbol, now_ms)
            while len(self.orders) > KEEP:
                old = self.orders.popitem(last=False)[1]
                self.by_client.pop(old.client_order_id, None)
        return rec

    def placed(self, req: PlaceOrder, event, now_ms: int) -> OrderRecord | None:
        """The answer to our PlaceOrder (accepted, or cancelled at once: a FOK the book could not
        fill): the order's terms are known only here."""
        if type(event) is OrderRejected:
            return None
        rec = self._order(event.order_id, req.symbol, now_ms)
        rec.side, rec.type, rec.price = req.side, req.type, req.price
        rec.qty = event.qty if type(event) is OrderAccepted else req.qty
        rec.tif, rec.post_only, rec.reduce_only = req.tif, req.post_only, req.reduce_only
        rec.trigger_price, rec.trigger_by = req.trigger_price, req.trigger_by
        rec.client_order_id = req.client_order_id or getattr(event, "client_order_id", "")
        if rec.client_order_id:
            self.by_client[rec.client_order_id] = rec.order_id
        if rec.filled and rec.status == "NEW":
            rec.status = "FILLED" if rec.filled >= rec.qty else "PARTIALLY_FILLED"
        if type(event) is OrderCancelled:
            self.on_event(event, now_ms)
        return rec

    def on_event(self, event, now_ms: int) -> OrderRecord | None:
        """Apply one execution report; the order it changed, if we know of it."""
        kind = type(event)
        if kind is Fill:
            self.fills.append((now_ms, event))
            rec = self._order(event.order_id, event.symbol, now_ms)
            rec.side = event.side
            rec.filled += event.qty
            rec.tick_lots += event.price * event.qty
            if not rec.qty:
                rec.qty = event.qty + event.remaining
            rec.status = "FILLED" if event.remaining == 0 else "PARTIALLY_FILLED"
            rec.update_time = now_ms
            return rec
        if kind is OrderCancelled:
            rec = self.orders.get(event.order_id)
            if rec is not None:
                # an IOC / FOK / market remainder the book did not take: Binance says EXPIRED
                rec.status = "EXPIRED" if event.reason in (
                    "ioc_remainder", "fok_not_fillable", "no_liquidity", "market_protection") else "CANCELED"
                rec.update_time = now_ms
            return rec
        if kind is OrdersCancelled:
            for order_id, _ in event.orders:
                rec = self.orders.get(order_id)
                if rec is not None:
                    rec.status, rec.update_time = "CANCELED", now_ms
            return None
        if kind is OrderTriggered:
            rec = self.orders.get(event.order_id)
            if rec is not None:
                rec.triggered, rec.update_time = True, now_ms
            return rec
        if kind is OrderAmended:
            rec = self.orders.get(event.order_id)
            if rec is not None:
                rec.price, rec.qty, rec.update_time = event.price, event.qty, now_ms
                if event.trigger_price:
                    rec.trigger_price = event.trigger_price
            return rec
        return None

    def find(self, order_id: int, client_order_id: str) -> OrderRecord | None:
        if not order_id:
            order_id = self.by_client.get(client_order_id, 0)
        return self.orders.get(order_id)


def order_json(rec: OrderRecord, market: Market) -> dict:
    """A regular order in Binance's shape (API-COMPAT §2.9)."""
    avg = market.price(Decimal(rec.tick_lots) / rec.filled) if rec.filled else "0"
    return {
        "orderId": rec.order_id, "symbol": market.id, "status": rec.status,
        "clientOrderId": rec.client_order_id, "price": market.price(rec.price) if rec.price else "0",
        "avgPrice": avg, "origQty": market.qty(rec.qty), "executedQty": market.qty(rec.filled),
        "cumQuote": market.quote_value(rec.tick_lots),
        "timeInForce": "GTX" if rec.post_only else rec.tif,
        "type": BINANCE_TYPES.get(rec.type, rec.type.upper()), "origType": BINANCE_TYPES.get(rec.type, ""),
        "reduceOnly": rec.reduce_only, "closePosition": False, "side": SIDE_NAMES[rec.side],
        "positionSide": "BOTH",
        "stopPrice": market.price(rec.trigger_price) if rec.trigger_price else "0",
        "workingType": "MARK_PRICE" if rec.trigger_by == "mark" else "CONTRACT_PRICE",
        "priceProtect": False, "time": rec.time, "updateTime": rec.update_time,
    }


def algo_json(rec: OrderRecord, market: Market) -> dict:
    """A conditional (stop / take-profit) order in Binance's algo shape (API-COMPAT §2.9)."""
    if rec.status in ("CANCELED", "EXPIRED", "REJECTED"):
        status = rec.status
    elif rec.triggered or rec.filled:
        status = "FINISHED" if rec.final else "TRIGGERED"
    else:
        status = "NEW"
    return {
        "algoId": rec.order_id, "clientAlgoId": rec.client_order_id, "algoType": "CONDITIONAL",
        "orderType": BINANCE_TYPES.get(rec.type, rec.type.upper()), "symbol": market.id,
        "side": SIDE_NAMES[rec.side], "positionSide": "BOTH",
        "timeInForce": "GTX" if rec.post_only else rec.tif, "quantity": market.qty(rec.qty),
        "algoStatus": status, "actualOrderId": str(rec.order_id) if rec.triggered else "",
        "actualPrice": market.price(Decimal(rec.tick_lots) / rec.filled) if rec.filled else "0",
        "triggerPrice": market.price(rec.trigger_price),
        "price": market.price(rec.price) if rec.price else "0",
        "workingType": "MARK_PRICE" if rec.trigger_by == "mark" else "CONTRACT_PRICE",
        "reduceOnly": rec.reduce_only, "createTime": rec.time, "updateTime": rec.update_time,
        "triggerTime": rec.update_time if rec.triggered else 0,
    }


def trade_json(when_ms: int, fill: Fill, market: Market, quote: str) -> dict:
    return {
        "symbol": market.id, "id": fill.trade_id, "orderId": fill.order_id, "side": SIDE_NAMES[fill.side],
        "price": market.price(fill.price), "qty": market.qty(fill.qty),
        "quoteQty": market.quote_value(fill.price * fill.qty), "commission": market.money(fill.fee),
        "commissionAsset": quote, "realizedPnl": market.money(fill.realized_pnl),
        "time": when_ms, "maker": fill.liquidity == "maker",
        "buyer": fill.side != SELL, "positionSide": "BOTH",
    }


class SymbolRecords:
    """One symbol's public history: trades (for aggTrades, klines, the 24h ticker), the latest
    mark / index, and the funding rates applied since the facade started."""

    def __init__(self) -> None:
        self.trades: deque[tuple[int, Trade]] = deque(maxlen=KEEP)
        self.mark: IndexMark | None = None
        self.mark_ms = 0
        self.marks: deque[tuple[int, int]] = deque(maxlen=KEEP)  # (ms, mark ticks) for markPriceKlines
        self.funding: deque[tuple[int, FundingRate]] = deque(maxlen=1000)

    def on_message(self, msg, now_ms: int) -> None:
        kind = type(msg)
        if kind is Trade:
            self.trades.append((now_ms, msg))
        elif kind is IndexMark:
            self.mark, self.mark_ms = msg, now_ms
            self.marks.append((now_ms, msg.mark))
        elif kind is FundingRate:
            self.funding.append((now_ms, msg))

    def klines(self, interval_ms: int, start: int | None, end: int | None, limit: int,
               mark: bool = False) -> list[list]:
        """Candles of `interval_ms` from the recorded trades (or marks), oldest first, the newest
        `limit` of those within [start, end]; a candle with no trade is not listed."""
        points = ((t, m, 0) for t, m in self.marks) if mark else (
            (t, tr.price, tr.qty) for t, tr in self.trades)
        candles: dict[int, list] = {}
        for t, price, qty in points:
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            open_t = t - t % interval_ms
            c = candles.get(open_t)
            if c is None:
                candles[open_t] = [open_t, price, price, price, price, qty, 0, 0]
            else:
                c[2], c[3], c[4] = max(c[2], price), min(c[3], price), price
                c[5] += qty
            candles[open_t][6] += price * qty
            candles[open_t][7] += 1
        rows = sorted(candles.values())
        if start is not None:
            rows = [r for r in rows if r[0] >= start]  # ccxt drops candles older than `since`
        return rows[-limit:]
