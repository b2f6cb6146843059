"""The pre-trade reserve is written out inline for speed (RiskEngine._reserve_and_notional); this
pins it, for any order, position, mark, leverage and regime, to the documented formula composed
from the engine's own helpers: IM on the opening part at the worst price with the leverage capped
at the tier of the notional after the fill, x the regime buffer; + taker fee; + loss against mark."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.ladder import tier_for
from cluster.protocol import NewOrder
from cluster.units import ceil_div
from nodes.risk.accounts import OpenOrder, Position
from nodes.risk.ledger import MARKET_TYPES, PPM, RiskEngine
from tests.unit.pipeline import TOPO

SYMBOLS = sorted(TOPO.symbols)


def composed(engine: RiskEngine, acct, order: OpenOrder) -> tuple[int, int]:
    if order.remaining <= 0:
        return 0, 0
    symbol, spec = order.symbol, engine.specs[order.symbol]
    mult = spec.atoms_per_tick_lot
    worst = engine._worst_price(symbol, order.side, order.type, order.price, order.trigger_price)
    fee = ceil_div(worst * order.remaining * mult * max(spec.taker_fee_ppm, 0), PPM)
    if order.reduce_only:
        return fee, 0
    opening, after = order.remaining, 0
    pos = acct.positions.get(symbol)
    if pos is not None:
        if pos.qty and (pos.qty > 0) != (order.side > 0):
            opening = max(0, order.remaining - abs(pos.qty))
        after = abs(engine._position_value(symbol, pos))
    opening_value = worst * opening * mult
    after += opening_value
    lev = min(engine._leverage(acct, symbol), tier_for(spec.tiers, after).max_leverage)
    im = ceil_div(abs(opening_value) * spec.im_buffer_ppm[engine.regimes[symbol]], lev * PPM)
    mark = engine._price(symbol)
    loss = max(0, order.side * (worst - mark)) * opening * mult if mark else 0
    return im + fee + loss, after


@settings(max_examples=400, deadline=None)
@given(symbol=st.sampled_from(SYMBOLS), side=st.sampled_from((1, -1)),
       otype=st.sampled_from(("limit", "market", "stop_market", "stop_limit")),
       qty=st.integers(0, 10_000), remaining_cut=st.integers(0, 10_000),
       price_ppm=st.integers(500_000, 1_500_000), trigger_ppm=st.sampled_from((0, 950_000, 1_050_000)),
       reduce_only=st.booleans(), mark_ppm=st.sampled_from((0, 1_000_000, 980_000, 1_030_000)),
       last_ppm=st.sampled_from((0, 1_000_000)), position=st.integers(-5_000_000, 5_000_000),
       leverage=st.sampled_from((None, 1, 5, 20, 50, 125)),
       regime=st.sampled_from(("normal", "high_volatility", "degraded")))
def test_inline_reserve_matches_the_composed_formula(symbol, side, otype, qty, remaining_cut,
                                                     price_ppm, trigger_ppm, reduce_only, mark_ppm,
                                                     last_ppm, position, leverage, regime):
    engine = RiskEngine(TOPO.symbols, {"a": 10**15})
    base = TOPO.symbols[symbol].initial_price
    if mark_ppm:
        engine.marks[symbol] = base * mark_ppm // PPM
    if last_ppm:
        engine.last[symbol] = base * last_ppm // PPM
    if regime in engine.specs[symbol].im_buffer_ppm:
        engine.regimes[symbol] = regime
    acct = engine.accounts["a"]
    if leverage is not None:
        acct.leverage[symbol] = leverage
    if position:
        pos = acct.positions[symbol] = Position("cross")
        pos.qty = position
        pos.cost = position * base * engine.specs[symbol].atoms_per_tick_lot
    price = 0 if otype in MARKET_TYPES else max(1, base * price_ppm // PPM)
    trigger = base * trigger_ppm // PPM if otype.startswith("stop") else 0
    order = OpenOrder(NewOrder(order_id=1, account="a", symbol=symbol, side=side, qty=max(qty, 1),
                               type=otype, price=price, trigger_price=trigger,
                               reduce_only=reduce_only))
    order.remaining = max(qty, 1) - min(remaining_cut, max(qty, 1))
    assert engine._reserve_and_notional(acct, order) == composed(engine, acct, order)
    for amend_price, amend_remaining in ((price + 7, order.remaining + 3), (None, 0)):
        got = engine._reserve_and_notional(acct, order, amend_price, amend_remaining)
        order2 = OpenOrder(NewOrder(order_id=1, account="a", symbol=symbol, side=side, qty=1,
                                    type=otype, price=order.price if amend_price is None else amend_price,
                                    trigger_price=trigger, reduce_only=reduce_only))
        order2.remaining = amend_remaining
        assert got == composed(engine, acct, order2)
