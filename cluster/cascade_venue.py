"""The cascade simulator's `venue` close policy: the liquidator's own engine decides.

nodes/liquidator/engine.py's LiquidationEngine (pure) is fed the simulated marks, books and
account states and makes every decision it makes in the cluster: the trigger, the cancel step,
incremental reduction chunks (what restores maintenance or steps down one tier, at most a share of
the position and of the depth within the bankruptcy price), the backstop accounts (the ledger's
auction, cluster/rules/backstop.py), the insurance fund
against its floor, ADL. The simulator plays the risk node and the book: it carries out each
LiquidationStep against the simulated book and accounts and answers with a LiquidationResult,
as the ledger does. Latency delays a liquidation's first step; its later steps follow in the same
round (one engine cycle is far shorter than a round).
"""

from __future__ import annotations

from cluster.protocol import BookLevels, IndexMark, LiquidationResult, LiquidationStep
from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf

MAX_STEPS = 100_000  # per round: a bound on the step/result exchange, never reached in practice


class VenueCloser:
    def __init__(self, sim, conf: LiquidatorConf) -> None:
        self.sim = sim
        self.engine = LiquidationEngine({s: b.spec for s, b in sim.books.items()}, conf,
                                        stress_params=sim.stress)
        self.liqs: dict[int, object] = {}  # engine liquidation id -> the simulator's Liq
        self.seq = 0
        self.explanations = 0

    # ---------------------------------------------------------------- what the engine sees

    def sync_account(self, acct) -> None:
        risk = acct.risk()
        self.engine.on_account(type(risk)(
            account=risk.account, balance=risk.balance, positions=risk.positions,
            isolated=risk.isolated, insurance_fund=self.sim.fund_equity(),
            portfolio=risk.portfolio))

    def sync_marks(self, now_ns: int) -> None:
        self.seq += 1
        for symbol, book in self.sim.books.items():
            mark = book.mark()
            self.engine.on_mark(IndexMark(symbol=symbol, index=mark, mark=mark, last=mark,
                                          seq=self.seq, ts_ns=now_ns))
            self.sync_book(symbol)

    def sync_book(self, symbol: str) -> None:
        self.seq += 1
        bids, asks = self.sim.books[symbol].levels()
        self.engine.on_book(BookLevels(symbol=symbol, book_seq=self.seq, bids=bids, asks=asks))

    # ---------------------------------------------------------------- rounds

    def trigger(self, t: int, now_ns: int) -> list:
        """The engine's tick: new breaches start liquidations; their first step waits out the
        latency."""
        self.sync_marks(now_ns)
        new = []
        for dest, msg in self.engine.tick(now_ns):
            if dest == "audit":
                self.explanations += 1
            elif dest == "risk":
                liq = self.sim.new_liq(self.engine.by_id[msg.liquidation_id].key, t)
                liq.status = "pending"
                self.liqs[msg.liquidation_id] = liq
                self.sim.pending.setdefault(t + self.sim.params.latency_rounds, []).append(
                    (liq, msg))
                new.append(liq)
        return new

    def execute(self, t: int, now_ns: int) -> list:
        done = []
        queue = [msg for _, msg in sorted(self.sim.pending.pop(t, []),
                                          key=lambda item: item[0].id)]
        for msg in queue:
            liq = self.liqs[msg.liquidation_id]
            liq.executed = t
            account, _, symbol = liq.key.partition(":")
            if not symbol:
                equity = self.engine.monitor.assess(account)[0]
            elif symbol in self.sim.accounts[account].positions:
                equity = self.engine.monitor.assess_isolated(account, symbol)[0]
            else:
                equity = 0
            self.sim.note_bad_debt(liq, equity)
            done.append(liq)
        steps = 0
        while queue:
            steps += 1
            if steps > MAX_STEPS:
                raise AssertionError("liquidation steps did not settle within a round")
            msg = queue.pop(0)
            result = self.carry_out(msg)
            for dest, out in self.engine.on_result(result, now_ns):
                if dest == "audit":
                    self.explanations += 1
                elif dest == "risk":
                    queue.append(out)
        for liq_id, liq in self.liqs.items():
            if liq.status == "pending" and self.engine.by_id[liq_id].status != "active":
                liq.status = self.engine.by_id[liq_id].status
        return [liq for liq in done if liq.status != "restored"]

    def carry_out(self, step: LiquidationStep) -> LiquidationResult:
        """What the ledger does with a step, against the simulated book and accounts."""
        sim = self.sim
        liq = self.liqs[step.liquidation_id]
        acct = sim.accounts[step.account]
        pos = acct.positions.get(step.symbol)
        base = dict(liquidation_id=step.liquidation_id, kind=step.kind, account=step.account,
                    symbol=step.symbol)
        if pos is None or not pos[0]:
            return LiquidationResult(**base, qty=0, notional=0, fee=0, fund_delta=0,
                                     position_after=0, reason="no_position")
        if step.kind == "cancel":  # no resting orders in a snapshot
            return LiquidationResult(**base, qty=0, notional=0, fee=0, fund_delta=0,
                                     position_after=pos[0])
        qty = min(step.qty or abs(pos[0]), abs(pos[0]))
        fund_before = sim.fund_equity()
        counterparties: list[tuple[str, int, int]] = []
        notional = fee = 0
        if step.kind == "reduce":
            done, notional, fee = sim.reduce(liq, acct, step.symbol, qty, step.price)
        elif step.kind == "backstop":  # the venue's auction over the snapshot's backstops
            counterparties = sim.backstop_takers(liq, acct, step.symbol, qty, step.price)
            done = sum(lots for _, lots, _ in counterparties)
        elif step.kind == "insurance":
            sim.takeover(liq, acct, step.symbol, qty, step.price)
            done = qty
            counterparties = [("insurance", qty, step.price)]
        else:  # adl
            counterparties = sim.adl(liq, acct, step.symbol, qty, step.price)
            done = sum(lots for _, lots, _ in counterparties)
        if step.kind != "reduce":
            notional = done * step.price * sim.books[step.symbol].mult
        sim.cover_deficit(acct, liq)
        touched = {acct.name, *(name for name, _, _ in counterparties)} - {"insurance"}
        for account in sorted(touched):
            self.sync_account(sim.accounts[account])
        self.sync_book(step.symbol)
        after = acct.positions.get(step.symbol, [0, 0])[0]
        return LiquidationResult(**base, qty=done, notional=notional, fee=fee,
                                 fund_delta=sim.fund_equity() - fund_before,
                                 position_after=after, counterparties=counterparties,
                                 reason="" if done or step.kind == "reduce" else "no_taker")
