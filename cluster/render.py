"""Terminal text for the CLI's most used answers (`--json` prints the data itself): the cluster's
nodes, an account with its positions, a book with the oracle's prices. Each takes the dict the
command would print as JSON, so the two can never disagree."""

from __future__ import annotations

from cluster.humanize import describe

SIDES = {1: "buy", -1: "sell"}


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Left-aligned text columns; numbers (and "-") right-aligned."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def numeric(text: str) -> bool:
        # rates, leverages and durations read as numbers
        text = text.removesuffix("%").removesuffix("x").removesuffix(" us").removesuffix(" ms")
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
        return head + (f"\n{status['hint']}" if status.get("hint") else "")
    rows = []
    pairs = any("role" in node for node in status["nodes"].values())
    for name, node in status["nodes"].items():
        stats = node.get("stats") or {}
        beat = node.get("heartbeat_age_ms")
        row = [name, node.get("state", "?"), node.get("pid") or "-",
               "yes" if node.get("alive") else "no", node.get("restarts", 0),
               f"{beat} ms" if beat is not None else "-", stats.get("msgs_in", 0),
               stats.get("errors", 0)]
        if pairs:  # a core's pair: who is primary, its epoch, how far its standby is behind
            role = node.get("role")
            lag = (f"{node.get('standby_lag_inputs', 0)} inputs / {node.get('standby_lag_ms', 0)} ms"
                   + ("" if node.get("in_sync") else " (catching up)")
                   if role == "primary" else ("in sync" if node.get("in_sync") else "catching up")
                   if role == "standby" else "")
            row += [role or "", node.get("epoch", "") if role else "", lag]
        rows.append(row)
    lines = [head, f"clients {status.get('client_endpoint', '?')}  market data "
             f"{status.get('market_data_endpoint', '?')}", ""]
    lines += table(rows, ["node", "state", "pid", "alive", "restarts", "heartbeat", "msgs in",
                          "errors"] + (["role", "epoch", "standby lag"] if pairs else []))
    events = status.get("events") or []
    if events:
        lines += ["", "recent events:"]
        lines += [f"  {e['event']} {e['node']}" + "".join(
            f" {k}={v}" for k, v in e.items() if k not in ("event", "node", "wall_ns", "mono_ns"))
            for e in events[-5:]]
    return "\n".join(lines)


def cluster_down(data: dict) -> str:
    if not data["was_running"] and not data["killed_leftovers"]:
        return "no cluster was running" + (f"; removed {data['stale_sockets_removed']} stale "
                                           "sockets" if data["stale_sockets_removed"] else "")
    how = "stopped" if data["supervisor_stopped"] else "supervisor did not stop in time"
    extra = [f"killed leftover nodes: {', '.join(data['killed_leftovers'])}"] \
        if data["killed_leftovers"] else []
    if data["stale_sockets_removed"]:
        extra.append(f"removed {data['stale_sockets_removed']} stale sockets")
    return f"cluster {how} (supervisor pid {data['supervisor_pid']})" + \
        (f"; {'; '.join(extra)}" if extra else "")


def account(view: dict) -> str:
    h, unit = view["human"], view["collateral"]
    lines = [f"account {view['account']}  ({unit})",
             f"  equity {h['equity']}  available {h['available']}  wallet {h['wallet_balance']}",
             f"  margin: positions {h['position_margin']}  orders {h['order_margin']}  "
             f"maintenance {h['maintenance_margin']}  fees paid {h['fees_paid']}"
             + (f"  isolated {h['isolated_margin']}" if h.get("isolated_margin", "0") != "0" else ""),
             f"  open orders {view['open_orders']}"]
    if view["positions"]:
        # margin: what the position holds (an isolated position's own wallet, else its IM)
        rows = [[p["symbol"], p["mode"], p["qty_human"], p["entry_price_human"],
                 p["mark_human"] or "-", p["unrealized_pnl_human"],
                 p["isolated_margin_human"] if p["mode"] == "isolated" else p["initial_margin_human"],
                 p["maintenance_margin_human"], p["liquidation_price_human"] or "-", p["leverage"],
                 p["adl_quantile"]] for p in view["positions"]]
        lines += [""] + table(rows, ["symbol", "mode", "qty", "entry", "mark", "unrealized pnl",
                                     "margin", "maint.", "liq. price", "leverage", "adl"])
    else:
        lines.append("  no positions")
    fills = [f for f in view.get("fills", []) if "human" in f][:10]
    if fills:
        lines += ["", "fills (latest first):"]
        rows = [[f["trade_id"], f["order_id"], f["symbol"], SIDES[f["side"]],
                 f["human"]["qty"], f["human"]["price"], f["liquidity"], f["human"]["fee"],
                 f["human"]["remaining"]] for f in fills]
        lines += ["  " + line for line in table(rows, ["trade", "order", "symbol", "side", "qty",
                                                       "price", "liquidity", "fee", "left"])]
    funding = [f for f in view.get("funding", []) if "human" in f][:5]
    if funding:
        lines += ["", "funding (latest first):"]
        rows = [[f["symbol"], f["human"]["rate_pct"] + "%", f["human"]["qty"], f["human"]["mark"],
                 ("paid " + f["human"]["payment"].lstrip("-")) if f["payment"] < 0
                 else f"received {f['human']['payment']}"] for f in funding]
        lines += ["  " + line for line in table(rows, ["symbol", "rate", "position", "mark",
                                                       "payment"])]
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
    side = SIDES.get(ev.get("side"), "")
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


def symbols(data: dict) -> str:
    """`perpx symbols`: one block per symbol, its trading rules and its maintenance ladder."""
    cur = data["collateral"]
    lines = [f"collateral {cur} (amounts in steps of {data['atom']})"]
    for s in data["symbols"]:
        lines += ["", f"{s['symbol']}",
                  f"  tick {s['tick_size']}  lot {s['lot_size']}  qty {s['min_qty']} to "
                  f"{s['max_qty']}  max notional {s['max_notional']} {cur}",
                  f"  price band {s['price_band']} of mark  market orders within "
                  f"{s['market_protection']} of mark  fees maker {s['maker_fee']} taker "
                  f"{s['taker_fee']} forced {s['forced_fee']}",
                  f"  leverage default {s['default_leverage']}x, max {s['max_leverage']}x  funding "
                  f"every {s['funding_interval_s'] / 3600:g} h, capped at {s['funding_cap']}", ""]
        rows = [[t["tier"], t["notional_from"], t["notional_to"], f"{t['max_leverage']}x",
                 t["maintenance_rate"], t["maintenance_amount"]] for t in s["ladder"]]
        lines += ["  " + line for line in table(rows, [
            "tier", f"notional from ({cur})", f"to ({cur})", "max leverage", "maint. rate",
            f"maint. amount ({cur})"])]
    return "\n".join(lines)


def accounts(data: dict) -> str:
    """`perpx accounts`: the topology's accounts (what --account takes)."""
    rows = [[a["account"], ",".join(a["scopes"]), a["initial_deposit"]] for a in data["accounts"]]
    return "\n".join(table(rows, ["account", "scopes", f"initial deposit ({data['collateral']})"]))


def orders(data: dict) -> str:
    """An account's open orders, one row each."""
    rows = []
    for o in data["orders"]:
        h = o["human"]
        rows.append([o["order_id"], o["symbol"], SIDES[o["side"]], o["type"],
                     h["price"] if o["price"] else "-", h["qty"], h["remaining"],
                     h["trigger_price"] if o["trigger_price"] else "-",
                     "reduce-only" if o["reduce_only"] else "", o["client_order_id"] or "-",
                     h["reserved"], o["status"]])
    if not rows:
        return f"account {data['account']}: no open orders"
    return "\n".join([f"account {data['account']}: {len(rows)} open orders", ""] + table(
        rows, ["id", "symbol", "side", "type", "price", "qty", "remaining", "trigger", "flags",
               "client id", f"reserved ({data.get('collateral', '')})".replace(" ()", ""),
               "status"]))


def fields(data: dict) -> str:
    """A flat answer (the calculator's), one aligned `name  value` line per field; a nested table
    on one line of its own numbers, and nothing for a field that does not apply (null)."""
    rows = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = describe({k: v for k, v in value.items() if v is not None})
        elif isinstance(value, list):
            value = " .. ".join(str(v) for v in value)
        elif isinstance(value, str) and value.startswith("~"):  # an inexact figure: 6 decimals
            whole, _, decimals = value.partition(".")
            value = f"{whole}.{decimals[:6]}" if len(decimals) > 6 else value
        rows.append((key.replace("_", " "), str(value)))
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def duration_us(us: float) -> str:
    """A duration in microseconds in the unit that reads best: '232 us' below a millisecond,
    '12.6 ms' above (three significant digits), '1,234 ms' from 100 ms."""
    if abs(us) < 1000:
        return f"{us:.0f} us"
    if abs(us) < 100_000:
        return f"{us / 1000:.3g} ms"
    return f"{us / 1000:,.0f} ms"


def ping(data: dict) -> str:
    """The round trip, and what each hop of the order path took (the nodes' monotonic stamps)."""
    rows, here, before = [], "client", 0.0
    for hop in data["hops"]:
        rows.append([f"{here}->{hop['node']}", duration_us(hop["since_send_us"] - before)])
        here, before = hop["node"], hop["since_send_us"]
    rows.append([f"{here}->client", duration_us(data["rtt_us"] - before)])
    return "\n".join([f"round trip {duration_us(data['rtt_us'])}", ""] + table(rows, ["hop",
                                                                                    "time"]))


def latency_model(spec: dict) -> str:
    """A link's latency spec as typed: '1ms', 'lognormal median 300us sigma 0.4 jitter 50us',
    a mixture's parts with their weights."""
    if not spec:
        return "-"
    model = spec.get("model", "constant")
    if model == "mixture":
        return "mixture of " + " | ".join(f"{weight:g} {latency_model(part)}"
                                          for weight, part in spec.get("parts", []))
    if model == "constant":
        text = str(spec.get("latency", "0"))
    else:
        text = " ".join([model] + [f"{k} {v}" for k, v in spec.items()
                                   if k not in ("model", "jitter")])
    return text + (f" jitter {spec['jitter']}" if spec.get("jitter") else "")


def netsim(data: dict) -> str:
    """The link table the supervisor answers every netsim command with: each shaped link's
    model, loss, bandwidth and state; node clock skews; with `show`, the links left direct."""
    links = data.get("links", {})
    lines = [f"netsim table v{data.get('version', '?')}: "
             + (f"{len(links)} link{'s' if len(links) != 1 else ''} shaped" if links
                else "no link shaped, every message takes the direct path")]
    if links:
        rows = []
        for name, link in links.items():
            bandwidth = link.get("bandwidth") or "-"
            if link.get("bandwidth"):
                bandwidth += f" (queue {link.get('queue_limit')}, {link.get('on_full')} when full)"
            state = "DOWN" if link.get("down") else "up"
            if link.get("reorder"):
                state += ", reorders"
            rows.append([name, latency_model(link.get("latency") or {}), loss_text(link) or "-",
                         bandwidth, state])
        lines += [""] + table(rows, ["link", "latency", "loss", "bandwidth", "state"])
    for node, ns in (data.get("skew_ns") or {}).items():
        if ns:
            lines.append(f"clock skew: {node} {ns / 1e6:+g} ms")
    direct = [name for name in data.get("known_links", []) if name not in links]
    if direct and links:
        lines += ["", "direct (unshaped): " + ", ".join(direct)]
    return "\n".join(lines)


def loss_text(settings: dict) -> str:
    """A link's loss and the retransmission delay that goes with it: '1% (rto 50ms)'; '' for none."""
    if not settings.get("loss"):
        return ""
    return f"{settings['loss'] * 100:g}%" + (f" (rto {settings['rto']})" if settings.get("rto") else "")


def node_fault(data: dict) -> str:
    done = {"kill": "KILLED", "pause": "PAUSED", "resume": "RESUMED"}.get(data["op"], data["op"])
    return f"{done}  {data['node']} (pid {data['pid']})"


def feed_fault(data: dict) -> str:
    """The feed fault sent to the feeds process, in words."""
    sent = data["sent"]
    action = sent["action"]
    where = f"venue {sent['venue']}" if sent.get("venue") else "every venue"
    words = [f"FEED {action.upper()}", where]
    if sent.get("symbol"):
        words.append(sent["symbol"])
    if sent.get("ppm"):
        words.append(f"{sent['ppm'] / 1e4:+g}% ({sent['ppm']} ppm)")
    if sent.get("duration_ms"):
        words.append(f"for {sent['duration_ms'] / 1000:g} s")
    return "  ".join(words)


def liquidation(data: dict, units) -> str:
    """`perpx explain liquidation`: the summary, then every step with its numbers in trader's
    units (`units`: cluster.humanize.Units)."""
    symbol = data["symbol"]
    closed = ", ".join(f"{kind} {units.qty(lots, symbol)}"
                       for kind, lots in data["closed_lots"].items()) or "nothing"
    lines = [f"liquidation {data['liquidation_id']}  {data['account']}  {symbol}  {data['status']}",
             f"  started {data['started']}  path {' > '.join(data['path'])}",
             f"  closed {closed}  forced fees {units.money(data['forced_fees'])}  insurance fund "
             f"{'+' if data['insurance_fund_delta'] > 0 else ''}"
             f"{units.money(data['insurance_fund_delta'])}"]
    for line in data["counterparties"]:
        kind, _, fills = line.partition(": ")
        lines.append(f"  {kind}: {units.fills(fills, symbol)}")
    lines.append("")
    for step in data["steps"]:
        lines.append(f"{step['time'][11:23]}  {step['rule'].removeprefix('liquidation.'):<9} "
                     f"{step['decision']:<15} {decision_numbers(step, units, symbol)}")
    return "\n".join(lines)


def decision_numbers(record: dict, units, symbol: str = "") -> str:
    """A journaled decision's numbers in trader's units, without the ones its line already says."""
    numbers = {k: v for k, v in record["numbers"].items()
               if k not in ("account", "symbol", "step") and v != ""}
    symbol = record["numbers"].get("symbol") or symbol
    if isinstance(numbers.get("counterparties"), str):
        numbers["counterparties"] = units.fills(numbers["counterparties"], symbol)
    return describe(units.numbers(record["rule"], numbers, symbol))


def decisions(data: dict, units) -> str:
    """`perpx explain account`: the venue's decisions about one account, one line each."""
    found = data["decisions"]
    if not found:
        return f"account {data['account']}: no decisions in the journals for this window"
    lines = [f"account {data['account']}: {len(found)} decisions, oldest first", ""]
    for r in found:
        symbol = r["numbers"].get("symbol", "")
        where = r["subject"] if r["subject"].startswith("liq-") else symbol
        lines.append(f"{r['time'][:23].replace('T', ' ')}  {r['rule']:<32} {r['decision']:<10} "
                     f"{where:<9} {decision_numbers(r, units, symbol)}".rstrip())
    return "\n".join(lines)


def scenario_step(record: dict) -> str:
    """One applied step of `perpx netsim run`: when, what, on what, and whether it took."""
    args = dict(record.get("args") or {})
    target = args.pop("link", "") or ", ".join(args.pop("links", None) or []) \
        or args.pop("node", "") or args.pop("venue", "") or args.pop("name", "")
    args.pop("down", None)  # said by the action (partition / heal)
    settings = args.pop("settings", None)
    what = link_settings(settings) if settings else describe(
        {k: v for k, v in args.items() if v not in ("", 0, None)})
    action = record["action"]
    if action == "heal_at_end":  # the healing a scenario ends with: said by the action itself
        action = {"netsim_clear": "clear all", "feed": "heal feeds", "fault": "resume"}.get(
            record.get("command", ""), action)
        what = ""
    at = f"t+{record['at_s']:.3f}s" if "at_s" in record else "t+?"
    outcome = "ok" if record.get("ok") else f"REFUSED {record.get('error', '')}".rstrip()
    return f"{at:<10} {action:<12} {target or '-':<16} {outcome}" + \
        (f"  {what}" if what and record.get("ok") else "")


def link_settings(settings: dict) -> str:
    """A link's settings as set: 'latency 2ms jitter 200us, loss 1% (rto 50ms), bandwidth 10mbit'."""
    parts = []
    latency = settings.get("latency")
    if latency:
        parts.append("latency " + (latency if isinstance(latency, str) else latency_model(latency)))
    if settings.get("loss"):
        parts.append(f"loss {loss_text(settings)}")
    for key in ("bandwidth", "queue_limit", "on_full", "seed"):
        if settings.get(key):
            parts.append(f"{key.replace('_', ' ')} {settings[key]}")
    parts += [flag for flag in ("down", "reorder") if settings.get(flag)]
    return ", ".join(parts)
