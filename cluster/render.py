"""Terminal text for the CLI's most used answers (`--json` prints the data itself): the cluster's
nodes, an account with its positions, a book with the oracle's prices. Each takes the dict the
command would print as JSON, so the two can never disagree."""

from __future__ import annotations

from cluster.humanize import describe


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Left-aligned text columns; numbers (and "-") right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def numeric(text: str) -> bool:
        return text == "-" or text.replace(".", "", 1).replace("-", "", 1).replace(",", "").isdigit()

    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if n and numeric(c) else c.ljust(w) for c, w in zip(row, widths)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def cluster_status(status: dict) -> str:
    head = (f"cluster {status.get('cluster', '?')}: {status['state']}"
            + (f" ({status['failure']})" if status.get("failure") else "")
            + f"  run dir {status.get('run_dir', '?')}")
    if "nodes" not in status:
        return head
    rows = []
    for name, node in status["nodes"].items():
        stats = node.get("stats") or {}
        beat = node.get("heartbeat_age_ms")
        rows.append([name, node.get("state", "?"), node.get("pid") or "-",
                     "yes" if node.get("alive") else "no", node.get("restarts", 0),
                     f"{beat} ms" if beat is not None else "-", stats.get("msgs_in", 0),
                     stats.get("errors", 0)])
    lines = [head, f"clients {status.get('client_endpoint', '?')}  market data "
             f"{status.get('market_data_endpoint', '?')}", ""]
    lines += table(rows, ["node", "state", "pid", "alive", "restarts", "heartbeat", "msgs in",
                          "errors"])
    events = status.get("events") or []
    if events:
        lines += ["", "recent events:"]
        lines += [f"  {e['event']} {e['node']}" + "".join(
            f" {k}={v}" for k, v in e.items() if k not in ("event", "node", "wall_ns", "mono_ns"))
            for e in events[-5:]]
    return "\n".join(lines)


def account(view: dict) -> str:
    h, unit = view["human"], view["collateral"]
    lines = [f"account {view['account']}  ({unit})",
             f"  equity {h['equity']}  available {h['available']}  wallet {h['wallet_balance']}",
             f"  margin: positions {h['position_margin']}  orders {h['order_margin']}  "
             f"maintenance {h['maintenance_margin']}  fees paid {h['fees_paid']}",
             f"  open orders {view['open_orders']}"]
    if view["positions"]:
        rows = [[p["symbol"], p["mode"], p["qty_human"], p["entry_price_human"],
                 p["mark_human"] or "-", p["liquidation_price_human"] or "-", p["leverage"],
                 p["adl_quantile"]] for p in view["positions"]]
        lines += [""] + table(rows, ["symbol", "mode", "qty", "entry", "mark", "liq. price",
                                     "leverage", "adl"])
    else:
        lines.append("  no positions")
    return "\n".join(lines)


def book(data: dict) -> str:
    prices = data.get("prices")
    lines = [f"{data['symbol']}  book seq {data['book_seq']}"]
    if prices:
        lines.append(f"  mark {prices['mark']}  index {prices['index']}  last "
                     f"{prices['last'] or '-'}  oracle {prices['oracle_mode']} from "
                     f"{prices['sources']} feeds")
    else:
        lines.append("  no mark from the oracle yet")
    depth = max(len(data["bids"]), len(data["asks"]))
    if not depth:
        return "\n".join(lines + ["  the book is empty"])
    rows = []
    for i in range(depth):
        bid = data["bids"][i] if i < len(data["bids"]) else None
        ask = data["asks"][i] if i < len(data["asks"]) else None
        rows.append([bid["qty"] if bid else "", bid["price"] if bid else "",
                     ask["price"] if ask else "", ask["qty"] if ask else ""])
    return "\n".join(lines + [""] + table(rows, ["bid qty", "bid", "ask", "ask qty"]))


def order_result(data: dict) -> str:
    """An order request's answer and the events that followed it, one line each."""
    return "\n".join(event(e) for e in [data["result"], *data.get("later_events", [])])


def event(ev: dict) -> str:
    h, t = ev["human"], ev["type"]
    side = {1: "buy", -1: "sell"}.get(ev.get("side"), "")
    oid = f"order {ev['order_id']}" if ev.get("order_id") else ""
    coid = f"  client id {ev['client_order_id']}" if ev.get("client_order_id") else ""
    again = "  (the answer to an earlier request with this client id)" if ev.get("duplicate") else ""
    if t == "OrderAccepted":
        at = f"@ {h['price']}" if ev["price"] else "at market"
        line = f"ACCEPTED   {oid}  {side} {h['qty']} {ev['symbol']} {at}  {ev['status']}{coid}"
    elif t == "OrderRejected":
        line = f"REJECTED   {ev['symbol']}  {ev['reason']}{coid}"
    elif t == "OrderCancelled":
        line = f"CANCELLED  {oid}  {ev['reason']}  remaining {h['remaining']}"
    elif t == "OrdersCancelled":
        where = f"in {ev['symbol']}" if ev["symbol"] else "in every symbol"
        ids = ", ".join(str(oid) for oid, _ in ev["orders"][:20]) + \
            (" ..." if len(ev["orders"]) > 20 else "")
        line = f"CANCELLED  {len(ev['orders'])} orders {where}  {ev['reason']}" + \
            (f"  ({ids})" if ids else "")
    elif t == "Fill":
        line = (f"FILL       {oid}  {side} {h['qty']} {ev['symbol']} @ {h['price']}  "
                f"{ev['liquidity']}  fee {h['fee']}  remaining {h['remaining']}")
    elif t == "OrderAmended":
        kept = "priority kept" if ev["priority_kept"] else "re-queued"
        trigger = f"  trigger {h['trigger_price']}" if ev.get("trigger_price") else ""
        line = (f"AMENDED    {oid}  price {h['price']}  qty {h['qty']}  remaining "
                f"{h['remaining']}{trigger}  {kept}  ({ev['reason']})")
    elif t == "OrderTriggered":
        line = (f"TRIGGERED  {oid}  {ev['trigger_by']} {h['observed_price']} reached the trigger "
                f"{h['trigger_price']}")
    elif t == "Deleveraged":
        line = (f"ADL        {ev['symbol']}  {h['position']} closed at {h['price']}  "
                f"rank {ev['rank']}")
    else:
        line = t
    if h.get("detail"):
        line += "\n           " + describe(h["detail"])
    return line + again


def ack(data: dict) -> str:
    """A setting or transfer the venue applied, with its numbers."""
    symbol, numbers = data["human"].get("symbol"), describe(data["human"])
    return "  ".join(part for part in (data["action"].upper(), symbol, numbers) if part)


def orders(data: dict) -> str:
    """An account's open orders, one row each."""
    rows = []
    for o in data["orders"]:
        h = o["human"]
        rows.append([o["order_id"], o["symbol"], {1: "buy", -1: "sell"}[o["side"]], o["type"],
                     h["price"] if o["price"] else "-", h["qty"], h["remaining"],
                     h["trigger_price"] if o["trigger_price"] else "-",
                     "reduce-only" if o["reduce_only"] else "", o["client_order_id"] or "-",
                     h["reserved"], o["status"]])
    if not rows:
        return f"account {data['account']}: no open orders"
    return "\n".join([f"account {data['account']}: {len(rows)} open orders", ""] + table(
        rows, ["id", "symbol", "side", "type", "price", "qty", "remaining", "trigger", "flags",
               "client id", "reserved", "status"]))
