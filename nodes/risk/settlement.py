"""Fill settlement: a trade books both sides (cash, fees, position, isolated margin moves), and an
isolated position that shrinks or closes gives back what it no longer needs."""

from __future__ import annotations

from cluster.protocol import Fill, Report, Trade
from cluster.rules.margin import fee_due
from nodes.risk.accounts import AccountState, Position


class Settlement:
    """Trades into cash and positions."""

    def _trade(self, ev: Trade, out: list) -> tuple[str, str]:
        spec = self.specs[ev.symbol]
        notional = ev.price * ev.qty * spec.atoms_per_tick_lot
        self.last[ev.symbol] = ev.price
        liq = self.liq_orders.get(ev.taker_order_id)
        fund_before = self.fund_equity() if liq is not None else 0  # one trade: marks stand still
        taker_fee = 0 if liq is not None else fee_due(notional, spec.taker_fee_ppm)
        maker_fee = fee_due(notional, spec.maker_fee_ppm)  # a rebate (< 0) rounds toward zero
        for account, order_id, side, remaining, fee, liquidity in (
            (ev.taker_account, ev.taker_order_id, ev.taker_side, ev.taker_remaining, taker_fee, "taker"),
            (ev.maker_account, ev.maker_order_id, -ev.taker_side, ev.maker_remaining, maker_fee, "maker"),
        ):
            acct = self.accounts[account]
            held = acct.positions.get(ev.symbol)
            qty_before = held.qty if held is not None else 0
            if liq is not None and liquidity == "taker":
                # the forced fee is charged inside the settlement: before a closed isolated
                # position's cash goes back to the cross wallet, so it is capped by its margin
                fee, realized = self._settle(acct, ev.symbol, side, ev.qty, ev.price, fee,
                                             forced_notional=notional)
                liq.qty += ev.qty
                liq.notional += notional
                liq.fee += fee
            else:
                _, realized = self._settle(acct, ev.symbol, side, ev.qty, ev.price, fee)
            order = self.orders.get(order_id)
            coid = order.client_order_id if order is not None else ""
            if order is not None:
                order.remaining = remaining
                if remaining == 0:
                    self._forget(order, reprice=False)  # re-priced just below
                else:
                    acct.recount(order)
            self._reprice(acct, ev.symbol)  # the position changed what orders open and close
            self._release_shrunk(acct, ev.symbol, qty_before)
            fill = Fill(seq=ev.seq, trade_id=ev.trade_id, order_id=order_id, account=account,
                        symbol=ev.symbol, side=side, price=ev.price, qty=ev.qty,
                        remaining=remaining, liquidity=liquidity, fee=fee, client_order_id=coid,
                        realized_pnl=realized)
            acct.fills.appendleft(fill)
            out.append(("gateway", Report(account=account, event=fill)))
        if liq is not None:
            liq.fund_delta += self.fund_equity() - fund_before
            if ev.taker_remaining == 0:
                self._liquidation_order_done(ev.taker_order_id, ev.taker_account, ev.symbol, out)
        return (ev.taker_account, ev.maker_account)

    def _settle(self, acct: AccountState, symbol: str, side: int, qty: int, price: int,
                fee: int, forced_notional: int = 0) -> tuple[int, int]:
        """Book one side of a fill: cash, fee, position, and the isolated margin moves. A
        liquidation fill (`forced_notional`) is charged its forced fee once the fill is booked
        and before an isolated position's cash goes back. Returns (that fee, the realized PnL
        of the closing part: its proceeds less the cost it takes off the position)."""
        mult = self.specs[symbol].atoms_per_tick_lot
        acct.fees_paid += fee
        self.fee_pool += fee
        forced = realized = 0
        pos = acct.positions.get(symbol)
        if pos is None:
            pos = acct.positions[symbol] = Position(acct.mode(symbol))
        closing = min(qty, abs(pos.qty)) if pos.qty and (pos.qty > 0) != (side > 0) else 0
        opening = qty - closing
        fee_close = fee * closing // qty
        fee_open = fee - fee_close
        if closing:
            before = abs(pos.qty)
            self._pay(acct, pos, side * price * closing * mult + fee_close)
            cost_before = pos.cost
            if closing == before:
                pos.cost = 0
            else:
                share = abs(pos.cost) * closing // before
                pos.cost -= share if pos.cost > 0 else -share
            realized = -side * price * closing * mult - (cost_before - pos.cost)
            pos.qty += side * closing
            if forced_notional:
                forced = self._forced_fee(acct, symbol, forced_notional)
            if pos.isolated and not pos.qty:  # closed: all its cash goes back (or the fund pays)
                self._release_isolated(acct, symbol, pos)
            # a partial close releases margin only once the orders are re-priced
            # (`_release_shrunk`): what the resting closes still cost must stay in the position
        elif forced_notional:
            forced = self._forced_fee(acct, symbol, forced_notional)
        if opening:
            value = price * opening * mult
            if pos.isolated:
                # bring in from the cross wallet the opening margin, the fee and the loss at once
                # of a fill worse than the mark, so that the position starts with its IM at mark
                # (without the loss, a 100x long bought 1.2% above mark began below its trigger)
                mark = self._price(symbol)
                gap = side * (price - mark) if mark else 0
                move = max(0, self.initial_margin(acct, symbol, value, tier_notional=abs(
                    pos.cost) + value) + fee_open + (gap * opening * mult if gap > 0 else 0))
                acct.balance -= move
                pos.iso_cash += move
            self._pay(acct, pos, side * value + fee_open)
            pos.qty += side * opening
            pos.cost += side * value
        if pos.qty == 0 and not pos.iso_cash:
            del acct.positions[symbol]
        return forced, realized

    @staticmethod
    def _pay(acct: AccountState, pos: Position, amount: int) -> None:
        if pos.isolated:
            pos.iso_cash -= amount
        else:
            acct.balance -= amount

    def _pending_close_cost(self, acct: AccountState, symbol: str) -> int:
        """What the account's resting closes of its isolated position in `symbol` cost it when
        they fill at their worst prices (fee + loss against the mark): the close check
        (`close_beyond_isolated_margin`) accepted them counting on that much of the isolated
        equity, so neither a release nor a transfer out may take it."""
        return sum(o.close_cost for o in acct.orders_in(symbol) if o.closing)

    def _release_shrunk(self, acct: AccountState, symbol: str, qty_before: int) -> None:
        """After a fill or a transfer (orders re-priced): an isolated position that shrank
        without closing or flipping releases what it no longer needs."""
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated and pos.qty and (pos.qty > 0) == (qty_before > 0) \
                and abs(pos.qty) < abs(qty_before):
            self._release_isolated(acct, symbol, pos)

    def _release_isolated(self, acct: AccountState, symbol: str, pos: Position) -> None:
        """After an isolated position shrank: keep its initial margin at mark and what its
        resting closes cost, return the rest.

        What may go back is the lower of its wallet (margin plus realized, no unrealized gain)
        and its equity at mark (which counts the open loss), less the IM of what is left and
        less the fee and loss at once of the closes still resting (the close check accepted
        them against this equity; released, a sell resting 4.9% below the mark of a 50x long
        closed the rest 248,523,112 atoms past bankruptcy, paid by the insurance fund): the
        position stays as safe as a new one of its size, long or short. A fully closed position
        returns all its cash; if that cash is negative (it closed beyond bankruptcy), the
        insurance fund absorbs the loss instead of the cross wallet.
        """
        if pos.qty == 0:
            if pos.iso_cash >= 0:
                acct.balance += pos.iso_cash
            else:
                self.insurance_fund += pos.iso_cash
            pos.iso_cash = 0
            return
        value = self._position_value(symbol, pos)
        wallet = pos.iso_cash + pos.cost
        equity = pos.iso_cash + value
        release = (wallet if wallet < equity else equity) - self.initial_margin(
            acct, symbol, value) - self._pending_close_cost(acct, symbol)
        if release > 0:
            pos.iso_cash -= release
            acct.balance += release
