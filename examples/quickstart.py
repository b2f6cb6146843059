"""A first perpx client: quote both sides of a symbol around the oracle's mark, read what the
venue says back, and clean up. Run it against a running cluster (`perpx cluster up --detach`):

    .venv/bin/python examples/quickstart.py --account mm1 --symbol BTC-PERP

Prices, quantities and money go to the venue as integers (ticks, lots, atoms of collateral);
`ticks()`, `lots()`, `atoms()` and their `*_str()` inverses convert exactly with the sizes the
gateway sent at logon, and refuse a value off the grid rather than round it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from decimal import Decimal

from cluster import config
from cluster.client import Client, RequestFailed
from cluster.protocol import OrderAccepted

BUY, SELL = 1, -1


async def quote(endpoint: str, market_data: str, api_key: str, symbol: str, spread: Decimal,
                qty: str) -> None:
    async with Client(endpoint, api_key=api_key, market_data=market_data) as c:
        mark = (await c.next_mark(symbol)).mark  # in ticks
        size = c.lots(symbol, qty)
        sides = {BUY: int(mark * (1 - spread)), SELL: int(mark * (1 + spread)) + 1}
        for side, price in sides.items():
            # post-only: never takes; a client order id: safe to send again after a time-out
            report = await c.place(symbol, side, size, price, post_only=True,
                                   client_order_id=f"quickstart-{side}")
            event = report.event
            if type(event) is OrderAccepted:
                print(f"{'bid' if side == BUY else 'ask'} {c.qty_str(symbol, size)} @ "
                      f"{c.price_str(symbol, price)}: order {event.order_id} {event.status}")
            else:  # refused: the reason and the numbers that decided it
                print(f"refused: {event.reason} {event.detail}")
        for order in (await c.open_orders(symbol)).orders:
            print(f"open: order {order.order_id} remaining {c.qty_str(symbol, order.remaining)}"
                  f" holds {c.money_str(order.reserved)} {c.collateral} of margin")
        view = await c.account_view()  # money in atoms of the collateral, told at logon
        print(f"available {c.money_str(view.available)} {c.collateral}")
        try:
            await c.set_leverage(symbol, 1_000)  # above the ladder's maximum: refused, with why
        except RequestFailed as refused:
            print(f"leverage refused: {refused.error.reason} {refused.error.detail}")
        done = await c.cancel_all(symbol)
        print(f"cancelled {len(done.event.orders)} orders ({done.event.reason})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account", default="mm1")
    parser.add_argument("--symbol", default="BTC-PERP")
    parser.add_argument("--spread", default="0.001", help="each side's distance from mark")
    parser.add_argument("--qty", default="0.01")
    parser.add_argument("--config", default=os.environ.get("PERPX_CONFIG"),
                        help="topology TOML (default: $PERPX_CONFIG, else the built-in one)")
    args = parser.parse_args()
    topo = config.load(args.config)  # None: the built-in topology
    gateway = topo.nodes["gateway"]
    asyncio.run(quote(gateway.client, gateway.pub, topo.accounts[args.account].api_key,
                      args.symbol, Decimal(args.spread), args.qty))


if __name__ == "__main__":
    main()
