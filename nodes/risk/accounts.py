"""The risk node's account records (plain data; the rules live in the modules listed in
nodes/risk/ledger.py)."""

from __future__ import annotations

from collections import deque

from cluster.protocol import Fill, FundingEntry, NewOrder

FUNDING_HISTORY = 100
FILL_HISTORY = 100


class Position:
    """One-way position of one account in one symbol.

    `cost` is the signed atoms paid for the open contracts (entry = cost / (qty x mult)).
    An isolated position also owns `iso_cash`: its ring-fenced collateral, into which its fills,
    fees and funding settle; its margin balance is iso_cash + qty x mark x mult.
    """

    __slots__ = ("qty", "cost", "mode", "iso_cash", "funding")

    def __init__(self, mode: str) -> None:
        self.qty = 0
        self.cost = 0
        self.mode = mode
        self.iso_cash = 0
        self.funding = 0  # net atoms paid (+) or received (-) while open

    @property
    def isolated(self) -> bool:
        return self.mode == "isolated"


def pending_units(price: int, trigger_price: int, remaining: int) -> int:
    """Ticks x lots an open order would add to its side's position: at its limit price, or, for
    a stop or take-profit without one (market on trigger), at its trigger price."""
    return (price or trigger_price) * remaining


class OpenOrder:
    """An open order as risk holds it. Besides its terms, what its reservation is made of (set by
    the ledger's pricing, see RiskEngine._reprice): `worst` is the worst price it can fill at
    (its limit, or a market order's protection price); `closing`/`opening` split its remaining
    lots into the part that closes the position (capacity shared oldest order first) and the part
    that opens; `im` is its share of its side's initial margin; `base` is im + the fees the cross
    wallet pays; `lossq` the lots whose fill below (above) mark the cross wallet pays;
    `close_cost` what closing costs an isolated position (fee + loss against mark); `hold` what a
    margin-raising amend holds until matching answers it."""

    __slots__ = ("order_id", "account", "symbol", "side", "price", "qty", "remaining", "reserve",
                 "reduce_only", "type", "trigger_price", "ref", "accepted", "client_order_id",
                 "counted", "slippage_ppm", "worst", "opening", "closing", "im", "base", "lossq",
                 "fee_close", "close_cost", "hold")

    def __init__(self, cmd: NewOrder) -> None:
        self.order_id = cmd.order_id
        self.account = cmd.account
        self.symbol = cmd.symbol
        self.side = cmd.side
        self.price = cmd.price
        self.qty = cmd.qty
        self.remaining = cmd.qty
        self.reserve = 0
        self.counted = 0  # pending_units this order adds to its account's pending total
        self.reduce_only = cmd.reduce_only
        self.type = cmd.type
        self.trigger_price = cmd.trigger_price
        self.ref = cmd.ref
        self.accepted = False
        self.client_order_id = cmd.client_order_id
        self.slippage_ppm = cmd.max_slippage_ppm
        self.worst = cmd.price
        self.opening = self.closing = self.im = self.base = self.lossq = 0
        self.fee_close = self.close_cost = self.hold = 0


class AccountState:
    """`balance` is the cross wallet's settled cash; isolated collateral sits in its positions."""

    __slots__ = ("name", "balance", "fees_paid", "positions", "orders", "order_margin",
                 "leverage", "modes", "funding_history", "fills", "_by_symbol", "_pending",
                 "_by_coid", "sides", "portfolio", "portfolio_enabled")

    def __init__(self, name: str, balance: int) -> None:
        self.name = name
        self.balance = balance
        self.fees_paid = 0
        self.positions: dict[str, Position] = {}
        self.orders: dict[int, OpenOrder] = {}
        self.order_margin = 0
        self.leverage: dict[str, int] = {}
        self.modes: dict[str, str] = {}  # symbol -> "cross" | "isolated" (default cross)
        self.funding_history: deque[FundingEntry] = deque(maxlen=FUNDING_HISTORY)
        self.fills: deque[Fill] = deque(maxlen=FILL_HISTORY)  # the account's latest, newest first
        # Kept in step with `orders` by add_order/recount/remove_order, so that pre-trade checks
        # cost O(1) however many orders are in flight (a busy account has hundreds).
        self._by_symbol: dict[str, dict[int, OpenOrder]] = {}
        self._pending: dict[tuple[str, int], int] = {}  # (symbol, side) -> sum of pending_units
        # client order id -> the open order matching knows by it (the first placed: a resubmission
        # is matching's duplicate, dropped when its answer comes), for amends that name it so.
        self._by_coid: dict[str, OpenOrder] = {}
        # (symbol, side) -> [remaining lots of every order, opening value (atoms), initial margin
        # of that opening value]: what a new order on that side adds to (RiskEngine._price_new).
        self.sides: dict[tuple[str, int], list[int]] = {}
        # The account's margin mode as a whole: False "cross" (each symbol's ladder, summed),
        # True "portfolio" (cluster/rules/stress.py portfolio_margin; no isolated symbol then)
        self.portfolio = False
        # An admin allowed the portfolio mode (SetPortfolioAccess): only then may the account's
        # own key select it
        self.portfolio_enabled = False

    def mode(self, symbol: str) -> str:
        return self.modes.get(symbol, "cross")

    def orders_in(self, symbol: str) -> list[OpenOrder]:
        return list(self._by_symbol.get(symbol, {}).values())

    def open_count(self, symbol: str) -> int:
        return len(self._by_symbol.get(symbol, ()))

    def pending_ticks_lots(self, symbol: str, side: int) -> int:
        """Sum of pending_units of the open orders on `side` that are not reduce-only."""
        return self._pending.get((symbol, side), 0)

    def order_by_client_id(self, client_order_id: str) -> OpenOrder | None:
        return self._by_coid.get(client_order_id) if client_order_id else None

    def side_totals(self, symbol: str, side: int) -> list[int]:
        return self.sides.get((symbol, side)) or [0, 0, 0]

    def add_order(self, order: OpenOrder, mult: int) -> None:
        totals = self.sides.setdefault((order.symbol, order.side), [0, 0, 0])
        totals[0] += order.remaining
        totals[1] += order.worst * order.opening * mult
        totals[2] += order.im
        self.orders[order.order_id] = order
        self._by_symbol.setdefault(order.symbol, {})[order.order_id] = order
        if order.client_order_id:
            self._by_coid.setdefault(order.client_order_id, order)
        self.recount(order)

    def recount(self, order: OpenOrder) -> None:
        """Call after an order's price, trigger, remaining or flags change."""
        now = 0 if order.reduce_only else pending_units(order.price or order.worst,
                                                        order.trigger_price, order.remaining)
        if now != order.counted:
            key = (order.symbol, order.side)
            self._pending[key] = self._pending.get(key, 0) + now - order.counted
            order.counted = now

    def remove_order(self, order: OpenOrder, mult: int) -> None:
        totals = self.sides.get((order.symbol, order.side))
        if totals is not None:  # over-counts the rest until the next re-pricing: never under
            totals[0] -= order.remaining
            totals[1] -= order.worst * order.opening * mult
            totals[2] -= order.im
        if order.counted:
            key = (order.symbol, order.side)
            self._pending[key] -= order.counted
            order.counted = 0
        del self.orders[order.order_id]
        if order.client_order_id and self._by_coid.get(order.client_order_id) is order:
            del self._by_coid[order.client_order_id]
        mine = self._by_symbol[order.symbol]
        del mine[order.order_id]
        if not mine:
            del self._by_symbol[order.symbol]

    def check_indexes(self) -> None:
        """AssertionError if the incremental indexes disagree with `orders` (tests call it)."""
        by_symbol: dict[str, set[int]] = {}
        pending: dict[tuple[str, int], int] = {}
        for o in self.orders.values():
            by_symbol.setdefault(o.symbol, set()).add(o.order_id)
            if not o.reduce_only:
                pending[(o.symbol, o.side)] = pending.get((o.symbol, o.side), 0) + \
                    pending_units(o.price or o.worst, o.trigger_price, o.remaining)
        assert by_symbol == {s: set(d) for s, d in self._by_symbol.items()}, "order index out of step"
        for coid, o in self._by_coid.items():
            assert self.orders.get(o.order_id) is o and o.client_order_id == coid, "coid index"
        assert {o.client_order_id for o in self.orders.values() if o.client_order_id} == \
            set(self._by_coid), "an open order's client id is not indexed"
        assert {k: v for k, v in pending.items() if v} == \
            {k: v for k, v in self._pending.items() if v}, "pending notional out of step"
