"""Any request the gateway's decoder accepts goes through risk and matching without raising, money
stays conserved and the book stays valid: odd but well-typed values (unknown symbols and client
order ids, ids that never existed, zero and 2**62 quantities, every order type and flag) get a
reason, never an exception, and every message either core sends can be encoded for the wire. (A
cancel by an unknown client order id once raised in matching; a reject's 2**124 notional once
could not be encoded and stopped risk's drain loop.)"""

from __future__ import annotations

import typing

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.protocol import (
    AdjustIsolatedMargin, AmendOrder, CancelAll, CancelOrder, ClientRequest, Codec, Deposit,
    GetAccount, GetOrders, NodeInbound, OrderType, PlaceOrder, SetLeverage, SetMarginMode, Withdraw,
    wire_safe,
)
from tests.unit.pipeline import TOPO, Pipeline

USD = 1_000_000
ACCOUNTS = {"a": 100_000 * USD, "b": 100_000 * USD, "c": 500 * USD}
SYMBOLS = sorted(TOPO.symbols) + ["NOPE-PERP", ""]
DECODE = Codec(ClientRequest).decode_request
WIRE = Codec(NodeInbound)

symbol = st.sampled_from(SYMBOLS)
big = st.sampled_from((0, 1, 2, 7, 10**6, 2**31, 2**62, 2**63 - 1))
# near both symbols' prices (300,000 and 200,000 ticks), so that orders rest and trade, or far off
ticks = st.one_of(big, st.integers(195_000, 205_000), st.integers(295_000, 305_000),
                  st.integers(0, 200_000_000))
coid = st.sampled_from(("", "x", "y", "never-sent"))
order_id = st.one_of(st.integers(0, 40), big)


@st.composite
def place_order(draw) -> PlaceOrder:
    """Mostly orders that can rest and trade (a real symbol, a price near its mark, small sizes),
    and now and then anything the types allow."""
    name = draw(st.sampled_from(SYMBOLS[:2] * 4 + SYMBOLS[2:]))
    near = TOPO.symbols[name].initial_price if name in TOPO.symbols else 300_000
    otype = draw(st.sampled_from(("limit",) * 6 + ("market",) * 2 + typing.get_args(OrderType)))
    price = draw(st.sampled_from((True, True, True, False)).flatmap(
        lambda close: st.integers(near - near // 100, near + near // 100) if close else ticks))
    is_stop = otype.startswith(("stop", "take_profit"))
    return PlaceOrder(
        symbol=name, side=draw(st.sampled_from((1, -1))),
        qty=draw(st.one_of(st.integers(1, 50), st.integers(1, 50), big)), type=otype,
        price=0 if otype in ("market", "stop_market", "take_profit_market") and draw(
            st.sampled_from((True, True, True, False))) else price,
        tif=draw(st.sampled_from(("GTC", "GTC", "IOC", "FOK"))), post_only=draw(st.sampled_from((False,) * 5 + (True,))),
        reduce_only=draw(st.sampled_from((False, False, True))), client_order_id=draw(coid),
        trigger_price=draw(st.one_of(st.integers(near - near // 50, near + near // 50), ticks)
                           if is_stop or draw(st.integers(0, 9)) == 9 else st.just(0)),
        trigger_by=draw(st.sampled_from(("mark", "last"))),
        stp=draw(st.sampled_from(("cancel_taker", "cancel_maker", "cancel_both"))),
        max_slippage_ppm=draw(st.sampled_from((0, 1, 1_000_000))))


# sampled_from over strategies keeps the weights (one_of counts a repeated strategy once)
others = [
    st.builds(AmendOrder, symbol=symbol, order_id=order_id, client_order_id=coid, price=ticks,
              qty=st.one_of(st.integers(0, 50), big),
              trigger_price=st.one_of(st.just(0), st.just(0), ticks)),
    st.builds(CancelOrder, symbol=symbol, order_id=order_id, client_order_id=coid),
    st.builds(CancelAll, symbol=symbol),
    st.builds(GetAccount),
    st.builds(GetOrders, symbol=symbol),
    st.builds(SetLeverage, symbol=symbol, leverage=st.integers(1, 1000)),
    st.builds(SetMarginMode, symbol=symbol, mode=st.sampled_from(("cross", "isolated"))),
    st.builds(AdjustIsolatedMargin, symbol=symbol, amount=st.one_of(st.integers(-10**9, 10**9), big)),
    st.builds(Deposit, account=st.sampled_from(sorted(ACCOUNTS) + ["ghost"]), amount=st.integers(1, 2**62)),
    st.builds(Withdraw, account=st.sampled_from(sorted(ACCOUNTS) + ["ghost"]), amount=st.integers(1, 2**62)),
]
requests = st.sampled_from([place_order()] * 8 + others).flatmap(lambda s: s)
script = st.lists(st.tuples(st.sampled_from(sorted(ACCOUNTS)), requests,
                            st.sampled_from((None, None, None, 0.97, 1.0, 1.03))), min_size=5, max_size=60)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script)
def test_any_decodable_request_is_answered_without_raising(steps):
    pipe = Pipeline(ACCOUNTS)
    for name in sorted(TOPO.symbols):
        pipe.mark(name, TOPO.symbols[name].initial_price)
    for account, request, mark_move in steps:
        if mark_move is not None:
            name = sorted(TOPO.symbols)[0]
            pipe.mark(name, int(TOPO.symbols[name].initial_price * mark_move))
        try:  # what the gateway would let through: the request as its decoder reads it
            (decoded,) = DECODE(msgspec.msgpack.encode([request]))
        except msgspec.ValidationError:
            continue
        replies = pipe.request(account, decoded)  # raises on an exception or lost money
        assert replies, f"no answer to {decoded}"
    for msg in pipe.wire:  # everything the cores sent can go on the wire, as the shell sends it
        WIRE.decode(WIRE.encode([wire_safe(msg) or msg]))  # and read back by the receiver
    pipe.matching.validate_internal_state()
    for acct in pipe.risk.accounts.values():
        acct.check_indexes()
