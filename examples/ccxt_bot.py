"""A small market maker written against ccxt only: it works unchanged against Binance USDⓈ-M's API,
and here against perpx's Binance-compatible facade (nodes/rest/, README "Binance-compatible API").

Every cycle it reads the mark price (fetch_funding_rate) and its position (fetch_positions),
replaces its two quotes around the mark (cancel_all_orders, create_order post-only), skewed
against its inventory, and reports any new fills (fetch_my_trades). On exit it cancels its quotes.

    perpx keys create mm2 --scopes read,trade          # shows API_KEY and SECRET once
    python examples/ccxt_bot.py --url http://127.0.0.1:7720 --key API_KEY --secret SECRET \
        --seconds 10
"""

from __future__ import annotations

import argparse
import time

import ccxt


def connect(url: str, key: str, secret: str) -> ccxt.binanceusdm:
    return ccxt.binanceusdm({
        "apiKey": key, "secret": secret,
        "urls": {"api": {name: url + path for name, path in {
            "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
            "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
            "fapiData": "/futures/data"}.items()}},
        "options": {"fetchCurrencies": False, "adjustForTimeDifference": False},
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:7720")
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--symbol", default="BTC/USDT:USDT")
    ap.add_argument("--size", type=float, default=0.01, help="quote size, base units")
    ap.add_argument("--spread-bps", type=float, default=10.0, help="each side's distance from the mark")
    ap.add_argument("--max-position", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args()

    ex = connect(args.url, args.key, args.secret)
    ex.load_markets()
    s = args.symbol
    seen: set[str] = {t["id"] for t in ex.fetch_my_trades(s)}
    cycles = placed = 0
    end = time.monotonic() + args.seconds
    try:
        while time.monotonic() < end:
            mark = ex.fetch_funding_rate(s)["markPrice"]
            position = sum((p["contracts"] or 0) * (1 if p["side"] == "long" else -1)
                           for p in ex.fetch_positions([s]))
            skew = position / args.max_position  # -1..1: quote away from the inventory
            half = mark * args.spread_bps / 10_000
            ex.cancel_all_orders(s)
            for side, price in (("buy", mark - half * (1 + skew)), ("sell", mark + half * (1 - skew))):
                if (side == "buy" and position >= args.max_position) or (
                        side == "sell" and position <= -args.max_position):
                    continue
                try:
                    ex.create_order(s, "limit", side, args.size, ex.price_to_precision(s, price),
                                    params={"postOnly": True})
                    placed += 1
                except ccxt.OrderImmediatelyFillable:
                    pass  # the book moved through our price: next cycle
            for t in ex.fetch_my_trades(s):
                if t["id"] not in seen:
                    seen.add(t["id"])
                    print(f"fill {t['side']} {t['amount']} @ {t['price']} fee {t['fee']['cost']}", flush=True)
            cycles += 1
            print(f"cycle {cycles}: mark {mark} position {position:g} quotes {placed}", flush=True)
            time.sleep(args.interval)
    finally:
        ex.cancel_all_orders(s)
    print(f"done: {cycles} cycles, {placed} quotes, open orders {len(ex.fetch_open_orders(s))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
