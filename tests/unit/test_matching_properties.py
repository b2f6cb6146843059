"""Property tests: the matching engine against the naive model, plus invariants after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, event, example, given, settings, target
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import (
    MARKET_TYPES, Amend, Cancel, MarkPrice, MassCancel, NewOrder, OrderAccepted, OrderAmended,
    OrderCancelled, OrderRejected, OrdersCancelled, OrderTriggered, SetPosition, ShiftPosition,
    Trade,
)
from nodes.matching.engine import MatchingEngine
from tests.unit.naive_book import NaiveBook

SYMBOL = "BTC-PERP"
SPECS = config.load().symbols
SPEC = SPECS[SYMBOL]
PPM = 1_000_000
ACCOUNTS = ("a", "b", "c")
STOP_TYPES = ("stop_market", "stop_limit", "take_profit_market", "take_profit_limit")
SLIPPAGES = (0, 0, 2_000, 4_000, 20_000)  # ppm; 0 = the symbol's protection

# A price is drawn relative to the mark it meets: mostly within a few ticks (so orders trade),
# sometimes at the band's edge or at a market order's protection price, one tick either side.
price = st.tuples(st.sampled_from(("near",) * 6 + ("band", "protection")),
                  st.sampled_from((1, -1)), st.integers(-4, 4), st.sampled_from(SLIPPAGES))
# a stop-limit's price meets the band only when it triggers: at the edge more often
stop_price = st.tuples(st.sampled_from(("near", "band", "band")), st.sampled_from((1, -1)),
                       st.integers(-4, 4), st.sampled_from(SLIPPAGES))
new_cmd = st.fixed_dictionaries({
    "kind": st.just("new"),
    "account": st.sampled_from(ACCOUNTS),
    "side": st.sampled_from((1, -1)),
    "qty": st.integers(1, 25),
    "type": st.sampled_from(("limit", "limit", "limit", "market")),
    "price": price,
    "tif": st.sampled_from(("GTC", "GTC", "IOC", "FOK")),
    "post_only": st.booleans(),
    "reduce_only": st.sampled_from((False, False, True)),
    "stp": st.sampled_from(("cancel_taker", "cancel_maker", "cancel_both")),
    "slippage": st.sampled_from(SLIPPAGES),
})
stop_cmd = st.fixed_dictionaries({
    "kind": st.just("stop"),
    "account": st.sampled_from(ACCOUNTS),
    "side": st.sampled_from((1, -1)),
    "qty": st.integers(1, 25),
    "type": st.sampled_from(STOP_TYPES),
    "price": stop_price,
    "tif": st.sampled_from(("GTC", "GTC", "IOC", "FOK")),
    "reduce_only": st.booleans(),
    "stp": st.sampled_from(("cancel_taker", "cancel_maker", "cancel_both")),
    "slippage": st.sampled_from(SLIPPAGES),
    "trigger": st.integers(-8, 8),
    "trigger_by": st.sampled_from(("mark", "mark", "last")),
})
cancel_cmd = st.fixed_dictionaries({"kind": st.just("cancel"), "pick": st.integers(0, 10_000),
                                    "account": st.sampled_from(ACCOUNTS)})
amend_cmd = st.fixed_dictionaries({"kind": st.just("amend"), "pick": st.integers(0, 10_000),
                                   "price": st.sampled_from((0, 0, -3, 0, 3)),
                                   "qty": st.sampled_from((0, 1, 5, 30))})
mass_cmd = st.fixed_dictionaries({"kind": st.just("mass"), "account": st.sampled_from(ACCOUNTS)})
mark_cmd = st.fixed_dictionaries({"kind": st.just("mark"), "move": st.integers(-12, 12)})
# a liquidation or ADL moves a position outside the book: risk tells matching with ShiftPosition
shift_cmd = st.fixed_dictionaries({"kind": st.just("shift"), "src": st.sampled_from(ACCOUNTS),
                                   "dst": st.sampled_from(ACCOUNTS), "qty": st.integers(-15, 15)})
# sampled_from over strategies keeps the mix even (one_of would favour the first alternatives
# while shrinking and generate mostly trivial scripts)
command = st.sampled_from([new_cmd] * 10 + [stop_cmd] * 3 + [cancel_cmd] * 2 + [amend_cmd] * 3
                          + [mass_cmd] + [mark_cmd] * 3 + [shift_cmd]).flatmap(lambda s: s)
# every script starts with a mark and seeded positions (so reduce-only orders have something to
# reduce), and is long enough to build positions and books
commands = st.tuples(st.integers(985, 1015), st.integers(-30, 30), st.integers(-30, 30),
                     st.lists(command, min_size=30, max_size=100))


def _new(account, side, qty, offset, otype="limit", tif="GTC", stp="cancel_taker") -> dict:
    """A generated 'new' command, priced `offset` ticks from the mark (for explicit examples)."""
    return {"kind": "new", "account": account, "side": side, "qty": qty, "type": otype,
            "price": ("near", 1, offset, 0), "tif": tif, "post_only": False,
            "reduce_only": False, "stp": stp, "slippage": 0}


def _take_profit(account, side, qty, offset, trigger) -> dict:
    """A generated take-profit limit on the last price (for explicit examples)."""
    return {"kind": "stop", "account": account, "side": side, "qty": qty,
            "type": "take_profit_limit", "price": ("near", 1, offset, 0), "tif": "GTC",
            "reduce_only": False, "stp": "cancel_taker", "slippage": 0, "trigger": trigger,
            "trigger_by": "last"}


# Found with random seeds (the whole scripts in /work/notes/matching-property-failure.txt), here
# minimised: a stop that a taker's trade fires must queue behind that taker's remainder (the engine
# rested it first, ahead of the order that fired it: a later buy filled the stop first) ...
STOP_BEHIND_ITS_TAKER = (1000, 0, 0, [
    _new("a", 1, 3, 0), _take_profit("c", -1, 5, 0, -1), _new("b", -1, 8, 0),
    _new("a", 1, 6, 0, otype="market", tif="IOC", stp="cancel_maker")])
# ... and may trade against it (the engine rested a triggered sell at 999 under the taker's bid at
# 1001: a crossed book)
STOP_MEETS_ITS_TAKER = (1000, 0, 0, [
    _new("a", -1, 5, 0), _take_profit("c", -1, 5, -1, 0), _new("b", 1, 10, 1)])


def _price(spec: tuple, mark: int) -> int:
    where, sign, offset, slippage = spec
    if where == "near":
        return max(1, mark + offset)
    ppm = SPEC.band_ppm if where == "band" else slippage or SPEC.protection_ppm
    return max(1, mark + sign * (mark * ppm // PPM) + max(-1, min(1, offset)))


def to_engine_commands(generated) -> list:
    """Turn a generated script into concrete engine commands (ids resolved deterministically)."""
    first_mark, pos_a, pos_b, script = generated
    out = [MarkPrice(symbol=SYMBOL, mark=first_mark)]
    positions = {"a": pos_a, "b": pos_b, "c": -(pos_a + pos_b)}
    out.append(("seed", [SetPosition(account=a, symbol=SYMBOL, qty=q) for a, q in positions.items()]))
    ids, owners, prices = [], {}, {}
    mark = first_mark
    next_id = 1
    for c in script:
        if c["kind"] in ("new", "stop"):
            market = c["type"] in MARKET_TYPES
            where, sign, offset, slippage = c["price"]
            if where == "protection":  # a bid on the edge of market sells, an ask of market buys:
                sign = -c["side"]  # where the other side's market orders meet them (or stop)
            limit = 0 if market else _price((where, sign, offset, slippage), mark)
            stop = c["kind"] == "stop"
            out.append(NewOrder(
                order_id=next_id, account=c["account"], symbol=SYMBOL, side=c["side"], qty=c["qty"],
                type=c["type"], price=limit,
                tif="IOC" if c["type"] == "market" and c["tif"] == "GTC" else c["tif"],
                post_only=not stop and c["post_only"] and c["type"] == "limit" and c["tif"] == "GTC",
                reduce_only=c["reduce_only"], stp=c["stp"],
                max_slippage_ppm=c["slippage"] if market else 0,
                trigger_price=max(1, mark + c["trigger"]) if stop else 0,
                trigger_by=c["trigger_by"] if stop else "mark"))
            ids.append(next_id)
            owners[next_id] = c["account"]
            prices[next_id] = limit
            next_id += 1
        elif c["kind"] in ("cancel", "amend") and ids:
            oid = ids[c["pick"] % len(ids)]
            if c["kind"] == "cancel":
                out.append(Cancel(account=owners[oid], symbol=SYMBOL, order_id=oid))
            else:
                new_price = prices[oid] + c["price"] if c["price"] and prices[oid] else 0
                out.append(Amend(account=owners[oid], symbol=SYMBOL, order_id=oid,
                                 price=new_price, qty=c["qty"]))
        elif c["kind"] == "mass":
            out.append(MassCancel(account=c["account"], symbol=SYMBOL))
        elif c["kind"] == "mark":
            mark = max(900, min(1100, mark + c["move"]))
            out.append(MarkPrice(symbol=SYMBOL, mark=mark))
        elif c["kind"] == "shift" and c["src"] != c["dst"] and c["qty"]:
            out.append(("shift", c["src"], c["dst"], c["qty"]))
    return out


def resolve_shifts(engine: MatchingEngine, cmd):
    """The positions seeded at the start, or a shift as the two ShiftPositions risk would send
    (positions stay balanced once a group is applied: src gives dst)."""
    if type(cmd) is not tuple:
        return [cmd]
    if cmd[0] == "seed":
        return cmd[1]
    _, src, dst, qty = cmd
    return [ShiftPosition(account=src, symbol=SYMBOL, change=-qty),
            ShiftPosition(account=dst, symbol=SYMBOL, change=qty)]


def apply_naive(naive: NaiveBook, cmd) -> None:
    t = type(cmd)
    if t is NewOrder:
        naive.new(cmd.order_id, cmd.account, cmd.side, cmd.qty, cmd.type, cmd.price, cmd.tif,
                  cmd.post_only, cmd.reduce_only, cmd.stp, cmd.max_slippage_ppm,
                  cmd.trigger_price, cmd.trigger_by)
    elif t is Cancel:
        naive.cancel(cmd.order_id, cmd.account)
    elif t is Amend:
        naive.amend(cmd.order_id, cmd.account, cmd.price, cmd.qty)
    elif t is MassCancel:
        naive.mass_cancel(cmd.account)
    elif t is MarkPrice:
        naive.set_mark(cmd.mark)
    elif t is SetPosition:
        naive.set_position(cmd.account, cmd.qty)
    elif t is ShiftPosition:
        naive.set_position(cmd.account, naive.positions.get(cmd.account, 0) + cmd.change)


def engine_resting(engine: MatchingEngine) -> list[tuple]:
    book = engine.books[SYMBOL]
    return sorted((o.order_id, o.account, o.side, o.price, o.remaining)
                  for side in (book.bids, book.asks) for lvl in side.levels.values()
                  for o in lvl.orders.values())


def states_reached(cmd, events: list) -> set[str]:
    """The states a step reached that the generators are meant to reach (hypothesis events)."""
    seen = set()
    for ev in events:
        t = type(ev)
        if t is Trade:
            seen.add("trade")
        elif t is OrderTriggered:
            seen.add("stop triggered")
        elif t is OrderAmended and ev.reason == "reduce_only_resize":
            seen.add("reduce-only resized")
        elif t is OrderAccepted and type(cmd) is NewOrder and cmd.reduce_only:
            seen.add("reduce-only accepted")
            if ev.qty < cmd.qty:
                seen.add("reduce-only resized")
        elif t is OrderCancelled and ev.reason == "market_protection":
            seen.add("market order stopped at its protection price")
        elif t in (OrderRejected, OrderCancelled) and ev.reason == "price_out_of_band":
            seen.add("price outside the band refused")
            if t is OrderCancelled:
                seen.add("triggered stop-limit outside the band cancelled")
    return seen


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
@example(STOP_BEHIND_ITS_TAKER)
@example(STOP_MEETS_ITS_TAKER)
def test_engine_agrees_with_naive_model_and_keeps_invariants(script):
    engine = MatchingEngine(SPECS)
    naive = NaiveBook(SPECS[SYMBOL])
    ro_orders, po_orders, fok_orders = set(), set(), set()
    qty, filled, cancelled = {}, {}, {}
    reached: set[str] = set()
    steps = ((cmd, n + 1 == len(group)) for generated in to_engine_commands(script)
             for group in [resolve_shifts(engine, generated)] for n, cmd in enumerate(group))
    for cmd, group_done in steps:
        if type(cmd) is NewOrder:
            (ro_orders if cmd.reduce_only else set()).add(cmd.order_id)
            (po_orders if cmd.post_only else set()).add(cmd.order_id)
            (fok_orders if cmd.tif == "FOK" else set()).add(cmd.order_id)
        before = dict(engine.books[SYMBOL].positions)
        events = engine.handle(cmd)
        reached |= states_reached(cmd, events)
        naive_trades_before = len(naive.trades)
        apply_naive(naive, cmd)
        fills_this_cmd: dict[int, int] = {}
        for ev in events:
            t = type(ev)
            if t is OrderAccepted or t is OrderAmended:
                qty[ev.order_id] = ev.qty
            elif t is Trade:
                assert ev.taker_account != ev.maker_account, "self-trade"
                assert ev.taker_order_id not in po_orders, "post-only order took liquidity"
                for oid in (ev.taker_order_id, ev.maker_order_id):
                    filled[oid] = filled.get(oid, 0) + ev.qty
                    fills_this_cmd[oid] = fills_this_cmd.get(oid, 0) + ev.qty
                for oid, acct, side in ((ev.taker_order_id, ev.taker_account, ev.taker_side),
                                        (ev.maker_order_id, ev.maker_account, -ev.taker_side)):
                    if oid in ro_orders:  # reduce-only never grows a position
                        pos = before.get(acct, 0)
                        assert pos and (pos > 0) != (side > 0), "reduce-only on the growing side"
                        before[acct] = pos + side * ev.qty
                        assert abs(before[acct]) < abs(pos), "reduce-only grew a position"
                    else:
                        before[acct] = before.get(acct, 0) + side * ev.qty
            elif t is OrderCancelled:
                if ev.order_id not in qty:  # cancelled at once, answered without an ack
                    assert type(cmd) is NewOrder and ev.order_id == cmd.order_id, ev
                    assert ev.remaining == cmd.qty or cmd.reduce_only and 0 < ev.remaining < cmd.qty
                    qty[ev.order_id] = ev.remaining
                cancelled[ev.order_id] = cancelled.get(ev.order_id, 0) + ev.remaining
            elif t is OrdersCancelled:
                for oid, rem in ev.orders:
                    cancelled[oid] = cancelled.get(oid, 0) + rem
        for oid, fills in fills_this_cmd.items():  # a FOK (a triggered one too) fills whole or not
            assert oid not in fok_orders or fills == qty[oid], f"FOK {oid} partly filled"
        engine.validate_internal_state()
        assert [(e.price, e.qty, e.taker_order_id, e.maker_order_id)
                for e in events if type(e) is Trade] == naive.trades[naive_trades_before:], cmd
        assert engine_resting(engine) == sorted(
            (o.id, o.account, o.side, o.price, o.remaining) for o in naive.resting), cmd
        assert sorted(engine.stops[SYMBOL].orders) == sorted(t.id for t in naive.stops), cmd
        positions = engine.books[SYMBOL].positions
        assert {a: q for a, q in positions.items() if q} == {a: q for a, q in naive.positions.items() if q}
        assert not group_done or sum(positions.values()) == 0, ("open interest differs", cmd, dict(positions))

    # quantity conservation: filled + resting + cancelled == accepted (as amended), per order
    live = {o.order_id: o.remaining for o in engine.orders.values()}
    for oid, q in qty.items():
        assert filled.get(oid, 0) + live.get(oid, 0) + cancelled.get(oid, 0) == q, oid
    for state in sorted(reached):
        event(state)
    target(float(len(reached)), label="states reached")


@settings(max_examples=30, deadline=None)
@given(commands)
def test_replay_gives_identical_events_and_state_hash(script):
    cmds = to_engine_commands(script)
    first, second = MatchingEngine(SPECS), MatchingEngine(SPECS)
    events_1 = [first.handle(c) for g in cmds for c in resolve_shifts(first, g)]
    events_2 = [second.handle(c) for g in cmds for c in resolve_shifts(second, g)]
    assert events_1 == events_2
    assert first.state_hash() == second.state_hash()


def test_rejections_change_nothing():
    engine = MatchingEngine(SPECS)
    engine.handle(NewOrder(order_id=1, account="a", symbol=SYMBOL, side=-1, qty=5, price=1000))
    engine.handle(MarkPrice(symbol=SYMBOL, mark=1000))
    before = engine.state()
    bad = [
        NewOrder(order_id=2, account="b", symbol="NOPE", side=1, qty=1, price=1000),
        NewOrder(order_id=3, account="b", symbol=SYMBOL, side=1, qty=0 + 10**9, price=1000),
        NewOrder(order_id=4, account="b", symbol=SYMBOL, side=1, qty=1, price=2000),
        NewOrder(order_id=5, account="b", symbol=SYMBOL, side=1, qty=1, price=1000, post_only=True),
        NewOrder(order_id=6, account="b", symbol=SYMBOL, side=1, qty=1, price=990, reduce_only=True),
        NewOrder(order_id=1, account="b", symbol=SYMBOL, side=1, qty=1, price=990),
        Cancel(account="b", symbol=SYMBOL, order_id=1),
        Amend(account="a", symbol=SYMBOL, order_id=1, price=5000),
    ]
    for cmd in bad:
        events = engine.handle(cmd)
        assert [type(e) for e in events] == [OrderRejected], (cmd, events)
        assert events[0].reason
        state = engine.state()
        state["seq"] = before["seq"]
        assert state["books"] == before["books"]
