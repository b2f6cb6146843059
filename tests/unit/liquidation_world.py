"""Risk + matching + liquidator engine, wired as the cluster wires them, with no sockets."""

from __future__ import annotations

from collections import deque

from cluster.protocol import (
    AccountRisk, BookDelta, CancelAll, IndexMark, LiquidationResult, MarkPrice, PlaceOrder, Routed,
)
from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf
from nodes.matching.engine import MatchingEngine
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

USD = 1_000_000
SEC = 1_000_000_000


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
                queue.extend(self.risk.handle(msg, self.now))
                self._check_money()
            elif dest == "matching":
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
