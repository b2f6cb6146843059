"""The liquidation path, decided step by step. Pure: inputs and `now_ns` come in as arguments; the
steps go to risk (which carries them out exactly and answers with a LiquidationResult).

Trigger: equity <= maintenance margin + forced-execution fee (the cross wallet as a whole, or one
isolated position on its own margin), on a fresh mark from the index (oracle mode normal or
carry), not while the oracle prices from the book or is degraded (HOLD_MODES).

Path, one liquidation per (account or isolated position), one symbol at a time:
1. cancel the account's open orders in the symbol; re-check.
2. incremental reduction: IOC orders limited at the bankruptcy price, each closing only what gets
   the account back above maintenance or down one ladder tier, and at most a share of the position
   and of the visible depth within the bankruptcy price; re-check after each.
3. what the book cannot take within the bankruptcy price goes to the backstop accounts;
4. what is left is taken over by the insurance fund at the bankruptcy price,
5. unless that would take the fund below its floor: auto-deleveraging instead;
6. what ADL finds no profitable position for, the fund takes after all, below its floor if need
   be: a bankrupt position never stays with its trader to be liquidated again and again.
Every step is an explanation record (mark, equity, MM, tier, chunk, price, fee, fund delta,
counterparties) under the subject "liq-<id>".

The path as a table (LIQUIDATION_TABLE: state -> event -> state after). Each state but the three
last awaits risk's result of one step ("<kind> result"), then a decision moves it on:

    state        awaits result   decisions after it
    trigger      -               cancel (the step sent when it starts)
    cancel       cancel          restored, closed, reduce, backstop
    reduce       reduce          restored, closed, reduce (again), backstop
    backstop     backstop        closed, insurance (fund above its floor), adl
    insurance    insurance       closed, incomplete (risk could not carry it out)
    adl          adl             closed, last_resort (the fund, below its floor if need be)
    last_resort  insurance       closed, incomplete
    restored, closed, incomplete (finished: no result is awaited)

A result for a liquidation this engine never started (one from before a restart: ids start from
the clock) is a quiet no-op, an explicit row of the table ("unknown"). Any other event with no row
(a result of another kind than the step awaited, one for a finished liquidation) raises
IllegalTransition before anything changes; the shell counts, logs and journals it.
"""

from __future__ import annotations

from fractions import Fraction

import msgspec

from cluster.audit import Explanation, counterparties_text
from cluster.book_mirror import BookMirror
from cluster.config import SymbolSpec
from cluster.core import EffectCore, TimedCore, allowed
from cluster.rules.ladder import tier_for
from cluster.rules.margin import triggered
from cluster.rules.prices import bankruptcy_price, round_price
from cluster.protocol import (
    AccountRisk, BookDelta, BookLevels, ClockTick, IndexMark, LiquidationResult, LiquidationStep,
    MaintenanceAlert,
)
from cluster.rules import stress as sg
from nodes.liquidator.monitor import MaintenanceMonitor

from cluster.rules.units import PPM
MS = 1_000_000
INSURANCE = "insurance"
# The oracle modes the liquidator holds off in (with pause_when_degraded): it liquidates on a mark
# from the index (normal) or the last good index carried for a few seconds (carry), never on one
# priced from the venue's own book (book: the venue's prices would liquidate its own traders) nor
# on a frozen one (degraded). A hold is a `liquidation.paused` record with the mode; the
# liquidation starts on the first fresh mark from a mode it trusts.
HOLD_MODES = ("book", "degraded")
STEP_KINDS = ("cancel", "reduce", "backstop", "insurance", "adl")
FINISHED = ("restored", "closed", "incomplete")
LIQUIDATION_TABLE: dict[str, dict[str, str]] = {
    "trigger": {"cancel": "cancel"},
    "cancel": {"cancel result": "cancel", "restored": "restored", "closed": "closed",
               "reduce": "reduce", "backstop": "backstop"},
    "reduce": {"reduce result": "reduce", "restored": "restored", "closed": "closed",
               "reduce": "reduce", "backstop": "backstop"},
    "backstop": {"backstop result": "backstop", "closed": "closed", "insurance": "insurance",
                 "adl": "adl"},
    "insurance": {"insurance result": "insurance", "closed": "closed",
                  "incomplete": "incomplete"},
    "adl": {"adl result": "adl", "closed": "closed", "last_resort": "last_resort"},
    "last_resort": {"insurance result": "last_resort", "closed": "closed",
                    "incomplete": "incomplete"},
    "restored": {}, "closed": {}, "incomplete": {},
    # a liquidation started before this engine's restart: its results change nothing here
    "unknown": {f"{kind} result": "unknown" for kind in STEP_KINDS},
}


class LiquidatorConf(msgspec.Struct, frozen=True, kw_only=True):
    insurance_floor: int = 0  # atoms
    position_share_ppm: int = 250_000
    depth_share_ppm: int = 500_000
    max_mark_age_ns: int = 3_000 * MS
    pause_when_degraded: bool = True


class Liquidation:
    __slots__ = ("id", "key", "account", "symbol", "phase", "status", "steps", "last_qty")

    def __init__(self, liquidation_id: int, key: str, account: str, symbol: str) -> None:
        self.id = liquidation_id
        self.key = key
        self.account = account
        self.symbol = symbol
        self.phase = "trigger"
        self.status = "active"
        self.steps = 0
        self.last_qty = 0

    @property
    def state(self) -> str:
        """Its state in LIQUIDATION_TABLE: the phase while active, else how it ended."""
        return self.phase if self.status == "active" else self.status


class LiquidationEngine(TimedCore, EffectCore):
    def __init__(self, specs: dict[str, SymbolSpec], conf: LiquidatorConf, id_base: int = 0,
                 stress_params: sg.StressParams | None = None) -> None:
        self.specs = dict(specs)
        self.conf = conf
        # Copies of matching's books from its deltas, healed by its published snapshots (a lost
        # delta, or a restart while matching runs); they size the reduction chunks, while the
        # IOCs themselves meet the real book. A portfolio account's liquidity add-on walks them.
        self.books = {s: BookMirror(s, empty_at_start=True) for s in sorted(specs)}
        self.monitor = MaintenanceMonitor(specs, stress_params, books=self.books)
        self.mark_info: dict[str, tuple[int, int, str]] = {}  # symbol -> (mark, ts_ns, mode)
        self.active: dict[str, Liquidation] = {}  # key -> running liquidation
        self.by_id: dict[int, Liquidation] = {}
        self.paused: dict[str, None] = {}
        self.insurance_fund = 0
        # Takeovers asked of risk and not answered yet: liquidation id -> their loss at mark. Each
        # counts against the fund until risk's answer (and its new balance) comes, so two
        # liquidations at once cannot both spend the same room above the floor.
        self.committed: dict[int, int] = {}
        self.next_id = id_base + 1

    # ------------------------------------------------------------------ inputs

    def handle(self, msg, now_ns: int) -> list[tuple[str, object]]:
        """Account states and step results from risk, marks, the books; the shell's check timer
        (ClockTick) runs tick()."""
        t = type(msg)
        if t is AccountRisk:
            self.on_account(msg)
        elif t is LiquidationResult:
            return self.on_result(msg, now_ns)
        elif t is IndexMark:
            self.on_mark(msg)
        elif t is BookDelta or t is BookLevels:
            self.on_book(msg)
        elif t is ClockTick:
            return self.tick(now_ns)
        return []

    def on_account(self, state: AccountRisk) -> None:
        self.insurance_fund = state.insurance_fund
        if state.account != INSURANCE:  # the fund is not liquidated: it is the last resort
            self.monitor.on_account(state)

    def on_mark(self, msg: IndexMark) -> None:
        self.mark_info[msg.symbol] = (msg.mark, msg.ts_ns, msg.mode)
        self.monitor.on_mark(msg.symbol, msg.mark)

    def on_book(self, ev: BookDelta | BookLevels) -> None:
        book = self.books.get(ev.symbol)
        if book is not None:
            book.feed([ev])
            self.monitor.on_book(ev.symbol)

    # ------------------------------------------------------------------ decisions

    def _mark_problem(self, symbol: str, now_ns: int) -> str | None:
        info = self.mark_info.get(symbol)
        if info is None:
            return "no_mark"
        mark, ts, mode = info
        if now_ns - ts > self.conf.max_mark_age_ns:
            return "stale_mark"
        if mode in HOLD_MODES and self.conf.pause_when_degraded:
            return f"oracle_{mode}"
        return None

    def _explain(self, out: list, now_ns: int, liq: Liquidation, step: str, decision: str,
                 numbers: dict) -> None:
        liq.steps += 1
        out.append(("audit", Explanation(
            ts_ns=now_ns, node="liquidator", rule=f"liquidation.{step}", subject=f"liq-{liq.id}",
            decision=decision, numbers={"account": liq.account, "symbol": liq.symbol,
                                        "step": liq.steps, **numbers})))

    def tick(self, now_ns: int) -> list[tuple[str, object]]:
        """New breaches start liquidations (alerts go out too); paused ones resume when they can."""
        out: list[tuple[str, object]] = []
        for alert in self.monitor.check(now_ns):
            out.append(("gateway", alert))
            self._maybe_start(alert.account, alert, now_ns, out)
        for key in list(self.paused):
            alert = self.monitor.below.get(key)
            if alert is None:
                del self.paused[key]
            else:
                self._maybe_start(key, alert, now_ns, out)
        return out

    def _subject(self, key: str) -> tuple[str, str | None]:
        account, _, symbol = key.partition(":")
        return account, symbol or None

    def _maybe_start(self, key: str, alert: MaintenanceAlert, now_ns: int, out: list) -> None:
        if key in self.active:
            return
        account, symbol = self._subject(key)
        state = self.monitor.accounts.get(account)
        if state is None:
            return
        if symbol is None:  # cross: the largest position first
            cross = {s: q for s, (q, c) in state.positions.items() if s not in state.isolated}
            if not cross:
                return
            symbol = max(sorted(cross), key=lambda s: abs(self.monitor._position(
                s, *state.positions[s])[0]))
        problem = self._mark_problem(symbol, now_ns)
        if problem is not None:
            if key not in self.paused:
                self.paused[key] = None
                out.append(("audit", Explanation(
                    ts_ns=now_ns, node="liquidator", rule="liquidation.paused", subject=key,
                    decision="paused", numbers={"symbol": symbol, "reason": problem,
                                                "equity": alert.equity,
                                                "maintenance_margin": alert.maintenance_margin})))
            return
        self.paused.pop(key, None)
        liq = Liquidation(self.next_id, key, account, symbol)
        self.next_id += 1
        self.active[key] = liq
        self.by_id[liq.id] = liq
        equity, mm, fee = self._assess(liq)
        qty = state.positions[symbol][0]
        value = self.monitor._position(symbol, qty, state.positions[symbol][1])[0]
        numbers = {
            "mark": self.mark_info[symbol][0], "equity": equity, "maintenance_margin": mm,
            "forced_fee": fee, "position": qty,
            "tier": tier_for(self.specs[symbol].tiers, value).number,
            "isolated": int(key != account)}
        pm = self.monitor.explain_portfolio(account) if state.portfolio and key == account else None
        if pm is not None:  # what decided the requirement: the grid's binding regime and move
            numbers.update({"portfolio": 1, "maintenance_source": pm.maintenance_source,
                            "stress_requirement": pm.stress.requirement,
                            "binding": pm.stress.binding,
                            "binding_regime": pm.stress.binding_regime,
                            "liquidity_addon": sum(a.addon for a in pm.stress.liquidity)})
            for s, bps in sg.binding_move(pm.stress).items():
                numbers[f"worst_move_bps.{s}"] = bps
            for s, notional in pm.stress.notional.items():  # what the grid priced: legs at marks
                numbers[f"notional.{s}"] = notional
        self._explain(out, now_ns, liq, "trigger", "liquidate", numbers)
        self._move(liq, "cancel")
        out.append(("risk", LiquidationStep(liquidation_id=liq.id, kind="cancel", account=account,
                                            symbol=symbol)))

    def _assess(self, liq: Liquidation) -> tuple[int, int, int]:
        if liq.key != liq.account:
            return self.monitor.assess_isolated(liq.account, liq.symbol)
        return self.monitor.assess(liq.account)

    def _bankruptcy(self, liq: Liquidation) -> int | None:
        """The bankruptcy price in ticks, rounded against the position; None when no price of
        this symbol brings the equity to zero (a short whose account is insolvent even at a
        price of 0, a long whose account stays solvent at any price)."""
        state = self.monitor.accounts[liq.account]
        qty, cost = state.positions[liq.symbol]
        spec = self.specs[liq.symbol]
        side = 1 if qty > 0 else -1
        if liq.key != liq.account:
            wallet, other = state.isolated[liq.symbol] + cost, 0
        else:
            wallet = state.balance + sum(c for s, (q, c) in state.positions.items()
                                         if s not in state.isolated)
            other = 0  # equity reaches zero: the other cross positions count at their PnL
            for s, (q, c) in state.positions.items():
                if s != liq.symbol and s not in state.isolated:
                    other += self.monitor._position(s, q, c)[0] - c
        price = bankruptcy_price(side=side, qty=abs(qty), cost=cost, wallet=wallet + other,
                                 mult=spec.atoms_per_tick_lot)
        if price is None:
            return None
        return max(1, round_price(price, side))

    def _needed(self, liq: Liquidation, qty: int, cost: int, fill_price: int) -> int:
        """Lots to close at `fill_price` to get back above maintenance or down one ladder tier."""
        spec = self.specs[liq.symbol]
        mark = self.mark_info[liq.symbol][0]
        slip = abs(mark - fill_price) * spec.atoms_per_tick_lot  # loss against mark, per lot
        q = abs(qty)
        per_lot = mark * spec.atoms_per_tick_lot
        tier = tier_for(spec.tiers, q * per_lot)
        to_lower_tier = q - tier.floor // per_lot if tier.number > 1 else q
        equity, mm, fee = self._assess(liq)
        _, pos_mm, pos_fee = self.monitor._position(liq.symbol, qty, cost)
        state = self.monitor.accounts[liq.account]
        portfolio = state.portfolio and liq.key == liq.account

        def healthy(x: int) -> bool:
            left = q - x
            signed, cost_left = left if qty > 0 else -left, cost * left // q
            close_fee = x * per_lot * spec.forced_fee_ppm // PPM
            if portfolio:  # the grid's requirement of what would be left (not additive)
                _, need, fee_after = self.monitor.assess(
                    liq.account, replace={liq.symbol: (signed, cost_left)})
                return not triggered(equity - close_fee - x * slip, need, fee_after)
            _, mm_left, fee_left = self.monitor._position(liq.symbol, signed, cost_left)
            return not triggered(equity - close_fee - x * slip, mm - pos_mm + mm_left,
                                 fee - pos_fee + fee_left)

        lo, hi = 1, q
        while lo < hi:  # the smallest x that is healthy (x = q always "is": nothing left to hold)
            mid = (lo + hi) // 2
            if healthy(mid):
                hi = mid
            else:
                lo = mid + 1
        return max(1, min(lo, to_lower_tier))

    def _depth_within(self, symbol: str, closing_side: int, limit: int) -> tuple[int, int]:
        """(lots on the book within `limit`, the best such price or the limit)."""
        book = self.books[symbol]
        bids, asks = book.bids, book.asks
        if closing_side < 0:  # selling into bids at or above the limit
            prices = [p for p in bids if p >= limit]
            return sum(bids[p] for p in prices), max(prices, default=limit)
        prices = [p for p in asks if p <= limit]
        return sum(asks[p] for p in prices), min(prices, default=limit)

    def _move(self, liq: Liquidation, event: str) -> None:
        """Move `liq` by LIQUIDATION_TABLE (IllegalTransition when it has no row)."""
        after = allowed(LIQUIDATION_TABLE, liq.state, event, machine="liquidation",
                        subject=f"liq-{liq.id}", numbers={"account": liq.key})
        if after in FINISHED:
            liq.status = after
        else:
            liq.phase = after

    def on_result(self, result: LiquidationResult, now_ns: int) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        liq = self.by_id.get(result.liquidation_id)
        event = f"{result.kind} result"
        if liq is None:
            allowed(LIQUIDATION_TABLE, "unknown", event, machine="liquidation",
                    subject=f"liq-{result.liquidation_id}", numbers={"account": result.account})
            return out
        self._move(liq, event)
        self.committed.pop(liq.id, None)  # risk's answer: the balance it sent before it is current
        avg = str(Fraction(result.notional, result.qty * self.specs[liq.symbol].atoms_per_tick_lot)
                  .limit_denominator(10**6)) if result.qty else "0"
        self._explain(out, now_ns, liq, result.kind, "done", {
            "qty": result.qty, "notional": result.notional, "avg_price": avg, "fee": result.fee,
            "fund_delta": result.fund_delta, "position_after": result.position_after,
            "insurance_fund": self.insurance_fund,
            "counterparties": counterparties_text(result.counterparties),
            "reason": result.reason})
        liq.last_qty = result.qty
        if result.position_after == 0:
            return self._finish(liq, "closed", now_ns, out)
        self._advance(liq, now_ns, out)
        return out

    def _finish(self, liq: Liquidation, status: str, now_ns: int, out: list) -> list:
        self._move(liq, status)
        self.committed.pop(liq.id, None)
        self.active.pop(liq.key, None)
        if status != "incomplete":  # a later breach is a new liquidation
            self.monitor.below.pop(liq.key, None)
        self._explain(out, now_ns, liq, "end", status, {"insurance_fund": self.insurance_fund})
        return out

    def _advance(self, liq: Liquidation, now_ns: int, out: list) -> None:
        state = self.monitor.accounts[liq.account]
        qty, cost = state.positions.get(liq.symbol, (0, 0))
        if not qty:
            self._finish(liq, "closed", now_ns, out)
            return
        equity, mm, fee = self._assess(liq)
        if liq.phase in ("cancel", "reduce") and not triggered(equity, mm, fee):
            self._finish(liq, "restored", now_ns, out)
            return
        solved = self._bankruptcy(liq)
        side = -1 if qty > 0 else 1
        # With no bankruptcy price the book order has no limit (risk keeps it in the band), but a
        # takeover is made at the mark: "any price" is no price to transfer a position at (a
        # short taken at 10**15 ticks moved 10**17 atoms per lot between trader and taker).
        bp = solved if solved is not None else (1 if qty > 0 else 10**15)
        takeover = dict(liquidation_id=liq.id, account=liq.account, symbol=liq.symbol,
                        price=solved if solved is not None else self.mark_info[liq.symbol][0])
        step = {**takeover, "price": bp}
        if liq.phase == "cancel" or (liq.phase == "reduce" and liq.last_qty):
            depth, best = self._depth_within(liq.symbol, side, bp)
            needed = self._needed(liq, qty, cost, best)
            by_position = max(1, abs(qty) * self.conf.position_share_ppm // PPM)
            by_depth = depth * self.conf.depth_share_ppm // PPM
            chunk = min(needed, by_position, by_depth, abs(qty))
            self._explain(out, now_ns, liq, "plan", "reduce" if chunk else "book_exhausted", {
                "mark": self.mark_info[liq.symbol][0], "equity": equity,
                "maintenance_margin": mm, "forced_fee": fee, "bankruptcy_price": bp,
                "needed": needed, "cap_position": by_position, "depth_within_bankruptcy": depth,
                "cap_depth": by_depth, "chunk": chunk})
            if chunk:
                self._move(liq, "reduce")
                out.append(("risk", LiquidationStep(kind="reduce", qty=chunk, **step)))
                return
        if liq.phase in ("cancel", "reduce"):
            self._move(liq, "backstop")
            out.append(("risk", LiquidationStep(kind="backstop", qty=abs(qty), **takeover)))
            return
        if liq.phase in ("backstop", "adl"):
            mark = self.mark_info[liq.symbol][0]
            loss = max(0, (takeover["price"] - mark) * (1 if qty > 0 else -1)) * abs(qty) * \
                self.specs[liq.symbol].atoms_per_tick_lot
            committed = sum(v for k, v in self.committed.items() if k != liq.id)
            after = self.insurance_fund - committed - loss
            above_floor = after >= self.conf.insurance_floor
            numbers = {"insurance_fund": self.insurance_fund, "takeover_loss_at_mark": loss,
                       "committed_to_other_takeovers": committed,
                       "fund_after": after, "floor": self.conf.insurance_floor,
                       "bankruptcy_price": bp, "takeover_price": takeover["price"],
                       "position": qty}
            if liq.phase == "backstop":
                self._explain(out, now_ns, liq, "plan", "insurance" if above_floor else "adl",
                              numbers)
                self._move(liq, "insurance" if above_floor else "adl")
            else:
                # ADL found too few profitable positions to close against (maybe none): the fund
                # is the last resort, below its floor if need be (the venue's capital stands
                # behind it), rather than leaving a bankrupt position with its trader and
                # liquidating it again on every tick.
                self._explain(out, now_ns, liq, "plan",
                              "insurance" if above_floor else "insurance_below_floor",
                              {**numbers, "adl_taken": liq.last_qty})
                self._move(liq, "last_resort")
            if liq.phase != "adl":
                self.committed[liq.id] = loss
            out.append(("risk", LiquidationStep(
                kind="adl" if liq.phase == "adl" else "insurance", qty=abs(qty), **takeover)))
            return
        # Risk could not carry out the fund's takeover (no price, no position): the position stays
        # with the trader and the alert stands, so this is not started again on every tick.
        self._finish(liq, "incomplete", now_ns, out)
