"""The pure order path (risk -> matching -> risk) driven by random traffic: money is conserved
exactly after every event, open interest balances, and replay gives the same result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import AmendOrder, IndexMark, MarkPrice, PlaceOrder, Routed, Trade
from nodes.matching.engine import MatchingEngine
from nodes.risk.ledger import RiskEngine

TOPO = config.load()
ACCOUNTS = {"a": 2_000_000_000, "b": 2_000_000_000, "c": 50_000_000}
SYMBOLS = sorted(TOPO.symbols)

place = st.fixed_dictionaries({
    "account": st.sampled_from(sorted(ACCOUNTS)), "symbol": st.sampled_from(SYMBOLS),
    "side": st.sampled_from((1, -1)), "qty": st.integers(1, 400), "offset": st.integers(-30, 30),
    "type": st.sampled_from(("limit", "limit", "limit", "market", "stop_market", "stop_limit",
                             "take_profit_market")),
    "trigger_offset": st.integers(-60, 60),
    "tif": st.sampled_from(("GTC", "GTC", "IOC")), "reduce_only": st.sampled_from((False, False, True)),
    "client_order_id": st.sampled_from(("", "", "", "k1", "k2")),  # repeats are resubmissions
})
mark = st.fixed_dictionaries({"symbol": st.sampled_from(SYMBOLS), "move": st.integers(-400, 400)})
# An amend names its order by id or by client id (either way risk must check the margin it adds).
amend = st.fixed_dictionaries({
    "amend": st.just(True), "account": st.sampled_from(sorted(ACCOUNTS)),
    "symbol": st.sampled_from(SYMBOLS),
    "name": st.one_of(st.integers(1, 40), st.sampled_from(("k1", "k2"))),
    "qty": st.sampled_from((0, 1, 50, 400, 5_000, 200_000)), "offset": st.integers(-30, 30) | st.none(),
    "trigger_offset": st.integers(-60, 60) | st.none(),
})
steps = st.lists(st.one_of(place, place, place, mark, amend), min_size=5, max_size=60)


def run(script):
    risk = RiskEngine(TOPO.symbols, ACCOUNTS)
    matching = MatchingEngine(TOPO.symbols)
    marks = {s: TOPO.symbols[s].initial_price for s in SYMBOLS}
    log = []

    def pump(effects):
        queue = list(effects)
        while queue:
            dest, msg = queue.pop(0)
            log.append(msg)
            if dest == "matching":
                for ev in matching.handle(msg):
                    if type(ev).__name__ != "BookDelta":
                        queue.extend(risk.handle(ev, 0))
                    held, owed = risk.conservation()
                    assert held == owed, f"money not conserved after {ev}"

    for s in SYMBOLS:
        im = IndexMark(symbol=s, index=marks[s], mark=marks[s], last=0, seq=0, ts_ns=0)
        risk.handle(im, 0)
    for ref, step in enumerate(script, 1):
        if "move" in step:
            s = step["symbol"]
            marks[s] = max(1, marks[s] + step["move"])
            im = IndexMark(symbol=s, index=marks[s], mark=marks[s], last=0, seq=0, ts_ns=0)
            risk.handle(im, 0)
            pump([("matching", MarkPrice(symbol=s, mark=marks[s]))])
            continue
        s = step["symbol"]
        if "amend" in step:
            acct = risk.accounts[step["account"]]
            before = acct.order_margin
            by_id = isinstance(step["name"], int)
            body = AmendOrder(symbol=s, order_id=step["name"] if by_id else 0,
                              client_order_id="" if by_id else step["name"], qty=step["qty"],
                              price=0 if step["offset"] is None else marks[s] + step["offset"],
                              trigger_price=0 if step["trigger_offset"] is None
                              else marks[s] + step["trigger_offset"])
            pump(risk.handle(Routed(ref=ref, account=step["account"], body=body), 0))
            if acct.order_margin > before:  # it added margin: which must have been available
                assert risk.available(acct) >= 0, f"{step}: amended past what was available"
            continue
        market = step["type"] in ("market", "stop_market", "take_profit_market")
        price = 0 if market else marks[s] + step["offset"]
        trigger = marks[s] + step["trigger_offset"] if "stop" in step["type"] or "take" in \
            step["type"] else 0
        body = PlaceOrder(symbol=s, side=step["side"], qty=step["qty"], type=step["type"], price=price,
                          tif="IOC" if market else step["tif"], trigger_price=max(0, trigger),
                          reduce_only=step["reduce_only"], client_order_id=step["client_order_id"])
        pump(risk.handle(Routed(ref=ref, account=step["account"], body=body), 0))
        held, owed = risk.conservation()
        assert held == owed
    return risk, matching, log


@settings(max_examples=150, deadline=None)
@given(steps)
def test_money_is_conserved_and_positions_agree(script):
    risk, matching, _ = run(script)
    for s in SYMBOLS:
        qtys = [a.positions[s].qty for a in risk.accounts.values() if s in a.positions]
        assert sum(qtys) == 0, "long and short open interest differ"
        for name, acct in risk.accounts.items():  # risk and matching agree on every position
            pos = acct.positions.get(s)
            assert (pos.qty if pos else 0) == matching.position(name, s)
    assert not risk.pending, "a placement matching never answered, as risk sees it"
    for acct in risk.accounts.values():  # reservations are exactly those of the open orders
        assert acct.order_margin == sum(o.reserve for o in acct.orders.values())
        acct.check_indexes()
        assert set(acct.orders) == {oid for oid, o in matching.orders.items() if o.account == acct.name}
        for oid, mine in acct.orders.items():  # and they agree on every term of every order
            theirs = matching.orders[oid]
            assert (mine.symbol, mine.side, mine.price, mine.qty, mine.remaining, mine.type,
                    mine.trigger_price, mine.reduce_only) == \
                (theirs.symbol, theirs.side, theirs.price, theirs.qty, theirs.remaining,
                 theirs.type, theirs.trigger_price, theirs.reduce_only), oid


@settings(max_examples=40, deadline=None)
@given(steps)
def test_same_input_same_state(script):
    r1, m1, log1 = run(script)
    r2, m2, log2 = run(script)
    assert log1 == log2 and m1.state_hash() == m2.state_hash()
    assert r1.state_hash() == r2.state_hash()


def test_fee_rounding_charges_up_and_rebates_down():
    risk = RiskEngine(TOPO.symbols, {"m": 10**12, "t": 10**12})
    spec = TOPO.symbols["ETH-PERP"]  # maker rebate -1 bp, taker 6 bp
    trade = Trade(seq=1, trade_id=1, symbol="ETH-PERP", price=200_001, qty=3, taker_side=1,
                  taker_order_id=2, taker_account="t", taker_remaining=0, maker_order_id=1,
                  maker_account="m", maker_remaining=0)
    risk.handle(trade, 0)
    notional = 200_001 * 3 * spec.atoms_per_tick_lot  # 60,000,300 atoms
    assert risk.accounts["t"].fees_paid == -(-notional * 600 // 1_000_000)  # 36,000.18 -> 36,001
    assert risk.accounts["m"].fees_paid == -(notional * 100 // 1_000_000)  # rebate 6,000.03 -> 6,000
    assert risk.fee_pool == 36_001 - 6_000
    held, owed = risk.conservation()
    assert held == owed
