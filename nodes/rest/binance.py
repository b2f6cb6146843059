"""The Binance-USDⓈ-M vocabulary of the REST facade, pure (no IO): symbol ids, exact decimal strings
to and from ticks, lots and atoms, Binance's error codes and HTTP statuses for perpx's reasons, and
the translation of a request's parameters into a perpx message.

Which code and message each refusal gets is chosen so that unmodified ccxt (4.5.x, `binanceusdm`,
on a localhost URL where only its top-level tables apply) raises the right exception class:
/work/shared/API-COMPAT.md §3.2. A decimal string that is off the tick, lot or atom grid is refused
with Binance's filter failure, never rounded.
"""

from __future__ import annotations

from decimal import Decimal

from cluster.config import SymbolSpec
from cluster.protocol import BUY, SELL, CancelAll, CancelOrder, PlaceOrder
from cluster.rules.units import UnitError, from_units, parse_decimal, to_units

INSUFFICIENT = "Account has insufficient balance for requested action."


class ApiError(Exception):
    """A refusal in Binance's shape: HTTP status, negative code, message (and Retry-After)."""

    def __init__(self, status: int, code: int, msg: str, retry_after_s: int = 0) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after_s = status, code, msg, retry_after_s

    def body(self) -> dict:
        return {"code": self.code, "msg": self.msg}


BAD_KEY = "Invalid API-key, IP, or permissions for action."
# perpx reason -> (HTTP status, Binance code, message or None for "<reason>: <numbers>")
REASONS: dict[str, tuple[int, int, str | None]] = {
    "insufficient_margin": (400, -2019, INSUFFICIENT),
    "insufficient_available": (400, -2019, INSUFFICIENT),
    "leverage_change_insufficient_margin": (400, -2019, INSUFFICIENT),
    "withdrawal_exceeds_available": (400, -2019, INSUFFICIENT),
    # ccxt's exact-message table: OrderImmediatelyFillable (-5022 would only be InvalidOrder)
    "post_only_would_take": (400, -2010, "Order would immediately match and take."),
    "would_trigger_immediately": (400, -2021, "Order would trigger immediately."),
    "unknown_symbol": (400, -1121, "Invalid symbol."),
    "leverage_above_tier_max": (400, -4028, None),
    "rate_limited": (429, -1003, None),
    "banned": (418, -1003, None),
    "invalid_api_key": (401, -2015, BAD_KEY),
    "missing_scope": (401, -2015, BAD_KEY),
    # the gateway's refusals of the key itself (#20): ccxt's AuthenticationError
    "key_revoked": (401, -2015, BAD_KEY),
    "ip_not_allowed": (401, -2015, BAD_KEY),
    "signature_required": (401, -2015, BAD_KEY),
    "invalid_signature": (401, -2015, BAD_KEY),
    # sessions per key (client addresses in use) or per address at the gateway's cap
    "too_many_sessions": (429, -1003, None),
    "logon_locked_out": (429, -1003, None),
    "logon_delayed": (429, -1003, None),
    "not_logged_on": (503, -1001, "Internal error; unable to process your request. Please try again."),
    "qty_out_of_range": (400, -1013, None),
    "too_many_open_orders": (400, -2010, None),
}


def refusal(reason: str, detail: dict | None = None, *, unknown_order_code: int = -2011) -> ApiError:
    """A perpx refusal (reason + the numbers that decided it) as Binance's error."""
    if reason in ("unknown_order", "order_not_open"):
        msg = "Unknown order sent." if unknown_order_code == -2011 else "Order does not exist."
        return ApiError(400, unknown_order_code, msg)
    status, code, msg = REASONS.get(reason, (400, -2010, None))
    numbers = ", ".join(f"{k}={v}" for k, v in (detail or {}).items())
    if msg is None:
        msg = f"{reason}: {numbers}" if numbers else reason
        if reason == "qty_out_of_range":
            msg = f"Filter failure: LOT_SIZE ({numbers})"
    elif msg is BAD_KEY:  # which of key, address or permission, with the numbers (ccxt goes by code)
        msg = f"{msg} ({reason}: {numbers})" if numbers else f"{msg} ({reason})"
    retry = 0
    if status in (418, 429):
        retry = max(1, -(-int((detail or {}).get("retry_after_ms", 1000)) // 1000))
    return ApiError(status, code, msg, retry)


def bad_param(name: str, value: object, why: str = "") -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                    f"{why or 'legal range is a decimal number'} (got {value!r}).")


def missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class Market:
    """One perpx symbol as Binance names it (BTC-PERP <-> BTCUSDT), with exact unit conversion."""

    def __init__(self, spec: SymbolSpec, quote: str, atom: Decimal) -> None:
        self.spec = spec
        self.base = spec.name.split("-")[0]
        self.quote = quote
        self.id = self.base + quote
        self.atom = atom

    def ticks(self, text: str, name: str = "price") -> int:
        try:
            ticks = to_units(text, self.spec.tick_size, name, "price_off_tick")
        except UnitError as exc:
            if exc.reason == "price_off_tick":
                raise ApiError(400, -1013, f"Filter failure: PRICE_FILTER ({exc})") from None
            raise bad_param(name, text) from None
        if ticks <= 0:
            raise ApiError(400, -1013, f"Filter failure: PRICE_FILTER ({name} {text} is not above 0)")
        return ticks

    def lots(self, text: str, name: str = "quantity") -> int:
        try:
            lots = to_units(text, self.spec.lot_size, name, "qty_off_lot")
        except UnitError as exc:
            if exc.reason == "qty_off_lot":
                raise ApiError(400, -1013, f"Filter failure: LOT_SIZE ({exc})") from None
            raise bad_param(name, text) from None
        if lots <= 0:
            raise ApiError(400, -1013, f"Filter failure: LOT_SIZE ({name} {text} is not above 0)")
        return lots

    def price(self, ticks: int | Decimal) -> str:
        if isinstance(ticks, Decimal):  # an exact average (entry price) in ticks
            return format((ticks * self.spec.tick_size).normalize(), "f")
        return from_units(ticks, self.spec.tick_size)

    def qty(self, lots: int) -> str:
        return from_units(lots, self.spec.lot_size)

    def money(self, atoms: int) -> str:
        return from_units(atoms, self.atom)

    def quote_value(self, tick_lots: int) -> str:
        """sum(price_ticks x qty_lots) as an exact amount of the quote asset."""
        return format((Decimal(tick_lots) * self.spec.tick_size * self.spec.lot_size).normalize(), "f")

    def filters(self) -> list[dict]:
        s = self.spec
        tick, lot = str(s.tick_size), str(s.lot_size)
        return [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "100000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": self.qty(s.min_qty), "maxQty": self.qty(s.max_qty),
             "stepSize": lot},
            {"filterType": "MARKET_LOT_SIZE", "minQty": self.qty(s.min_qty),
             "maxQty": self.qty(s.max_qty), "stepSize": lot},
            {"filterType": "MIN_NOTIONAL", "notional": "0"},
        ]

    def exchange_info(self) -> dict:
        return {
            "symbol": self.id, "pair": self.id, "status": "TRADING", "contractType": "PERPETUAL",
            "baseAsset": self.base, "quoteAsset": self.quote, "marginAsset": self.quote,
            "pricePrecision": _places(self.spec.tick_size), "quantityPrecision": _places(self.spec.lot_size),
            "onboardDate": 1569398400000, "filters": self.filters(), "orderTypes": ORDER_TYPES,
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        }

    def brackets(self) -> dict:
        """The maintenance ladder (cluster/rules/ladder.py tiers) as Binance's leverage brackets."""
        return {"symbol": self.id, "brackets": [
            {"bracket": t.number, "initialLeverage": t.max_leverage,
             "notionalCap": int(Decimal(t.cap) * self.atom), "notionalFloor": int(Decimal(t.floor) * self.atom),
             "maintMarginRatio": float(Decimal(t.mmr_ppm) / 1_000_000), "cum": float(Decimal(t.amount) * self.atom)}
            for t in self.spec.tiers]}


ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
               "TRAILING_STOP_MARKET"]
# Binance type -> perpx type
TYPES = {"LIMIT": "limit", "MARKET": "market", "STOP": "stop_limit", "STOP_MARKET": "stop_market",
         "TAKE_PROFIT": "take_profit_limit", "TAKE_PROFIT_MARKET": "take_profit_market"}
BINANCE_TYPES = {v: k for k, v in TYPES.items()}
SIDES = {"BUY": BUY, "SELL": SELL}
SIDE_NAMES = {BUY: "BUY", SELL: "SELL"}


def _places(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)


def _flag(params: dict, name: str) -> bool:
    value = params.get(name, "false")
    if value not in ("true", "false", "TRUE", "FALSE", "True", "False"):
        raise bad_param(name, value, "legal values are true and false")
    return value.lower() == "true"


def order_request(market: Market, params: dict, *, algo: bool = False) -> PlaceOrder:
    """POST /fapi/v1/order (or /fapi/v1/algoOrder) parameters -> a PlaceOrder, every value exact."""
    side = SIDES.get(params.get("side", ""))
    if side is None:
        raise missing("side") if "side" not in params else bad_param("side", params["side"], "legal values are BUY and SELL")
    kind = params.get("type") or missing_raise("type")
    otype = TYPES.get(kind)
    if otype is None:
        raise ApiError(400, -1116, f"Invalid orderType {kind!r}; this venue takes "
                       f"{', '.join(TYPES)}.")
    if params.get("positionSide", "BOTH") != "BOTH":
        raise ApiError(400, -4061, "Order's position side does not match user's setting (one-way mode: BOTH).")
    qty = market.lots(params.get("quantity") or missing_raise("quantity"))
    fields: dict = {"symbol": market.spec.name, "side": side, "qty": qty, "type": otype}
    if otype in ("limit", "stop_limit", "take_profit_limit"):
        fields["price"] = market.ticks(params.get("price") or missing_raise("price"))
        tif = params.get("timeInForce", "GTC")
        if tif == "GTX":
            fields["post_only"], tif = True, "GTC"
        if tif not in ("GTC", "IOC", "FOK"):
            raise bad_param("timeInForce", tif, "legal values are GTC, IOC, FOK and GTX")
        fields["tif"] = tif
    elif params.get("price") not in (None, "", "0"):
        raise ApiError(400, -1106, f"Parameter 'price' sent when not required (type {kind}).")
    trigger = params.get("triggerPrice") if algo else params.get("stopPrice")
    trigger = trigger or params.get("stopPrice") or params.get("triggerPrice")
    if otype in ("stop_market", "stop_limit", "take_profit_market", "take_profit_limit"):
        fields["trigger_price"] = market.ticks(trigger or missing_raise("triggerPrice" if algo else "stopPrice"),
                                               "triggerPrice" if algo else "stopPrice")
        working = params.get("workingType", "CONTRACT_PRICE")
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise bad_param("workingType", working, "legal values are MARK_PRICE and CONTRACT_PRICE")
        fields["trigger_by"] = "mark" if working == "MARK_PRICE" else "last"
    elif trigger not in (None, "", "0"):
        raise ApiError(400, -1106, f"Parameter 'stopPrice' sent when not required (type {kind}).")
    fields["reduce_only"] = _flag(params, "reduceOnly") or _flag(params, "closePosition")
    coid = params.get("clientAlgoId" if algo else "newClientOrderId") or params.get("newClientOrderId", "")
    if len(coid) > 36:
        raise bad_param("newClientOrderId", coid, "at most 36 characters")
    fields["client_order_id"] = coid
    return PlaceOrder(**fields)


def missing_raise(name: str):
    raise missing(name)


def parse_ms(params: dict, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_param(name, value, "legal range is an integer") from None


def order_ref(params: dict, algo: bool = False) -> tuple[int, str]:
    """(orderId, origClientOrderId) of a query or cancel; at least one must be given."""
    oid = parse_ms(params, "algoId" if algo else "orderId", 0) or 0
    coid = params.get("clientAlgoId" if algo else "origClientOrderId", "")
    if not oid and not coid:
        raise ApiError(400, -1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!")
    return oid, coid


def cancel_request(market: Market, params: dict, algo: bool = False) -> CancelOrder:
    oid, coid = order_ref(params, algo)
    return CancelOrder(symbol=market.spec.name, order_id=oid, client_order_id=coid)


def cancel_all_request(market: Market) -> CancelAll:
    return CancelAll(symbol=market.spec.name)


def decimal_param(params: dict, name: str) -> Decimal:
    try:
        return parse_decimal(params.get(name) or missing_raise(name), name)
    except UnitError:
        raise bad_param(name, params.get(name)) from None


# kline intervals in ms
INTERVALS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
             "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
             "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000,
             "1w": 604_800_000, "1M": 2_592_000_000}
