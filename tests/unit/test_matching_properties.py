"""Property tests: the matching engine against the naive model, plus invariants after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import (
    Amend, Cancel, MarkPrice, MassCancel, NewOrder, OrderAccepted, OrderAmended, OrderCancelled,
    OrderRejected, OrdersCancelled, Trade,
)
from nodes.matching.engine import MatchingEngine
from tests.unit.naive_book import NaiveBook

SYMBOL = "BTC-PERP"
SPECS = config.load().symbols
ACCOUNTS = ("a", "b", "c")

new_cmd = st.fixed_dictionaries({
    "kind": st.just("new"),
    "account": st.sampled_from(ACCOUNTS),
    "side": st.sampled_from((1, -1)),
    "qty": st.integers(1, 25),
    "type": st.sampled_from(("limit", "limit", "limit", "market")),
    "price": st.integers(996, 1004),
    "tif": st.sampled_from(("GTC", "GTC", "IOC", "FOK")),
    "post_only": st.booleans(),
    "reduce_only": st.sampled_from((False, False, True)),
    "stp": st.sampled_from(("cancel_taker", "cancel_maker", "cancel_both")),
})
cancel_cmd = st.fixed_dictionaries({"kind": st.just("cancel"), "pick": st.integers(0, 10_000),
                                    "account": st.sampled_from(ACCOUNTS)})
amend_cmd = st.fixed_dictionaries({"kind": st.just("amend"), "pick": st.integers(0, 10_000),
                                   "price": st.sampled_from((0, 995, 1000, 1005)),
                                   "qty": st.sampled_from((0, 1, 5, 30))})
mass_cmd = st.fixed_dictionaries({"kind": st.just("mass"), "account": st.sampled_from(ACCOUNTS)})
mark_cmd = st.fixed_dictionaries({"kind": st.just("mark"), "mark": st.integers(950, 1050)})
# sampled_from over strategies keeps the mix even (one_of would favour the first alternatives
# while shrinking and generate mostly trivial scripts)
command = st.sampled_from([new_cmd] * 12 + [cancel_cmd] * 2 + [amend_cmd] * 3 + [mass_cmd, mark_cmd]
                          ).flatmap(lambda s: s)
commands = st.lists(command, min_size=10, max_size=120)


def to_engine_commands(script: list[dict]) -> list:
    """Turn a generated script into concrete engine commands (ids resolved deterministically)."""
    out, ids, owners = [], [], {}
    next_id = 1
    for c in script:
        if c["kind"] == "new":
            price = 0 if c["type"] == "market" else c["price"]
            out.append(NewOrder(order_id=next_id, account=c["account"], symbol=SYMBOL, side=c["side"],
                                qty=c["qty"], type=c["type"], price=price,
                                tif="IOC" if c["type"] == "market" and c["tif"] == "GTC" else c["tif"],
                                post_only=c["post_only"] and c["type"] == "limit" and c["tif"] == "GTC",
                                reduce_only=c["reduce_only"], stp=c["stp"]))
            ids.append(next_id)
            owners[next_id] = c["account"]
            next_id += 1
        elif c["kind"] in ("cancel", "amend") and ids:
            oid = ids[c["pick"] % len(ids)]
            if c["kind"] == "cancel":
                out.append(Cancel(account=owners[oid], symbol=SYMBOL, order_id=oid))
            else:
                out.append(Amend(account=owners[oid], symbol=SYMBOL, order_id=oid,
                                 price=c["price"], qty=c["qty"]))
        elif c["kind"] == "mass":
            out.append(MassCancel(account=c["account"], symbol=SYMBOL))
        elif c["kind"] == "mark":
            out.append(MarkPrice(symbol=SYMBOL, mark=c["mark"]))
    return out


def apply_naive(naive: NaiveBook, cmd) -> None:
    t = type(cmd)
    if t is NewOrder:
        naive.new(cmd.order_id, cmd.account, cmd.side, cmd.qty, cmd.type, cmd.price, cmd.tif,
                  cmd.post_only, cmd.reduce_only, cmd.stp)
    elif t is Cancel:
        naive.cancel(cmd.order_id, cmd.account)
    elif t is Amend:
        naive.amend(cmd.order_id, cmd.account, cmd.price, cmd.qty)
    elif t is MassCancel:
        naive.mass_cancel(cmd.account)
    elif t is MarkPrice:
        naive.set_mark(cmd.mark)


def engine_resting(engine: MatchingEngine) -> list[tuple]:
    book = engine.books[SYMBOL]
    return sorted((o.order_id, o.account, o.side, o.price, o.remaining)
                  for side in (book.bids, book.asks) for lvl in side.levels.values()
                  for o in lvl.orders.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_engine_agrees_with_naive_model_and_keeps_invariants(script):
    engine = MatchingEngine(SPECS)
    naive = NaiveBook(SPECS[SYMBOL])
    ro_orders, po_orders, fok_orders = set(), set(), set()
    qty, filled, cancelled = {}, {}, {}
    for cmd in to_engine_commands(script):
        if type(cmd) is NewOrder:
            (ro_orders if cmd.reduce_only else set()).add(cmd.order_id)
            (po_orders if cmd.post_only else set()).add(cmd.order_id)
            (fok_orders if cmd.tif == "FOK" else set()).add(cmd.order_id)
        before = dict(engine.books[SYMBOL].positions)
        events = engine.handle(cmd)
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
        if type(cmd) is NewOrder and cmd.order_id in fok_orders and cmd.order_id in qty:
            assert fills_this_cmd.get(cmd.order_id, 0) in (0, qty[cmd.order_id]), "FOK partly filled"
        engine.validate_internal_state()
        assert [(e.price, e.qty, e.taker_order_id, e.maker_order_id)
                for e in events if type(e) is Trade] == naive.trades[naive_trades_before:]
        assert engine_resting(engine) == sorted(
            (o.id, o.account, o.side, o.price, o.remaining) for o in naive.resting)
        positions = engine.books[SYMBOL].positions
        assert {a: q for a, q in positions.items() if q} == {a: q for a, q in naive.positions.items() if q}
        assert sum(positions.values()) == 0, "long and short open interest differ"

    # quantity conservation: filled + resting + cancelled == accepted (as amended), per order
    live = {o.order_id: o.remaining for o in engine.orders.values()}
    for oid, q in qty.items():
        assert filled.get(oid, 0) + live.get(oid, 0) + cancelled.get(oid, 0) == q, oid


@settings(max_examples=100, deadline=None)
@given(commands)
def test_replay_gives_identical_events_and_state_hash(script):
    cmds = to_engine_commands(script)
    first, second = MatchingEngine(SPECS), MatchingEngine(SPECS)
    events_1 = [first.handle(c) for c in cmds]
    events_2 = [second.handle(c) for c in cmds]
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
