"""Every message perpx sends, as msgspec Structs in tagged unions, msgpack on the wire.

Units (DESIGN.md): prices are ints in ticks, quantities ints in lots, money ints in collateral atoms,
rates ints in parts-per-million. A frame on the wire is a msgpack *array of messages* (a batch), so a
node that drained ten messages can answer with one frame.

Evolution rules: new fields get defaults and go last; a field's type never changes; bump
PROTOCOL_VERSION when a change is not backward compatible.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta, Struct, field

PROTOCOL_VERSION = 1

BUY = 1
SELL = -1

Side = Literal[1, -1]
MAX_UNITS = 2**62  # the largest price (ticks), quantity (lots) or amount (atoms) on the wire
Lots = Annotated[int, Meta(ge=1, le=MAX_UNITS)]
Ticks = Annotated[int, Meta(ge=0, le=MAX_UNITS)]
PositiveTicks = Annotated[int, Meta(ge=1, le=MAX_UNITS)]
Id = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Name = Annotated[str, Meta(max_length=64)]
OrderType = Literal[
    "limit", "market", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit"
]
MAX_BOOK_DEPTH = 1000  # levels a side in a book snapshot (GetBook's answer, the published one)
# Order types that fill at market (no limit price of their own) and that wait for a trigger.
MARKET_TYPES = frozenset({"market", "stop_market", "take_profit_market"})
STOP_TYPES = frozenset({"stop_market", "stop_limit", "take_profit_market", "take_profit_limit"})
TimeInForce = Literal["GTC", "IOC", "FOK"]
TriggerBy = Literal["mark", "last"]
StpMode = Literal["cancel_taker", "cancel_maker", "cancel_both"]
Detail = dict[str, Union[int, str]]


class Msg(Struct, frozen=True, kw_only=True, tag_field="t", gc=False, array_like=True):
    """Base of all messages; the tag (class name) comes first, then the fields in order.

    array_like on every message: msgspec cannot mix array and map structs in one union, and the
    hot path wants arrays. So fields are only ever appended, never reordered or retyped.
    """


# --------------------------------------------------------------------------------------------
# Client <-> gateway requests. `req_id` is the client's own correlation number.
# --------------------------------------------------------------------------------------------


class Logon(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    api_key: Annotated[str, Meta(max_length=128)]
    version: int = PROTOCOL_VERSION
    # the client address this logon is for, named by a forwarder (the REST facade, on a session of
    # its own key with the "forward" scope); refused from any other session (#25)
    forwarded_for: Annotated[str, Meta(max_length=64)] = ""


class PlaceOrder(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    side: Side
    qty: Lots
    type: OrderType = "limit"
    price: Ticks = 0  # limit price; 0 for market orders
    tif: TimeInForce = "GTC"
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: Annotated[str, Meta(max_length=36)] = ""
    trigger_price: Ticks = 0
    trigger_by: TriggerBy = "mark"
    stp: StpMode = "cancel_taker"
    max_slippage_ppm: Annotated[int, Meta(ge=0, le=1_000_000)] = 0  # 0 = symbol default


class AmendOrder(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    order_id: Id = 0
    client_order_id: Annotated[str, Meta(max_length=36)] = ""
    price: Ticks = 0  # 0 = unchanged
    qty: Annotated[int, Meta(ge=0, le=2**62)] = 0  # new total quantity; 0 = unchanged
    trigger_price: Ticks = 0  # an untriggered stop or take-profit moved; 0 = unchanged


class CancelOrder(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    order_id: Id = 0
    client_order_id: Annotated[str, Meta(max_length=36)] = ""


class CancelAll(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Annotated[str, Meta(max_length=64)] = ""  # "" = every symbol


class Ping(Msg, tag=True, kw_only=True):
    """Answered by the gateway alone, unless a logged-on session asks for the `full` path
    (gateway -> risk -> matching and back, each hop stamped)."""

    req_id: Id = 0
    hops: list[tuple[str, int]] = field(default_factory=list)  # (node, monotonic ns)
    full: bool = False


class Logout(Msg, tag=True, kw_only=True):
    """End this session (the gateway also forgets sessions idle for longer than its limit)."""

    req_id: Id = 0


class GetBook(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    depth: Annotated[int, Meta(ge=1, le=MAX_BOOK_DEPTH)] = 10


class GetAccount(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    fills: Annotated[int, Meta(ge=0, le=100)] = 20  # latest fills in the answer (risk keeps 100)


class GetOrders(Msg, tag=True, kw_only=True):
    """The account's open orders (risk's book of them), in one symbol or all ("")."""

    req_id: Id = 0
    symbol: Name = ""


class SetLeverage(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    leverage: Annotated[int, Meta(ge=1, le=1000)]


class SetMarginMode(Msg, tag=True, kw_only=True):
    req_id: Id = 0
    symbol: Name
    mode: Literal["cross", "isolated"]


class AdjustIsolatedMargin(Msg, tag=True, kw_only=True):
    """Move collateral into (amount > 0) or out of (amount < 0) an isolated position's margin."""

    req_id: Id = 0
    symbol: Name
    amount: Annotated[int, Meta(ge=-(2**62), le=2**62)]  # atoms


class Deposit(Msg, tag=True, kw_only=True):
    """Admin scope: credit an account."""

    req_id: Id = 0
    account: Name
    amount: Annotated[int, Meta(ge=1, le=2**62)]  # atoms


class Withdraw(Msg, tag=True, kw_only=True):
    """Admin scope: debit an account; never below its margin requirement."""

    req_id: Id = 0
    account: Name
    amount: Annotated[int, Meta(ge=1, le=2**62)]  # atoms


class GetLimits(Msg, tag=True, kw_only=True):
    """The rate limits in force for an account now, and why (answered by the gateway with an Ack
    whose detail holds them); `account` "" is the session's own, another needs the admin scope."""

    req_id: Id = 0
    account: Name = ""


class ManageKey(Msg, tag=True, kw_only=True):
    """Admin scope, signed only: make, revoke or rotate an API key of the run's key file through
    the gateway, which writes the file as `perpx keys` does (`perpx keys create|revoke|rotate
    --api-key ADMIN_KEY`). Answered by an Ack (key_created, key_revoked, key_rotated) whose detail
    carries a made or rotated key's secret, this once. create: `account`, `scopes`, `allow`
    (CIDRs), `require_signature`, `ed25519`; revoke and rotate: `api_key`."""

    req_id: Id = 0
    action: Literal["create", "revoke", "rotate"]
    account: Name = ""
    scopes: Annotated[list[Name], Meta(max_length=8)] = []
    allow: Annotated[list[Name], Meta(max_length=64)] = []
    require_signature: bool = True
    ed25519: bool = False
    api_key: Name = ""


class Signed(Msg, tag=True, kw_only=True):
    """A request signed with its API key's secret (cluster/signing.py): `body` is the request's
    msgpack bytes as signed; `req_id` repeats the request's, for a refusal before it is read."""

    req_id: Id = 0
    ts_ms: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    nonce: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    sig: Annotated[bytes, Meta(max_length=64)]
    body: Annotated[bytes, Meta(max_length=65536)]


class SetAccountMarginMode(Msg, tag=True, kw_only=True):
    """The account's margin mode as a whole (#24): "cross" (each symbol's ladder, summed) or
    "portfolio" (the stress grid's requirement when it is higher, cluster/rules/stress.py).
    Refused, with the numbers, while the switch would leave the account under its initial
    requirement, or while a symbol is set to isolated margin."""

    req_id: Id = 0
    mode: Literal["cross", "portfolio"]


class SetPortfolioAccess(Msg, tag=True, kw_only=True):
    """Admin scope (#24): allow an account the `portfolio` margin mode (`enabled`), or withdraw
    it. Only an allowed account's own trade key may then select the mode (SetAccountMarginMode;
    refused `portfolio_not_enabled` before). Withdrawn while the account is in portfolio mode, it
    goes back to cross margin at once, unless that leaves it short of its initial requirement on
    the ladders (refused, with the numbers; nothing changes)."""

    req_id: Id = 0
    account: Name
    enabled: bool


AccountRequest = Union[SetLeverage, SetMarginMode, AdjustIsolatedMargin, Deposit, Withdraw,
                       SetAccountMarginMode, SetPortfolioAccess]
ADMIN_REQUESTS = (Deposit, Withdraw, SetPortfolioAccess)

ClientRequest = Union[
    Logon, Logout, PlaceOrder, AmendOrder, CancelOrder, CancelAll, Ping, GetBook, GetAccount, SetLeverage,
    SetMarginMode, AdjustIsolatedMargin, Deposit, Withdraw, GetOrders, GetLimits, Signed,
    SetAccountMarginMode, ManageKey, SetPortfolioAccess,
]
SignableRequest = Union[  # what a Signed body may hold (not another Signed)
    Logon, Logout, PlaceOrder, AmendOrder, CancelOrder, CancelAll, Ping, GetBook, GetAccount,
    SetLeverage, SetMarginMode, AdjustIsolatedMargin, Deposit, Withdraw, GetOrders, GetLimits,
    SetAccountMarginMode, ManageKey, SetPortfolioAccess,
]


# --------------------------------------------------------------------------------------------
# Replies and reports to clients.
# --------------------------------------------------------------------------------------------


class Error(Msg, tag=True, kw_only=True):
    """A request that could not be taken; nothing changed. `reason` is a stable code."""

    req_id: int = 0
    reason: str
    detail: Detail = field(default_factory=dict)
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


class LogonAck(Msg, tag=True, kw_only=True):
    req_id: int = 0
    account: str
    session: int
    symbols: dict[str, dict[str, Union[int, str]]] = field(default_factory=dict)
    collateral: str = ""  # what money is counted in, and its atom ("0.000001"): amounts are atoms
    atom: str = ""
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


class Pong(Msg, tag=True, kw_only=True):
    req_id: int = 0
    hops: list[tuple[str, int]] = field(default_factory=list)
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


class BookLevels(Msg, tag=True, kw_only=True):
    """A snapshot of one book: the answer to GetBook, and published by matching every second on
    its market data, so that a subscriber's copy resyncs after a gap without asking."""

    req_id: int = 0
    symbol: str
    book_seq: int
    bids: list[tuple[int, int]]  # (price ticks, qty lots), best first
    asks: list[tuple[int, int]]
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


class Ack(Msg, tag=True, kw_only=True):
    """A setting or transfer that was applied; `detail` carries the numbers."""

    req_id: int = 0
    action: str
    detail: Detail = field(default_factory=dict)
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


class PositionView(Msg, tag=True, kw_only=True):
    symbol: str
    qty: int  # signed lots
    cost: int  # signed atoms paid for the open position
    entry_price: str  # exact decimal, in ticks
    mark: int  # ticks, 0 when unknown
    unrealized_pnl: int
    initial_margin: int
    maintenance_margin: int
    leverage: int
    mode: str = "cross"
    tier: int = 1
    margin_ratio_ppm: int = 0  # maintenance margin / margin balance (cross equity, or isolated)
    isolated_margin: int = 0  # isolated wallet (margin + realized), atoms
    liquidation_price: int = 0  # ticks, rounded against the position; 0 = none
    bankruptcy_price: int = 0
    funding_paid: int = 0  # atoms, net, since the position opened (negative = received)
    adl_quantile: int = 0  # 5 = front of the auto-deleveraging queue ... 1 = back


class FundingEntry(Msg, tag=True, kw_only=True):
    ts_ns: int
    symbol: str
    rate_e9: int
    qty: int
    mark: int
    payment: int  # atoms: + received, - paid


class AccountView(Msg, tag=True, kw_only=True):
    req_id: int = 0
    account: str
    balance: int  # settled cash in atoms (deposits - withdrawals + cash flows of trades - fees)
    wallet_balance: int  # balance + cost of open positions (equity without unrealized PnL)
    equity: int
    order_margin: int
    position_margin: int
    available: int
    maintenance_margin: int
    fees_paid: int
    positions: list[PositionView]
    open_orders: int
    isolated_margin: int = 0  # sum of isolated wallets (not part of `balance`)
    im_buffer_ppm: dict[str, int] = field(default_factory=dict)
    funding: list[FundingEntry] = field(default_factory=list)  # latest first, at most 20
    fills: list[Fill] = field(default_factory=list)  # latest first, as many as GetAccount.fills
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms
    # "cross" | "portfolio" (then maintenance_margin / position_margin are the portfolio
    # requirements, without the liquidity add-on: risk sees no book), and what decided them
    margin_mode: str = "cross"
    portfolio: Detail = field(default_factory=dict)
    portfolio_enabled: bool = False  # an admin allowed the portfolio mode (SetPortfolioAccess)
    leverage_settings: dict[str, int] = field(default_factory=dict)  # symbol -> set leverage


class OrderView(Msg, tag=True, kw_only=True):
    """One open order as risk holds it: its terms, and the margin it reserves."""

    order_id: int
    symbol: str
    side: int
    type: str  # a stop or take-profit type while it waits; limit/market once triggered
    price: int  # ticks; 0 for market-type orders
    qty: int  # lots, total
    remaining: int  # lots still open
    trigger_price: int = 0
    reduce_only: bool = False
    client_order_id: str = ""
    reserved: int = 0  # atoms of margin held for it
    status: Literal["new", "untriggered", "pending"] = "new"  # pending: matching has not answered


class OrdersView(Msg, tag=True, kw_only=True):
    req_id: int = 0
    account: str
    orders: list[OrderView]
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


# --------------------------------------------------------------------------------------------
# Matching engine commands (risk -> matching, liquidator -> matching). `ref` is opaque to the
# engine: the gateway uses it to route the direct answer back to the requesting session.
# --------------------------------------------------------------------------------------------


class NewOrder(Msg, tag=True, kw_only=True):
    ref: int = 0
    order_id: Id
    account: Name
    symbol: Name
    side: Side
    qty: Lots
    type: OrderType = "limit"
    price: Ticks = 0
    tif: TimeInForce = "GTC"
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: str = ""
    trigger_price: Ticks = 0
    trigger_by: TriggerBy = "mark"
    stp: StpMode = "cancel_taker"
    max_slippage_ppm: int = 0


class Amend(Msg, tag=True, kw_only=True):
    ref: int = 0
    account: Name
    symbol: Name
    order_id: Id = 0
    client_order_id: str = ""
    price: Ticks = 0
    qty: int = 0
    trigger_price: Ticks = 0


class Cancel(Msg, tag=True, kw_only=True):
    ref: int = 0
    account: Name
    symbol: Name
    order_id: Id = 0
    client_order_id: str = ""
    reason: str = ""  # set when the venue cancels (risk: "margin_repriced"); a client's is "user"


class MassCancel(Msg, tag=True, kw_only=True):
    ref: int = 0
    account: Name
    symbol: str = ""


class MarkPrice(Msg, tag=True, kw_only=True):
    """Mark (and index) for one symbol; drives stop triggers on mark and the price band."""

    symbol: Name
    mark: PositiveTicks
    index: Ticks = 0
    seq: int = 0
    ts_ns: int = 0


class SetPosition(Msg, tag=True, kw_only=True):
    """A position change made outside the book (ADL, insurance takeover): keeps reduce-only honest."""

    account: Name
    symbol: Name
    qty: int


class ShiftPosition(Msg, tag=True, kw_only=True):
    """A position moved outside the book (ADL, backstop or insurance takeover), as a change.
    Risk sends it while trades matching made may still be on their way to risk: an absolute
    quantity from risk's view would undo them in matching's, a change commutes with them."""

    account: Name
    symbol: Name
    change: int


EngineCommand = Union[NewOrder, Amend, Cancel, MassCancel, MarkPrice, SetPosition, ShiftPosition]


# --------------------------------------------------------------------------------------------
# Matching engine events. `seq` is the engine's input sequence number of the command that caused
# the event, so every output is attributable.
# --------------------------------------------------------------------------------------------


class OrderAccepted(Msg, tag=True, kw_only=True):
    seq: int
    ref: int
    order_id: int
    account: str
    symbol: str
    side: int
    price: int
    qty: int  # accepted quantity (reduce-only may size it down)
    status: Literal["new", "untriggered"] = "new"
    client_order_id: str = ""
    duplicate: bool = False


class OrderRejected(Msg, tag=True, kw_only=True):
    seq: int
    ref: int
    order_id: int
    account: str
    symbol: str
    reason: str
    detail: Detail = field(default_factory=dict)
    client_order_id: str = ""
    duplicate: bool = False


class Trade(Msg, tag=True, kw_only=True):
    """One match: both sides in one event. The maker's price; liquidity flags follow from roles.
    Risk gets it whole; the public market data copy names no account (`public_trade`)."""

    seq: int
    trade_id: int
    symbol: str
    price: int
    qty: int
    taker_side: int
    taker_order_id: int
    taker_account: str
    taker_remaining: int
    maker_order_id: int
    maker_account: str
    maker_remaining: int


class OrderCancelled(Msg, tag=True, kw_only=True):
    seq: int
    ref: int
    order_id: int
    account: str
    symbol: str
    remaining: int  # quantity that was open and is now cancelled
    reason: str
    detail: Detail = field(default_factory=dict)
    duplicate: bool = False  # a resubmitted client order id: the original answer, repeated


class OrdersCancelled(Msg, tag=True, kw_only=True):
    """A mass cancel, in one event."""

    seq: int
    ref: int
    account: str
    symbol: str
    orders: list[tuple[int, int]]  # (order_id, cancelled remaining)
    reason: str


class OrderAmended(Msg, tag=True, kw_only=True):
    seq: int
    ref: int
    order_id: int
    account: str
    symbol: str
    price: int
    qty: int
    remaining: int
    priority_kept: bool
    reason: str = "user"
    trigger_price: int = 0  # a stop's trigger after the amend (0: not a stop)


class OrderTriggered(Msg, tag=True, kw_only=True):
    seq: int
    order_id: int
    account: str
    symbol: str
    trigger_by: str
    trigger_price: int
    observed_price: int


class BookDelta(Msg, tag=True, kw_only=True):
    """New total quantity at one L2 level (0 = level gone)."""

    seq: int
    symbol: str
    book_seq: int
    side: int
    price: int
    qty: int


EngineEvent = Union[
    OrderAccepted, OrderRejected, Trade, OrderCancelled, OrdersCancelled, OrderAmended,
    OrderTriggered, BookDelta,
]


class EngineBatch(Msg, tag=True, kw_only=True):
    """Matching -> surveillance, on matching's private feed (its own PUB, bound only when the
    topology has a surveillance node; never the market data, which names no account): the events
    of the commands matching handled, with accounts, in order, stamped with the input's time."""

    ts_ns: int
    events: list[EngineEvent]


# --------------------------------------------------------------------------------------------
# Risk -> gateway: a reply to a request or a report for an account, and risk's own rejects.
# --------------------------------------------------------------------------------------------


class Fill(Msg, tag=True, kw_only=True):
    """One side of a trade as its account sees it."""

    seq: int
    trade_id: int
    order_id: int
    account: str
    symbol: str
    side: int
    price: int
    qty: int
    remaining: int
    liquidity: Literal["maker", "taker"]
    fee: int  # atoms; negative = rebate
    client_order_id: str = ""
    # atoms: what closing part of a position made or lost against its cost, before the fee (the
    # wallet moves by realized_pnl - fee); 0 for a fill that only opens
    realized_pnl: int = 0


class Deleveraged(Msg, tag=True, kw_only=True):
    """Auto-deleveraging closed part of this account's position against a bankrupt one."""

    liquidation_id: int
    account: str
    symbol: str
    qty: int  # lots closed (signed from this account's position)
    price: int  # the bankrupt position's bankruptcy price, ticks
    rank: int  # 1 = first in the ADL queue
    score_ppm: int  # PnL% x effective leverage, ppm


class Report(Msg, tag=True, kw_only=True):
    """An event for one account (and, with ref != 0, the direct answer to one request)."""

    ref: int = 0
    account: str
    event: Union[
        OrderAccepted, OrderRejected, OrderCancelled, OrdersCancelled, OrderAmended,
        OrderTriggered, Fill, Deleveraged, MaintenanceAlert,
    ]
    usage: Detail = field(default_factory=dict)  # the tightest rate limit: rule, used, limit, window_ms


def public_trade(trade: Trade) -> Trade:
    """A trade as market data shows it: price, size, aggressor side and order ids, no account."""
    return msgspec.structs.replace(trade, taker_account="", maker_account="")


class Reply(Msg, tag=True, kw_only=True):
    """A direct answer to one routed request (book, account view, error, ack)."""

    ref: int
    body: Union[Error, BookLevels, AccountView, Pong, Ack, OrdersView]


# --------------------------------------------------------------------------------------------
# Gateway -> risk routing wrapper, market data, oracle, feeds, liquidator.
# --------------------------------------------------------------------------------------------


class Routed(Msg, tag=True, kw_only=True):
    """A client request after the gateway authenticated it."""

    ref: int
    account: str
    body: Union[
        PlaceOrder, AmendOrder, CancelOrder, CancelAll, Ping, GetBook, GetAccount, SetLeverage,
        SetMarginMode, AdjustIsolatedMargin, Deposit, Withdraw, GetOrders, SetAccountMarginMode,
        SetPortfolioAccess,
    ]
    # the API key's scopes as the gateway saw them. Risk does not trust them once it holds its own
    # key table (KeyTable): then `key_id` decides. None: not told (a test's core, with no table)
    scopes: Union[tuple[str, ...], None] = None
    # which API key the session logged on with, as cluster/signing.py key_id() names it (a
    # fingerprint: no bearer key in risk's journal); risk checks its scopes in its own table
    key_id: Name = ""


class KeyTable(Msg, tag=True, kw_only=True):
    """Risk's own view of which API key may do what (#20): every key that logs on, by key_id(),
    with its account and scopes (the topology's keys with the run's key file over them,
    cluster/signing.py key_table), and the revoked ones with their accounts. Risk's shell reads
    the key file and hands this to its core as a journaled input, so a replay checks each request
    against the table that was in force when it was handled. Never accepted from the wire: it is
    in JournalInbound, not NodeInbound (an inbox refuses it at decode)."""

    keys: dict[str, tuple[str, tuple[str, ...]]]
    revoked: dict[str, str] = {}


class SpotTick(Msg, tag=True, kw_only=True):
    """One external spot venue's price for one symbol (from the feeds process)."""

    venue: str
    symbol: str
    price: int
    seq: int
    ts_ns: int


class FeedControl(Msg, tag=True, kw_only=True):
    """To the feeds process: move a simulated market, or break one venue's feed (netsim).

    shock: every venue of `symbol` moves by `ppm`; freeze: `venue` sends nothing for `duration_ms`;
    delay: `venue`'s prices arrive `duration_ms` late; bias: `venue` quotes `ppm` off;
    spike: `venue` quotes `ppm` off for `duration_ms`; heal: `venue` (or every venue) back to normal.
    """

    action: Literal["shock", "freeze", "delay", "bias", "spike", "heal"]
    symbol: Annotated[str, Meta(max_length=64)] = ""
    venue: Annotated[str, Meta(max_length=64)] = ""
    ppm: Annotated[int, Meta(ge=-900_000, le=10_000_000)] = 0
    duration_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 0


class IndexMark(Msg, tag=True, kw_only=True):
    symbol: str
    index: int
    mark: int
    last: int
    seq: int
    ts_ns: int
    sources: int = 0
    mode: str = "normal"  # the oracle's fallback mode: normal | carry | book | degraded
    mark_last_divergence_ppm: int = 0  # (last - mark) / mark; 0 before the first trade


class OracleMode(Msg, tag=True, kw_only=True):
    """The oracle changed how it prices a symbol, and why."""

    symbol: str
    mode: str
    previous: str
    reason: str
    numbers: Detail = field(default_factory=dict)
    ts_ns: int = 0


class FundingRate(Msg, tag=True, kw_only=True):
    """Oracle -> risk at a funding time: settle every open position of `symbol` at `mark`."""

    symbol: str
    rate_e9: int  # the funding rate in units of 1e-9 (0.0001 = 100_000)
    mark: int
    seq: int = 0
    ts_ns: int = 0  # when it was published (later than funding_ts_ns for a catch-up)
    # The funding time it settles: a multiple of the interval since the epoch. Risk settles each
    # funding time once (its funding clock); 0: not named, settled as it comes.
    funding_ts_ns: int = 0


class Regime(Msg, tag=True, kw_only=True):
    """Oracle -> risk: the volatility regime of a symbol, for the initial-margin buffer. Sent when
    it changes, and repeated every second (`changed` false), so that a restarted oracle, or a
    risk that missed one, agrees again within a second (a regime is a state, not an event)."""

    symbol: str
    regime: Literal["normal", "high_volatility", "degraded"]
    realized_vol_ppm: int = 0
    threshold_ppm: int = 0
    window_s: int = 300
    ts_ns: int = 0
    changed: bool = True


class AccountRisk(Msg, tag=True, kw_only=True):
    """Risk -> liquidator: an account's margin state after a change (positions at risk's mark)."""

    account: str
    balance: int
    positions: dict[str, tuple[int, int]]  # symbol -> (signed qty lots, cost atoms)
    isolated: dict[str, int] = field(default_factory=dict)  # symbol -> isolated cash, atoms
    insurance_fund: int = 0  # the fund's cash after this change
    leverage: dict[str, int] = field(default_factory=dict)  # symbol -> leverage setting
    portfolio: bool = False  # the account's margin mode is "portfolio" (SetAccountMarginMode)


class AccountRiskRequest(Msg, tag=True, kw_only=True):
    """Liquidator -> risk, when it starts: send me every account that has a position. Risk sends
    AccountRisk on changes only, so a restarted liquidator would otherwise not know an account
    that is already under water until that account's next change."""


class LiquidationStep(Msg, tag=True, kw_only=True):
    """Liquidator -> risk: carry out one step of a liquidation.

    kind: "cancel" (the account's open orders in the symbol), "reduce" (IOC, reduce-only, limited
    at `price`, the bankruptcy price), "backstop" (backstop accounts take `qty` at `price`),
    "insurance" (the insurance fund takes `qty` at `price`), "adl" (profitable opposite positions
    are closed against it at `price`, in ADL rank order).
    """

    liquidation_id: Id
    kind: Literal["cancel", "reduce", "backstop", "insurance", "adl"]
    account: Name
    symbol: Name
    qty: Annotated[int, Meta(ge=0, le=2**62)] = 0  # lots to close (absolute; 0 = all)
    price: Ticks = 0


class LiquidationResult(Msg, tag=True, kw_only=True):
    """Risk -> liquidator: what one step did, exactly."""

    liquidation_id: int
    kind: str
    account: str
    symbol: str
    qty: int  # lots closed by this step
    notional: int  # atoms at the prices it closed at
    fee: int  # forced-execution fee charged (to the insurance fund)
    fund_delta: int  # change of the insurance fund's cash
    position_after: int  # signed lots
    counterparties: list[tuple[str, int, int]] = field(default_factory=list)  # (account, lots, price)
    reason: str = ""


class MaintenanceAlert(Msg, tag=True, kw_only=True):
    """Liquidator's finding: an account whose equity is at or below maintenance (+ forced fee).
    Private: the gateway sends it, as a Report, only to that account's sessions."""

    account: str
    equity: int
    maintenance_margin: int
    forced_fee: int
    marks: dict[str, int]
    ts_ns: int





class Notice(Msg, tag=True, kw_only=True):
    """A published explanation of a venue-wide change (e.g. an IM buffer), for every client."""

    rule: str
    subject: str
    decision: str
    numbers: Detail = field(default_factory=dict)
    ts_ns: int = 0


class OracleSource(Msg, tag=True, kw_only=True):
    """A spot venue left or rejoined a symbol's index, and why."""

    symbol: str
    venue: str
    status: str  # healthy | stale | outlier
    previous: str
    age_ms: int = -1
    deviation_ppm: int = 0
    ts_ns: int = 0


MarketData = Union[
    Trade, BookDelta, BookLevels, IndexMark, MaintenanceAlert, FundingRate, Regime, Notice,
    OracleMode, OracleSource,
]


# --------------------------------------------------------------------------------------------
# Supervisor control plane.
# --------------------------------------------------------------------------------------------


class NetsimTable(Msg, tag=True, kw_only=True):
    """Supervisor -> every node, republished periodically: the simulated network as it is now.
    `links` maps "from->to" to netsim.link.LinkSettings fields; `skew_ns` adds to a node's clock."""

    version: int
    links: dict[str, dict] = field(default_factory=dict)
    skew_ns: dict[str, int] = field(default_factory=dict)


class AdminRequest(Msg, tag=True, kw_only=True):
    """CLI -> supervisor: netsim and fault control (`perpx netsim ...`)."""

    cmd: str
    args: dict = field(default_factory=dict)


class AdminReply(Msg, tag=True, kw_only=True):
    ok: bool
    data: dict = field(default_factory=dict)
    error: str = ""


class Ready(Msg, tag=True, kw_only=True):
    node: str
    pid: int


class Heartbeat(Msg, tag=True, kw_only=True):
    node: str
    pid: int
    seq: int
    mono_ns: int
    stats: dict[str, int] = field(default_factory=dict)


class LinkSeq(Msg, tag=True, kw_only=True):
    """First message of a frame on a sequenced link (cluster/links.py): the number of the frame's
    first message (0: a control frame outside the sequence) and how many follow. A durable sender
    (a journaled core) has incarnation 0 and numbers across restarts; others start at 1 again
    under a new incarnation."""

    link: Name
    incarnation: int = 0
    first: Id = 0
    count: Id = 0
    epoch: Id = 0  # the sender's epoch (cluster/failover.py): a receiver refuses a superseded one


class ResendFrom(Msg, tag=True, kw_only=True):
    """Receiver -> sender of a sequenced link: send everything from `next_seq` on again."""

    link: Name
    next_seq: Id


class ClockTick(Msg, tag=True, kw_only=True):
    """A journaled core's own timer, made an input: what a timer decides (a mark that aged past
    its limit, the funding clock's start) is journaled like any message, so replay decides it
    again at the same time."""

    ts_ns: int = 0


# --------------------------------------------------------------------------------------------
# Failover (cluster/failover.py): a core's primary streams its journal to a hot standby, which
# promotes itself, with a witness's consent, under a higher epoch.
# --------------------------------------------------------------------------------------------


class ReplHello(Msg, tag=True, kw_only=True):
    """Standby -> the other instance's replication socket: "I have every input below `next_seq`
    (the last one's checksum is `last_crc`); stream me the rest"."""

    instance: Name
    epoch: Id
    next_seq: Id
    last_crc: int = 0


class ReplRole(Msg, tag=True, kw_only=True):
    """An instance that is not streaming says what it is (a standby too, or a fenced primary)."""

    instance: Name
    role: Name
    epoch: Id
    next_seq: Id


class ReplSnapshot(Msg, tag=True, kw_only=True):
    """Primary -> standby: start from this state (the input `seq` and everything before it)."""

    epoch: Id
    seq: Id
    ts_ns: int
    state: bytes


class ReplBatch(Msg, tag=True, kw_only=True):
    """Primary -> standby: journal frames from `first` on, as (ts_ns, payload)."""

    epoch: Id
    first: Id
    items: list[tuple[int, bytes]]


class ReplBeat(Msg, tag=True, kw_only=True):
    epoch: Id
    next_seq: Id
    in_sync: bool = False  # the primary waits for this standby's acknowledgements


class ReplAck(Msg, tag=True, kw_only=True):
    """Standby -> primary: every input below `next_seq` is on the standby's disk too."""

    instance: Name
    epoch: Id
    next_seq: Id


ReplMsg = Union[ReplHello, ReplRole, ReplSnapshot, ReplBatch, ReplBeat, ReplAck]


class WitnessQuery(Msg, tag=True, kw_only=True):
    """A core's instance -> the witness (a control frame in its inbox). `propose`: a standby asks
    to promote to `epoch` (granted only if the witness has not heard the node's primary for a
    while either); otherwise a primary that waited too long for its standby asks which epoch is
    current before acting alone."""

    node: Name
    instance: Name
    epoch: Id
    propose: bool = False
    next_seq: Id = 0


class WitnessReply(Msg, tag=True, kw_only=True):
    node: Name
    granted: bool
    epoch: Id  # the epoch the witness knows as current for the node (after a grant: the new one)
    silent_ms: int
    reason: Name = ""


class PrimaryIs(Msg, tag=True, kw_only=True):
    """A core's new primary -> every node: send my node's inputs to `instance` from now on;
    frames of a lower epoch are refused."""

    node: Name
    instance: Name
    epoch: Id
    next_seq: Id = 0


class StandbyDetached(Msg, tag=True, kw_only=True):
    """Primary -> witness: my standby stopped answering, I go on alone from `next_seq`; no
    standby that lacks these inputs may be promoted."""

    node: Name
    epoch: Id
    next_seq: Id


ControlMsg = Union[Ready, Heartbeat]
AdminMsg = Union[AdminRequest, AdminReply]

# One message type per internal link, decoded by one typed decoder each.
NodeInbound = Union[
    Routed, NewOrder, Amend, Cancel, MassCancel, MarkPrice, SetPosition, ShiftPosition,
    OrderAccepted, OrderRejected, Trade, OrderCancelled, OrdersCancelled, OrderAmended,
    OrderTriggered, BookDelta, BookLevels, Report, Reply, Ping, Pong, AccountRisk,
    AccountRiskRequest, MaintenanceAlert, SpotTick, IndexMark, FundingRate, Regime, Notice,
    OracleMode, LiquidationStep, LiquidationResult, FeedControl, OracleSource, NetsimTable,
    LinkSeq, ResendFrom, ClockTick, EngineBatch, WitnessQuery, WitnessReply, PrimaryIs,
    StandbyDetached,
]

# What a journaled core's journal holds: what its inboxes take, and the inputs its own shell gives
# it that no other process may send (KeyTable).
JournalInbound = Union[NodeInbound, KeyTable]


class Codec:
    """One encoder and one typed batch decoder, created once per socket kind and reused."""

    __slots__ = ("_enc", "_dec", "_one")

    def __init__(self, message_type: object) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(list[message_type])  # type: ignore[valid-type]
        self._one = msgspec.msgpack.Decoder(message_type)

    def encode(self, messages: list) -> bytes:
        return self._enc.encode(messages)

    def decode(self, frame: bytes) -> list:
        """A frame holding a batch (a msgpack array) of messages."""
        return _decode(self._dec, frame)

    def decode_one(self, frame: bytes):
        """A frame holding one message."""
        return _decode(self._one, frame)

    def decode_request(self, frame: bytes):
        """A client frame is one message or a batch of messages; return a list either way. A bad
        batch raises the batch's error (naming the field), not the single-message reading's."""
        try:
            return self.decode(frame)
        except msgspec.ValidationError as batch_error:
            try:
                return [self.decode_one(frame)]
            except msgspec.ValidationError:
                raw = lenient_decode(frame)
                if isinstance(raw, list) and raw and isinstance(raw[0], list):
                    raise batch_error from None
                raise


def _decode(decoder: msgspec.msgpack.Decoder, frame: bytes):
    try:
        return decoder.decode(frame)
    except UnicodeDecodeError as exc:
        raise _invalid_utf8(exc) from None


def _invalid_utf8(exc: UnicodeDecodeError) -> msgspec.DecodeError:
    """msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8
    (msgspec issue #714); every caller handles DecodeError, so that is what a Codec raises."""
    return msgspec.DecodeError(f"invalid UTF-8 in a string: {exc.reason} at byte {exc.start}")


def field_at(cls: type, index: int) -> str | None:
    """'Type.field' at position `index` of a message's wire array ([tag, field, field, ...]): what
    msgspec's "at `$[index]`" points at, for a person to read; None past the fields."""
    fields = msgspec.structs.fields(cls)
    return f"{cls.__name__}.{fields[index - 1].name}" if 1 <= index <= len(fields) else None


def lenient_decode(frame: bytes):
    """The frame decoded without a schema, for reading what a refusal should mention; None when
    even that fails (bad UTF-8 in a string, say, which the typed decoder may not reach)."""
    try:
        return msgspec.msgpack.decode(frame)
    except Exception:  # best effort on bytes already known to be bad: never raise from here
        return None


INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what msgpack can carry as an integer


def wire_safe(value):
    """`value` with every integer msgpack cannot carry, in a dict or list (a reject's numbers:
    a notional of two 2**62 inputs, say), written as its decimal string; None if nothing changed.
    Typed integer fields stay as they are: their inputs are bounded so that they fit."""
    if isinstance(value, Struct):
        changes = {}
        for name in value.__struct_fields__:
            new = wire_safe(getattr(value, name))
            if new is not None:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else None
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            new = _wire_safe_item(item)
            changed |= new is not item
            out[key] = new
        return out if changed else None
    if isinstance(value, (list, tuple)):
        items = [_wire_safe_item(item) for item in value]
        if any(new is not old for new, old in zip(items, value)):
            return type(value)(items)
    return None


def _wire_safe_item(item):
    if type(item) is int and not INT64_MIN <= item <= UINT64_MAX:
        return str(item)
    new = wire_safe(item)
    return item if new is None else new


def encode_one(message: Msg) -> bytes:
    return msgspec.msgpack.encode(message)


def to_jsonable(obj):
    """Structs as dicts with their type name, recursively (wire structs are arrays)."""
    if isinstance(obj, msgspec.Struct):
        out = {"type": type(obj).__name__}
        for name in obj.__struct_fields__:
            out[name] = to_jsonable(getattr(obj, name))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
