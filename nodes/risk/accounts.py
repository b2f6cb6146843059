"""The risk node's account records (plain data; the rules live in ledger.py)."""

from __future__ import annotations

from collections import deque

from cluster.protocol import FundingEntry, NewOrder

FUNDING_HISTORY = 100


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


class OpenOrder:
    __slots__ = ("order_id", "account", "symbol", "side", "price", "qty", "remaining", "reserve",
                 "reduce_only", "type", "trigger_price", "ref", "accepted", "client_order_id")

    def __init__(self, cmd: NewOrder) -> None:
        self.order_id = cmd.order_id
        self.account = cmd.account
        self.symbol = cmd.symbol
        self.side = cmd.side
        self.price = cmd.price
        self.qty = cmd.qty
        self.remaining = cmd.qty
        self.reserve = 0
        self.reduce_only = cmd.reduce_only
        self.type = cmd.type
        self.trigger_price = cmd.trigger_price
        self.ref = cmd.ref
        self.accepted = False
        self.client_order_id = cmd.client_order_id


class AccountState:
    """`balance` is the cross wallet's settled cash; isolated collateral sits in its positions."""

    __slots__ = ("name", "balance", "fees_paid", "positions", "orders", "order_margin",
                 "leverage", "modes", "funding_history")

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

    def mode(self, symbol: str) -> str:
        return self.modes.get(symbol, "cross")

    def orders_in(self, symbol: str) -> list[OpenOrder]:
        return [o for o in self.orders.values() if o.symbol == symbol]
