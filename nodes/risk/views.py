"""Views: what the liquidator is told of an account (AccountRisk), and what a client asks to see
(its account, its open orders, its ADL quantile)."""

from __future__ import annotations

from decimal import Decimal

from cluster.protocol import (
    STOP_TYPES, AccountRisk, AccountView, GetOrders, OrdersView, OrderView, PositionView,
)
from cluster.rules import adl
from cluster.rules.ladder import maintenance_margin, tier_for
from cluster.rules.units import PPM
from nodes.risk.accounts import AccountState
from nodes.risk.state import INSURANCE


class Views:
    """Read-only answers built from the state."""

    def account_risk(self, account: str) -> AccountRisk:
        acct = self.accounts[account]
        items = sorted(acct.positions.items())
        return AccountRisk(account=account, balance=acct.balance,
                           positions={s: (p.qty, p.cost) for s, p in items if p.qty},
                           isolated={s: p.iso_cash for s, p in items if p.isolated},
                           insurance_fund=self.fund_equity(),
                           leverage={s: self._leverage(acct, s) for s, p in items if p.qty},
                           portfolio=acct.portfolio)

    def adl_quantile(self, account: str, symbol: str) -> int:
        pos = self.accounts[account].positions.get(symbol)
        if pos is None or not pos.qty or account == INSURANCE:
            return 0
        ranked = adl.ranking(self._adl_candidates(symbol, 1 if pos.qty > 0 else -1))
        return adl.quantiles(ranked).get(account, 0)

    def orders_view(self, acct: AccountState, query: GetOrders) -> OrdersView:
        """The account's open orders (in one symbol, or all), oldest first."""
        orders = acct.orders.values() if not query.symbol else acct.orders_in(query.symbol)
        return OrdersView(req_id=query.req_id, account=acct.name, orders=[OrderView(
            order_id=o.order_id, symbol=o.symbol, side=o.side, type=o.type, price=o.price,
            qty=o.qty, remaining=o.remaining, trigger_price=o.trigger_price,
            reduce_only=o.reduce_only, client_order_id=o.client_order_id, reserved=o.reserve,
            status="pending" if not o.accepted else "untriggered" if o.type in STOP_TYPES
            else "new") for o in sorted(orders, key=lambda o: o.order_id)])

    def account_view(self, account: str, req_id: int = 0, fills: int = 20) -> AccountView:
        acct = self.accounts[account]
        cross_equity = self.cross_equity(acct)
        positions = []
        for symbol, pos in sorted(acct.positions.items()):
            if not pos.qty:
                continue
            spec = self.specs[symbol]
            value = self._position_value(symbol, pos)
            mm = maintenance_margin(spec.tiers, value)
            balance = self.isolated_equity(symbol, pos) if pos.isolated else cross_equity
            entry = Decimal(abs(pos.cost)) / Decimal(abs(pos.qty) * spec.atoms_per_tick_lot)
            liq, bankrupt = self._prices_for(acct, symbol, pos)
            positions.append(PositionView(
                symbol=symbol, qty=pos.qty, cost=pos.cost,
                entry_price=format(entry.quantize(Decimal("0.000001")).normalize(), "f"),
                mark=self._price(symbol), unrealized_pnl=value - pos.cost,
                initial_margin=self.initial_margin(acct, symbol, value), maintenance_margin=mm,
                leverage=self.effective_leverage(acct, symbol, abs(value)), mode=pos.mode,
                tier=tier_for(spec.tiers, value).number,
                margin_ratio_ppm=mm * PPM // balance if balance > 0 else PPM * 100,
                isolated_margin=pos.iso_cash + pos.cost if pos.isolated else 0,
                liquidation_price=liq, bankruptcy_price=bankrupt, funding_paid=pos.funding,
                adl_quantile=self.adl_quantile(account, symbol),
            ))
        pm = self.position_margin(acct, cross_only=True)
        return AccountView(
            req_id=req_id, account=account, balance=acct.balance,
            wallet_balance=acct.balance + sum(p.cost for p in acct.positions.values() if not p.isolated),
            equity=self.equity(acct), order_margin=acct.order_margin, position_margin=pm,
            available=cross_equity - pm - acct.order_margin,
            maintenance_margin=self.maintenance_margin(acct), fees_paid=acct.fees_paid,
            positions=positions, open_orders=len(acct.orders),
            isolated_margin=sum(p.iso_cash + p.cost for p in acct.positions.values() if p.isolated),
            im_buffer_ppm={s: self.specs[s].im_buffer_ppm[r] for s, r in self.regimes.items()
                           if r != "normal"},
            funding=list(acct.funding_history)[:20], fills=list(acct.fills)[:fills],
            margin_mode="portfolio" if acct.portfolio else "cross",
            portfolio=self._portfolio_numbers(acct) if acct.portfolio and acct.positions else {},
            portfolio_enabled=acct.portfolio_enabled,
            leverage_settings=dict(sorted(acct.leverage.items())),
        )
