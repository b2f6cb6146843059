"""#18's one core interface: every node's core declares the shape it has (cluster/core.py), and
the declaration is true of a real instance, so a core that loses a method fails here by name."""

from __future__ import annotations

import pytest

from cluster.core import EffectCore, HashedCore, JournaledCore, SnapshotCore, TimedCore
from cluster.protocol import IndexMark, NewOrder
from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf
from nodes.matching.engine import MatchingEngine
from nodes.oracle.index import Oracle
from nodes.risk.ledger import RiskEngine
from nodes.surveillance.core import SurveillanceCore
from tests.unit.pipeline import TOPO

SYMBOL = sorted(TOPO.symbols)[0]
PRICE = TOPO.symbols[SYMBOL].initial_price

CORES = {  # core -> (a fresh instance, the protocols it declares)
    "risk": (lambda: RiskEngine(TOPO.symbols, {"a": 10**12}), {JournaledCore}),
    "matching": (lambda: MatchingEngine(TOPO.symbols), {JournaledCore}),
    "oracle": (lambda: Oracle(TOPO.symbols), {SnapshotCore, EffectCore}),
    "liquidator": (lambda: LiquidationEngine(TOPO.symbols, LiquidatorConf()),
                   {TimedCore, EffectCore}),
    "surveillance": (lambda: SurveillanceCore(TOPO.symbols), {HashedCore, TimedCore}),
}


@pytest.mark.parametrize("name", sorted(CORES))
def test_each_core_declares_its_shape_and_has_it(name):
    make, protocols = CORES[name]
    core = make()
    for protocol in protocols:
        assert protocol in type(core).__mro__, f"{name} does not declare {protocol.__name__}"
        assert isinstance(core, protocol), f"{name} lacks a method of {protocol.__name__}"


def test_the_journaled_cores_restore_what_they_snapshot():
    """The shape's promise, on both journaled cores: restore(snapshot()) keeps the state hash."""
    risk = RiskEngine(TOPO.symbols, {"a": 10**12})
    risk.handle(IndexMark(symbol=SYMBOL, index=PRICE, mark=PRICE, last=0, seq=1, ts_ns=1), 1)
    matching = MatchingEngine(TOPO.symbols)
    matching.handle(NewOrder(order_id=1, account="a", symbol=SYMBOL, side=1, qty=3, price=PRICE))
    for core, fresh in ((risk, RiskEngine(TOPO.symbols, {})), (matching, MatchingEngine({}))):
        assert fresh.state_hash() != core.state_hash()
        fresh.restore(core.snapshot())
        assert fresh.state_hash() == core.state_hash()


def test_an_object_missing_a_method_is_not_the_shape():
    class NoRestore:
        def handle(self, msg, now_ns):
            return []

        def state_hash(self):
            return ""

        def snapshot(self):
            return b""

    assert not isinstance(NoRestore(), JournaledCore)
    assert isinstance(NoRestore(), HashedCore)
