"""Account operations: leverage, margin mode (per symbol and for the account), isolated margin
transfers, deposits and withdrawals. Each is applied and acknowledged, or refused with the numbers
and changes nothing."""

from __future__ import annotations

from cluster.protocol import (
    MAX_UNITS, AdjustIsolatedMargin, Deposit, SetLeverage, SetMarginMode, SetAccountMarginMode,
    SetPortfolioAccess,
)
from cluster.rules.ladder import tier_for
from nodes.risk.accounts import AccountState


class AccountOps:
    """Settings and transfers requested by a client or an admin."""

    def _set_leverage(self, acct: AccountState, ref: int, body: SetLeverage, now_ns: int,
                      out: list) -> None:
        spec = self.specs.get(body.symbol)
        if spec is None:
            return self._refuse(out, ref, acct.name, "unknown_symbol", {"symbol": body.symbol}, now_ns)
        pos = acct.positions.get(body.symbol)
        value = abs(self._position_value(body.symbol, pos)) if pos else 0
        notional = value + (acct.pending_ticks_lots(body.symbol, 1) + acct.pending_ticks_lots(
            body.symbol, -1)) * spec.atoms_per_tick_lot
        tier = tier_for(spec.tiers, notional)
        allowed = min(spec.max_leverage, tier.max_leverage)
        if body.leverage > allowed:
            return self._refuse(out, ref, acct.name, "leverage_above_tier_max", {
                "symbol": body.symbol, "requested": body.leverage, "max_leverage": allowed,
                "tier": tier.number, "notional": notional}, now_ns)
        before = self._leverage(acct, body.symbol)
        acct.leverage[body.symbol] = body.leverage
        self._reprice(acct, body.symbol)
        problem = self._requirement_problem(acct, body.symbol)
        if problem is not None:
            acct.leverage[body.symbol] = before
            self._reprice(acct, body.symbol)
            return self._refuse(out, ref, acct.name, "leverage_change_insufficient_margin", {
                "symbol": body.symbol, "requested": body.leverage, "current": before, **problem},
                now_ns)
        self._ack(out, ref, acct.name, "leverage_changed", {
            "symbol": body.symbol, "from": before, "to": body.leverage, "tier": tier.number,
            "available": self.available(acct)}, now_ns)

    def _set_mode(self, acct: AccountState, ref: int, body: SetMarginMode, now_ns: int,
                  out: list) -> None:
        if body.symbol not in self.specs:
            return self._refuse(out, ref, acct.name, "unknown_symbol", {"symbol": body.symbol}, now_ns)
        before = acct.mode(body.symbol)
        if acct.portfolio and body.mode == "isolated":  # one wallet, one requirement
            return self._refuse(out, ref, acct.name, "isolated_in_portfolio_mode", {
                "symbol": body.symbol, "margin_mode": "portfolio"}, now_ns)
        pos = acct.positions.get(body.symbol)
        open_orders = acct.open_count(body.symbol)
        if before != body.mode and ((pos is not None and pos.qty) or open_orders):
            return self._refuse(out, ref, acct.name, "mode_change_with_position_or_orders", {
                "symbol": body.symbol, "position": pos.qty if pos else 0,
                "open_orders": open_orders, "mode": before}, now_ns)
        acct.modes[body.symbol] = body.mode
        self._ack(out, ref, acct.name, "margin_mode_changed", {
            "symbol": body.symbol, "from": before, "to": body.mode}, now_ns)

    def _set_account_mode(self, acct: AccountState, ref: int, body: SetAccountMarginMode,
                          now_ns: int, out: list) -> None:
        """Cross <-> portfolio for the account as a whole. Portfolio needs an admin's permission
        (SetPortfolioAccess: the venue decides who is priced as a portfolio) and every symbol in
        cross margin: the grid prices one wallet, and an isolated position is its own wallet with
        its own trigger, which the grid's offsets must not reach into. The switch is refused when
        it would leave the cross wallet short of its initial requirement (available < 0)."""
        before = "portfolio" if acct.portfolio else "cross"
        if body.mode == "portfolio" and not acct.portfolio_enabled:
            return self._refuse(out, ref, acct.name, "portfolio_not_enabled", {
                "account": acct.name, "margin_mode": before,
                "enabled_by": "an admin-scoped key: perpx account portfolio enable "
                              f"{acct.name} (SetPortfolioAccess)"}, now_ns)
        if body.mode == "portfolio":
            isolated = sorted(s for s in self.specs if acct.mode(s) == "isolated") or sorted(
                s for s, p in acct.positions.items() if p.isolated)
            if isolated:
                return self._refuse(out, ref, acct.name, "portfolio_with_isolated_symbols", {
                    "symbols": ",".join(isolated), "count": len(isolated),
                    "margin_mode": before}, now_ns)
        problem = self._switch_account_mode(acct, body.mode)
        if problem is not None:
            return self._refuse(out, ref, acct.name, "margin_mode_change_insufficient_margin",
                                problem, now_ns)
        self._ack(out, ref, acct.name, "account_margin_mode_changed",
                  self._account_mode_detail(acct, before, body.mode), now_ns)

    def _switch_account_mode(self, acct: AccountState, mode: str) -> dict | None:
        """Put the account in `mode`; when that changes the mode and leaves available < 0, put it
        back and return the numbers of the refusal."""
        before = "portfolio" if acct.portfolio else "cross"
        acct.portfolio = mode == "portfolio"
        available = self.available(acct)
        if before == mode or available >= 0:
            return None
        numbers = {"from": before, "to": mode, "available": available,
                   "required": -available, "equity": self.cross_equity(acct),
                   "order_margin": acct.order_margin,
                   "position_margin": self.position_margin(acct)}
        if acct.portfolio:
            numbers.update(self._portfolio_numbers(acct))
        acct.portfolio = before == "portfolio"
        numbers["position_margin_now"] = self.position_margin(acct)
        return numbers

    def _account_mode_detail(self, acct: AccountState, before: str, mode: str) -> dict:
        detail = {"from": before, "to": mode, "available": self.available(acct),
                  "maintenance_margin": self.maintenance_margin(acct)}
        if acct.portfolio and acct.positions:
            detail.update(self._portfolio_numbers(acct))
        return detail

    def _set_portfolio_access(self, admin: AccountState, ref: int, body: SetPortfolioAccess,
                              now_ns: int, out: list) -> None:
        """An admin allows an account the portfolio mode, or withdraws it (risk's key table has
        checked the admin scope). Withdrawn while the account is in portfolio mode: it goes back
        to cross margin now, not at its next switch (a withdrawal that left it priced by the grid
        would not withdraw anything), unless cross margin leaves it short of its initial
        requirement (only possible when the grid is not floored at the ladder, or the account is
        under water already): then it is refused with the numbers and nothing changes, since
        switching would put it closer to liquidation by an admin's hand; it must reduce first."""
        target = self.accounts.get(body.account)
        if target is None:
            return self._refuse(out, ref, admin.name, "unknown_account",
                                {"account": body.account}, now_ns)
        before = "portfolio" if target.portfolio else "cross"
        detail = {"account": target.name, "enabled": int(body.enabled),
                  "was_enabled": int(target.portfolio_enabled), "by": admin.name}
        if not body.enabled and target.portfolio:
            problem = self._switch_account_mode(target, "cross")
            if problem is not None:
                return self._refuse(out, ref, target.name, "portfolio_disable_insufficient_margin",
                                    {**detail, **problem}, now_ns)
            detail.update(self._account_mode_detail(target, before, "cross"))
        target.portfolio_enabled = body.enabled
        detail["margin_mode"] = "portfolio" if target.portfolio else "cross"
        self._ack(out, ref, target.name, "portfolio_access_changed", detail, now_ns)

    def _adjust_isolated(self, acct: AccountState, ref: int, body: AdjustIsolatedMargin,
                         now_ns: int, out: list) -> None:
        pos = acct.positions.get(body.symbol)
        if pos is None or not pos.isolated or not pos.qty:
            return self._refuse(out, ref, acct.name, "no_isolated_position", {
                "symbol": body.symbol, "mode": acct.mode(body.symbol) if body.symbol in self.specs
                else "unknown"}, now_ns)
        amount = body.amount
        if amount == 0:
            return self._refuse(out, ref, acct.name, "zero_amount", {"symbol": body.symbol}, now_ns)
        if amount > 0:
            available = self.available(acct)
            if amount > available:
                return self._refuse(out, ref, acct.name, "insufficient_available", {
                    "symbol": body.symbol, "amount": amount, "available": available}, now_ns)
        else:
            equity = self.isolated_equity(body.symbol, pos)
            im = self.initial_margin(acct, body.symbol, self._position_value(body.symbol, pos))
            pending = self._pending_close_cost(acct, body.symbol)
            removable = max(0, equity - im - pending)
            if -amount > removable:
                return self._refuse(out, ref, acct.name, "isolated_margin_below_requirement", {
                    "symbol": body.symbol, "requested": -amount, "removable": removable,
                    "isolated_equity": equity, "initial_margin": im,
                    "pending_close_cost": pending}, now_ns)
        acct.balance -= amount
        pos.iso_cash += amount
        self._ack(out, ref, acct.name, "isolated_margin_adjusted", {
            "symbol": body.symbol, "amount": amount, "isolated_margin": pos.iso_cash + pos.cost,
            "isolated_equity": self.isolated_equity(body.symbol, pos)}, now_ns)

    def _transfer(self, admin: AccountState, ref: int, body, now_ns: int, out: list) -> None:
        target = self.accounts.get(body.account)
        if target is None:
            return self._refuse(out, ref, admin.name, "unknown_account",
                                {"account": body.account}, now_ns)
        if type(body) is Deposit:
            if target.balance + body.amount > MAX_UNITS:  # every amount on the wire fits 2**62
                return self._refuse(out, ref, target.name, "balance_limit", {
                    "account": target.name, "amount": body.amount, "balance": target.balance,
                    "limit": MAX_UNITS}, now_ns)
            target.balance += body.amount
            self.deposits += body.amount
            return self._ack(out, ref, target.name, "deposit", {
                "account": target.name, "amount": body.amount, "balance": target.balance,
                "by": admin.name}, now_ns)
        available = self.available(target)
        if body.amount > available:
            return self._refuse(out, ref, target.name, "withdrawal_exceeds_available", {
                "account": target.name, "requested": body.amount, "available": available}, now_ns)
        target.balance -= body.amount
        self.withdrawals += body.amount
        self._ack(out, ref, target.name, "withdrawal", {
            "account": target.name, "amount": body.amount, "balance": target.balance,
            "by": admin.name}, now_ns)
