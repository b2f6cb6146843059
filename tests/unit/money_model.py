"""An independent model of where every atom goes, for comparing with the risk ledger atom for atom.

Written from the README's rules and ../shared/PERP-MECHANICS.md, NOT from the engine's helpers
(no ceil_div, tier_for, funding_payment, ...): plain Fractions and explicit rounding, so that a
wrong rounding direction or a wrong payer in the engine shows up as a difference here. It reads
only the symbols' parameters (fees, ladder, multipliers) and the messages that cross the links.

The rules, as modelled:
- a fill moves price x qty x atoms_per_tick_lot from buyer to seller;
- fees: a charge (rate > 0) rounds up, a rebate (rate < 0) rounds down, into the fee pool; a
  liquidation order pays no taker fee but the forced-execution fee (rounded up, never more than the
  margin balance left) to the insurance fund;
- a fill first closes the open position, then opens the rest; the closing part takes its share of
  the fee (rounded down), the opening part the rest;
- closing part of a position removes its share of the cost basis, truncated toward zero;
- an isolated position: opening moves in from the cross wallet IM (at the tier of the entry
  notional after the fill) plus the opening fee plus the loss at once of a fill worse than the
  mark (a buy above it, a sell below it), so it starts with its IM at mark; its fills, fees and
  funding settle in its own cash; a full close returns that cash to the wallet, or, if negative,
  the insurance fund absorbs it; a partial close releases per `isolated_release` (#17 defect 2),
  keeping also what the account's resting closes of it cost (fee and loss at their worst prices).
  That one figure is NOT modelled: the model follows no orders, so it takes the ledger's
  (`resting_close_cost`, given by the test); the rest of the release is modelled;
- a liquidation fill's forced fee is charged once the fill's closing part is booked and before an
  isolated position's cash goes back (#17 defect 7), capped by the margin balance at that moment;
- funding: |qty| x mark x mult x rate per position, longs pay when the rate is > 0; payers round
  up, receivers down, the remainder goes to the insurance fund;
- a cross account left by a liquidation with no cross position and a negative wallet is made whole
  by the insurance fund;
- the insurance fund is the account "insurance": it can take over positions at a price (no fees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from cluster.protocol import (
    Ack, FundingRate, IndexMark, LiquidationStep, NewOrder, OrderCancelled, OrderRejected, Regime,
    Reply, Trade,
)

MILLION = 1_000_000
BILLION = 1_000_000_000
INSURANCE = "insurance"


def round_up(x: Fraction) -> int:
    return math.ceil(x)


def round_down(x: Fraction) -> int:
    return math.floor(x)


def toward_zero(x: Fraction) -> int:
    return math.trunc(x)


def trading_fee(notional: int, rate_ppm: int) -> int:
    """Signed fee an account pays (a rebate is negative): charges round up, rebates round down."""
    exact = Fraction(notional * rate_ppm, MILLION)
    return round_up(exact) if exact >= 0 else -round_down(-exact)


def funding_transfer(qty: int, mark: int, mult: int, rate_e9: int) -> int:
    """Signed atoms a position receives (+) or pays (-): payers round up, receivers round down."""
    owed = Fraction(qty * mark * mult * rate_e9, BILLION)  # long with rate > 0: owed > 0, pays
    return -round_up(owed) if owed > 0 else round_down(-owed)


def max_leverage_for(spec, notional: int) -> int:
    """The ladder's max leverage for a notional: the tier with floor < notional <= cap (the first
    tier for zero; beyond the last cap, the last tier)."""
    notional = abs(notional)
    for tier in spec.tiers:
        if notional <= tier.cap:
            return tier.max_leverage
    return spec.tiers[-1].max_leverage


def exact_initial_margin(spec, leverage_setting: int, buffer_ppm: int, notional: int,
                         tier_notional: int) -> Fraction:
    """notional / leverage x buffer; the leverage is the setting capped by the tier of
    `tier_notional`."""
    lev = min(leverage_setting, max_leverage_for(spec, tier_notional))
    return Fraction(abs(notional) * buffer_ppm, lev * MILLION)


def initial_margin(spec, leverage_setting: int, buffer_ppm: int, notional: int,
                   tier_notional: int) -> int:
    """Initial margin in atoms, rounded up (against the account)."""
    return round_up(exact_initial_margin(spec, leverage_setting, buffer_ppm, notional,
                                         tier_notional))


def isolated_release(iso_cash: int, cost: int, equity_at_mark: int, im_at_mark: int) -> int:
    """What a partial close of an isolated position sends back to the cross wallet (#17 defect 2,
    the README's "Cross and isolated"): the lower of its wallet (margin plus realized PnL: cash +
    cost, no unrealized gain) and its equity at mark (which counts the open loss), less the IM at
    mark of what is left; never negative. Long or short alike: what is left stays as safe as a
    new position of its size."""
    wallet = iso_cash + cost
    return max(0, min(wallet, equity_at_mark) - im_at_mark)


@dataclass
class Pos:
    mode: str
    qty: int = 0
    cost: int = 0
    iso: int = 0


@dataclass
class Acct:
    balance: int
    mode: dict[str, str] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    positions: dict[str, Pos] = field(default_factory=dict)
    fees_paid: int = 0


class MoneyModel:
    def __init__(self, specs, deposits: dict[str, int], insurance_fund: int = 0,
                 modes: dict[str, dict[str, str]] | None = None,
                 leverage: dict[str, dict[str, int]] | None = None,
                 resting_close_cost=None) -> None:
        self.specs = specs
        # (account, symbol) -> what its resting closes of an isolated position cost (the ledger's)
        self.resting_close_cost = resting_close_cost or (lambda account, symbol: 0)
        self.accounts = {n: Acct(b) for n, b in deposits.items()}
        self.accounts.setdefault(INSURANCE, Acct(0)).balance += insurance_fund
        for name, m in (modes or {}).items():
            self.accounts[name].mode.update(m)
        for name, m in (leverage or {}).items():
            self.accounts[name].leverage.update(m)
        self.fee_pool = 0
        self.marks: dict[str, int] = {}
        self.regime: dict[str, str] = {s: "normal" for s in specs}
        self.liq_orders: dict[int, str] = {}  # liquidation IOC order id -> account
        self.seen: dict[str, int] = {}  # states reached: what the generators' coverage asserts

    # ------------------------------------------------------------------ valuation

    def _note(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    def _lev(self, acct: Acct, symbol: str) -> int:
        return acct.leverage.get(symbol, self.specs[symbol].default_leverage)

    def _buffer(self, symbol: str) -> int:
        return self.specs[symbol].im_buffer_ppm[self.regime[symbol]]

    def _value(self, symbol: str, pos: Pos) -> int:
        mark = self.marks.get(symbol)
        return pos.qty * mark * self.specs[symbol].atoms_per_tick_lot if mark else pos.cost

    def cross_equity(self, acct: Acct) -> int:
        return acct.balance + sum(self._value(s, p) for s, p in acct.positions.items()
                                  if p.mode == "cross")

    def margin_balance(self, acct: Acct, symbol: str) -> int:
        pos = acct.positions.get(symbol)
        if pos is not None and pos.mode == "isolated":
            return pos.iso + self._value(symbol, pos)
        return self.cross_equity(acct)

    # ------------------------------------------------------------------ inputs

    def observe(self, msg, effects) -> None:
        """One message risk handled, and what risk sent on as a result."""
        t = type(msg)
        if t is IndexMark:
            self.marks[msg.symbol] = msg.mark
        elif t is Regime:
            self.regime[msg.symbol] = msg.regime
        elif t is FundingRate:
            self._funding(msg)
        elif t is Trade:
            self._trade(msg)
        elif t is LiquidationStep:
            self._liquidation_step(msg, effects)
        elif t in (OrderCancelled, OrderRejected) and msg.order_id in self.liq_orders:
            self._liquidation_done(msg.order_id)
        for dest, out in effects:  # a liquidation IOC: its fills pay the forced fee
            if dest == "matching" and type(out) is NewOrder and out.ref < 0:
                self.liq_orders[out.order_id] = out.account
        self._transfers(msg, effects)

    def _transfers(self, msg, effects) -> None:
        """Settings and isolated margin moved by request, when risk acknowledged them."""
        body = getattr(msg, "body", None)
        kind = type(body).__name__
        if kind not in ("AdjustIsolatedMargin", "SetLeverage"):
            return
        for dest, out in effects:
            if dest == "gateway" and type(out) is Reply and type(out.body) is Ack:
                acct = self.accounts[msg.account]
                if kind == "SetLeverage":  # moves no money: later IM uses the new setting
                    acct.leverage[body.symbol] = body.leverage
                    continue
                acct.balance -= body.amount
                acct.positions[body.symbol].iso += body.amount
                self._note("isolated transfer")

    def _funding(self, msg: FundingRate) -> None:
        if msg.symbol not in self.specs or msg.mark <= 0:
            return
        self.marks[msg.symbol] = msg.mark
        mult = self.specs[msg.symbol].atoms_per_tick_lot
        net = 0
        for acct in self.accounts.values():
            pos = acct.positions.get(msg.symbol)
            if pos is None or not pos.qty:
                continue
            amount = funding_transfer(pos.qty, msg.mark, mult, msg.rate_e9)
            if pos.mode == "isolated":
                pos.iso += amount
            else:
                acct.balance += amount
            net += amount
            if amount:
                self._note("funding paid" if amount < 0 else "funding received")
        self.accounts[INSURANCE].balance -= net

    def _trade(self, ev: Trade) -> None:
        spec = self.specs[ev.symbol]
        notional = ev.price * ev.qty * spec.atoms_per_tick_lot
        liquidation = ev.taker_order_id in self.liq_orders
        taker_fee = 0 if liquidation else trading_fee(notional, spec.taker_fee_ppm)
        maker_fee = trading_fee(notional, spec.maker_fee_ppm)
        if maker_fee < 0:
            self._note("maker rebate")
        taker = self.accounts[ev.taker_account]
        self._fill(taker, ev.symbol, ev.taker_side, ev.qty, ev.price, taker_fee,
                   forced_notional=notional if liquidation else 0)
        self._fill(self.accounts[ev.maker_account], ev.symbol, -ev.taker_side, ev.qty, ev.price,
                   maker_fee)
        self._note("trade")
        if liquidation and ev.taker_remaining == 0:
            self._liquidation_done(ev.taker_order_id)

    def _forced_fee(self, acct: Acct, symbol: str, notional: int) -> None:
        fee = round_up(Fraction(notional * self.specs[symbol].forced_fee_ppm, MILLION))
        cap = max(0, self.margin_balance(acct, symbol))
        if fee > cap:
            fee = cap
            self._note("forced fee capped")
        pos = acct.positions.get(symbol)
        if pos is not None and pos.mode == "isolated":
            pos.iso -= fee
        else:
            acct.balance -= fee
        acct.fees_paid += fee
        self.accounts[INSURANCE].balance += fee
        self._note("forced fee")

    def _liquidation_done(self, order_id: int) -> None:
        self._cover_cross_deficit(self.accounts[self.liq_orders.pop(order_id)])

    def _cover_cross_deficit(self, acct: Acct) -> None:
        if acct is self.accounts[INSURANCE] or acct.balance >= 0:
            return
        if any(p.qty for p in acct.positions.values() if p.mode == "cross"):
            return
        self.accounts[INSURANCE].balance += acct.balance
        acct.balance = 0
        self._note("cross deficit covered")

    def _liquidation_step(self, msg: LiquidationStep, effects) -> None:
        """Takeover steps move the position at the step's price without fees; the reduce step's
        IOC is settled by its trades."""
        acct = self.accounts.get(msg.account)
        pos = acct.positions.get(msg.symbol) if acct is not None else None
        if msg.kind != "insurance" or pos is None or not pos.qty or msg.price <= 0:
            return
        qty = min(msg.qty or abs(pos.qty), abs(pos.qty))
        side = -1 if pos.qty > 0 else 1
        self._fill(acct, msg.symbol, side, qty, msg.price, 0)
        self._fill(self.accounts[INSURANCE], msg.symbol, -side, qty, msg.price, 0)
        self._cover_cross_deficit(acct)
        self._note("insurance takeover")

    # ------------------------------------------------------------------ one side of a fill

    def _fill(self, acct: Acct, symbol: str, side: int, qty: int, price: int, fee: int,
              forced_notional: int = 0) -> None:
        """One side of a fill; a liquidation's (`forced_notional`) also pays the forced fee."""
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        acct.fees_paid += fee
        self.fee_pool += fee
        pos = acct.positions.get(symbol)
        if pos is None:
            pos = acct.positions[symbol] = Pos(acct.mode.get(symbol, "cross"))
        isolated = pos.mode == "isolated"
        opposite = pos.qty != 0 and (pos.qty > 0) != (side > 0)
        closing = min(qty, abs(pos.qty)) if opposite else 0
        opening = qty - closing
        fee_close = round_down(Fraction(fee * closing, qty))
        fee_open = fee - fee_close

        def pay(amount: int) -> None:  # out of the position's own wallet
            if isolated:
                pos.iso -= amount
            else:
                acct.balance -= amount

        if closing:
            before = abs(pos.qty)
            pay(side * price * closing * mult + fee_close)
            share = 0 if closing == before else toward_zero(Fraction(pos.cost * closing, before))
            pos.cost = 0 if closing == before else pos.cost - share
            pos.qty += side * closing
            if forced_notional:  # before the position's cash goes back, capped by what it has
                self._forced_fee(acct, symbol, forced_notional)
            self._note(("isolated " if isolated else "cross ")
                       + ("full close" if pos.qty == 0 else "partial close"))
            if isolated:
                if pos.qty == 0:
                    if pos.iso >= 0:
                        acct.balance += pos.iso
                    else:
                        self.accounts[INSURANCE].balance += pos.iso
                        self._note("isolated deficit to insurance")
                    pos.iso = 0
                else:
                    self._release(acct, symbol, pos)
        elif forced_notional:
            self._forced_fee(acct, symbol, forced_notional)
        if opening:
            value = price * opening * mult
            if isolated:
                im = initial_margin(spec, self._lev(acct, symbol), self._buffer(symbol), value,
                                    abs(pos.cost) + value)
                mark = self.marks.get(symbol) or 0
                worse_by = side * (price - mark) if mark else 0  # ticks past the mark, against it
                loss_at_once = worse_by * opening * mult if worse_by > 0 else 0
                move = max(0, im + fee_open + loss_at_once)
                acct.balance -= move
                pos.iso += move
            pay(side * value + fee_open)
            pos.qty += side * opening
            pos.cost += side * value
        if pos.qty == 0 and pos.iso == 0:
            del acct.positions[symbol]

    def _release(self, acct: Acct, symbol: str, pos: Pos) -> None:
        spec = self.specs[symbol]
        mark = self.marks.get(symbol) or 0
        value = abs(pos.qty) * mark * spec.atoms_per_tick_lot
        exact_im = exact_initial_margin(spec, self._lev(acct, symbol), self._buffer(symbol),
                                        value, value)
        equity = pos.iso + (pos.qty * mark * spec.atoms_per_tick_lot if mark else pos.cost)
        name = next(n for n, a in self.accounts.items() if a is acct)
        amount = isolated_release(pos.iso, pos.cost, equity,
                                  round_up(exact_im) + self.resting_close_cost(name, symbol))
        if amount:
            self._note("isolated release")
            if exact_im.denominator != 1:
                self._note("isolated release, IM rounded up")
        pos.iso -= amount
        acct.balance += amount

    # ------------------------------------------------------------------ comparison

    def differences(self, risk) -> list[str]:
        """Every place where the ledger and the model disagree, atom for atom."""
        out = []
        if risk.fee_pool != self.fee_pool:
            out.append(f"fee pool: ledger {risk.fee_pool}, model {self.fee_pool}")
        for name, mine in self.accounts.items():
            theirs = risk.accounts[name]
            if theirs.balance != mine.balance:
                out.append(f"{name} balance: ledger {theirs.balance}, model {mine.balance}")
            if theirs.fees_paid != mine.fees_paid:
                out.append(f"{name} fees: ledger {theirs.fees_paid}, model {mine.fees_paid}")
            ledger_pos = {s: (p.qty, p.cost, p.iso_cash, p.mode) for s, p in theirs.positions.items()}
            model_pos = {s: (p.qty, p.cost, p.iso, p.mode) for s, p in mine.positions.items()}
            if ledger_pos != model_pos:
                out.append(f"{name} positions (qty, cost, iso cash, mode): ledger {ledger_pos}, "
                           f"model {model_pos}")
        return out
