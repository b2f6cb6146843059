"""Risk under random traffic: orders, fills, marks, funding, regimes, modes, leverage, transfers.

After every event: money is conserved exactly; marks and regimes never move money; an isolated
position's losses and funding never touch the cross wallet; risk and matching agree on positions.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.protocol import (
    AdjustIsolatedMargin, Deposit, FundingRate, IndexMark, MarkPrice, PlaceOrder, Regime,
    SetLeverage, SetMarginMode, Trade, Withdraw,
)
from tests.unit.pipeline import TOPO, Pipeline

USD = 1_000_000
ACCOUNTS = {"a": 200_000 * USD, "b": 200_000 * USD, "c": 5_000 * USD, "admin": 0}
TRADERS = ("a", "b", "c")
SYMBOLS = sorted(TOPO.symbols)

trader = st.sampled_from(TRADERS)
symbol = st.sampled_from(SYMBOLS)
place = st.fixed_dictionaries({"kind": st.just("place"), "account": trader, "symbol": symbol,
                           "side": st.sampled_from((1, -1)), "qty": st.integers(1, 300),
                           "offset": st.integers(-40, 40),
                           "type": st.sampled_from(("limit", "limit", "market")),
                           "tif": st.sampled_from(("GTC", "IOC")),
                           "reduce_only": st.sampled_from((False, False, True))})
others = [
    st.fixed_dictionaries({"kind": st.just("mark"), "symbol": symbol,
                           "move_ppm": st.integers(-60_000, 60_000)}),
    st.fixed_dictionaries({"kind": st.just("mode"), "account": trader, "symbol": symbol,
                           "mode": st.sampled_from(("cross", "isolated"))}),
    st.fixed_dictionaries({"kind": st.just("leverage"), "account": trader, "symbol": symbol,
                           "leverage": st.integers(1, 125)}),
    st.fixed_dictionaries({"kind": st.just("margin"), "account": trader, "symbol": symbol,
                           "amount": st.integers(-3_000 * USD, 3_000 * USD)}),
    st.fixed_dictionaries({"kind": st.just("funding"), "symbol": symbol,
                           "rate_e9": st.integers(-750_000, 750_000)}),
    st.fixed_dictionaries({"kind": st.just("regime"), "symbol": symbol,
                           "regime": st.sampled_from(("normal", "high_volatility", "degraded"))}),
    st.fixed_dictionaries({"kind": st.sampled_from(("deposit", "withdraw")), "account": trader,
                           "amount": st.integers(1, 50_000 * USD)}),
]
# sampled_from over strategies keeps the mix even: orders dominate, so that positions exist for
# funding, marks and margin moves to act on
step = st.sampled_from([place] * 12 + others).flatmap(lambda s: s)


def isolation_check(event, before):
    """Cross wallets may only move for cross reasons."""
    now = pipe_holder[0].balances()
    t = type(event)
    if t in (IndexMark, MarkPrice, Regime):
        assert {n: b for n, (b, _) in now.items()} == {n: b for n, (b, _) in before.items()}, \
            "a mark or regime moved money"
    elif t is FundingRate:
        for name, (bal, positions) in before.items():
            qty_mode = positions.get(event.symbol)
            if qty_mode and qty_mode[1] == "isolated":
                assert now[name][0] == bal, "isolated funding touched the cross wallet"
    elif t is Trade:
        for account, side in ((event.taker_account, event.taker_side),
                              (event.maker_account, -event.taker_side)):
            qty_mode = before[account][1].get(event.symbol)
            if qty_mode and qty_mode[1] == "isolated" and qty_mode[0] * side < 0 \
                    and abs(qty_mode[0]) >= event.qty:
                assert now[account][0] >= before[account][0], \
                    "closing an isolated position took money from the cross wallet"


pipe_holder: list[Pipeline] = []


def run(script) -> Pipeline:
    pipe = Pipeline(ACCOUNTS, check=isolation_check)
    pipe_holder[:] = [pipe]
    marks = {s: TOPO.symbols[s].initial_price for s in SYMBOLS}
    for s in SYMBOLS:
        pipe.mark(s, marks[s])
    # start with isolated positions in play: a is isolated on BTC, b on ETH, c all cross
    pipe.request("a", SetMarginMode(symbol="BTC-PERP", mode="isolated"))
    pipe.request("b", SetMarginMode(symbol="ETH-PERP", mode="isolated"))
    for st_ in script:
        k = st_["kind"]
        if k == "place":
            s = st_["symbol"]
            price = 0 if st_["type"] == "market" else marks[s] + st_["offset"]
            pipe.request(st_["account"], PlaceOrder(
                symbol=s, side=st_["side"], qty=st_["qty"], type=st_["type"], price=price,
                tif="IOC" if st_["type"] == "market" else st_["tif"],
                reduce_only=st_["reduce_only"]))
        elif k == "mark":
            s = st_["symbol"]
            marks[s] = max(10, marks[s] + marks[s] * st_["move_ppm"] // 1_000_000)
            pipe.mark(s, marks[s])
        elif k == "mode":
            pipe.request(st_["account"], SetMarginMode(symbol=st_["symbol"], mode=st_["mode"]))
        elif k == "leverage":
            pipe.request(st_["account"], SetLeverage(symbol=st_["symbol"], leverage=st_["leverage"]))
        elif k == "margin":
            if st_["amount"]:
                pipe.request(st_["account"], AdjustIsolatedMargin(symbol=st_["symbol"],
                                                                  amount=st_["amount"]))
        elif k == "funding":
            pipe.send(FundingRate(symbol=st_["symbol"], rate_e9=st_["rate_e9"],
                                  mark=marks[st_["symbol"]]))
        elif k == "regime":
            pipe.send(Regime(symbol=st_["symbol"], regime=st_["regime"]))
        else:
            cls = Deposit if k == "deposit" else Withdraw
            pipe.request("admin", cls(account=st_["account"], amount=st_["amount"]))
    return pipe


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=20, max_size=80))
def test_money_isolation_and_agreement_under_random_traffic(script):
    pipe = run(script)
    risk, matching = pipe.risk, pipe.matching
    for s in SYMBOLS:
        assert sum(a.positions[s].qty for a in risk.accounts.values() if s in a.positions) == 0
        for name, acct in risk.accounts.items():
            pos = acct.positions.get(s)
            assert (pos.qty if pos else 0) == matching.position(name, s)
    for acct in risk.accounts.values():
        assert acct.order_margin == sum(o.reserve for o in acct.orders.values())
        acct.check_indexes()
        for s, pos in acct.positions.items():
            assert pos.qty or pos.iso_cash, "an empty position record was kept"


@settings(max_examples=30, deadline=None)
@given(st.lists(step, min_size=5, max_size=40))
def test_same_input_same_state(script):
    first, second = run(script), run(script)
    assert first.log == second.log and first.audit == second.audit
    assert first.matching.state_hash() == second.matching.state_hash()
    assert first.risk.state_hash() == second.risk.state_hash()
