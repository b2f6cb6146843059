"""Liquidator core (first step): watch every account with a position against the mark and report
the ones at or below maintenance. Pure: marks, account states and `now_ns` come in as arguments.

Trigger (the risk issue's rule): equity <= maintenance margin + forced-execution fee on the
position's notional at mark. The liquidation path itself (cancel, incremental reduction, backstop,
insurance fund, ADL) comes with the liquidation issue.
"""

from __future__ import annotations

from cluster.config import SymbolSpec
from cluster.protocol import AccountRisk, MaintenanceAlert
from cluster.ladder import maintenance_margin
from cluster.units import ceil_div

PPM = 1_000_000


class MaintenanceMonitor:
    def __init__(self, symbols: dict[str, SymbolSpec]) -> None:
        self.specs = dict(symbols)
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

    def on_mark(self, symbol: str, mark: int) -> None:
        if symbol in self.holders and self.marks.get(symbol) != mark:
            self.marks[symbol] = mark
            self._dirty.update(self.holders[symbol])

    def assess(self, account: str) -> tuple[int, int, int]:
        """(equity, maintenance margin, forced-execution fee) at the current marks."""
        state = self.accounts[account]
        equity, mm, fee = state.balance, 0, 0
        for symbol, (qty, cost) in state.positions.items():
            spec = self.specs[symbol]
            mark = self.marks.get(symbol)
            value = qty * mark * spec.atoms_per_tick_lot if mark else cost
            equity += value
            mm += maintenance_margin(spec.tiers, value)
            fee += ceil_div(abs(value) * spec.forced_fee_ppm, PPM)
        return equity, mm, fee

    def check(self, now_ns: int) -> list[MaintenanceAlert]:
        """Alerts for accounts that newly fell to or below maintenance since the last check."""
        alerts = []
        for account in self._dirty:
            equity, mm, fee = self.assess(account)
            if self.accounts[account].positions and equity <= mm + fee:
                if account not in self.below:
                    alert = MaintenanceAlert(
                        account=account, equity=equity, maintenance_margin=mm, forced_fee=fee,
                        marks={s: self.marks.get(s, 0) for s in self.accounts[account].positions},
                        ts_ns=now_ns)
                    self.below[account] = alert
                    alerts.append(alert)
            else:
                self.below.pop(account, None)
        self._dirty.clear()
        return alerts
