"""`perpx surveillance top [--k 20] [--since 15m] [--json]`, `perpx surveillance explain ACCOUNT`:
read what the surveillance node wrote under run_dir/surveillance (state.json, alerts.jsonl)."""

from __future__ import annotations

import json
import time

from nodes.surveillance.ranking import explain as explain_rows

STATE, ALERTS = "state.json", "alerts.jsonl"


def add_commands(group, command, common, period, cli) -> None:
    """`group`/`command`: the CLI's parser builders (description, example, help on every flag).
    `cli`: the perpx CLI module as it runs (its CliError, emit, window; run as __main__ it is not
    the importable cluster.cli, whose CliError the CLI's main() would not catch)."""
    surv = group("surveillance", "the advisory anomaly ranking: a queue for a person to review "
                 "(read-only; it changes nothing)")
    top = command(surv, "top", "the ranked queue with each item's top contributing features, and "
                  "the alerts raised in a window", "perpx surveillance top --k 10 --since 15m",
                  (common, period))
    top.add_argument("--k", type=cli.Number(kind="int", low=1, example="20"), default=20,
                     metavar="N", help="how many items (the review budget; default: 20)")
    top.set_defaults(fn=cmd_top, since_default="15m", cli=cli)
    exp = command(surv, "explain", "every feature of one account against its peer group: value, "
                  "the group's median and MAD, robust z", "perpx surveillance explain alice")
    exp.add_argument("account", help="the account (`perpx accounts`)")
    exp.set_defaults(fn=cmd_explain, cli=cli)


def _state(args) -> tuple[dict, object]:
    cli = args.cli
    where = cli.run_dir_of(args) / "surveillance"
    try:
        return json.loads((where / STATE).read_text()), where
    except (OSError, ValueError):
        raise cli.CliError("no_surveillance", f"nothing in {where}/{STATE}: is the surveillance "
                           "node in the topology and running?", cli.EXIT_REFUSED) from None


def _reasons(reasons) -> str:
    """feature=value (z, and for an account's item the peer group's median and MAD)."""
    return ", ".join(f"{name}={value} (z {z / 1000:.1f}" + (
        f", peers' median {peer[0]} MAD {peer[1]})" if peer else ")")
        for name, value, z, *peer in reasons)


def _who(item: dict) -> str:
    """An item's subject; an account's with the peer group it was compared with."""
    if not item["account"]:
        return f"drift:{item.get('feature', '')}" if item["kind"] == "drift" else item["kind"]
    return item["account"] + (f" [{item['peer_group']} of {item['peers']}]"
                              if "peer_group" in item else "")


def cmd_top(args) -> int:
    from cluster import reports
    cli = args.cli
    if args.since is None:
        args.since = args.since_default
    since, until = cli.window(args)
    state, where = _state(args)
    alerts = []
    try:
        with open(where / ALERTS, encoding="utf-8") as f:
            for line in f:
                try:
                    alert = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if (since is None or alert["ts_ns"] >= since) and (
                        until is None or alert["ts_ns"] <= until):
                    alerts.append(alert)
    except OSError:
        pass
    alerts.sort(key=lambda a: (-a["score"], a["account"], a["symbol"], a["ts_ns"]))
    data = {"ts_ns": state["ts_ns"], "events": state["events"], "since_ns": since,
            "queue": state["queue"][:args.k], "alerts": alerts[:args.k],
            "alerts_in_window": len(alerts)}

    def text(d: dict) -> str:
        since = reports.iso(d["since_ns"]) if d["since_ns"] else "start"
        lines = [f"surveillance at {reports.iso(d['ts_ns'])}: {d['events']} events seen, "
                 f"{d['alerts_in_window']} alerts since {since} (advisory: a person decides)"]
        lines.append(f"{'#':>3}  {'account [peer group of n]':<26} {'symbol':<10} {'score':>7}  "
                     "top contributors")
        for i, item in enumerate(d["queue"], 1):
            lines.append(f"{i:>3}  {_who(item):<26} {item['symbol']:<10} "
                         f"{item['score'] / 1000:>7.1f}  {_reasons(item['reasons'])}")
        if d["alerts"]:
            lines.append("alerts (highest score first):")
            for a in d["alerts"]:
                lag = (a["ts_ns"] - a["event_ns"]) / 1e9
                lines.append(f"  {reports.iso(a['ts_ns'])} {_who(a)} "
                             f"{a['symbol']} score {a['score'] / 1000:.1f} ({lag:.1f} s after the "
                             f"event): {_reasons(a['reasons'])}" + (
                                 f"; suggest: {a['suggest']}" if a.get("suggest") else ""))
        return "\n".join(lines) + "\n"

    cli.emit(data, args.json, text)
    return cli.EXIT_OK


def cmd_explain(args) -> int:
    cli = args.cli
    state, _ = _state(args)
    values = {(f["account"], f["symbol"]): f["values"] for f in state["features"]}
    if not any(a == args.account for a, _ in values):
        raise cli.CliError("no_activity", f"{args.account!r} has no activity in the surveillance "
                       f"window ({len(values)} account x symbol keys are active)", cli.EXIT_REFUSED)
    rows = explain_rows(values, args.account)
    data = {"account": args.account, "ts_ns": state["ts_ns"], "population": len(values),
            "features": rows,
            "queue": [i for i in state["queue"] if i["account"] == args.account]}

    def text(d: dict) -> str:
        lines = [f"{d['account']} against {d['population']} account x symbol keys "
                 f"(at {time.strftime('%H:%M:%S', time.gmtime(d['ts_ns'] / 1e9))} UTC)"]
        for item in d["queue"]:
            lines.append(f"  {item['symbol']}: score {item['score'] / 1000:.1f}: "
                         f"{_reasons(item['reasons'])}")
        lines.append(f"  {'symbol':<10} {'peer group':<14} {'feature':<18} {'value':>12} "
                     f"{'median':>12} {'MAD':>10} {'z':>7}")
        for r in d["features"]:
            group = f"{r['peer_group']} of {r['peers']}"
            lines.append(f"  {r['symbol']:<10} {group:<14} {r['feature']:<18} {r['value']:>12} "
                         f"{r['median']:>12} {r['mad']:>10} {r['z_milli'] / 1000:>7.1f}")
        return "\n".join(lines) + "\n"

    cli.emit(data, args.json, text)
    return cli.EXIT_OK
