"""Risk and ledger core: accounts, positions, margin, fees, funding. Pure and deterministic.

    engine.handle(message, now_ns) -> list[(destination, message)]

This module assembles the core and routes its inputs; each job lives in a module of its own, all
working on one state object (nodes/risk/state.py):

    state.py          what the core holds, the money check, state() and state_hash()
    margin.py         valuation: equity, IM, MM (ladder or stress grid), available, liq. prices
    reservations.py   what an open order reserves, re-priced as positions, marks, settings move
    admission.py      pre-trade checks of PlaceOrder / AmendOrder, then reserve and send
    account_ops.py    leverage, margin modes, isolated margin, deposits and withdrawals
    order_events.py   matching's answers: the order lifecycle (its transition table)
    settlement.py     fills: cash, fees, positions, isolated margin in and out
    oracle_inputs.py  marks, volatility regimes, funding settlement, the clock tick
    liquidation.py    the liquidator's steps: reduce, backstop, insurance, ADL; forced fees
    replies.py        refusals, acknowledgements and their explanation records
    views.py          AccountRisk for the liquidator, account and order views for clients

Accounting (all integers, atoms of collateral):
- `balance` is the cross wallet's settled cash: deposits - withdrawals, minus what was paid for
  contracts bought, plus what was received for contracts sold, minus fees, plus funding. Every
  fill moves exactly price x qty x atoms_per_tick_lot from buyer to seller.
- an isolated position holds its own cash (`iso_cash`), moved in from the cross balance when it
  opens (initial margin + fee) or by explicit transfer, and back out when it shrinks; its fills,
  fees and funding settle there, so an isolated loss never touches the cross wallet. A closed
  isolated position that ends below zero is made whole by the insurance fund.
- money is conserved by construction, checked after every event in the tests:
      sum(balance + isolated cash) + fee_pool + insurance_fund == deposits - withdrawals
- a position keeps `qty` (signed lots) and `cost` (signed atoms paid for the open contracts);
  entry price = cost / (qty x atoms_per_tick_lot), exact. Closing part of a position removes its
  proportional share of cost (truncated towards zero): that only moves value between "wallet" and
  "unrealized" inside one account.

Rounding, always against the account: fees and funding payments charged round up, rebates and
funding received round down (the funding remainder goes to the insurance fund); margin
requirements round up.

Margin: IM = notional / leverage, with the leverage capped by the ladder tier the notional falls
into, times the symbol's IM buffer for the current volatility regime (1 normally). MM comes from
the ladder. An open order reserves IM on its opening quantity at its worst fill price, the taker
fee on its whole quantity, and the immediate loss of a buy above (sell below) mark.
"""

from __future__ import annotations

from cluster.core import JournaledCore, Snapshottable
from cluster.protocol import (
    AccountRiskRequest, AdjustIsolatedMargin, AmendOrder, Cancel, CancelAll, CancelOrder,
    ClockTick, Deposit, Error, FundingRate, GetAccount, GetOrders, IndexMark, KeyTable,
    LiquidationStep, MassCancel, PlaceOrder, Regime, Reply, Routed, SetAccountMarginMode,
    SetLeverage, SetMarginMode, SetPortfolioAccess, Trade, Withdraw,
)
from nodes.risk.account_ops import AccountOps
from nodes.risk.admission import Admission
from nodes.risk.liquidation import Liquidation
from nodes.risk.margin import Margin
from nodes.risk.oracle_inputs import OracleInputs
from nodes.risk.order_events import OrderLifecycle
from nodes.risk.replies import Replies
from nodes.risk.reservations import Reservations
from nodes.risk.settlement import Settlement
from nodes.risk.state import LiqExec, RiskState  # noqa: F401 (LiqExec: tests name it here)
from nodes.risk.views import Views


class RiskEngine(RiskState, Margin, Reservations, Replies, Admission, AccountOps, OracleInputs,
                 OrderLifecycle, Settlement, Liquidation, Views, Snapshottable, JournaledCore):
    # ------------------------------------------------------------------ entry point

    def handle(self, msg, now_ns: int) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        t = type(msg)
        if t is Routed:
            self._request(msg, now_ns, out)
        elif t is Trade:
            for account in self._trade(msg, out):
                out.append(("liquidator", self.account_risk(account)))
        elif t is IndexMark:
            self._set_mark(msg.symbol, msg.mark, now_ns, out)
            self.mark_ages.on_mark(msg.symbol, msg.ts_ns, now_ns, out)
        elif t is FundingRate:
            self._funding(msg, now_ns, out)
        elif t is Regime:
            self._regime(msg, now_ns, out)
        elif t is LiquidationStep:
            self._liquidation_step(msg, out)
        elif t is ClockTick:
            self._tick(now_ns, out)
        elif t is KeyTable:  # which key may do what (nodes/risk/keys.py), from risk's shell
            self.keys.set(msg)
        elif t is AccountRiskRequest:  # a (re)started liquidator: every account it must watch
            for name, acct in self.accounts.items():
                if any(p.qty for p in acct.positions.values()):
                    out.append(("liquidator", self.account_risk(name)))
        else:
            self._engine_event(msg, out)
        return out

    # ------------------------------------------------------------------ requests

    def _request(self, msg: Routed, now_ns: int, out: list) -> None:
        body = msg.body
        acct = self.accounts.get(msg.account)
        if acct is None:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unknown_account", detail={"account": msg.account}))))
            return
        refused = self.keys.refusal(msg)  # by risk's own key table, not the message's scopes
        if refused is not None:  # the gateway let it through: a bug, a forged Routed, a revocation
            self._refuse(out, msg.ref, acct.name, refused[0], refused[1], now_ns)
            return
        t = type(body)
        if t is PlaceOrder:
            self._place(acct, msg.ref, body, now_ns, out)
        elif t is CancelOrder:
            out.append(("matching", Cancel(ref=msg.ref, account=acct.name, symbol=body.symbol,
                                           order_id=body.order_id,
                                           client_order_id=body.client_order_id)))
        elif t is AmendOrder:
            self._amend(acct, msg.ref, body, now_ns, out)
        elif t is CancelAll:
            out.append(("matching", MassCancel(ref=msg.ref, account=acct.name, symbol=body.symbol)))
        elif t is GetAccount:
            out.append(("gateway", Reply(ref=msg.ref, body=self.account_view(
                acct.name, body.req_id, body.fills))))
        elif t is GetOrders:
            out.append(("gateway", Reply(ref=msg.ref, body=self.orders_view(acct, body))))
        elif t is SetLeverage:
            self._set_leverage(acct, msg.ref, body, now_ns, out)
        elif t is SetMarginMode:
            self._set_mode(acct, msg.ref, body, now_ns, out)
        elif t is AdjustIsolatedMargin:
            self._adjust_isolated(acct, msg.ref, body, now_ns, out)
        elif t is SetAccountMarginMode:
            self._set_account_mode(acct, msg.ref, body, now_ns, out)
        elif t is Deposit or t is Withdraw:
            self._transfer(acct, msg.ref, body, now_ns, out)
        elif t is SetPortfolioAccess:
            self._set_portfolio_access(acct, msg.ref, body, now_ns, out)
        else:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unsupported_request", detail={"type": t.__name__}))))
