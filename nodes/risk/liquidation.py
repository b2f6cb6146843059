"""Liquidation execution: the liquidator's steps (cancel the account's orders, reduce through the
book with an IOC, hand the position to a backstop, to the insurance fund, or by ADL to the
opposite side), the forced fee, and the insurance fund covering what an account cannot.

A reduce step's IOC: placed by _liquidation_step (`liq_orders[order_id] = LiqExec`), its fills
counted by Settlement._trade, and ended by _liquidation_order_done (filled, rejected or cancelled:
nodes/risk/order_events.py), which answers the liquidator with a LiquidationResult. The other
steps answer at once."""

from __future__ import annotations

from cluster.protocol import (
    Deleveraged, LiquidationResult, LiquidationStep, MassCancel, NewOrder, Report, ShiftPosition,
)
from cluster.rules import adl, backstop
from cluster.rules.bands import band_limits
from cluster.rules.margin import fee_due
from cluster.rules.units import PPM
from nodes.risk.accounts import AccountState
from nodes.risk.state import INSURANCE, LiqExec


class Liquidation:
    """LiquidationStep in, LiquidationResult out (with the fund's change)."""

    def _forced_fee(self, acct: AccountState, symbol: str, notional: int) -> int:
        """Charge the forced-execution fee of a liquidation fill to the insurance fund, never more
        than the margin balance left (a fee must not make the account bankrupt)."""
        spec = self.specs[symbol]
        fee = min(fee_due(notional, spec.forced_fee_ppm),
                  max(0, self._margin_balance(acct, symbol)))
        if fee:
            pos = acct.positions.get(symbol)
            if pos is not None and pos.isolated:
                pos.iso_cash -= fee
            else:
                acct.balance -= fee
            acct.fees_paid += fee
            self.insurance_fund += fee
        return fee

    def _liquidation_result(self, out: list, liquidation_id: int, kind: str, account: str,
                            symbol: str, qty: int = 0, notional: int = 0, fee: int = 0,
                            fund_delta: int = 0, counterparties=None, reason: str = "") -> None:
        acct = self.accounts.get(account)
        pos = acct.positions.get(symbol) if acct is not None else None
        if acct is not None:
            fund = self.insurance_fund
            self._cover_deficit(acct)
            fund_delta += self.insurance_fund - fund  # a deficit the fund made good ends the step
            out.append(("liquidator", self.account_risk(account)))
        for name, _, _ in counterparties or ():
            out.append(("liquidator", self.account_risk(name)))
        out.append(("liquidator", LiquidationResult(
            liquidation_id=liquidation_id, kind=kind, account=account, symbol=symbol, qty=qty,
            notional=notional, fee=fee, fund_delta=fund_delta,
            position_after=pos.qty if pos is not None else 0,
            counterparties=list(counterparties or ()), reason=reason)))

    def _cover_deficit(self, acct: AccountState) -> None:
        """A cross account left with no position and a negative wallet: the fund makes it whole."""
        if acct.name != INSURANCE and acct.balance < 0 and not any(
                p.qty for p in acct.positions.values() if not p.isolated):
            self.insurance_fund += acct.balance
            acct.balance = 0

    def _liquidation_order_done(self, order_id: int, account: str, symbol: str, out: list,
                                reason: str = "") -> None:
        liq = self.liq_orders.pop(order_id)
        self._liquidation_result(out, liq.liquidation_id, "reduce", account, symbol, qty=liq.qty,
                                 notional=liq.notional, fee=liq.fee, fund_delta=liq.fund_delta,
                                 reason=reason)

    def _liquidation_step(self, msg: LiquidationStep, out: list) -> None:
        acct = self.accounts.get(msg.account)
        spec = self.specs.get(msg.symbol)
        pos = acct.positions.get(msg.symbol) if acct is not None and spec is not None else None
        lid = msg.liquidation_id
        if pos is None or not pos.qty:
            return self._liquidation_result(out, lid, msg.kind, msg.account, msg.symbol,
                                            reason="no_position")
        if msg.kind != "cancel" and msg.price <= 0:
            return self._liquidation_result(out, lid, msg.kind, msg.account, msg.symbol,
                                            reason="no_price")
        if msg.kind == "cancel":
            out.append(("matching", MassCancel(ref=-lid, account=msg.account, symbol=msg.symbol)))
            return
        qty = min(msg.qty or abs(pos.qty), abs(pos.qty))
        closing_side = -1 if pos.qty > 0 else 1
        if msg.kind == "reduce":
            mark = self._price(msg.symbol)
            price = msg.price
            if mark:  # keep the limit inside the band the book accepts (stricter, never looser)
                low, high = band_limits(mark, spec.band_ppm)
                price = max(price, low) if closing_side < 0 else min(price, high)
                if price > high if closing_side < 0 else price < low:
                    # The bankruptcy price is past the band's far edge (a gap): the book cannot
                    # take the close at or better than bankruptcy inside the band, and matching
                    # would refuse the order. Nothing is sent; the liquidator goes on to the
                    # backstop, which takes it at the bankruptcy price.
                    return self._liquidation_result(
                        out, lid, msg.kind, msg.account, msg.symbol,
                        reason=f"bankruptcy_price_outside_band: {msg.price} vs {low}..{high}")
            order_id = self.next_order_id
            self.next_order_id += 1
            self.liq_orders[order_id] = LiqExec(lid)
            out.append(("matching", NewOrder(
                ref=-lid, order_id=order_id, account=msg.account, symbol=msg.symbol,
                side=closing_side, qty=qty, type="limit", price=price, tif="IOC",
                reduce_only=True, stp="cancel_maker")))
            return
        fund_before = self.fund_equity()
        if msg.kind == "backstop":
            takers = self._backstop_takers(msg.symbol, qty, msg.price, 1 if pos.qty > 0 else -1)
        elif msg.kind == "insurance":
            takers = [(INSURANCE, qty)]
        else:
            takers = self._adl_takers(msg, qty, out)
        moved = []
        for name, lots in takers:
            self._transfer_position(acct, self.accounts[name], msg.symbol, lots, msg.price, out)
            moved.append((name, lots, msg.price))
        done = sum(lots for _, lots in takers)
        self._liquidation_result(out, lid, msg.kind, msg.account, msg.symbol, qty=done,
                                 notional=done * msg.price * spec.atoms_per_tick_lot,
                                 fund_delta=self.fund_equity() - fund_before, counterparties=moved,
                                 reason="" if done else "no_taker")

    def _backstop_takers(self, symbol: str, qty: int, price: int,
                         side: int) -> list[tuple[str, int]]:
        """The backstop auction (cluster/rules/backstop.py), each backstop valued as risk values
        it: its available margin, its leverage on the notional taken, its mode in the symbol."""
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        bidders = []
        for name in self.backstops:
            acct = self.accounts[name]
            bidders.append(backstop.Bidder(
                name=name, available=self.available(acct),
                leverage=self.effective_leverage(acct, symbol, qty * price * mult),
                cross=acct.mode(symbol) == "cross"))
        return backstop.auction(bidders, qty, price, self._price(symbol) or price, side, mult,
                                spec.im_buffer_ppm[self.regimes[symbol]])

    def _adl_takers(self, msg: LiquidationStep, qty: int, out: list) -> list[tuple[str, int]]:
        bankrupt = self.accounts[msg.account].positions[msg.symbol]
        ranked = adl.ranking(self._adl_candidates(msg.symbol, -1 if bankrupt.qty > 0 else 1,
                                                  exclude=msg.account))
        takers, left = [], qty
        for rank, (name, score) in enumerate(ranked, 1):
            if score <= 0 or not left:
                break
            pos = self.accounts[name].positions[msg.symbol]
            take = min(left, abs(pos.qty))
            takers.append((name, take))
            left -= take
            out.append(("gateway", Report(account=name, event=Deleveraged(
                liquidation_id=msg.liquidation_id, account=name, symbol=msg.symbol,
                qty=take if pos.qty > 0 else -take, price=msg.price, rank=rank,
                score_ppm=int(score * PPM)))))
        return takers

    def _adl_candidates(self, symbol: str, side: int, exclude: str = ""):
        """(account, qty, cost, value, margin balance) of every position on `side` of `symbol`."""
        out = []
        for name, acct in self.accounts.items():
            pos = acct.positions.get(symbol)
            if name in (exclude, INSURANCE) or pos is None or not pos.qty or (pos.qty > 0) != (side > 0):
                continue
            out.append((name, pos.qty, pos.cost, self._position_value(symbol, pos),
                        self._margin_balance(acct, symbol)))
        return out

    def _transfer_position(self, src: AccountState, dst: AccountState, symbol: str, qty: int,
                           price: int, out: list) -> None:
        """`qty` lots of src's position move to dst at `price`, like a trade without fees."""
        side = -1 if src.positions[symbol].qty > 0 else 1  # src closes
        held = {acct.name: acct.positions[symbol].qty if symbol in acct.positions else 0
                for acct in (src, dst)}
        self._settle(src, symbol, side, qty, price, 0)
        self._settle(dst, symbol, -side, qty, price, 0)
        for acct, change in ((src, side * qty), (dst, -side * qty)):
            self._reprice(acct, symbol)
            self._release_shrunk(acct, symbol, held[acct.name])
            # a change, not risk's quantity: matching may have traded the account since
            out.append(("matching", ShiftPosition(account=acct.name, symbol=symbol, change=change)))
