"""Risk + matching + liquidator engine, wired as the cluster wires them, with no sockets."""

from __future__ import annotations

from collections import deque

from cluster.rules.ladder import maintenance_margin
from cluster.protocol import (
    AccountRisk, BookDelta, CancelAll, FundingRate, IndexMark, LiquidationResult, LiquidationStep,
    MarkPrice, NewOrder, OrderCancelled, OrderRejected, PlaceOrder, Routed, Trade,
)
from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf
from nodes.matching.engine import MatchingEngine
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

USD = 1_000_000
SEC = 1_000_000_000
PPM = 1_000_000
INSURANCE = "insurance"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class World:
    def __init__(self, deposits: dict[str, int], *, insurance: int = 0, floor: int = 0,
                 backstops=(), depth_share_ppm: int = 500_000, position_share_ppm: int = 250_000):
        self.risk = RiskEngine(TOPO.symbols, deposits, insurance_fund=insurance,
                               backstops=list(backstops))
        self.matching = MatchingEngine(TOPO.symbols)
        self.liq = LiquidationEngine(TOPO.symbols, LiquidatorConf(
            insurance_floor=floor, depth_share_ppm=depth_share_ppm,
            position_share_ppm=position_share_ppm), id_base=0)
        self.now = SEC
        self.audit: list = []
        self.gateway: list = []
        self.results: list[LiquidationResult] = []
        self.ref = 0
        # What the world saw, written from the rules (PERP-MECHANICS.md), not from the ledger's
        # helpers: for the property tests' checks and coverage events.
        self.seen: set[str] = set()
        self.problems: list[str] = []  # broken rules, with the numbers
        self._liq_cash: dict[int, int] = {}  # liquidation IOC id -> fund cash its fills moved
        self._liq_fees: dict[int, int] = {}  # ... and forced fees its account paid
        # A funding payment that reaches risk just before `account`'s next liquidation step of one
        # of `kinds`, as it can in the cluster (no order holds between the oracle's and the
        # liquidator's links): the step was priced on the wallet before the payment. `payer`: the
        # account pays it (the rate's sign is its position's), else it receives it.
        self.funding_before_step: dict | None = None  # kinds, account, rate_e9, payer
        self.cross_deficits = 0  # cross deficits the fund covered so far

    def _check_money(self) -> None:
        held, owed = self.risk.conservation()
        assert held == owed, "money not conserved"

    def _to_risk(self, msg) -> None:
        self._route([("risk", msg)])

    def _route(self, effects) -> None:
        """Deliver in arrival order (FIFO), as the cluster's queues do: a node's outputs are
        handled after everything already on the way."""
        queue = deque(effects)
        while queue:
            dest, msg = queue.popleft()
            if dest == "risk":
                if type(msg) is LiquidationStep and self._funding_lands_before(msg):
                    queue.extend(self._risk_handle(self._funding_for(msg)))
                    self._check_money()
                queue.extend(self._risk_handle(msg))
                self._check_money()
            elif dest == "matching":
                if type(msg) is NewOrder and msg.ref < 0:
                    self._check_liquidation_order(msg)
                for ev in self.matching.handle(msg):
                    if type(ev) is BookDelta:
                        self.liq.on_book(ev)
                    else:
                        queue.append(("risk", ev))
            elif dest == "liquidator":
                if type(msg) is AccountRisk:
                    self.liq.on_account(msg)
                else:
                    self.results.append(msg)
                    queue.extend(self.liq.on_result(msg, self.now))
            elif dest == "audit":
                self.audit.append(msg)
            else:
                self.gateway.append(msg)

    def _funding_lands_before(self, step: LiquidationStep) -> bool:
        armed = self.funding_before_step
        return armed is not None and step.kind in armed["kinds"] and step.account == \
            armed["account"] and self.position(step.account, step.symbol) != 0

    def _funding_for(self, step: LiquidationStep) -> FundingRate:
        armed, self.funding_before_step = self.funding_before_step, None
        long = self.position(step.account, step.symbol) > 0
        sign = (1 if long else -1) * (1 if armed["payer"] else -1)  # longs pay a rate > 0
        return FundingRate(symbol=step.symbol, rate_e9=sign * armed["rate_e9"],
                           mark=self.risk.marks[step.symbol])

    # ------------------------------------------------------------------ the checks

    def _fund_cash(self) -> int:
        return self.risk.accounts[INSURANCE].balance

    def _value(self, symbol: str, qty: int) -> int:
        spec = self.risk.specs[symbol]
        return qty * self.risk.marks[symbol] * spec.atoms_per_tick_lot

    def _fund_equity(self) -> int:
        fund = self.risk.accounts[INSURANCE]
        return fund.balance + sum(self._value(s, p.qty) for s, p in fund.positions.items())

    def equity(self, account: str) -> int:
        """Everything an account has at mark: wallet, isolated cash and every position."""
        acct = self.risk.accounts[account]
        return acct.balance + sum(p.iso_cash + self._value(s, p.qty)
                                  for s, p in acct.positions.items())

    def margin_balance(self, account: str, symbol: str) -> int:
        """Cross: wallet + every cross position at mark; isolated: its cash + it at mark."""
        acct = self.risk.accounts[account]
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated:
            return pos.iso_cash + self._value(symbol, pos.qty)
        return acct.balance + sum(self._value(s, p.qty) for s, p in acct.positions.items()
                                  if not p.isolated)

    def _check_liquidation_order(self, order: NewOrder) -> None:
        mark = self.matching.books[order.symbol].mark
        width = mark * self.risk.specs[order.symbol].band_ppm // PPM
        if order.price in (mark - width, mark + width):
            self.seen.add("liquidation order at the band edge")
        if mark and not mark - width <= order.price <= mark + width:
            self.problems.append(f"liquidation order {order.order_id} at {order.price} outside the "
                                 f"band {mark - width}..{mark + width}")

    def _risk_handle(self, msg) -> list:
        risk = self.risk
        t = type(msg)
        liq_fill = t is Trade and msg.taker_order_id in risk.liq_orders
        cash, fund = self._fund_cash(), self._fund_equity()
        taker = risk.accounts[msg.taker_account] if liq_fill else None
        fees_before = taker.fees_paid if taker else 0
        margin_before = self.margin_balance(msg.taker_account, msg.symbol) if liq_fill else 0
        iso = liq_fill and taker.positions[msg.symbol].isolated
        transfer = t is LiquidationStep and msg.kind in ("backstop", "insurance", "adl")
        if transfer:
            equities = {name: self.equity(name) for name in risk.accounts if name != INSURANCE}
            subject = risk.accounts.get(msg.account)
            pos = subject.positions.get(msg.symbol) if subject is not None else None
            cross_subject = pos is not None and pos.qty != 0 and not pos.isolated
            wallet_before = subject.balance if subject is not None else 0
            held_long = pos is not None and pos.qty > 0
        out = risk.handle(msg, self.now)
        if liq_fill:
            oid = msg.taker_order_id
            fee = taker.fees_paid - fees_before
            full = ceil_div(msg.qty * msg.price * risk.specs[msg.symbol].atoms_per_tick_lot
                            * risk.specs[msg.symbol].forced_fee_ppm, PPM)
            # the margin balance the fill leaves, before its fee: the fill's price against the mark
            after_fill = margin_before - msg.taker_side * msg.qty * (
                msg.price - risk.marks[msg.symbol]) * risk.specs[msg.symbol].atoms_per_tick_lot
            if not iso and fee > max(0, after_fill):
                self.problems.append(f"forced fee {fee} above the margin balance {after_fill}")
            pos = taker.positions.get(msg.symbol)
            if fee and pos is not None and pos.qty:  # a fee never takes a margin balance below 0
                left = self.margin_balance(msg.taker_account, msg.symbol)
                if left < 0:
                    self.problems.append(f"forced fee {fee} left a margin balance of {left}")
            if fee < full:
                self.seen.add("forced fee capped")
            if fee > full:
                self.problems.append(f"forced fee {fee} above its rate's {full}")
            self._liq_fees[oid] = self._liq_fees.get(oid, 0) + fee
            self._liq_cash[oid] = self._liq_cash.get(oid, 0) + self._fund_cash() - cash
        results = [m for d, m in out if type(m) is LiquidationResult]
        if transfer and results:
            self._check_transfer(msg, results[0], equities, cross_subject, wallet_before, held_long)
        for result in results:
            self.seen.add(f"step {result.kind}")
            liq = self.liq.by_id.get(result.liquidation_id)
            cross = liq is not None and liq.key == liq.account
            if t is LiquidationStep:  # a transfer: the fund's change at mark, in this step
                moved = self._fund_equity() - fund
                if result.fund_delta != moved:
                    self.problems.append(f"{result.kind} step reports fund delta "
                                         f"{result.fund_delta}, the fund moved {moved}")
                # what the fund's own takeover made or lost at mark; the rest is a deficit cover
                taken = sum(lots for name, lots, _ in result.counterparties if name == INSURANCE)
                took = 1 if transfer and held_long else -1  # the side the takers take
                takeover = took * taken * (self.risk.marks[msg.symbol] - msg.price) * \
                    self.risk.specs[msg.symbol].atoms_per_tick_lot
                if moved < takeover and not cross:
                    self.seen.add("isolated deficit covered by the fund")
            elif result.kind == "reduce":
                oid = msg.taker_order_id if t is Trade else msg.order_id
                moved = self._liq_cash.pop(oid, 0)
                if t is not Trade:  # the closing answer: the cover of a deficit, if any
                    moved += self._fund_cash() - cash
                fees = self._liq_fees.pop(oid, 0)
                if result.fee != fees:
                    self.problems.append(f"reduce step reports fee {result.fee}, charged {fees}")
                if result.fund_delta != moved:
                    self.problems.append(f"reduce step reports fund delta {result.fund_delta}, "
                                         f"the fund's cash moved {moved} (fees {fees})")
                if moved < fees:
                    self._deficit_covered(cross, "reduce")
        return out

    def _deficit_covered(self, cross: bool, kind: str) -> None:
        if not cross:
            self.seen.add("isolated deficit covered by the fund")
            return
        self.seen.add("cross deficit covered by the fund")
        self.seen.add(f"cross deficit covered at the {kind} step")
        self.cross_deficits += 1

    def _check_transfer(self, msg: LiquidationStep, result: LiquidationResult,
                        equities: dict[str, int], cross_subject: bool, wallet_before: int,
                        held_long: bool) -> None:
        """A takeover (backstop, insurance, ADL) moves the position at the step's price and
        nothing else: each taker's equity at mark changes by its lots' value at mark against that
        price, no one else's (no one pays for another's loss); a cross subject left with no cross
        position keeps what the sale left it, or, were that negative, the fund makes it 0."""
        if result.kind == "adl" and self.cross_deficits:
            self.seen.add("adl after a cross deficit")
        mult = self.risk.specs[msg.symbol].atoms_per_tick_lot
        mark = self.risk.marks[msg.symbol]
        took = 1 if held_long else -1  # the side the takers take
        fair: dict[str, int] = {}
        for name, lots, price in result.counterparties:
            fair[name] = fair.get(name, 0) + took * lots * (mark - price) * mult
        for name, before in equities.items():
            if name == msg.account:
                continue
            change = self.equity(name) - before
            if change != fair.get(name, 0):
                self.problems.append(f"{result.kind} step {msg.liquidation_id} of {msg.account} "
                                     f"changed {name}'s equity by {change}, its takeover at "
                                     f"{msg.price} is worth {fair.get(name, 0)} at mark {mark}")
        if not cross_subject or not result.qty:
            return
        acct = self.risk.accounts[msg.account]
        # the sale of `qty` lots at the step's price, into the wallet (which holds the cost paid)
        left = wallet_before + took * result.qty * msg.price * mult
        if any(p.qty for p in acct.positions.values() if not p.isolated):
            if acct.balance != left:
                self.problems.append(f"{msg.account}'s wallet {acct.balance} after the "
                                     f"{result.kind} step, the sale leaves {left}")
        elif left < 0:
            if acct.balance != 0:
                self.problems.append(f"{msg.account} closed with a deficit of {-left}, its wallet "
                                     f"is {acct.balance}, not 0")
            self._deficit_covered(True, result.kind)
        elif acct.balance != left:
            self.problems.append(f"{msg.account}'s wallet {acct.balance} after the {result.kind} "
                                 f"step, the sale leaves {left}")

    def unliquidated(self) -> list[str]:
        """Accounts (or isolated positions) at or below their trigger at the current marks, that
        no liquidation is working on: equity <= maintenance margin + forced fee at mark."""
        found = []
        for name, acct in self.risk.accounts.items():
            if name == INSURANCE:
                continue
            subjects = [(name, [s for s, p in acct.positions.items() if p.qty and not p.isolated])]
            subjects += [(f"{name}:{s}", [s]) for s, p in acct.positions.items()
                         if p.qty and p.isolated]
            for key, symbols in subjects:
                if not symbols or key in self.liq.active:
                    continue
                equity = self.margin_balance(name, symbols[0])
                need = 0
                for s in symbols:
                    spec = self.risk.specs[s]
                    value = self._value(s, acct.positions[s].qty)
                    need += maintenance_margin(spec.tiers, value) + ceil_div(
                        abs(value) * spec.forced_fee_ppm, PPM)
                if equity <= need:
                    found.append(f"{key}: equity {equity} <= {need}")
        return found

    def negative_wallets(self) -> list[str]:
        """Accounts left with no position and a negative wallet (a loss someone must make good)."""
        return [f"{name}: {acct.balance}" for name, acct in self.risk.accounts.items()
                if name != INSURANCE and acct.balance < 0
                and not any(p.qty for p in acct.positions.values())]

    def place(self, account: str, side: int, qty: int, price: int, symbol: str = "BTC-PERP", **kw):
        self.ref += 1
        self._to_risk(Routed(ref=self.ref, account=account, body=PlaceOrder(
            symbol=symbol, side=side, qty=qty, price=price, **kw)))

    def cancel_all(self, account: str, symbol: str = "BTC-PERP") -> None:
        self.ref += 1
        self._to_risk(Routed(ref=self.ref, account=account, body=CancelAll(symbol=symbol)))

    def mark(self, price: int, symbol: str = "BTC-PERP") -> None:
        self.now += SEC // 10
        msg = IndexMark(symbol=symbol, index=price, mark=price, last=0, seq=0, ts_ns=self.now)
        self._to_risk(msg)
        self._route([("matching", MarkPrice(symbol=symbol, mark=price))])
        self.liq.on_mark(msg)
        self._route(self.liq.tick(self.now))

    def steps(self) -> list[tuple[str, str]]:
        return [(e.rule, e.decision) for e in self.audit if e.node == "liquidator"]

    def position(self, account: str, symbol: str = "BTC-PERP") -> int:
        pos = self.risk.accounts[account].positions.get(symbol)
        return pos.qty if pos is not None else 0
