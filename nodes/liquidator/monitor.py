"""Liquidator core (first step): watch every account with a position against the mark and report
the ones at or below maintenance. Pure: marks, account states and `now_ns` come in as arguments.

Trigger (cluster/rules/margin.py, the rule risk values accounts by): equity <= maintenance margin +
forced-execution fee on the position's notional at mark, for the cross wallet as a whole and for
each isolated position on its own margin (an alert's `account` is then "ACCOUNT:SYMBOL"). The liquidation path itself (cancel, incremental reduction, backstop,
insurance fund, ADL) comes with the liquidation issue.

An account in the `portfolio` margin mode (AccountRisk.portfolio) is held to the one requirement
cluster/rules/stress.py defines for it (portfolio_margin: the stress grid when higher than the
summed ladder), each leg's liquidity add-on walked in the book this node mirrors, so that it is
liquidated exactly when its equity falls to that requirement + the forced fee.
"""

from __future__ import annotations

from cluster.config import SymbolSpec
from cluster.protocol import AccountRisk, MaintenanceAlert
from cluster.rules import margin as rules
from cluster.rules import stress as sg
from cluster.rules.ladder import maintenance_margin


class MaintenanceMonitor:
    def __init__(self, symbols: dict[str, SymbolSpec], stress_params: sg.StressParams | None = None,
                 books: dict | None = None) -> None:
        """`books`: symbol -> a mirror with `bids`/`asks` ({price: lots}), for the liquidity
        add-on of portfolio accounts; `stress_params` default to the published file."""
        self.specs = dict(symbols)
        self._stress_params = stress_params
        self.books = books or {}
        # account -> (legs, summed ladder MM) of its last assessment, for explaining a trigger
        self.portfolio: dict[str, tuple[list[sg.Leg], int]] = {}
        self.marks: dict[str, int] = {}
        self.accounts: dict[str, AccountRisk] = {}
        self.holders: dict[str, dict[str, None]] = {s: {} for s in sorted(symbols)}
        self.below: dict[str, MaintenanceAlert] = {}
        self._dirty: dict[str, None] = {}

    def on_account(self, state: AccountRisk) -> None:
        old = self.accounts.get(state.account)
        if old is not None:
            for symbol in old.positions:
                self.holders.get(symbol, {}).pop(state.account, None)
        self.accounts[state.account] = state
        for symbol, (qty, _) in state.positions.items():
            if qty and symbol in self.holders:
                self.holders[symbol][state.account] = None
        self._dirty[state.account] = None

    @property
    def stress_params(self) -> sg.StressParams:
        if self._stress_params is None:
            self._stress_params = sg.load_params()
        return self._stress_params

    def on_book(self, symbol: str) -> None:
        """The book moved: a portfolio account holding the symbol has a new liquidity add-on."""
        for account in self.holders.get(symbol, ()):
            if self.accounts[account].portfolio:
                self._dirty[account] = None

    def on_mark(self, symbol: str, mark: int) -> None:
        if symbol in self.holders and self.marks.get(symbol) != mark:
            self.marks[symbol] = mark
            self._dirty.update(self.holders[symbol])

    def _position(self, symbol: str, qty: int, cost: int) -> tuple[int, int, int]:
        """(value at mark, maintenance margin, forced-execution fee) of one position."""
        spec = self.specs[symbol]
        value = rules.position_value(qty, cost, self.marks.get(symbol, 0), spec.atoms_per_tick_lot)
        return value, maintenance_margin(spec.tiers, value), rules.fee_due(value, spec.forced_fee_ppm)

    def _leg(self, symbol: str, qty: int, cost: int) -> sg.Leg:
        """A position as the stress grid takes it, with the mirrored book it would close into."""
        mult = self.specs[symbol].atoms_per_tick_lot
        mark = rules.mark_or_entry(self.marks.get(symbol, 0), qty, cost, mult)
        book = self.books.get(symbol)
        bids = sorted(book.bids.items(), reverse=True) if book is not None else None
        asks = sorted(book.asks.items()) if book is not None else None
        return sg.Leg(symbol=symbol, qty=qty, mark=mark, mult=mult, bids=bids, asks=asks)

    def assess(self, account: str, replace: dict[str, tuple[int, int]] | None = None
               ) -> tuple[int, int, int]:
        """(equity, maintenance margin, forced-execution fee) of the cross wallet at the marks;
        `replace` (symbol -> (qty, cost)): the requirement and fee as they would be with those
        positions instead (the part of a close the liquidator plans), the equity as it is."""
        state = self.accounts[account]
        values, mm, fee = [], 0, 0
        legs = []
        for symbol, (qty, cost) in state.positions.items():
            if symbol in state.isolated:
                continue
            value, p_mm, p_fee = self._position(symbol, qty, cost)
            values.append(value)
            if replace and symbol in replace:
                qty, cost = replace[symbol]
                _, p_mm, p_fee = self._position(symbol, qty, cost)
            mm += p_mm
            fee += p_fee
            if state.portfolio and qty:
                legs.append(self._leg(symbol, qty, cost))
        if state.portfolio and legs:
            if replace is None:
                self.portfolio[account] = (legs, mm)
            mm = sg.portfolio_margin(self.stress_params, legs, mm, 0, explain=False).maintenance
        return rules.cross_equity(state.balance, values), mm, fee

    def explain_portfolio(self, account: str) -> sg.PortfolioMargin | None:
        """The last assessment of a portfolio account, with its explanation."""
        last = self.portfolio.get(account)
        return sg.portfolio_margin(self.stress_params, *last, 0) if last is not None else None

    def assess_isolated(self, account: str, symbol: str) -> tuple[int, int, int]:
        state = self.accounts[account]
        qty, cost = state.positions[symbol]
        value, mm, fee = self._position(symbol, qty, cost)
        return rules.isolated_equity(state.isolated[symbol], value), mm, fee

    def _subjects(self, account: str):
        """(key, symbols, (equity, mm, fee)) for the cross wallet and each isolated position."""
        state = self.accounts[account]
        cross = [s for s in state.positions if s not in state.isolated]
        if cross:
            yield account, cross, self.assess(account)
        for symbol in state.isolated:
            if symbol in state.positions:
                yield f"{account}:{symbol}", [symbol], self.assess_isolated(account, symbol)

    def check(self, now_ns: int) -> list[MaintenanceAlert]:
        """Alerts for margin balances (cross wallet, or one isolated position) that newly fell
        to or below maintenance since the last check."""
        alerts = []
        for account in self._dirty:
            seen = set()
            for key, symbols, (equity, mm, fee) in self._subjects(account):
                seen.add(key)
                if rules.triggered(equity, mm, fee):
                    if key not in self.below:
                        alert = MaintenanceAlert(
                            account=key, equity=equity, maintenance_margin=mm, forced_fee=fee,
                            marks={s: self.marks.get(s, 0) for s in symbols}, ts_ns=now_ns)
                        self.below[key] = alert
                        alerts.append(alert)
                else:
                    self.below.pop(key, None)
            for key in [k for k in self.below if k.split(":")[0] == account and k not in seen]:
                del self.below[key]  # that position is gone
        self._dirty.clear()
        return alerts
