"""The risk core's state: what it holds (accounts, orders, marks, the fee pool and the insurance
fund), the money check over it, and its canonical form and hash. Every other module of the core
(nodes/risk/ledger.py lists them) works on this one object."""

from __future__ import annotations

import hashlib

import msgspec

from cluster.config import SymbolSpec
from cluster.rules import stress as sg
from nodes.risk.accounts import AccountState, OpenOrder
from nodes.risk.keys import KeyScopes
from nodes.risk.marks import FundingClock, MarkAges


E9 = 1_000_000_000
INSURANCE = "insurance"
_STRESS: list[sg.StressParams] = []


def default_stress_params() -> sg.StressParams:
    """The published parameter file, read once per process."""
    if not _STRESS:
        _STRESS.append(sg.load_params())
    return _STRESS[0]


class LiqExec:
    """A liquidation IOC on its way through the book: what it has done so far."""

    __slots__ = ("liquidation_id", "qty", "notional", "fee", "fund_delta")

    def __init__(self, liquidation_id: int, fund_delta: int = 0) -> None:
        self.liquidation_id = liquidation_id
        self.qty = 0
        self.notional = 0
        self.fee = 0
        # What its own fills did to the insurance fund (forced fees, deficits it covered). Not
        # the fund's change between placing and finishing the IOC: other liquidations' fills
        # and mark moves land in between, and were counted here twice over.
        self.fund_delta = fund_delta


class RiskState:
    """Everything the risk core holds; `state()` is all of it that decides what it does next."""

    def __init__(self, symbols: dict[str, SymbolSpec], deposits: dict[str, int],
                 max_open_orders: int = 200, insurance_fund: int = 0,
                 backstops: list[str] | None = None, max_mark_age_ns: int | None = None,
                 stress_params: sg.StressParams | None = None) -> None:
        self.specs = dict(symbols)
        # the published stress grid: a `portfolio` account's requirements (#24)
        self.stress_params = stress_params or default_stress_params()
        self.accounts = {name: AccountState(name, amount) for name, amount in sorted(deposits.items())}
        # The insurance fund is an account: it can hold positions it took over at bankruptcy.
        self.accounts.setdefault(INSURANCE, AccountState(INSURANCE, 0)).balance += insurance_fund
        self.deposits = sum(deposits.values()) + insurance_fund
        self.withdrawals = 0
        self.fee_pool = 0
        self.max_open_orders = max_open_orders
        self.backstops = [b for b in (backstops or []) if b in self.accounts]
        self.liq_orders: dict[int, LiqExec] = {}  # liquidation IOC order id -> its running result
        self.marks: dict[str, int] = {}
        self.mark_ages = MarkAges(max_mark_age_ns)  # past the age, a symbol is reduce-only
        self.funding_clock = FundingClock()  # each funding time settled once
        self.last: dict[str, int] = {}
        self.regimes: dict[str, str] = {s: "normal" for s in sorted(symbols)}
        self.orders: dict[int, OpenOrder] = {}
        self.pending: dict[int, int] = {}  # ref -> order_id sent but not yet answered by matching
        # symbol -> side -> ({worst price: {order_id: order}}, sorted worst prices): _mark_moved
        self._by_worst: dict[str, dict[int, tuple[dict, list]]] = {
            s: {1: ({}, []), -1: ({}, [])} for s in sorted(symbols)}
        self.next_order_id = 1
        self.keys = KeyScopes()  # risk's own view of each API key's account and scopes (#20)

    def derive(self) -> None:
        """After a restore: a snapshot written before risk kept its own key table (#20) has none,
        and restores as that node ran, with none told (its shell hands it the file's at start)."""
        if "keys" not in self.__dict__:
            self.keys = KeyScopes()
        # ... and one written before the portfolio mode needed an admin's permission (#24): an
        # account already in that mode had chosen it under the old rule and keeps it (an admin
        # may withdraw it); the others have none
        for acct in self.accounts.values():
            if not hasattr(acct, "portfolio_enabled"):
                acct.portfolio_enabled = acct.portfolio

    def fund_equity(self) -> int:
        """The insurance fund's cash plus the positions it took over, at mark."""
        return self.equity(self.accounts[INSURANCE])

    @property
    def insurance_fund(self) -> int:
        return self.accounts[INSURANCE].balance

    @insurance_fund.setter
    def insurance_fund(self, value: int) -> None:
        self.accounts[INSURANCE].balance = value

    def conservation(self) -> tuple[int, int]:
        """(money held everywhere, deposits - withdrawals): always equal."""
        held = self.fee_pool
        for a in self.accounts.values():
            held += a.balance + sum(p.iso_cash for p in a.positions.values())
        return held, self.deposits - self.withdrawals

    def state(self) -> dict:
        """Everything that decides what the engine does next, in a canonical order: the same
        input events give the same state (and state_hash), whatever the dicts' insertion order."""
        accounts = {}
        for name, a in sorted(self.accounts.items()):
            accounts[name] = {
                "balance": a.balance, "fees_paid": a.fees_paid, "order_margin": a.order_margin,
                "leverage": sorted(a.leverage.items()), "modes": sorted(a.modes.items()),
                "portfolio": a.portfolio, "portfolio_enabled": a.portfolio_enabled,
                "positions": sorted((s, p.qty, p.cost, p.mode, p.iso_cash, p.funding)
                                    for s, p in a.positions.items()),
                "orders": sorted((o.order_id, o.symbol, o.side, o.type, o.price, o.qty, o.remaining,
                                  o.reserve, o.reduce_only, o.trigger_price, o.accepted,
                                  o.client_order_id, o.slippage_ppm, o.worst, o.opening,
                                  o.closing, o.im, o.base, o.lossq, o.fee_close, o.close_cost,
                                  o.hold) for o in a.orders.values()),
                "sides": sorted((s, side, *totals) for (s, side), totals in a.sides.items()),
                "funding": list(a.funding_history), "fills": list(a.fills),
            }
        return {
            "accounts": accounts, "deposits": self.deposits, "withdrawals": self.withdrawals,
            "fee_pool": self.fee_pool, "next_order_id": self.next_order_id,
            "marks": sorted(self.marks.items()), "last": sorted(self.last.items()),
            "regimes": sorted(self.regimes.items()), "pending": sorted(self.pending.items()),
            "liquidations": sorted((oid, x.liquidation_id, x.qty, x.notional, x.fee, x.fund_delta)
                                   for oid, x in self.liq_orders.items()),
            "mark_ages": self.mark_ages.state(), "funding_clock": self.funding_clock.state(),
            "keys": self.keys.state(),
        }

    def state_hash(self) -> str:
        # JSON, not msgpack: a cost or notional may exceed 64 bits, which msgpack cannot carry.
        return hashlib.sha256(msgspec.json.encode(self.state())).hexdigest()
