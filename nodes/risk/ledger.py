"""Risk and ledger core: accounts, positions, margin reservations, fees. Pure and deterministic.

    engine.handle(message, now_ns) -> list[(destination, message)]

Accounting (all integers, atoms of collateral):
- `balance` is settled cash: deposits - withdrawals, minus what was paid for contracts bought, plus
  what was received for contracts sold, minus fees (plus rebates). Every fill moves exactly
  price x qty x atoms_per_tick_lot from buyer to seller, so money is conserved by construction:
      sum(balance) + fee_pool + insurance_fund == deposits - withdrawals      (after every event)
- a position keeps `qty` (signed lots) and `cost` (signed atoms paid for the open contracts); entry
  price = cost / (qty x atoms_per_tick_lot), exact. Closing part of a position removes its
  proportional share of cost (truncated towards zero); the truncation only moves value between
  "wallet" and "unrealized" inside one account, never between accounts.
- wallet balance = balance + sum(cost); equity = balance + sum(qty x mark x atoms_per_tick_lot).
- fees: charges round up, rebates round down (so the fee pool never pays out more than it took).

Pre-trade margin (the full ladder, modes and buffers come with the risk issue): an order reserves
initial margin on its opening quantity at its worst fill price / leverage, plus the taker fee on
the whole quantity, plus the immediate loss of a buy above (sell below) mark.
"""

from __future__ import annotations

from decimal import Decimal

from cluster.audit import Explanation
from cluster.config import SymbolSpec
from cluster.ladder import maintenance_margin, max_leverage
from cluster.protocol import (
    AccountRisk, AccountView, Amend, AmendOrder, Cancel, CancelAll, CancelOrder, Error, Fill,
    GetAccount, IndexMark, MassCancel, NewOrder, OrderAccepted, OrderAmended, OrderCancelled,
    OrderRejected, OrdersCancelled, OrderTriggered, PlaceOrder, PositionView, Reply, Report,
    Routed, Trade,
)
from cluster.units import ceil_div

PPM = 1_000_000
MARKET_TYPES = frozenset({"market", "stop_market", "take_profit_market"})


class Position:
    __slots__ = ("qty", "cost")

    def __init__(self) -> None:
        self.qty = 0
        self.cost = 0


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
    __slots__ = ("name", "balance", "fees_paid", "positions", "orders", "order_margin", "leverage")

    def __init__(self, name: str, balance: int) -> None:
        self.name = name
        self.balance = balance
        self.fees_paid = 0
        self.positions: dict[str, Position] = {}
        self.orders: dict[int, OpenOrder] = {}
        self.order_margin = 0
        self.leverage: dict[str, int] = {}


class RiskEngine:
    def __init__(self, symbols: dict[str, SymbolSpec], deposits: dict[str, int]) -> None:
        self.specs = dict(symbols)
        self.accounts = {name: AccountState(name, amount) for name, amount in sorted(deposits.items())}
        self.deposits = sum(deposits.values())
        self.withdrawals = 0
        self.fee_pool = 0
        self.insurance_fund = 0
        self.marks: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.orders: dict[int, OpenOrder] = {}
        self.pending: dict[int, int] = {}  # ref -> order_id sent but not yet answered by matching
        self.next_order_id = 1

    # ------------------------------------------------------------------ entry point

    def handle(self, msg, now_ns: int) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        t = type(msg)
        if t is Routed:
            self._request(msg, now_ns, out)
        elif t is Trade:
            touched = self._trade(msg, out)
            for account in touched:
                out.append(("liquidator", self.account_risk(account)))
        elif t is IndexMark:
            self.marks[msg.symbol] = msg.mark
        else:
            self._engine_event(msg, out)
        return out

    # ------------------------------------------------------------------ money checks

    def conservation(self) -> tuple[int, int]:
        """(sum of balances + fee pool + insurance fund, deposits - withdrawals): always equal."""
        held = sum(a.balance for a in self.accounts.values()) + self.fee_pool + self.insurance_fund
        return held, self.deposits - self.withdrawals

    def _price(self, symbol: str) -> int:
        return self.marks.get(symbol) or self.last.get(symbol, 0)

    def _leverage(self, acct: AccountState, symbol: str) -> int:
        return acct.leverage.get(symbol) or self.specs[symbol].default_leverage

    def _position_value(self, symbol: str, pos: Position) -> int:
        """Signed value at mark (at cost when no price is known yet)."""
        price = self._price(symbol)
        if not price:
            return pos.cost
        return pos.qty * price * self.specs[symbol].atoms_per_tick_lot

    def equity(self, acct: AccountState) -> int:
        return acct.balance + sum(self._position_value(s, p) for s, p in acct.positions.items())

    def effective_leverage(self, acct: AccountState, symbol: str, notional: int) -> int:
        """The account's leverage setting, capped by the ladder tier the notional falls into."""
        return min(self._leverage(acct, symbol), max_leverage(self.specs[symbol].tiers, notional))

    def position_margin(self, acct: AccountState) -> int:
        total = 0
        for s, p in acct.positions.items():
            value = abs(self._position_value(s, p))
            total += ceil_div(value, self.effective_leverage(acct, s, value))
        return total

    def maintenance_margin(self, acct: AccountState) -> int:
        return sum(maintenance_margin(self.specs[s].tiers, self._position_value(s, p))
                   for s, p in acct.positions.items())

    def available(self, acct: AccountState) -> int:
        return self.equity(acct) - self.position_margin(acct) - acct.order_margin

    def _worst_price(self, symbol: str, side: int, otype: str, price: int, trigger: int) -> int:
        if otype not in MARKET_TYPES:
            return price
        ref = trigger or self._price(symbol)
        move = ref * self.specs[symbol].protection_ppm // PPM
        return ref + move if side > 0 else ref - move

    def reserve_for(self, acct: AccountState, order: OpenOrder, price: int | None = None,
                    remaining: int | None = None) -> int:
        """Margin an open order holds; `price`/`remaining` price a proposed amend instead."""
        price = order.price if price is None else price
        remaining = order.remaining if remaining is None else remaining
        if remaining <= 0:
            return 0
        spec = self.specs[order.symbol]
        mult = spec.atoms_per_tick_lot
        worst = self._worst_price(order.symbol, order.side, order.type, price, order.trigger_price)
        fee = ceil_div(worst * remaining * mult * max(spec.taker_fee_ppm, 0), PPM)
        if order.reduce_only:
            return fee
        pos = acct.positions.get(order.symbol)
        opening = remaining
        if pos is not None and pos.qty and (pos.qty > 0) != (order.side > 0):
            opening = max(0, opening - abs(pos.qty))
        opening_value = worst * opening * mult
        after = opening_value + (abs(self._position_value(order.symbol, pos)) if pos else 0)
        im = ceil_div(opening_value, self.effective_leverage(acct, order.symbol, after))
        mark = self._price(order.symbol)
        loss = max(0, order.side * (worst - mark)) * opening * mult if mark else 0
        return im + fee + loss

    def _set_reserve(self, acct: AccountState, order: OpenOrder) -> None:
        new = self.reserve_for(acct, order)
        acct.order_margin += new - order.reserve
        order.reserve = new

    def _forget(self, order: OpenOrder) -> None:
        acct = self.accounts[order.account]
        acct.order_margin -= order.reserve
        order.reserve = 0
        del acct.orders[order.order_id]
        del self.orders[order.order_id]

    # ------------------------------------------------------------------ requests

    def _reject(self, out: list, ref: int, account: str, symbol: str, reason: str, detail: dict,
                now_ns: int, coid: str = "") -> None:
        out.append(("gateway", Report(ref=ref, account=account, event=OrderRejected(
            seq=0, ref=ref, order_id=0, account=account, symbol=symbol, reason=reason,
            detail=detail, client_order_id=coid))))
        out.append(("audit", Explanation(ts_ns=now_ns, node="risk", rule=f"risk.{reason}",
                                         subject=account, decision="reject",
                                         numbers={"symbol": symbol, **detail})))

    def _request(self, msg: Routed, now_ns: int, out: list) -> None:
        body = msg.body
        acct = self.accounts.get(msg.account)
        if acct is None:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unknown_account", detail={"account": msg.account}))))
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
            out.append(("gateway", Reply(ref=msg.ref, body=self.account_view(acct.name, body.req_id))))
        else:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unsupported_request", detail={"type": t.__name__}))))

    def _place(self, acct: AccountState, ref: int, body: PlaceOrder, now_ns: int, out: list) -> None:
        spec = self.specs.get(body.symbol)
        if spec is None:
            return self._reject(out, ref, acct.name, body.symbol, "unknown_symbol",
                                {"symbol": body.symbol}, now_ns, body.client_order_id)
        if body.type in MARKET_TYPES and not (body.trigger_price or self._price(body.symbol)):
            return self._reject(out, ref, acct.name, body.symbol, "no_reference_price", {},
                                now_ns, body.client_order_id)
        cmd = NewOrder(
            ref=ref, order_id=self.next_order_id, account=acct.name, symbol=body.symbol,
            side=body.side, qty=body.qty, type=body.type, price=body.price, tif=body.tif,
            post_only=body.post_only, reduce_only=body.reduce_only,
            client_order_id=body.client_order_id, trigger_price=body.trigger_price,
            trigger_by=body.trigger_by, stp=body.stp, max_slippage_ppm=body.max_slippage_ppm,
        )
        order = OpenOrder(cmd)
        required = self.reserve_for(acct, order)
        available = self.available(acct)
        if required > available:
            return self._reject(out, ref, acct.name, body.symbol, "insufficient_margin", {
                "required": required, "available": available, "equity": self.equity(acct),
                "position_margin": self.position_margin(acct), "order_margin": acct.order_margin,
                "leverage": self._leverage(acct, body.symbol)}, now_ns, body.client_order_id)
        self.next_order_id += 1
        order.reserve = required
        acct.order_margin += required
        acct.orders[order.order_id] = order
        self.orders[order.order_id] = order
        if ref:
            self.pending[ref] = order.order_id
        out.append(("matching", cmd))

    def _amend(self, acct: AccountState, ref: int, body: AmendOrder, now_ns: int, out: list) -> None:
        order = self.orders.get(body.order_id) if body.order_id else None
        if order is not None and order.account == acct.name and (body.qty or body.price):
            filled = order.qty - order.remaining
            extra = self.reserve_for(acct, order, price=body.price or order.price,
                                     remaining=max(0, (body.qty or order.qty) - filled)) \
                - order.reserve
            available = self.available(acct)
            if extra > available:
                return self._reject(out, ref, acct.name, body.symbol, "insufficient_margin", {
                    "required": extra, "available": available, "order_id": order.order_id},
                    now_ns, body.client_order_id)
        out.append(("matching", Amend(ref=ref, account=acct.name, symbol=body.symbol,
                                      order_id=body.order_id, client_order_id=body.client_order_id,
                                      price=body.price, qty=body.qty)))

    # ------------------------------------------------------------------ engine events

    def _engine_event(self, ev, out: list) -> None:
        t = type(ev)
        if t is OrderAccepted:
            if ev.duplicate:
                self._drop_pending(ev.ref)
            else:
                self.pending.pop(ev.ref, None)
                order = self.orders.get(ev.order_id)
                if order is not None:
                    order.accepted = True
                    if ev.qty != order.qty:  # reduce-only sized down
                        order.qty = order.remaining = ev.qty
                        self._set_reserve(self.accounts[order.account], order)
        elif t is OrderRejected:
            if ev.duplicate:
                self._drop_pending(ev.ref)
            else:
                self.pending.pop(ev.ref, None)
                order = self.orders.get(ev.order_id)
                if order is not None and not order.accepted:  # the new order itself was refused
                    self._forget(order)
        elif t is OrderCancelled:
            order = self.orders.get(ev.order_id)
            if order is not None:
                self._forget(order)
        elif t is OrdersCancelled:
            for order_id, _ in ev.orders:
                order = self.orders.get(order_id)
                if order is not None:
                    self._forget(order)
        elif t is OrderAmended:
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.price, order.qty, order.remaining = ev.price, ev.qty, ev.remaining
                self._set_reserve(self.accounts[order.account], order)
        elif t is OrderTriggered:
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.type = "market" if order.type in MARKET_TYPES else "limit"
                self._set_reserve(self.accounts[order.account], order)
        else:
            return
        out.append(("gateway", Report(ref=getattr(ev, "ref", 0), account=ev.account, event=ev)))

    def _drop_pending(self, ref: int) -> None:
        order_id = self.pending.pop(ref, None)
        order = self.orders.get(order_id) if order_id is not None else None
        if order is not None:
            self._forget(order)

    def _trade(self, ev: Trade, out: list) -> tuple[str, str]:
        spec = self.specs[ev.symbol]
        notional = ev.price * ev.qty * spec.atoms_per_tick_lot
        self.last[ev.symbol] = ev.price
        taker_fee = ceil_div(notional * spec.taker_fee_ppm, PPM)
        if spec.maker_fee_ppm >= 0:
            maker_fee = ceil_div(notional * spec.maker_fee_ppm, PPM)
        else:
            maker_fee = -(notional * -spec.maker_fee_ppm // PPM)  # rebate, rounded down
        for account, order_id, side, remaining, fee, liquidity in (
            (ev.taker_account, ev.taker_order_id, ev.taker_side, ev.taker_remaining, taker_fee, "taker"),
            (ev.maker_account, ev.maker_order_id, -ev.taker_side, ev.maker_remaining, maker_fee, "maker"),
        ):
            acct = self.accounts[account]
            self._settle(acct, ev.symbol, side, ev.qty, notional, fee)
            order = self.orders.get(order_id)
            coid = order.client_order_id if order is not None else ""
            if order is not None:
                order.remaining = remaining
                if remaining == 0:
                    self._forget(order)
                else:
                    self._set_reserve(acct, order)
            out.append(("gateway", Report(account=account, event=Fill(
                seq=ev.seq, trade_id=ev.trade_id, order_id=order_id, account=account,
                symbol=ev.symbol, side=side, price=ev.price, qty=ev.qty, remaining=remaining,
                liquidity=liquidity, fee=fee, client_order_id=coid))))
        return (ev.taker_account, ev.maker_account)

    def _settle(self, acct: AccountState, symbol: str, side: int, qty: int, notional: int,
                fee: int) -> None:
        acct.balance -= side * notional + fee
        acct.fees_paid += fee
        self.fee_pool += fee
        pos = acct.positions.get(symbol)
        if pos is None:
            pos = acct.positions[symbol] = Position()
        if pos.qty == 0 or (pos.qty > 0) == (side > 0):
            pos.qty += side * qty
            pos.cost += side * notional
            return
        closing = min(qty, abs(pos.qty))
        if closing == abs(pos.qty):
            pos.cost = 0
        else:
            share = abs(pos.cost) * closing // abs(pos.qty)
            pos.cost -= share if pos.cost > 0 else -share
        pos.qty += side * closing
        opening = qty - closing
        if opening:
            pos.qty += side * opening
            pos.cost += side * (notional * opening // qty)
        if pos.qty == 0:
            del acct.positions[symbol]

    # ------------------------------------------------------------------ views

    def account_risk(self, account: str) -> AccountRisk:
        acct = self.accounts[account]
        return AccountRisk(account=account, balance=acct.balance,
                           positions={s: (p.qty, p.cost) for s, p in sorted(acct.positions.items())})

    def account_view(self, account: str, req_id: int = 0) -> AccountView:
        acct = self.accounts[account]
        positions = []
        for symbol, pos in sorted(acct.positions.items()):
            spec = self.specs[symbol]
            value = self._position_value(symbol, pos)
            lev = self.effective_leverage(acct, symbol, value)
            entry = Decimal(abs(pos.cost)) / Decimal(abs(pos.qty) * spec.atoms_per_tick_lot)
            positions.append(PositionView(
                symbol=symbol, qty=pos.qty, cost=pos.cost,
                entry_price=str(entry.quantize(Decimal("0.000001")).normalize()),
                mark=self._price(symbol), unrealized_pnl=value - pos.cost,
                initial_margin=ceil_div(abs(value), lev),
                maintenance_margin=maintenance_margin(spec.tiers, value), leverage=lev,
            ))
        equity = self.equity(acct)
        pm = self.position_margin(acct)
        return AccountView(
            req_id=req_id, account=account, balance=acct.balance,
            wallet_balance=acct.balance + sum(p.cost for p in acct.positions.values()),
            equity=equity, order_margin=acct.order_margin, position_margin=pm,
            available=equity - pm - acct.order_margin,
            maintenance_margin=self.maintenance_margin(acct), fees_paid=acct.fees_paid,
            positions=positions, open_orders=len(acct.orders),
        )
