"""A pure risk + matching pipeline for tests: requests in, effects pumped between the two cores."""

from __future__ import annotations

from cluster import config
from cluster.protocol import IndexMark, MarkPrice, Routed
from nodes.matching.engine import MatchingEngine
from nodes.risk.ledger import RiskEngine

TOPO = config.load()


class Pipeline:
    def __init__(self, deposits: dict[str, int], check=None, observe=None,
                 insurance_fund: int = 0) -> None:
        self.risk = RiskEngine(TOPO.symbols, deposits, insurance_fund=insurance_fund)
        self.matching = MatchingEngine(TOPO.symbols)
        self.replies: list = []  # everything risk sent to the gateway
        self.audit: list = []
        self.log: list = []
        self.wire: list = []  # every message that crosses a link: risk's outputs, matching's events
        self.check = check or (lambda event, before: None)
        # Sees every message risk handled and what risk sent on (a money model follows along).
        self.observe = observe or (lambda msg, effects: None)
        self.ref = 0

    def balances(self) -> dict[str, tuple[int, dict[str, tuple[int, str]]]]:
        """Per account: (cross balance, {symbol: (qty, mode)}) — what checks compare across events."""
        return {n: (a.balance, {s: (p.qty, p.mode) for s, p in a.positions.items()})
                for n, a in self.risk.accounts.items()}

    def _checked(self, msg) -> list:
        """Risk handles one input; money and the caller's check are verified right after."""
        before = self.balances()
        effects = self.risk.handle(msg, 0)
        held, owed = self.risk.conservation()
        assert held == owed, f"money not conserved after {msg}"
        self.observe(msg, effects)
        self.check(msg, before)
        return effects

    def _risk(self, msg) -> None:
        self.pump(self._checked(msg))

    def pump(self, effects) -> None:
        queue = list(effects)
        while queue:
            dest, msg = queue.pop(0)
            self.log.append(msg)
            if dest != "audit":
                self.wire.append(msg)
            if dest == "gateway":
                self.replies.append(msg)
            elif dest == "audit":
                self.audit.append(msg)
            elif dest == "matching":
                for ev in self.matching.handle(msg):
                    self.wire.append(ev)
                    if type(ev).__name__ != "BookDelta":
                        queue.extend(self._checked(ev))

    def request(self, account: str, body):
        self.ref += 1
        self.replies.clear()
        self._risk(Routed(ref=self.ref, account=account, body=body))
        return list(self.replies)

    def mark(self, symbol: str, price: int) -> None:
        self._risk(IndexMark(symbol=symbol, index=price, mark=price, last=0, seq=0, ts_ns=0))
        self.pump([("matching", MarkPrice(symbol=symbol, mark=price))])

    def send(self, msg) -> None:
        """Any other input to risk (FundingRate, Regime)."""
        self._risk(msg)
