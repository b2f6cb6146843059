"""The risk engine's state hash: equal for equal histories, and it moves with every piece of state
that decides what the engine does next (so a field added later cannot silently fall out of it)."""

from __future__ import annotations

from cluster.protocol import (
    FundingEntry, FundingRate, IndexMark, KeyTable, NewOrder, OrderAccepted, PlaceOrder, Routed, SetLeverage,
    SetMarginMode, Trade,
)
from nodes.risk.accounts import AccountState, OpenOrder, Position
from nodes.risk.keys import KeyScopes
from nodes.risk.ledger import LiqExec, RiskEngine
from nodes.risk.marks import FundingClock, MarkAges
from tests.unit.changes import changed
from tests.unit.pipeline import TOPO

SYMBOL = sorted(TOPO.symbols)[0]
PRICE = TOPO.symbols[SYMBOL].initial_price
USD = 1_000_000

# Slots kept out of the hash on purpose, because other hashed state determines them.
DERIVED = {
    AccountState: {"name", "_by_symbol", "_pending", "_by_coid"},  # the key; indexes over `orders`
    OpenOrder: {"account", "ref", "counted"},  # its account's key; `pending`; price x remaining
    Position: set(),
    LiqExec: set(),
    MarkAges: {"max_age_ns"},  # configuration
    FundingClock: set(),
    KeyScopes: {"allowed"},  # worked out from `table`
}


def busy_engine() -> RiskEngine:
    """An engine with a position, an open order, a pending placement, a mark and settings."""
    risk = RiskEngine(TOPO.symbols, {"a": 500_000 * USD, "b": 500_000 * USD},
                      max_mark_age_ns=10**18)
    risk.handle(IndexMark(symbol=SYMBOL, index=PRICE, mark=PRICE, last=PRICE, seq=1, ts_ns=1), 0)
    risk.mark_ages.stale["ETH-PERP"] = 2  # a symbol whose mark stopped (this one's is fresh)
    risk.handle(Routed(ref=1, account="a", body=SetLeverage(symbol=SYMBOL, leverage=5)), 0)
    risk.handle(Routed(ref=2, account="b", body=SetMarginMode(symbol=SYMBOL, mode="isolated")), 0)
    for ref, account, side in ((3, "a", 1), (4, "b", -1)):
        out = risk.handle(Routed(ref=ref, account=account, body=PlaceOrder(
            symbol=SYMBOL, side=side, qty=10, price=PRICE)), 0)
        cmd = out[0][1]
        assert type(cmd) is NewOrder
        if account == "a":
            risk.handle(OrderAccepted(seq=1, ref=ref, order_id=cmd.order_id, account=account,
                                      symbol=SYMBOL, side=side, price=PRICE, qty=10), 0)
    risk.handle(Trade(seq=2, trade_id=1, symbol=SYMBOL, price=PRICE, qty=4, taker_side=-1,
                      taker_order_id=2, taker_account="b", taker_remaining=6, maker_order_id=1,
                      maker_account="a", maker_remaining=6), 0)
    risk.accounts["a"].funding_history.append(FundingEntry(
        ts_ns=5, symbol=SYMBOL, rate_e9=100, qty=4, mark=PRICE, payment=-3))
    risk.liq_orders[99] = LiqExec(7, 1_000)  # a liquidation IOC that has moved the fund by 1,000
    interval = TOPO.symbols[SYMBOL].funding_interval_s * 1_000_000_000
    risk.handle(FundingRate(symbol=SYMBOL, rate_e9=100, mark=PRICE, ts_ns=interval,
                            funding_ts_ns=interval), interval)
    # risk's own key table (the requests above came with none, as a core driven directly does)
    risk.handle(KeyTable(keys={"k1": ("a", ("trade",)), "k2": ("b", ("read",))},
                         revoked={"k3": "a", "k4": "b"}), interval)
    return risk


def test_equal_histories_give_equal_hashes():
    assert busy_engine().state_hash() == busy_engine().state_hash()


def _holders(risk: RiskEngine):
    acct = risk.accounts["a"]
    yield acct
    yield next(iter(acct.orders.values()))
    yield acct.positions[SYMBOL]
    yield risk.liq_orders[99]
    yield risk.mark_ages
    yield risk.funding_clock
    yield risk.keys


def test_every_slot_that_decides_the_future_is_in_the_hash():
    for holder in _holders(busy_engine()):
        kind = type(holder)
        for slot in kind.__slots__:
            if slot in DERIVED[kind]:
                continue
            risk = busy_engine()
            target = next(h for h in _holders(risk) if type(h) is kind)
            before = risk.state_hash()
            setattr(target, slot, changed(getattr(target, slot)))
            assert risk.state_hash() != before, f"{kind.__name__}.{slot} is not in the state hash"


def test_every_engine_attribute_is_in_the_hash():
    # configuration, and `orders`, `_by_worst`: indexes over the accounts' orders
    names = [n for n in vars(busy_engine())
             if n not in ("specs", "max_open_orders", "backstops", "orders", "_by_worst",
                          "stress_params",  # configuration: the published grid
                          "mark_ages", "funding_clock", "keys")]  # those: their slots one by one
    for name in names:
        risk = busy_engine()
        before = risk.state_hash()
        setattr(risk, name, changed(getattr(risk, name)))
        assert risk.state_hash() != before, f"RiskEngine.{name} is not in the state hash"
