"""What an order reserves, for any order, position, mark, leverage, regime and margin mode, against
the README's rule written out here as plain arithmetic (none of the engine's helpers):

    worst   = the limit price; a market order: reference (trigger, else mark, else last) moved by
              the client's max slippage (else the symbol's protection), floored, a sell >= 1 tick
    closing = the lots that close an opposite position, shared oldest order first;
    opening = the rest (none for reduce-only)
    IM      = ceil(opening value x buffer / leverage), leverage = min(setting, max leverage of the
              tier of |position at mark| + the opening value of every order on that side); each
              order holds the growth of its side's IM it causes
    fee     = ceil(worst x lots x taker rate), on opening and closing lots
    loss    = max(0, side x (worst - mark)) x lots, the loss at once against mark
    reserve = IM + fee + loss, where a close of an isolated position is paid from its own margin
              (its fee and loss are not held on the cross wallet)
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.protocol import NewOrder, PlaceOrder, Routed
from nodes.risk.accounts import Position
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

SYMBOLS = sorted(TOPO.symbols)
MILLION = 1_000_000
MARKET = ("market", "stop_market")


def up(n: int, d: int) -> int:
    q, r = divmod(n, d)
    return q + (1 if r else 0)


def leverage_at(spec, setting: int, notional: int) -> int:
    cap = spec.tiers[-1].max_leverage
    for tier in spec.tiers:
        if notional <= tier.cap:
            cap = tier.max_leverage
            break
    return min(setting, cap)


def expected(spec, side, otype, price, trigger, slippage, qty, reduce_only, mark, last, pos_qty,
             pos_cost, isolated, setting, buffer, earlier=()) -> tuple[int, int]:
    """(reserve, notional the position limit is checked on) of an order placed after `earlier`
    (qty, opening value) orders on its side."""
    mult = spec.atoms_per_tick_lot
    if otype in MARKET:
        ref = trigger or mark or last
        move = ref * (slippage or spec.protection_ppm) // MILLION
        worst = ref + move if side > 0 else max(1, ref - move)
    else:
        worst = price
    earlier_qty = sum(q for q, _ in earlier)
    earlier_open = sum(v for _, v in earlier)
    opposite = pos_qty != 0 and (pos_qty > 0) != (side > 0)
    closing = min(qty, max(0, abs(pos_qty) - earlier_qty)) if opposite else 0
    opening = 0 if reduce_only else qty - closing
    ref_price = mark or last
    position_value = abs(pos_qty) * ref_price * mult if ref_price else abs(pos_cost)
    side_open = earlier_open + worst * opening * mult
    lev = leverage_at(spec, setting, position_value + side_open)
    # the side's IM before this order, at the tier the earlier orders were in
    lev_before = leverage_at(spec, setting, position_value + earlier_open)
    im = max(0, up(side_open * buffer, lev * MILLION) - up(earlier_open * buffer,
                                                           lev_before * MILLION))
    rate = max(spec.taker_fee_ppm, 0)
    fee_open = up(worst * opening * mult * rate, MILLION)
    fee_close = up(worst * closing * mult * rate, MILLION)
    mark_or_last = mark or last
    loss_per_lot = max(0, side * (worst - mark_or_last)) * mult if mark_or_last else 0
    if isolated:
        return im + fee_open + loss_per_lot * opening, position_value + side_open
    return im + fee_open + fee_close + loss_per_lot * (opening + closing), position_value + side_open


def refused_at_the_position_limit(out, spec, after) -> bool:
    event = getattr(out[0][1], "event", None)
    if event is None or event.reason != "position_limit":
        return False
    assert after > spec.tiers[-1].cap == event.detail["limit"]
    assert event.detail["notional_after"] == after
    return True


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(SYMBOLS), side=st.sampled_from((1, -1)),
       otype=st.sampled_from(("limit", "market", "stop_market", "stop_limit")),
       qty=st.integers(1, 10_000), price_ppm=st.integers(500_000, 1_500_000),
       trigger_ppm=st.sampled_from((950_000, 1_050_000)),
       slippage=st.sampled_from((0, 1, 20_000, 100_000, 1_000_000)), reduce_only=st.booleans(),
       mark_ppm=st.sampled_from((0, 1_000_000, 980_000, 1_030_000)),
       last_ppm=st.sampled_from((0, 1_000_000)), position=st.integers(-5_000_000, 5_000_000),
       isolated=st.booleans(), leverage=st.sampled_from((None, 1, 5, 20, 50, 125)),
       regime=st.sampled_from(("normal", "high_volatility")),
       earlier=st.lists(st.integers(1, 3_000), max_size=3))
def test_an_order_reserves_what_the_rule_says(symbol, side, otype, qty, price_ppm, trigger_ppm,
                                              slippage, reduce_only, mark_ppm, last_ppm, position,
                                              isolated, leverage, regime, earlier):
    spec = TOPO.symbols[symbol]
    base = spec.initial_price
    mark = base * mark_ppm // MILLION
    last = base * last_ppm // MILLION
    engine = RiskEngine(TOPO.symbols, {"a": 10**18})
    if mark:
        engine.marks[symbol] = mark
    if last:
        engine.last[symbol] = last
    engine.regimes[symbol] = regime
    acct = engine.accounts["a"]
    if leverage is not None:
        acct.leverage[symbol] = leverage
    pos_cost = position * base * spec.atoms_per_tick_lot
    if position:
        mode = "isolated" if isolated else "cross"
        pos = acct.positions[symbol] = Position(mode)
        pos.qty, pos.cost = position, pos_cost
        if isolated:
            pos.iso_cash = 10**18 - pos_cost  # ample: its closes are never refused here
    setting = leverage or spec.default_leverage
    buffer = spec.im_buffer_ppm[regime]
    price = 0 if otype in MARKET else max(1, base * price_ppm // MILLION)
    trigger = base * trigger_ppm // MILLION if otype.startswith("stop") else 0
    has_ref = bool(trigger or mark or last)
    # earlier limit orders on the same side at the base price, then the order under test
    placed = []
    for ref, lots in enumerate(earlier, 1):
        out = engine.handle(Routed(ref=ref, account="a", body=PlaceOrder(
            symbol=symbol, side=side, qty=lots, price=base)), 0)
        want, after = expected(spec, side, "limit", base, 0, 0, lots, False, mark, last,
                               position, pos_cost, position != 0 and isolated, setting, buffer,
                               placed)
        if refused_at_the_position_limit(out, spec, after):
            return
        assert type(out[0][1]) is NewOrder, out
        assert acct.orders[out[0][1].order_id].reserve == want
        closing = min(lots, max(0, abs(position) - sum(q for q, _ in placed))) \
            if position and (position > 0) != (side > 0) else 0
        placed.append((lots, base * (lots - closing) * spec.atoms_per_tick_lot))
    out = engine.handle(Routed(ref=99, account="a", body=PlaceOrder(
        symbol=symbol, side=side, qty=qty, type=otype, price=price, trigger_price=trigger,
        reduce_only=reduce_only, max_slippage_ppm=slippage)), 0)
    sent = out[0][1]
    if otype in MARKET and not has_ref:
        assert sent.event.reason == "no_reference_price"
        return
    want, after = expected(spec, side, otype, price, trigger, slippage, qty, reduce_only, mark,
                           last, position, pos_cost, position != 0 and isolated, setting, buffer,
                           placed)
    if not reduce_only and refused_at_the_position_limit(out, spec, after):
        return
    assert type(sent) is NewOrder, out
    assert acct.orders[sent.order_id].reserve == want
    assert acct.order_margin == sum(o.reserve for o in acct.orders.values())
