"""Risk and ledger core: accounts, positions, margin, fees, funding. Pure and deterministic.

    engine.handle(message, now_ns) -> list[(destination, message)]

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

import hashlib
from bisect import bisect_left, bisect_right, insort
from decimal import Decimal
from fractions import Fraction

import msgspec

from cluster.core import Snapshottable
from cluster.audit import Explanation
from cluster.config import SymbolSpec
from cluster.rules.ladder import maintenance_margin, tier_for
from cluster.protocol import (
    MARKET_TYPES, MAX_UNITS, STOP_TYPES, Ack, AccountRisk, AccountRiskRequest, AccountView,
    AdjustIsolatedMargin, Amend, AmendOrder, Cancel, CancelAll, CancelOrder, ClockTick, Deleveraged,
    Deposit, Error, Fill, FundingEntry, FundingRate, GetAccount, GetOrders, IndexMark, LiquidationResult,
    LiquidationStep, MassCancel, NewOrder, Notice, OrderAccepted, OrderAmended, OrderCancelled,
    OrderRejected, OrdersCancelled, OrdersView, OrderTriggered, OrderView, PlaceOrder, PositionView,
    Regime, Reply, Report, Routed, SetLeverage, SetMarginMode, ShiftPosition, Trade, Withdraw,
    SetAccountMarginMode,
)
from cluster.rules import stress as sg
from cluster.rules.bands import band_limits, protection_price
from cluster.scopes import missing_scope
from cluster.rules.units import PPM, ceil_div
from nodes.risk import adl
from nodes.risk.accounts import AccountState, OpenOrder, Position, pending_units
from nodes.risk.marks import FundingClock, MarkAges
from cluster.rules.funding import funding_payment
from cluster.rules.prices import (
    bankruptcy_price, forced_fee, liquidation_price, round_price, trigger_margin,
)

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


BLANK_ORDER = NewOrder(order_id=0, account="", symbol="", side=1, qty=1)


class RiskEngine(Snapshottable):
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
        elif t is AccountRiskRequest:  # a (re)started liquidator: every account it must watch
            for name, acct in self.accounts.items():
                if any(p.qty for p in acct.positions.values()):
                    out.append(("liquidator", self.account_risk(name)))
        else:
            self._engine_event(msg, out)
        return out

    # ------------------------------------------------------------------ money checks

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
                "portfolio": a.portfolio,
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
        }

    def state_hash(self) -> str:
        # JSON, not msgpack: a cost or notional may exceed 64 bits, which msgpack cannot carry.
        return hashlib.sha256(msgspec.json.encode(self.state())).hexdigest()

    # ------------------------------------------------------------------ valuation

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

    def effective_leverage(self, acct: AccountState, symbol: str, notional: int) -> int:
        """The account's leverage setting, capped by the ladder tier the notional falls into."""
        setting = self._leverage(acct, symbol)
        cap = tier_for(self.specs[symbol].tiers, notional).max_leverage
        return setting if setting < cap else cap

    def initial_margin(self, acct: AccountState, symbol: str, notional: int,
                       tier_notional: int | None = None) -> int:
        """IM on `notional`, leverage capped at the tier of `tier_notional`, times the buffer."""
        lev = self.effective_leverage(acct, symbol,
                                      notional if tier_notional is None else tier_notional)
        buffer = self.specs[symbol].im_buffer_ppm[self.regimes[symbol]]
        return ceil_div(abs(notional) * buffer, lev * PPM)

    def cross_equity(self, acct: AccountState) -> int:
        return acct.balance + sum(self._position_value(s, p) for s, p in acct.positions.items()
                                  if not p.isolated)

    def isolated_equity(self, symbol: str, pos: Position) -> int:
        return pos.iso_cash + self._position_value(symbol, pos)

    def equity(self, acct: AccountState) -> int:
        return self.cross_equity(acct) + sum(self.isolated_equity(s, p)
                                             for s, p in acct.positions.items() if p.isolated)

    def position_margin(self, acct: AccountState, cross_only: bool = False) -> int:
        ladder = sum(self.initial_margin(acct, s, self._position_value(s, p))
                     for s, p in acct.positions.items() if not (cross_only and p.isolated))
        if acct.portfolio and acct.positions:
            return self.portfolio_margin(acct, ladder_im=ladder, explain=False).initial
        return ladder

    def maintenance_margin(self, acct: AccountState) -> int:
        ladder = sum(maintenance_margin(self.specs[s].tiers, self._position_value(s, p))
                     for s, p in acct.positions.items())
        if acct.portfolio and acct.positions:
            return self.portfolio_margin(acct, ladder_mm=ladder, explain=False).maintenance
        return ladder

    def portfolio_margin(self, acct: AccountState, ladder_mm: int | None = None,
                         ladder_im: int | None = None, explain: bool = True) -> sg.PortfolioMargin:
        """The account's requirements in the `portfolio` mode (cluster/rules/stress.py), its
        positions at risk's marks. Risk sees no book: no liquidity add-on here (the liquidator,
        which mirrors the books, adds it to the maintenance it triggers on)."""
        legs = []
        for s, p in sorted(acct.positions.items()):
            if p.qty:
                mult = self.specs[s].atoms_per_tick_lot
                mark = self._price(s) or max(1, abs(p.cost) // (abs(p.qty) * mult))
                legs.append(sg.Leg(symbol=s, qty=p.qty, mark=mark, mult=mult))
        if ladder_mm is None:
            ladder_mm = sum(maintenance_margin(self.specs[s].tiers, self._position_value(s, p))
                            for s, p in acct.positions.items())
        if ladder_im is None:
            ladder_im = sum(self.initial_margin(acct, s, self._position_value(s, p))
                            for s, p in acct.positions.items())
        return sg.portfolio_margin(self.stress_params, legs, ladder_mm, ladder_im, explain)

    def available(self, acct: AccountState) -> int:
        """What the cross wallet can still commit: equity less cross IM and order reservations."""
        if not acct.positions:  # most order checks: nothing to value
            return acct.balance - acct.order_margin
        return self.cross_equity(acct) - self.position_margin(acct, cross_only=True) - acct.order_margin

    # ------------------------------------------------------------------ what an order reserves
    #
    # Per account, symbol and side, the open orders are priced together, oldest first:
    # - closing capacity: the lots of an opposite position close first, shared oldest order
    #   first (so 20 sells against a 1-lot long cannot each count the same lot as a close);
    # - initial margin of the side's opening value at the leverage of the tier of |position| +
    #   that whole opening value (ten small orders sit in the tier of their sum), x the buffer;
    # - the taker fee; and the loss at once of filling at the worst price against the mark
    #   (a buy above it, a sell below it), on what opens and on what closes a cross position.
    # A close of an isolated position is paid from its own margin: its fee and loss are checked
    # against the isolated equity (`close_cost`), not held on the cross wallet.

    def _worst_price(self, symbol: str, side: int, otype: str, price: int, trigger: int,
                     slippage_ppm: int = 0, ref: int = 0) -> int:
        """The worst price an order can fill at: its limit, or for a market order the protection
        price matching gives it (reference moved by the client's max slippage, else the
        symbol's protection; inward rounding, never below 1 tick)."""
        if otype not in MARKET_TYPES:
            return price
        ref = ref or trigger or self._price(symbol)
        return protection_price(ref, side, slippage_ppm or self.specs[symbol].protection_ppm)

    def _side_leverage(self, acct: AccountState, spec: SymbolSpec, symbol: str,
                       tier_notional: int) -> int:
        lev = acct.leverage.get(symbol) or spec.default_leverage
        cap = tier_for(spec.tiers, tier_notional).max_leverage
        return cap if cap < lev else lev

    def _costs(self, order: OpenOrder, spec: SymbolSpec, mark: int, isolated: bool) -> int:
        """Fill in the order's fee and loss terms from its im/opening/closing; its reserve."""
        mult = spec.atoms_per_tick_lot
        worst = order.worst
        fee_ppm = spec.taker_fee_ppm if spec.taker_fee_ppm > 0 else 0
        fee_open = -(-(worst * order.opening * mult * fee_ppm) // PPM)
        fee_close = -(-(worst * order.closing * mult * fee_ppm) // PPM)
        gap = order.side * (worst - mark) if mark else 0
        per_lot = gap * mult if gap > 0 else 0
        order.fee_close = fee_close
        order.close_cost = fee_close + per_lot * order.closing  # checked when isolated
        if isolated:
            order.base = order.im + fee_open
            order.lossq = order.opening
        else:
            order.base = order.im + fee_open + fee_close
            order.lossq = order.opening + order.closing
        return order.base + per_lot * order.lossq + order.hold

    def _price_new(self, acct: AccountState, order: OpenOrder,
                   exclude: OpenOrder | None = None) -> tuple[int, int]:
        """(reserve, tier notional) of `order` priced as the newest order on its side, after every
        other open order of the account on that side (`exclude`: the order an amend replaces).
        O(1): the side's totals are kept by add_order/remove_order and _reprice."""
        symbol, side = order.symbol, order.side
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        qty_others, open_others, im_others = acct.side_totals(symbol, side)
        if exclude is not None:
            qty_others -= exclude.remaining
            open_others -= exclude.worst * exclude.opening * mult
            im_others -= exclude.im
        pos = acct.positions.get(symbol)
        pqty = pos.qty if pos is not None else 0
        value = abs(self._position_value(symbol, pos)) if pqty else 0
        capacity = abs(pqty) - qty_others if pqty and (pqty > 0) != (side > 0) else 0
        remaining = order.remaining
        order.closing = closing = min(remaining, capacity) if capacity > 0 else 0
        order.opening = 0 if order.reduce_only else remaining - closing
        total_open = open_others + order.worst * order.opening * mult
        tier_notional = value + total_open
        lev = self._side_leverage(acct, spec, symbol, tier_notional)
        im = -(-(total_open * spec.im_buffer_ppm[self.regimes[symbol]]) // (lev * PPM)) - im_others
        order.im = im if im > 0 else 0
        mark = self.marks.get(symbol) or self.last.get(symbol, 0)
        return self._costs(order, spec, mark, pos is not None and pos.isolated), tier_notional

    def reserve_for(self, acct: AccountState, order: OpenOrder) -> int:
        """What `order` would reserve were it placed now, after the account's other orders."""
        probe = OpenOrder(msgspec.structs.replace(
            BLANK_ORDER, order_id=order.order_id, account=order.account, symbol=order.symbol,
            side=order.side, qty=order.qty, type=order.type, price=order.price,
            trigger_price=order.trigger_price, reduce_only=order.reduce_only,
            max_slippage_ppm=order.slippage_ppm))
        probe.remaining, probe.worst = order.remaining, order.worst
        return self._price_new(acct, probe, exclude=order)[0]

    def _reprice(self, acct: AccountState, symbol: str) -> None:
        """Re-derive every open order's reserve in `symbol` after the position, leverage, buffer
        or an order changed (fills, amends, triggers, transfers). Per account and symbol only."""
        orders = acct._by_symbol.get(symbol)
        if not orders:
            acct.sides.pop((symbol, 1), None)
            acct.sides.pop((symbol, -1), None)
            return
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        pos = acct.positions.get(symbol)
        pqty = pos.qty if pos is not None else 0
        value = abs(self._position_value(symbol, pos)) if pqty else 0
        isolated = pos is not None and pos.isolated
        mark = self.marks.get(symbol) or self.last.get(symbol, 0)
        buffer = spec.im_buffer_ppm[self.regimes[symbol]]
        change = 0
        for side in (1, -1):
            mine = [o for o in orders.values() if o.side == side]  # oldest first
            if not mine:
                acct.sides.pop((symbol, side), None)
                continue
            capacity = abs(pqty) if pqty and (pqty > 0) != (side > 0) else 0
            total_qty = total_open = 0
            for o in mine:
                o.closing = o.remaining if o.remaining < capacity else capacity
                capacity -= o.closing
                o.opening = 0 if o.reduce_only else o.remaining - o.closing
                total_qty += o.remaining
                total_open += o.worst * o.opening * mult
            lev = self._side_leverage(acct, spec, symbol, value + total_open)
            prefix = im_before = 0
            for o in mine:  # each order's share: the growth of the side's IM it causes
                prefix += o.worst * o.opening * mult
                im = -(-(prefix * buffer) // (lev * PPM))
                o.im = im - im_before
                im_before = im
                new = self._costs(o, spec, mark, isolated)
                change += new - o.reserve
                o.reserve = new
            acct.sides[(symbol, side)] = [total_qty, total_open, im_before]
        acct.order_margin += change

    def _index_worst(self, order: OpenOrder, add: bool) -> None:
        """Keep `order` in its symbol's index by worst price (what a mark move re-prices)."""
        levels, prices = self._by_worst[order.symbol][order.side]
        level = levels.get(order.worst)
        if add:
            if level is None:
                level = levels[order.worst] = {}
                insort(prices, order.worst)
            level[order.order_id] = order
        elif level is not None:
            level.pop(order.order_id, None)
            if not level:
                del levels[order.worst]
                del prices[bisect_left(prices, order.worst)]

    def _mark_moved(self, symbol: str, before: int, mark: int, now_ns: int, out: list) -> None:
        """Re-price the loss-against-mark term of the orders it changed for: the buys whose worst
        price is above the lower of the two marks, the sells below the higher. Resting orders sit
        on their side of the mark, so a tick touches few orders, whatever the book holds.

        An account that can no longer cover what its re-priced orders now hold has those orders
        cancelled (newest first, until the rest is covered): filled, they would leave it
        below its trigger (a 125x bid filled after a 4.7% fall left its account at -1,125)."""
        low, high = (min(before, mark), max(before, mark)) if before else (mark, mark)
        mult = self.specs[symbol].atoms_per_tick_lot
        (buy_levels, buy_prices), (sell_levels, sell_prices) = (self._by_worst[symbol][1],
                                                                self._by_worst[symbol][-1])
        touched = [buy_levels[p] for p in buy_prices[bisect_right(buy_prices, low):]]
        touched += [sell_levels[p] for p in sell_prices[:bisect_left(sell_prices, high)]]
        grown: dict[str, list[OpenOrder]] = {}
        for level in touched:
            for o in level.values():
                gap = o.side * (o.worst - mark)
                per_lot = gap * mult if gap > 0 else 0
                o.close_cost = o.fee_close + per_lot * o.closing
                new = o.base + per_lot * o.lossq + o.hold
                if new != o.reserve:
                    self.accounts[o.account].order_margin += new - o.reserve
                    if new > o.reserve and o.accepted:
                        grown.setdefault(o.account, []).append(o)
                    o.reserve = new
        for name in sorted(grown):
            acct = self.accounts[name]
            available = self.available(acct)
            if available >= 0:
                continue
            for o in sorted(grown[name], key=lambda o: -o.order_id):
                out.append(("matching", Cancel(account=name, symbol=symbol, order_id=o.order_id,
                                                   reason="margin_repriced")))
                self._explain(out, now_ns, "risk.reserve_repriced", name, "cancel", {
                    "symbol": symbol, "order_id": o.order_id, "mark": mark, "mark_before": before,
                    "worst_price": o.worst, "reserve": o.reserve, "available": available})
                available += o.reserve
                if available >= 0:
                    break

    def _tick(self, now_ns: int, out: list) -> None:
        """The node's timer (a journaled input): the funding clock starts at the first tick, and
        a mark that stopped coming turns its symbol reduce-only even when no order asks."""
        self.funding_clock.begin({name: spec.funding_interval_s * E9
                                  for name, spec in self.specs.items()}, now_ns)
        self.mark_ages.check(self.specs, now_ns, out)

    def _set_mark(self, symbol: str, mark: int, now_ns: int, out: list) -> None:
        before = self.marks.get(symbol, 0)
        self.marks[symbol] = mark
        if mark != before and symbol in self._by_worst:
            self._mark_moved(symbol, before, mark, now_ns, out)

    def _forget(self, order: OpenOrder, reprice: bool = True) -> None:
        acct = self.accounts[order.account]
        acct.order_margin -= order.reserve
        order.reserve = 0
        self._index_worst(order, add=False)
        acct.remove_order(order, self.specs[order.symbol].atoms_per_tick_lot)
        del self.orders[order.order_id]
        if reprice and order.closing:  # the lots it was to close pass to the next order
            self._reprice(acct, order.symbol)

    # ------------------------------------------------------------------ requests

    def _explain(self, out: list, now_ns: int, rule: str, subject: str, decision: str,
                 numbers: dict) -> None:
        out.append(("audit", Explanation(ts_ns=now_ns, node="risk", rule=rule, subject=subject,
                                         decision=decision, numbers=numbers)))

    def _reject(self, out: list, ref: int, account: str, symbol: str, reason: str, detail: dict,
                now_ns: int, coid: str = "") -> None:
        out.append(("gateway", Report(ref=ref, account=account, event=OrderRejected(
            seq=0, ref=ref, order_id=0, account=account, symbol=symbol, reason=reason,
            detail=detail, client_order_id=coid))))
        self._explain(out, now_ns, f"risk.{reason}", account, "reject", {"symbol": symbol, **detail})

    def _refuse(self, out: list, ref: int, account: str, reason: str, detail: dict,
                now_ns: int) -> None:
        """A refused setting or transfer: an Error with the numbers, and an explanation."""
        out.append(("gateway", Reply(ref=ref, body=Error(reason=reason, detail=detail))))
        self._explain(out, now_ns, f"risk.{reason}", account, "reject", detail)

    def _ack(self, out: list, ref: int, account: str, action: str, detail: dict, now_ns: int) -> None:
        out.append(("gateway", Reply(ref=ref, body=Ack(action=action, detail=detail))))
        self._explain(out, now_ns, f"risk.{action}", account, "applied", detail)
        out.append(("liquidator", self.account_risk(account)))

    def _request(self, msg: Routed, now_ns: int, out: list) -> None:
        body = msg.body
        acct = self.accounts.get(msg.account)
        if acct is None:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unknown_account", detail={"account": msg.account}))))
            return
        if msg.scopes is not None:
            missing = missing_scope(body, msg.scopes)
            if missing is not None:  # the gateway let it through: a bug or a forged Routed
                self._refuse(out, msg.ref, acct.name, "missing_scope", missing, now_ns)
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
        else:
            out.append(("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="unsupported_request", detail={"type": t.__name__}))))

    def _place(self, acct: AccountState, ref: int, body: PlaceOrder, now_ns: int, out: list) -> None:
        spec = self.specs.get(body.symbol)
        coid = body.client_order_id
        if spec is None:
            return self._reject(out, ref, acct.name, body.symbol, "unknown_symbol",
                                {"symbol": body.symbol}, now_ns, coid)
        if body.type in MARKET_TYPES and not (body.trigger_price or self._price(body.symbol)):
            return self._reject(out, ref, acct.name, body.symbol, "no_reference_price", {}, now_ns, coid)
        if len(acct.orders) >= self.max_open_orders:
            return self._reject(out, ref, acct.name, body.symbol, "too_many_open_orders", {
                "open_orders": len(acct.orders), "limit": self.max_open_orders}, now_ns, coid)
        stale = None if body.reduce_only else self.mark_ages.refusal(body.symbol, now_ns, out)
        if stale is not None:
            return self._reject(out, ref, acct.name, body.symbol, "mark_stale", stale, now_ns, coid)
        regime = self.regimes[body.symbol]
        if regime == "degraded" and not body.reduce_only:
            return self._reject(out, ref, acct.name, body.symbol, "symbol_reduce_only", {
                "regime": regime}, now_ns, coid)
        # replace() on a blank order, not NewOrder(...): msgspec 0.22 takes a slow path for a
        # constructor call with 16 or more keywords (measured ~500 ns against ~130 ns here).
        cmd = msgspec.structs.replace(
            BLANK_ORDER, ref=ref, order_id=self.next_order_id, account=acct.name, symbol=body.symbol,
            side=body.side, qty=body.qty, type=body.type, price=body.price, tif=body.tif,
            post_only=body.post_only, reduce_only=body.reduce_only, client_order_id=coid,
            trigger_price=body.trigger_price, trigger_by=body.trigger_by, stp=body.stp,
            max_slippage_ppm=body.max_slippage_ppm,
        )
        order = OpenOrder(cmd)
        order.worst = self._worst_price(body.symbol, body.side, body.type, body.price,
                                        body.trigger_price, body.max_slippage_ppm)
        required, after = self._price_new(acct, order)
        if not body.reduce_only:
            limit = spec.tiers[-1].cap
            if after > limit:  # the position and every order opening on that side
                return self._reject(out, ref, acct.name, body.symbol, "position_limit", {
                    "notional_after": after, "limit": limit,
                    "tier": tier_for(spec.tiers, after).number}, now_ns, coid)
        problem = self._margin_problem(acct, order, required)
        if problem is not None:
            return self._reject(out, ref, acct.name, body.symbol, *problem, now_ns, coid)
        self.next_order_id += 1
        order.reserve = required
        acct.order_margin += required
        acct.add_order(order, spec.atoms_per_tick_lot)
        self._index_worst(order, add=True)
        self.orders[order.order_id] = order
        if ref:
            self.pending[ref] = order.order_id
        out.append(("matching", cmd))

    def _margin_problem(self, acct: AccountState, order: OpenOrder, extra: int,
                        exclude: OpenOrder | None = None) -> tuple[str, dict] | None:
        """(reason, numbers) when the cross wallet cannot hold `extra` more for `order`, or when
        its closing part would take an isolated position past what its margin can pay; None
        when it may go. A cross close frees the position's IM on the lots it closes, so a close
        is refused only when its loss against mark and fee exceed what is left over."""
        symbol = order.symbol
        spec = self.specs[symbol]
        pos = acct.positions.get(symbol)
        freed = 0
        opposite = pos is not None and pos.qty and (pos.qty > 0) != (order.side > 0)
        if opposite and pos.isolated:
            # Whichever order fills first closes first: a market order placed after a resting
            # close takes the close itself. So this order is checked as closing all it can,
            # on top of what the others' closes (as shared) would cost.
            value = self._position_value(symbol, pos)
            closing = min(order.remaining, abs(pos.qty))
            mark = self._price(symbol)
            gap = order.side * (order.worst - mark) if mark else 0
            fee_ppm = spec.taker_fee_ppm if spec.taker_fee_ppm > 0 else 0
            own = -(-(order.worst * closing * spec.atoms_per_tick_lot * fee_ppm) // PPM) + (
                gap * closing * spec.atoms_per_tick_lot if gap > 0 else 0)
            spent = own
            for o in acct.orders_in(symbol):
                if o.side == order.side and o.closing and o is not exclude:
                    spent += o.close_cost
                    closing += o.closing
            left = max(0, abs(pos.qty) - closing)
            left_value = value * left // abs(pos.qty)
            # what the position keeps must stay above its trigger; closed, it must not be
            # below zero (a price past bankruptcy would make the insurance fund pay)
            need = trigger_margin(spec.tiers, left_value, spec.forced_fee_ppm) + 1 if left \
                else 0
            equity = self.isolated_equity(symbol, pos)
            if equity - spent < need:
                bp = self._prices_for(acct, symbol, pos)[1]
                return "close_beyond_isolated_margin", {
                    "closing_qty": min(order.remaining, abs(pos.qty)),
                    "worst_price": order.worst, "mark": mark, "close_cost": own,
                    "other_closes_cost": spent - own, "isolated_equity": equity,
                    "required_after": need, "qty_left": left, "bankruptcy_price": bp}
        elif order.closing:
            value = self._position_value(symbol, pos)
            freed = self.initial_margin(acct, symbol, value) * order.closing // abs(pos.qty)
        available = self.available(acct)
        if extra > available + freed:
            detail = {
                "required": extra, "available": available, "equity": self.cross_equity(acct),
                "position_margin": self.position_margin(acct, cross_only=True),
                "order_margin": acct.order_margin, "leverage": self._leverage(acct, symbol),
                "im_buffer_ppm": spec.im_buffer_ppm[self.regimes[symbol]],
                "initial_margin": order.im, "worst_price": order.worst,
                "opening_qty": order.opening, "closing_qty": order.closing}
            if freed:
                detail["released_margin"] = freed
            if exclude is not None:
                detail["order_id"] = exclude.order_id
            return "insufficient_margin", detail
        return None

    def _amend(self, acct: AccountState, ref: int, body: AmendOrder, now_ns: int, out: list) -> None:
        # The order as matching will find it (by id, else by client id), so that an amend that
        # names its order either way is checked as a new order would be: against the position
        # limit when it grows, and against the margin it would add. What it adds is held from
        # now until matching answers (released on a refusal), so that nothing else (another
        # order, a withdrawal) can spend the same margin in between.
        order = self.orders.get(body.order_id) if body.order_id else \
            acct.order_by_client_id(body.client_order_id)
        if order is not None and order.account == acct.name and order.symbol == body.symbol \
                and (body.qty or body.price or body.trigger_price):
            price = body.price or order.price
            remaining = max(0, (body.qty or order.qty) - (order.qty - order.remaining))
            trigger = body.trigger_price or order.trigger_price
            spec = self.specs[order.symbol]
            probe = OpenOrder(msgspec.structs.replace(
                BLANK_ORDER, order_id=order.order_id, account=acct.name, symbol=order.symbol,
                side=order.side, qty=max(1, remaining), type=order.type, price=price,
                trigger_price=trigger, reduce_only=order.reduce_only,
                max_slippage_ppm=order.slippage_ppm))
            probe.remaining = remaining
            probe.worst = self._worst_price(order.symbol, order.side, order.type, price, trigger,
                                            order.slippage_ppm)
            reserve, after = self._price_new(acct, probe, exclude=order)
            if not order.reduce_only and \
                    pending_units(price or probe.worst, trigger, remaining) > order.counted:
                limit = spec.tiers[-1].cap
                if after > limit:
                    return self._reject(out, ref, acct.name, body.symbol, "position_limit", {
                        "notional_after": after, "limit": limit, "order_id": order.order_id,
                        "tier": tier_for(spec.tiers, after).number}, now_ns, body.client_order_id)
            extra = reserve - order.reserve
            problem = self._margin_problem(acct, probe, extra, exclude=order)
            if problem is not None:
                return self._reject(out, ref, acct.name, body.symbol, *problem, now_ns,
                                    body.client_order_id)
            if extra > 0:
                order.hold += extra
                order.reserve += extra
                acct.order_margin += extra
        out.append(("matching", Amend(ref=ref, account=acct.name, symbol=body.symbol,
                                      order_id=body.order_id, client_order_id=body.client_order_id,
                                      price=body.price, qty=body.qty,
                                      trigger_price=body.trigger_price)))

    # ------------------------------------------------------------------ settings and transfers

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

    def _requirement_problem(self, acct: AccountState, symbol: str) -> dict | None:
        """Numbers of the first unmet requirement (cross available < 0, or isolated IM), or None."""
        available = self.available(acct)
        if available < 0:
            return {"required": -available, "available": 0}
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated:
            equity = self.isolated_equity(symbol, pos)
            im = self.initial_margin(acct, symbol, self._position_value(symbol, pos))
            if equity < im:
                return {"required": im, "available": equity, "isolated": 1}
        return None

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

    def _portfolio_numbers(self, acct: AccountState) -> dict:
        """What decided a portfolio account's requirements, for explanations and views."""
        pm = self.portfolio_margin(acct)
        r = pm.stress
        numbers = {"initial_margin": pm.initial, "initial_source": pm.initial_source,
                   "maintenance_margin": pm.maintenance,
                   "maintenance_source": pm.maintenance_source,
                   "stress_requirement": r.requirement, "binding": r.binding,
                   "binding_regime": r.binding_regime, "params_version": r.version}
        for symbol, bps in sg.binding_move(r).items():
            numbers[f"worst_move_bps.{symbol}"] = bps
        return numbers

    def _set_account_mode(self, acct: AccountState, ref: int, body: SetAccountMarginMode,
                          now_ns: int, out: list) -> None:
        """Cross <-> portfolio for the account as a whole. Portfolio needs every symbol in cross
        margin: the grid prices one wallet, and an isolated position is its own wallet with its
        own trigger, which the grid's offsets must not reach into. The switch is refused when
        it would leave the cross wallet short of its initial requirement (available < 0)."""
        before = "portfolio" if acct.portfolio else "cross"
        if body.mode == "portfolio":
            isolated = sorted(s for s in self.specs if acct.mode(s) == "isolated") or sorted(
                s for s, p in acct.positions.items() if p.isolated)
            if isolated:
                return self._refuse(out, ref, acct.name, "portfolio_with_isolated_symbols", {
                    "symbols": ",".join(isolated), "count": len(isolated),
                    "margin_mode": before}, now_ns)
        acct.portfolio = body.mode == "portfolio"
        available = self.available(acct)
        if before != body.mode and available < 0:
            numbers = {"from": before, "to": body.mode, "available": available,
                       "required": -available, "equity": self.cross_equity(acct),
                       "order_margin": acct.order_margin,
                       "position_margin": self.position_margin(acct)}
            if acct.portfolio:
                numbers.update(self._portfolio_numbers(acct))
            acct.portfolio = before == "portfolio"
            numbers["position_margin_now"] = self.position_margin(acct)
            return self._refuse(out, ref, acct.name, "margin_mode_change_insufficient_margin",
                                numbers, now_ns)
        detail = {"from": before, "to": body.mode, "available": available,
                  "maintenance_margin": self.maintenance_margin(acct)}
        if acct.portfolio and acct.positions:
            detail.update(self._portfolio_numbers(acct))
        self._ack(out, ref, acct.name, "account_margin_mode_changed", detail, now_ns)

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

    # ------------------------------------------------------------------ oracle inputs

    def _regime(self, msg: Regime, now_ns: int, out: list) -> None:
        spec = self.specs.get(msg.symbol)
        before = self.regimes.get(msg.symbol)
        if spec is None or before == msg.regime:
            return
        self.regimes[msg.symbol] = msg.regime
        numbers = {
            "from_ppm": spec.im_buffer_ppm[before], "to_ppm": spec.im_buffer_ppm[msg.regime],
            "from_regime": before, "regime": msg.regime, "realized_vol_ppm": msg.realized_vol_ppm,
            "threshold_ppm": msg.threshold_ppm, "window_s": msg.window_s}
        self._explain(out, now_ns, "risk.im_buffer", msg.symbol, "im_buffer_changed", numbers)
        out.append(("gateway", Notice(rule="risk.im_buffer", subject=msg.symbol,
                                      decision="im_buffer_changed", numbers=numbers, ts_ns=now_ns)))
        for acct in self.accounts.values():
            self._reprice(acct, msg.symbol)
        self._explain_portfolio_shift(msg.symbol, before, now_ns, out)

    def _explain_portfolio_shift(self, symbol: str, before: str, now_ns: int, out: list) -> None:
        """A regime shift moves a portfolio account's initial requirement only where the summed
        ladder IM (which carries the IM buffer) binds it, not where the stress grid does: each
        account whose requirement did change gets one record, old -> new, with the stress
        grid's binding correlation regime and its worst joint move."""
        after = self.regimes[symbol]
        for name, acct in self.accounts.items():
            pos = acct.positions.get(symbol)
            if not acct.portfolio or pos is None or not pos.qty:
                continue
            new = self._portfolio_numbers(acct)
            self.regimes[symbol] = before
            old = self.portfolio_margin(acct, explain=False)
            self.regimes[symbol] = after
            if old.initial == new["initial_margin"]:
                continue
            self._explain(out, now_ns, "risk.portfolio_requirement", name, "requirement_changed", {
                "symbol": symbol, "from_regime": before, "regime": after,
                "from_initial_margin": old.initial, "from_initial_source": old.initial_source,
                **new})

    def _funding(self, msg: FundingRate, now_ns: int, out: list) -> None:
        """Settle funding for every open position of the symbol at the given mark."""
        spec = self.specs.get(msg.symbol)
        if spec is None or msg.mark <= 0 or not self.funding_clock.admit(
                msg, spec.funding_interval_s * E9, now_ns, out):
            return
        self._set_mark(msg.symbol, msg.mark, now_ns, out)
        net = paid = 0
        payers = receivers = 0
        for acct in self.accounts.values():
            pos = acct.positions.get(msg.symbol)
            if pos is None or not pos.qty:
                continue
            notional = abs(pos.qty) * msg.mark * spec.atoms_per_tick_lot
            side = 1 if pos.qty > 0 else -1
            payment = funding_payment(notional, Fraction(msg.rate_e9, E9), side)
            if pos.isolated:
                pos.iso_cash += payment
            else:
                acct.balance += payment
            pos.funding -= payment
            net += payment
            payers += payment < 0
            paid -= min(payment, 0)
            receivers += payment > 0
            acct.funding_history.appendleft(FundingEntry(
                ts_ns=msg.ts_ns or now_ns, symbol=msg.symbol, rate_e9=msg.rate_e9, qty=pos.qty,
                mark=msg.mark, payment=payment))
            out.append(("liquidator", self.account_risk(acct.name)))
        self.insurance_fund -= net  # payers rounded up, receivers down: the remainder is >= 0
        self._explain(out, now_ns, "risk.funding", msg.symbol, "funding_settled", {
            "rate_e9": msg.rate_e9, "mark": msg.mark, "payers": payers, "receivers": receivers,
            "paid": paid, "received": paid + net, "remainder_to_insurance": -net,
            "funding_ts_ns": msg.funding_ts_ns})

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
                        self._order_changed(order)
        elif t is OrderRejected:
            if ev.order_id in self.liq_orders:
                self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
            elif ev.duplicate:
                self._drop_pending(ev.ref)
            else:
                self.pending.pop(ev.ref, None)
                order = self.orders.get(ev.order_id)
                if order is not None and not order.accepted:  # the new order itself was refused
                    self._forget(order)
                elif order is not None and order.hold:  # an amend refused: release its hold
                    self._release_hold(order)
        elif t is OrderCancelled:
            if ev.duplicate:  # the answer to a resubmitted client order id, not a cancel
                self._drop_pending(ev.ref)
            else:
                if ev.ref:  # an order cancelled at once is answered with the cancel alone (no ack)
                    self.pending.pop(ev.ref, None)
                order = self.orders.get(ev.order_id)
                if order is not None:
                    self._forget(order)
                if ev.order_id in self.liq_orders:
                    self._liquidation_order_done(ev.order_id, ev.account, ev.symbol, out, ev.reason)
        elif t is OrdersCancelled:
            symbols = set()
            for order_id, _ in ev.orders:
                order = self.orders.get(order_id)
                if order is not None:
                    self._forget(order, reprice=False)
                    symbols.add(order.symbol)
            acct = self.accounts.get(ev.account)
            for symbol in sorted(symbols) if acct is not None else ():
                self._reprice(acct, symbol)
            if ev.ref < 0:  # a liquidation's "cancel" step
                out.append(("gateway", Report(ref=0, account=ev.account, event=ev)))
                self._liquidation_result(out, -ev.ref, "cancel", ev.account, ev.symbol,
                                         reason=f"cancelled {len(ev.orders)} orders")
                return
        elif t is OrderAmended:
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.price, order.qty, order.remaining = ev.price, ev.qty, ev.remaining
                if ev.trigger_price:  # a waiting stop moved: its worst fill price moved with it
                    order.trigger_price = ev.trigger_price
                self._release_hold(order)  # the amend's answer: the terms now price it
                self._order_changed(order)
        elif t is OrderTriggered:
            order = self.orders.get(ev.order_id)
            if order is not None:
                order.type = "market" if order.type in MARKET_TYPES else "limit"
                # matching prices a triggered market order from the mark at that moment
                self._order_changed(order, ref=self._price(order.symbol) or ev.observed_price)
        else:
            return
        out.append(("gateway", Report(ref=getattr(ev, "ref", 0), account=ev.account, event=ev)))

    def _release_hold(self, order: OpenOrder) -> None:
        if order.hold:
            self.accounts[order.account].order_margin -= order.hold
            order.reserve -= order.hold
            order.hold = 0

    def _order_changed(self, order: OpenOrder, ref: int = 0) -> None:
        """Its price, trigger, type or size changed: re-index it and re-price its symbol."""
        acct = self.accounts[order.account]
        self._index_worst(order, add=False)
        order.worst = self._worst_price(order.symbol, order.side, order.type, order.price,
                                        order.trigger_price, order.slippage_ppm, ref)
        self._index_worst(order, add=True)
        acct.recount(order)
        self._reprice(acct, order.symbol)

    def _drop_pending(self, ref: int) -> None:
        order_id = self.pending.pop(ref, None)
        order = self.orders.get(order_id) if order_id is not None else None
        if order is not None:
            self._forget(order)

    def _trade(self, ev: Trade, out: list) -> tuple[str, str]:
        spec = self.specs[ev.symbol]
        notional = ev.price * ev.qty * spec.atoms_per_tick_lot
        self.last[ev.symbol] = ev.price
        liq = self.liq_orders.get(ev.taker_order_id)
        fund_before = self.fund_equity() if liq is not None else 0  # one trade: marks stand still
        taker_fee = 0 if liq is not None else ceil_div(notional * spec.taker_fee_ppm, PPM)
        if spec.maker_fee_ppm >= 0:
            maker_fee = ceil_div(notional * spec.maker_fee_ppm, PPM)
        else:
            maker_fee = -(notional * -spec.maker_fee_ppm // PPM)  # rebate, rounded down
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

    # ------------------------------------------------------------------ liquidation steps

    def _margin_balance(self, acct: AccountState, symbol: str) -> int:
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated:
            return self.isolated_equity(symbol, pos)
        return self.cross_equity(acct)

    def _forced_fee(self, acct: AccountState, symbol: str, notional: int) -> int:
        """Charge the forced-execution fee of a liquidation fill to the insurance fund, never more
        than the margin balance left (a fee must not make the account bankrupt)."""
        spec = self.specs[symbol]
        fee = min(forced_fee(notional, spec.forced_fee_ppm),
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
        """The backstop auction: every backstop bids the bankruptcy price for what its margin
        carries; the best price wins, then the largest available margin, then the name.

        What a margin carries: the initial margin of each lot, plus, when the bankruptcy price is
        worse than the mark for the side taken (a long taken above the mark), the loss each lot
        makes at once. On initial margin alone a backstop taking over in a gap could be left
        bankrupt itself."""
        spec = self.specs[symbol]
        mult = spec.atoms_per_tick_lot
        mark = self._price(symbol) or price
        loss_per_lot = max(0, side * (price - mark)) * mult
        bids = []
        for name in self.backstops:
            acct = self.accounts[name]
            available = self.available(acct)
            lev = self.effective_leverage(acct, symbol, qty * price * mult)
            buffer = spec.im_buffer_ppm[self.regimes[symbol]]
            # per lot, x lev x PPM: price x mult x buffer (IM) + the loss at mark
            per_lot = buffer * price * mult + loss_per_lot * lev * PPM
            lots = available * lev * PPM // per_lot if price else 0
            if lots > 0 and acct.mode(symbol) == "cross":
                bids.append((-available, name, lots))
        takers, left = [], qty
        for _, name, lots in sorted(bids):
            take = min(left, lots)
            if take:
                takers.append((name, take))
                left -= take
        return takers

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

    # ------------------------------------------------------------------ views

    def account_risk(self, account: str) -> AccountRisk:
        acct = self.accounts[account]
        items = sorted(acct.positions.items())
        return AccountRisk(account=account, balance=acct.balance,
                           positions={s: (p.qty, p.cost) for s, p in items if p.qty},
                           isolated={s: p.iso_cash for s, p in items if p.isolated},
                           insurance_fund=self.fund_equity(),
                           leverage={s: self._leverage(acct, s) for s, p in items if p.qty},
                           portfolio=acct.portfolio)

    def _prices_for(self, acct: AccountState, symbol: str, pos: Position) -> tuple[int, int]:
        """(liquidation, bankruptcy) price in ticks, rounded against the position; 0 = none."""
        spec = self.specs[symbol]
        side = 1 if pos.qty > 0 else -1
        if pos.isolated:
            wallet, other_mm, other_upnl = pos.iso_cash + pos.cost, 0, 0
        else:
            others = [(s, p) for s, p in acct.positions.items() if s != symbol and not p.isolated]
            wallet = acct.balance + sum(p.cost for p in acct.positions.values() if not p.isolated)
            # what the trigger counts for the others: their MM and their forced fees
            other_mm = sum(trigger_margin(self.specs[s].tiers, self._position_value(s, p),
                                          self.specs[s].forced_fee_ppm) for s, p in others)
            other_upnl = sum(self._position_value(s, p) - p.cost for s, p in others)
        lp, _ = liquidation_price(side=side, qty=abs(pos.qty), cost=pos.cost, wallet=wallet,
                                  tiers=spec.tiers, mult=spec.atoms_per_tick_lot,
                                  fee_ppm=spec.forced_fee_ppm, other_mm=other_mm,
                                  other_upnl=other_upnl)
        bp = bankruptcy_price(side=side, qty=abs(pos.qty), cost=pos.cost,
                              wallet=wallet + other_upnl, mult=spec.atoms_per_tick_lot)
        return (round_price(lp, side) if lp is not None else 0,
                round_price(bp, side) if bp is not None else 0)

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
        )
