"""The `perpx` command line.

    perpx cluster up [--detach [--same-session]] [--demo] [--seconds N] [--config F] [--run-dir D]
    perpx cluster down | status [--json]
    perpx order place --account A --symbol S --side buy|sell --qty 0.01 [--price 30000.5] ... [--json]
    perpx order cancel --account A --symbol S (--order-id N | --client-order-id X) [--json]
    perpx book SYMBOL [--depth N] [--json]
    perpx account show ACCOUNT [--json]
    perpx ping [--json]

Commands that talk to a running cluster find it through <run-dir>/status.json (default ./var),
or through --config. Exit codes: 0 ok, 1 the venue refused (reason in the output), 2 bad input or
no cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import msgspec

from cluster import config
from cluster import render
from cluster.humanize import Units, describe
from cluster.protocol import to_jsonable
from cluster.units import UnitError, from_units, rate_to_ppm

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, reason: str, message: str, code: int = EXIT_USAGE,
                 detail: dict | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.detail = detail  # the venue's numbers, as it sent them (for --json)


def emit(data, as_json: bool, text=None) -> None:
    """JSON with --json; otherwise `text(data)` when the command has a terminal form, else
    indented JSON."""
    if as_json:
        print(json.dumps(to_jsonable(data)))
    elif text is not None:
        print(text(to_jsonable(data)))
    else:
        print(json.dumps(to_jsonable(data), indent=2))


# ------------------------------------------------------------------ cluster discovery


def run_dir_of(args) -> Path:
    return Path(args.run_dir or os.environ.get("PERPX_RUN_DIR") or "var").resolve()


def load_topology(args, *, starting: bool = False) -> config.Topology:
    """--config; else the configuration the run directory's cluster was started with (a command
    talks to that cluster, or reads its journals); else the built-in one. A cluster being started
    takes --config or the built-in one, never the previous run's."""
    cfg = getattr(args, "config", None)
    run = run_dir_of(args)
    if not cfg and not starting:
        status = run / "status.json"
        if status.exists():
            cfg = json.loads(status.read_text()).get("config")
    try:
        return config.load(cfg, run_dir=str(run))
    except config.ConfigError as exc:
        raise CliError("bad_config", str(exc)) from None


def read_status(run: Path) -> dict | None:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ cluster commands


def cmd_cluster_up(args) -> int:
    topo = load_topology(args, starting=True)
    run = Path(topo.run_dir)
    status = read_status(run)
    if status and pid_alive(status.get("supervisor_pid")) and status.get("state") in ("starting", "running"):
        raise CliError("already_running", f"a cluster is already running from {run} "
                       f"(supervisor pid {status['supervisor_pid']}); `perpx cluster down` first")
    if args.detach:
        (run / "log").mkdir(parents=True, exist_ok=True)
        try:
            (run / "status.json").unlink()
        except FileNotFoundError:
            pass
        out = open(run / "log" / "supervisor.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.supervisor", "--config", topo.path, "--run-dir", str(run)]
            + (["--resume"] if args.resume else []),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=not args.same_session,
        )
        out.close()
        deadline = time.monotonic() + topo.supervisor.ready_timeout_ms / 1000 + 5
        while time.monotonic() < deadline:
            status = read_status(run)
            if status and status.get("state") == "running":
                emit(status, args.json, render.cluster_status)
                return EXIT_OK
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        status = read_status(run) or {}
        failure = status.get("failure")
        if not failure and proc.poll() is not None:  # the supervisor itself could not start
            from cluster.supervisor import last_line

            why = last_line(run / "log" / "supervisor.out")
            failure = f"the supervisor exited with {proc.returncode}" + (f": {why}" if why else "")
        raise CliError("start_failed", f"cluster did not start: {failure or 'timeout'}"
                       f" (see {run}/log/)", EXIT_REFUSED)
    import uvloop

    from cluster.supervisor import run_cluster

    seconds = args.seconds if args.seconds is not None else (
        float(os.environ["DEMO_SECONDS"]) if os.environ.get("DEMO_SECONDS") else None)
    return uvloop.run(run_cluster(topo, demo_seconds=seconds, demo=args.demo, resume=args.resume))


def cmd_cluster_down(args) -> int:
    run = run_dir_of(args)
    status = read_status(run) or {}
    pid = status.get("supervisor_pid")
    pid_file = run / "supervisor.pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pass
    stopped_supervisor = False
    was_running = pid_alive(pid)
    if was_running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped_supervisor = not pid_alive(pid)
    leftovers = []
    for name, node in (status.get("nodes") or {}).items():
        npid = node.get("pid")
        if pid_alive(npid):
            leftovers.append(name)
            os.kill(npid, signal.SIGKILL)
    sockets = run / "run"
    removed = 0
    if sockets.is_dir():
        for path in sockets.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
    emit({"stopped": True, "was_running": was_running, "supervisor_pid": pid,
          "supervisor_stopped": stopped_supervisor,
          "killed_leftovers": leftovers, "stale_sockets_removed": removed}, args.json,
         render.cluster_down)
    return EXIT_OK


def cmd_cluster_status(args) -> int:
    run = run_dir_of(args)
    status = read_status(run)
    if status is None:
        emit({"state": "absent", "run_dir": str(run)}, args.json, render.cluster_status)
        return EXIT_REFUSED
    alive = pid_alive(status.get("supervisor_pid"))
    if not alive and status.get("state") in ("starting", "running"):
        status["state"] = "supervisor_dead"
    for node in status.get("nodes", {}).values():
        node["alive"] = pid_alive(node.get("pid"))
    emit(status, args.json, render.cluster_status)
    return EXIT_OK if status["state"] == "running" else EXIT_REFUSED


# ------------------------------------------------------------------ client commands


def api_key_for(topo: config.Topology, args) -> str:
    if getattr(args, "api_key", None):
        return args.api_key
    if os.environ.get("PERPX_API_KEY") and not getattr(args, "account", None):
        return os.environ["PERPX_API_KEY"]
    account = getattr(args, "account", None)
    if not account:
        raise CliError("no_credentials", "give --account NAME (a configured account) or --api-key")
    if account not in topo.accounts:
        raise CliError("unknown_account", f"no account {account!r} in {topo.path}")
    return topo.accounts[account].api_key


async def with_client(args, fn, *, logon: bool = True):
    from cluster.client import Client, RequestFailed

    topo = load_topology(args)
    gw = topo.nodes["gateway"]
    key = api_key_for(topo, args) if logon else None
    client = Client(gw.client, api_key=None, market_data=gw.pub, timeout=args.timeout)
    answered = False  # whether the venue answered anything: then it is up, and a request is late
    try:
        await client.connect()
        if key is not None:
            from cluster.protocol import Logon

            client.take_logon(await client.request(Logon(api_key=key)))
            answered = True
        return await fn(client, topo)
    except RequestFailed as exc:
        error = exc.error
        numbers = Units.of(topo).numbers(error.reason, error.detail)
        raise CliError(error.reason, describe(numbers) or "refused", EXIT_REFUSED,
                       error.detail) from None
    except UnitError as exc:
        raise CliError(exc.reason, str(exc)) from None
    except asyncio.TimeoutError:
        if not answered:
            raise CliError("timeout", f"no answer from {gw.client} within {args.timeout}s "
                           "(is the cluster up?)") from None
        # The venue is up and answers every request, so this one is late, not lost (a slow or
        # partitioned link holds it): its outcome is unknown, which a script must not take for
        # a refusal.
        coid = getattr(args, "client_order_id", None)
        hint = ("sending it again with the same --client-order-id returns its outcome, never a "
                "second order" if coid else "`perpx order list` shows whether it rests; give "
                "orders a --client-order-id to make a retry safe")
        raise CliError("outcome_unknown", f"no answer within {args.timeout}s: the request may "
                       f"still be in flight; {hint}", EXIT_UNKNOWN) from None
    finally:
        await client.close()


def order_answer(args, topo: config.Topology, data: dict) -> int:
    """Print an order request's answer ("result") and the events that followed it, each with its
    numbers in trader's units ("human"); exit 1 when the venue refused the request."""
    from cluster.protocol import OrderRejected

    units = Units.of(topo)
    out = to_jsonable(data)
    for ev in [out["result"], *out.get("later_events", [])]:
        ev["human"] = units.event(ev)
    emit(out, args.json, render.order_result)
    return EXIT_REFUSED if type(data["result"]) is OrderRejected else EXIT_OK


def side_of(text: str) -> int:
    return {"buy": 1, "sell": -1}[text]


def known_symbol(client, symbol: str) -> str:
    """`symbol` if the gateway listed it at logon, else a usage error naming those it did."""
    if symbol not in client.symbols:
        raise CliError("unknown_symbol", f"unknown symbol {symbol!r}; known: "
                       f"{', '.join(sorted(client.symbols))}")
    return symbol


def order_named(args) -> None:
    """An existing order is named by --order-id or --client-order-id (cancel, amend)."""
    if not args.order_id and not args.client_order_id:
        raise CliError("no_order", "give --order-id or --client-order-id")


def cmd_order_place(args) -> int:
    from cluster.protocol import PlaceOrder

    max_slippage_ppm = _ppm_arg(args.max_slippage, "--max-slippage")  # refused before connecting

    async def run(client, topo):
        symbol = known_symbol(client, args.symbol)
        try:
            qty = client.lots(symbol, args.qty)
            price = client.ticks(symbol, args.price) if args.price is not None else 0
            trigger = client.ticks(symbol, args.trigger_price) if args.trigger_price else 0
        except UnitError as exc:
            raise CliError(exc.reason, str(exc)) from None
        order = PlaceOrder(symbol=symbol, side=side_of(args.side), qty=qty, price=price,
                           type=args.type, tif=args.tif, post_only=args.post_only,
                           reduce_only=args.reduce_only, client_order_id=args.client_order_id or "",
                           trigger_price=trigger, trigger_by=args.trigger_by, stp=args.stp,
                           max_slippage_ppm=max_slippage_ppm)
        report = await client.request(order)
        # What follows: this order's own events, and what the same command did to the account's
        # other orders (a maker cancelled by self-trade prevention): every event carries the
        # sequence number of the command that caused it.
        events = []
        order_id = getattr(report.event, "order_id", 0)
        seq = getattr(report.event, "seq", 0)
        deadline = time.monotonic() + args.wait
        while order_id and time.monotonic() < deadline:
            try:
                r = await asyncio.wait_for(client.reports.get(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if getattr(r.event, "order_id", None) == order_id or \
                    (seq and getattr(r.event, "seq", None) == seq):
                events.append(r.event)
        result = {"result": report.event, "later_events": events,
                  "human": {"price": client.price_str(symbol, price) if price else None,
                            "qty": client.qty_str(symbol, qty)}}
        return order_answer(args, topo, result)

    return asyncio.run(with_client(args, run))


def cmd_order_cancel(args) -> int:
    order_named(args)

    async def run(client, topo):
        report = await client.cancel(args.symbol, args.order_id or 0, args.client_order_id or "")
        return order_answer(args, topo, {"result": report.event})

    return asyncio.run(with_client(args, run))


def cmd_order_amend(args) -> int:
    """New price and/or quantity for a resting order: a quantity decrease at the same price keeps
    its place in the queue; anything else re-queues it (README "Matching rules")."""
    order_named(args)
    if args.price is None and args.qty is None and args.trigger_price is None:
        raise CliError("nothing_to_amend", "give --price, --qty and/or --trigger-price")

    async def run(client, topo):
        known_symbol(client, args.symbol)
        price = client.ticks(args.symbol, args.price) if args.price is not None else 0
        qty = client.lots(args.symbol, args.qty) if args.qty is not None else 0
        trigger = client.ticks(args.symbol, args.trigger_price) \
            if args.trigger_price is not None else 0
        report = await client.amend(args.symbol, args.order_id or 0, price=price, qty=qty,
                                    client_order_id=args.client_order_id or "",
                                    trigger_price=trigger)
        return order_answer(args, topo, {"result": report.event})

    return asyncio.run(with_client(args, run))


def cmd_order_cancel_all(args) -> int:
    """Mass cancel: every open order of the account (in --symbol, or all), in one event."""

    async def run(client, topo):
        if args.symbol:
            known_symbol(client, args.symbol)
        report = await client.cancel_all(args.symbol)
        return order_answer(args, topo, {"result": report.event})

    return asyncio.run(with_client(args, run))


def cmd_order_list(args) -> int:
    """The account's open orders, with their terms in trader's units and what each reserves."""

    async def run(client, topo):
        if args.symbol:
            known_symbol(client, args.symbol)
        view = await client.open_orders(args.symbol)
        data = to_jsonable(view)
        units = Units.of(topo)
        for order in data["orders"]:
            order["human"] = {**units.numbers("", {k: order[k] for k in (
                "price", "qty", "remaining", "trigger_price")}, order["symbol"]),
                "reserved": from_units(order["reserved"], topo.atom)}
        emit(data, args.json, render.orders)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


MARK_WAIT_S = 2.0  # the oracle publishes marks every few hundred ms


def cmd_watch(args) -> int:
    """A symbol's market data as it happens (cluster/watch.py), for --seconds or until Ctrl-C."""
    from cluster.watch import watch

    if args.seconds is not None and not 0 < args.seconds <= 86_400:
        raise CliError("bad_seconds", f"--seconds {args.seconds}: more than 0, at most a day")

    async def run(client, topo):
        if args.symbol not in topo.symbols:
            raise CliError("unknown_symbol", f"{args.symbol!r} is not one of "
                           f"{', '.join(sorted(topo.symbols))}")
        client.symbols = {name: spec.public() for name, spec in topo.symbols.items()}
        await watch(client, args.symbol, args.seconds, args.json)
        return EXIT_OK

    try:
        return asyncio.run(with_client(args, run, logon=False))
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_book(args) -> int:
    """The book's levels, with the oracle's next mark, index and mode for the symbol."""

    async def run(client, topo):
        await client.subscribe(b"mark." + args.symbol.encode())  # before: the SUB joins slowly
        book = await client.book(args.symbol, depth=args.depth)
        spec = topo.symbols[args.symbol]

        def price(ticks: int):
            return from_units(ticks, spec.tick_size) if ticks else None

        def human(levels):
            return [{"price": price(p), "qty": from_units(q, spec.lot_size),
                     "price_ticks": p, "qty_lots": q} for p, q in levels]

        try:
            mark = await client.next_mark(args.symbol, MARK_WAIT_S)
        except asyncio.TimeoutError:
            mark = None
        prices = None if mark is None else {
            "mark": price(mark.mark), "index": price(mark.index), "last": price(mark.last),
            "oracle_mode": mark.mode, "sources": mark.sources, "mark_ticks": mark.mark}
        emit({"symbol": book.symbol, "book_seq": book.book_seq, "bids": human(book.bids),
              "asks": human(book.asks), "prices": prices}, args.json, render.book)
        return EXIT_OK

    return asyncio.run(with_client(args, run, logon=False))


def cmd_account_show(args) -> int:
    args.account = args.name

    async def run(client, topo):
        view = await client.account_view()
        data = to_jsonable(view)
        data["human"] = {k: from_units(getattr(view, k), topo.atom) for k in (
            "balance", "wallet_balance", "equity", "available", "order_margin", "position_margin",
            "maintenance_margin", "fees_paid", "isolated_margin")}
        data["collateral"] = topo.collateral
        for pos in data["positions"]:
            spec = topo.symbols[pos["symbol"]]
            pos["qty_human"] = from_units(pos["qty"], spec.lot_size)
            for key in ("mark", "liquidation_price", "bankruptcy_price"):
                pos[f"{key}_human"] = from_units(pos[key], spec.tick_size) if pos[key] else None
            pos["entry_price_human"] = format((Decimal(pos["entry_price"]) * spec.tick_size)
                                              .normalize(), "f")
            for key in ("unrealized_pnl", "initial_margin", "maintenance_margin", "isolated_margin"):
                pos[f"{key}_human"] = from_units(pos[key], topo.atom)
        units = Units.of(topo)
        for fill in data["fills"]:
            fill["human"] = units.event(fill)
        for entry in data["funding"]:
            spec = topo.symbols[entry["symbol"]]
            entry["human"] = {"rate_pct": format((Decimal(entry["rate_e9"]) / 10**7).normalize(), "f"),
                              "payment": from_units(entry["payment"], topo.atom),
                              "mark": from_units(entry["mark"], spec.tick_size),
                              "qty": from_units(entry["qty"], spec.lot_size)}
        emit(data, args.json, render.account)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


def cmd_ping(args) -> int:
    async def run(client, topo):
        start = time.monotonic_ns()
        pong = await client.ping()
        end = time.monotonic_ns()
        hops = [{"node": n, "mono_ns": t, "since_send_us": (t - start) / 1000} for n, t in pong.hops]
        emit({"rtt_us": (end - start) / 1000, "hops": hops,
              "path": " -> ".join(["client"] + [n for n, _ in pong.hops] + ["client"])}, args.json,
             render.ping)
        return EXIT_OK

    return asyncio.run(with_client(args, run, logon=False))


def _account_change(args, action) -> int:
    """Run one settings/transfer request and print its Ack (or exit 1 with the reason)."""
    async def run(client, topo):
        ack = await action(client, topo)
        data = to_jsonable(ack)
        data["human"] = Units.of(topo).numbers(ack.action, ack.detail)
        emit(data, args.json, render.ack)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


def _ppm_arg(text: str | None, what: str) -> int:
    """A fraction typed as a decimal ('0.005') in exact ppm; 0 when not given."""
    if text is None:
        return 0
    try:
        ppm = rate_to_ppm(text, what)
    except UnitError as exc:
        raise CliError("bad_fraction", f"{exc}: a fraction in (0, 1] in steps of 0.000001") \
            from None
    if not 0 < ppm <= 1_000_000:
        raise CliError("bad_fraction", f"{what}: {text} must be a fraction in (0, 1] in steps "
                       "of 0.000001")
    return ppm


def _atoms_arg(topo: config.Topology, text: str) -> int:
    try:
        return topo.atoms(text, "amount")
    except UnitError as exc:
        raise CliError(exc.reason, str(exc)) from None


def cmd_account_leverage(args) -> int:
    args.account = args.name
    return _account_change(args, lambda c, t: c.set_leverage(args.symbol, args.leverage))


def cmd_account_mode(args) -> int:
    args.account = args.name
    return _account_change(args, lambda c, t: c.set_margin_mode(args.symbol, args.mode))


def cmd_account_margin(args) -> int:
    args.account = args.name
    return _account_change(args, lambda c, t: c.adjust_isolated_margin(
        args.symbol, _atoms_arg(t, args.amount)))


def cmd_account_transfer(args) -> int:
    """Deposits and withdrawals log on with an admin-scoped key (--api-key or --admin NAME)."""
    topo = load_topology(args)
    if not args.api_key:
        admins = [a for a in topo.accounts.values() if "admin" in a.scopes]
        name = args.admin or (admins[0].name if admins else None)
        if name is None or name not in topo.accounts:
            raise CliError("no_admin", "give --api-key of an admin-scoped key or --admin NAME")
        args.api_key = topo.accounts[name].api_key
    amount = _atoms_arg(topo, args.amount)

    def action(c, t):
        if args.action == "deposit":
            return c.deposit(args.name, amount)
        return c.withdraw(args.name, amount)

    return _account_change(args, action)


# ------------------------------------------------------------------ post-incident (audit journals)


def cmd_audit_verify(args) -> int:
    from cluster import verify

    result = verify.verify(args.path or run_dir_of(args))
    emit(result, args.json, verify.text)
    return EXIT_OK if result["ok"] else EXIT_REFUSED


def journals(args) -> list:
    """The audit journals' records; lines that could not be read are skipped and said (stderr)."""
    from cluster import reports

    records, unreadable = reports.load(str(run_dir_of(args)))
    if unreadable:
        print("perpx: skipped unreadable journal lines (torn or damaged writes): "
              + ", ".join(f"{name} {n}" for name, n in unreadable.items()), file=sys.stderr)
    return records


def cmd_explain_liquidation(args) -> int:
    from cluster import reports

    records = journals(args)
    found = reports.liquidation(records, args.id)
    if found is None:
        raise CliError("unknown_liquidation", f"no liquidation {args.id} in {run_dir_of(args)}/audit",
                       EXIT_REFUSED)
    units = Units.of(load_topology(args))
    emit(found, args.json, lambda data: render.liquidation(data, units))
    return EXIT_OK


def window(args) -> tuple[int | None, int | None]:
    """--since/--until as ns since the epoch, refused with the reason when not times or reversed."""
    from cluster import reports

    try:
        since, until = reports.parse_time(args.since), reports.parse_time(args.until)
    except ValueError as exc:
        raise CliError("bad_time", str(exc)) from None
    if since is not None and until is not None and until < since:
        raise CliError("bad_window", f"--until ({reports.iso(until)}) is before --since "
                       f"({reports.iso(since)})")
    return since, until


def cmd_explain_account(args) -> int:
    from cluster import reports

    topo = load_topology(args)
    if args.name not in topo.accounts:
        raise CliError("unknown_account", f"no account {args.name!r} in the topology")
    if args.limit < 0:
        raise CliError("bad_limit", f"--limit {args.limit}: a count, 0 for all")
    since, until = window(args)
    found = reports.account(journals(args), args.name, since, until, args.limit)
    units = Units.of(topo)
    emit({"account": args.name, "decisions": found}, args.json,
         lambda data: render.decisions(data, units))
    return EXIT_OK


def cmd_incident_report(args) -> int:
    from cluster import reports

    since, until = window(args)
    report = reports.incident(journals(args), since, until)
    if args.format == "json" or args.json:
        emit(report, True)
    else:
        print(reports.incident_markdown(report, Units.of(load_topology(args))), end="")
    return EXIT_OK


# ------------------------------------------------------------------ netsim (through the supervisor)


def admin_call(args, cmd: str, cmd_args: dict) -> dict:
    """One request to the supervisor's admin socket; the reply as a dict (ok, data, error)."""
    import zmq

    from cluster.protocol import AdminReply, AdminRequest, encode_one

    topo = load_topology(args)
    if not topo.supervisor.admin:
        raise CliError("no_admin_endpoint", "the topology has no supervisor.admin endpoint")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(topo.supervisor.admin)
    try:
        sock.send(encode_one(AdminRequest(cmd=cmd, args=cmd_args)))
        if not sock.poll(int(args.timeout * 1000)):
            raise CliError("timeout", f"no answer from the supervisor at {topo.supervisor.admin} "
                           "(is the cluster up?)")
        reply = msgspec.msgpack.decode(sock.recv(), type=AdminReply)
    finally:
        sock.close()
    return {"ok": reply.ok, "data": reply.data, "error": reply.error}


def _admin(args, cmd: str, cmd_args: dict, text=render.netsim) -> int:
    reply = admin_call(args, cmd, cmd_args)
    if not reply["ok"]:
        raise CliError("refused", reply["error"], EXIT_REFUSED)
    emit(reply["data"], args.json, text)
    return EXIT_OK


def latency_spec(args) -> dict | None:
    if args.spec:
        try:
            return json.loads(args.spec)
        except ValueError as exc:
            raise CliError("bad_spec", f"--spec is not JSON: {exc}") from None
    model = args.model or ("constant" if args.latency else None)
    if model is None:
        return {"model": "constant", "latency": "0", "jitter": args.jitter} if args.jitter else None
    spec: dict = {"model": model}
    fields = {"constant": {"latency": args.latency}, "uniform": {"min": args.min, "max": args.max},
              "normal": {"mean": args.mean or args.latency, "stddev": args.stddev},
              "lognormal": {"median": args.median or args.latency, "sigma": args.sigma},
              "pareto": {"min": args.min or args.latency, "alpha": args.alpha},
              "empirical": {"csv": args.csv}}[model]
    spec.update({k: v for k, v in fields.items() if v is not None})
    if args.jitter:
        spec["jitter"] = args.jitter
    return spec


def cmd_netsim_set(args) -> int:
    settings: dict = {}
    spec = latency_spec(args)
    if spec is not None:
        settings["latency"] = spec
    for key in ("loss", "rto", "bandwidth", "queue_limit", "on_full", "seed"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.down:
        settings["down"] = True
    if args.reorder:
        settings["reorder"] = True
    return _admin(args, "netsim_set", {"link": args.link, "settings": settings})


def cmd_netsim_run(args) -> int:
    from netsim import scenario

    try:
        plan = scenario.load(args.scenario)
    except (scenario.ScenarioError, ValueError) as exc:
        raise CliError("bad_scenario", str(exc)) from None

    def send(cmd, cmd_args):
        return admin_call(args, cmd, cmd_args)

    def echo(record: dict) -> None:  # as each step is applied, not at the end
        print(json.dumps(record) if args.json else render.scenario_step(record), flush=True)

    log = scenario.run(plan, send, echo)
    return EXIT_OK if all(r["ok"] for r in log) else EXIT_REFUSED


def _duration_ns_arg(text: str, what: str) -> int:
    """A CLI duration ('250ms', '-1s' where allowed) in ns, or a usage error naming it."""
    from netsim.models import ModelError, signed_duration_ns

    try:
        return signed_duration_ns(text)
    except ModelError as exc:
        raise CliError("bad_duration", f"{what}: {exc}") from None


def cmd_netsim_fault(args) -> int:
    if args.op == "skew":
        ns = _duration_ns_arg(args.by or "0", "--by")
        return _admin(args, "skew", {"node": args.node, "ns": ns})
    return _admin(args, "fault", {"node": args.node, "op": args.op}, render.node_fault)


def cmd_netsim_feed(args) -> int:
    cmd_args = {"action": args.op, "venue": args.venue if args.venue != "all" else "",
                "symbol": args.symbol or "", "ppm": args.ppm or 0}
    if args.duration:
        duration = _duration_ns_arg(args.duration, "--duration")
        if duration < 0:
            raise CliError("bad_duration", f"--duration: {args.duration} is negative")
        cmd_args["duration_ms"] = duration // 1_000_000
    return _admin(args, "feed", cmd_args, render.feed_fault)


# ------------------------------------------------------------------ calculator (offline)


def _calc(args, fn) -> int:
    try:
        emit(fn(config.load(args.config)), args.json, render.fields)
    except UnitError as exc:
        raise CliError(exc.reason, str(exc)) from None
    except config.ConfigError as exc:
        raise CliError("bad_config", str(exc)) from None
    return EXIT_OK


def cmd_calc_mmr(args) -> int:
    from cluster import calc

    return _calc(args, lambda topo: calc.mmr(topo, args.symbol, args.notional))


def cmd_calc_liq(args) -> int:
    from cluster import calc

    if args.mode == "isolated" and (args.other_mm != "0" or args.other_upnl != "0"):
        raise CliError("isolated_has_no_others", "--other-mm/--other-upnl apply to --mode cross")
    return _calc(args, lambda topo: calc.liq_price(
        topo, symbol=args.symbol, side=args.side, qty=args.qty, entry=args.entry,
        wallet=args.wallet, mode=args.mode, fee_rate=args.fee_rate,
        funding_rate_=args.funding_rate, funding_periods=args.funding_periods, stop=args.stop,
        stop_gap=args.stop_gap, other_mm=args.other_mm, other_upnl=args.other_upnl))


def cmd_calc_funding(args) -> int:
    from cluster import calc

    return _calc(args, lambda topo: calc.funding(
        topo, premium_index=args.premium_index, interest_rate=args.interest_rate, cap=args.cap,
        notional=args.notional, side=args.side))


# ------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perpx", description="perpx: a perpetual-futures exchange cluster")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="topology TOML (default: the running cluster's, or built-in)")
    common.add_argument("--run-dir", help="run directory (default ./var or $PERPX_RUN_DIR)")
    common.add_argument("--json", action="store_true", help="one JSON object on stdout")
    common.add_argument("--timeout", type=float, default=5.0)
    sub = p.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser("cluster").add_subparsers(dest="action", required=True)
    up = cluster.add_parser("up", parents=[common], help="start the cluster")
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--same-session", action="store_true",
                    help="with --detach: stay in this session, so in this scheduling group when the "
                         "kernel groups by session (autogroup), e.g. beside a load generator")
    up.add_argument("--demo", action="store_true", help="drive demo traffic and print it")
    up.add_argument("--resume", action="store_true",
                    help="keep the journals of the run dir's last run: risk and matching restore "
                         "their state from them (default: start afresh)")
    up.add_argument("--seconds", type=float, default=None,
                    help="stop after N seconds (default: $DEMO_SECONDS, else run until Ctrl-C)")
    up.set_defaults(fn=cmd_cluster_up)
    cluster.add_parser("down", parents=[common]).set_defaults(fn=cmd_cluster_down)
    cluster.add_parser("status", parents=[common]).set_defaults(fn=cmd_cluster_status)

    order = sub.add_parser("order").add_subparsers(dest="action", required=True)
    place = order.add_parser("place", parents=[common])
    place.add_argument("--account")
    place.add_argument("--api-key")
    place.add_argument("--symbol", required=True)
    place.add_argument("--side", choices=["buy", "sell"], required=True)
    place.add_argument("--qty", required=True, help="in contract units, e.g. 0.01")
    place.add_argument("--price", help="limit price, e.g. 30000.5")
    place.add_argument("--type", default="limit", choices=[
        "limit", "market", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit"])
    place.add_argument("--tif", default="GTC", choices=["GTC", "IOC", "FOK"])
    place.add_argument("--post-only", action="store_true")
    place.add_argument("--reduce-only", action="store_true")
    place.add_argument("--client-order-id")
    place.add_argument("--trigger-price")
    place.add_argument("--trigger-by", default="mark", choices=["mark", "last"])
    place.add_argument("--stp", default="cancel_taker",
                       choices=["cancel_taker", "cancel_maker", "cancel_both"],
                       help="self-trade prevention: which side is cancelled when this order "
                            "would trade with the account's own")
    place.add_argument("--max-slippage", help="market orders: how far from mark the order may "
                       "trade, as a fraction (0.005 = 0.5%%); default the symbol's")
    place.add_argument("--wait", type=float, default=0.3, help="seconds to collect fills after the ack")
    place.set_defaults(fn=cmd_order_place)
    existing = argparse.ArgumentParser(add_help=False)  # cancel and amend name an order
    existing.add_argument("--account")
    existing.add_argument("--api-key")
    existing.add_argument("--symbol", required=True)
    existing.add_argument("--order-id", type=int)
    existing.add_argument("--client-order-id")
    order.add_parser("cancel", parents=[common, existing]).set_defaults(fn=cmd_order_cancel)
    amend = order.add_parser("amend", parents=[common, existing])
    amend.add_argument("--price", help="new limit price, e.g. 30001")
    amend.add_argument("--qty", help="new total quantity (filled part included), e.g. 0.02")
    amend.add_argument("--trigger-price", help="a waiting stop or take-profit's new trigger")
    amend.set_defaults(fn=cmd_order_amend)
    wipe = order.add_parser("cancel-all", parents=[common],
                            help="cancel every open order (in one symbol, or all), as one event")
    wipe.add_argument("--account")
    wipe.add_argument("--api-key")
    wipe.add_argument("--symbol", default="", help="one symbol (default: all)")
    wipe.set_defaults(fn=cmd_order_cancel_all)
    listing = order.add_parser("list", parents=[common], help="the account's open orders")
    listing.add_argument("--account")
    listing.add_argument("--api-key")
    listing.add_argument("--symbol", default="", help="one symbol (default: all)")
    listing.set_defaults(fn=cmd_order_list)

    book = sub.add_parser("book", parents=[common])
    book.add_argument("symbol")
    book.add_argument("--depth", type=int, default=10)
    book.set_defaults(fn=cmd_book)
    watch = sub.add_parser("watch", parents=[common], help="a symbol's market data as it happens")
    watch.add_argument("symbol")
    watch.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    watch.set_defaults(fn=cmd_watch)

    account = sub.add_parser("account").add_subparsers(dest="action", required=True)
    show = account.add_parser("show", parents=[common])
    show.add_argument("name")
    show.add_argument("--api-key")
    show.set_defaults(fn=cmd_account_show)
    lev = account.add_parser("leverage", parents=[common], help="set leverage for a symbol")
    lev.add_argument("name")
    lev.add_argument("--symbol", required=True)
    lev.add_argument("--leverage", type=int, required=True)
    lev.add_argument("--api-key")
    lev.set_defaults(fn=cmd_account_leverage)
    mode = account.add_parser("mode", parents=[common], help="cross or isolated margin for a symbol")
    mode.add_argument("name")
    mode.add_argument("--symbol", required=True)
    mode.add_argument("--mode", choices=["cross", "isolated"], required=True)
    mode.add_argument("--api-key")
    mode.set_defaults(fn=cmd_account_mode)
    margin = account.add_parser("margin", parents=[common],
                                help="move collateral into (+) or out of (-) an isolated position")
    margin.add_argument("name")
    margin.add_argument("--symbol", required=True)
    margin.add_argument("--amount", required=True, help="e.g. 100 or -50, in collateral units")
    margin.add_argument("--api-key")
    margin.set_defaults(fn=cmd_account_margin)
    for verb in ("deposit", "withdraw"):
        tr = account.add_parser(verb, parents=[common], help=f"{verb} collateral (admin scope)")
        tr.add_argument("name")
        tr.add_argument("--amount", required=True)
        tr.add_argument("--admin", help="an admin-scoped account in the topology")
        tr.add_argument("--api-key", help="an admin-scoped API key")
        tr.set_defaults(fn=cmd_account_transfer)

    sub.add_parser("ping", parents=[common]).set_defaults(fn=cmd_ping)

    explain = sub.add_parser("explain", help="explain a decision from the audit journal"
                             ).add_subparsers(dest="action", required=True)
    ex_liq = explain.add_parser("liquidation", parents=[common], help="a liquidation's whole path")
    ex_liq.add_argument("id", type=int)
    ex_liq.set_defaults(fn=cmd_explain_liquidation)
    period = argparse.ArgumentParser(add_help=False)  # a window of the journals (cli.window)
    period.add_argument("--since", help="ISO time, epoch seconds, or an age like 15m (ago), 2h, 1d")
    period.add_argument("--until")
    ex_acct = explain.add_parser("account", parents=[common, period], help="every decision about "
                                 "an account: refusals, venue cancels, settings, liquidations")
    ex_acct.add_argument("name")
    ex_acct.add_argument("--limit", type=int, default=50, help="the newest N (0: all)")
    ex_acct.set_defaults(fn=cmd_explain_account)
    incident = sub.add_parser("incident", help="post-incident summaries").add_subparsers(
        dest="action", required=True)
    report = incident.add_parser("report", parents=[common, period],
                                 help="liquidations, degraded modes, insurance fund, ADL in a window")
    report.add_argument("--format", choices=["md", "json"], default="md")
    report.set_defaults(fn=cmd_incident_report)

    audit = sub.add_parser("audit", help="the journals of a run").add_subparsers(
        dest="action", required=True)
    verify = audit.add_parser(
        "verify", parents=[common], help="replay every journal of a run offline: inputs, "
        "snapshots checked, final state hash, money, and any divergence or damage")
    verify.add_argument("path", nargs="?", help="the run directory (default: --run-dir or ./var)")
    verify.set_defaults(fn=cmd_audit_verify)

    netsim = sub.add_parser("netsim", help="the network simulator (a running cluster)"
                            ).add_subparsers(dest="action", required=True)
    netsim.add_parser("show", parents=[common]).set_defaults(
        fn=lambda a: _admin(a, "netsim_show", {}))
    ns_set = netsim.add_parser("set", parents=[common], help="shape one link, e.g. gateway->risk")
    ns_set.add_argument("link")
    ns_set.add_argument("--latency", help="e.g. 2ms (constant model, or the model's centre)")
    ns_set.add_argument("--jitter", help="uniform +- jitter, e.g. 200us")
    ns_set.add_argument("--model", choices=["constant", "uniform", "normal", "lognormal", "pareto",
                                            "empirical"])
    for flag in ("--min", "--max", "--mean", "--stddev", "--median"):
        ns_set.add_argument(flag)
    ns_set.add_argument("--sigma", type=float)
    ns_set.add_argument("--alpha", type=float)
    ns_set.add_argument("--csv", help="empirical: a file of delay samples, one per line")
    ns_set.add_argument("--spec", help="a full latency model as JSON (e.g. a mixture)")
    ns_set.add_argument("--loss", type=float)
    ns_set.add_argument("--rto")
    ns_set.add_argument("--bandwidth", help="e.g. 10mbit")
    ns_set.add_argument("--queue-limit", dest="queue_limit", type=int)
    ns_set.add_argument("--on-full", dest="on_full", choices=["block", "drop"])
    ns_set.add_argument("--seed", type=int)
    ns_set.add_argument("--down", action="store_true", help="partition the link")
    ns_set.add_argument("--reorder", action="store_true")
    ns_set.set_defaults(fn=cmd_netsim_set)
    ns_clear = netsim.add_parser("clear", parents=[common])
    ns_clear.add_argument("link", nargs="?")
    ns_clear.set_defaults(fn=lambda a: _admin(a, "netsim_clear", {"link": a.link}))
    ns_prof = netsim.add_parser("profile", parents=[common], help="colo, same-dc, cross-region, ...")
    ns_prof.add_argument("name")
    ns_prof.set_defaults(fn=lambda a: _admin(a, "netsim_profile", {"name": a.name}))
    ns_part = netsim.add_parser("partition", parents=[common], help="take links down (or --heal)")
    ns_part.add_argument("links", nargs="*")
    ns_part.add_argument("--heal", action="store_true")
    ns_part.set_defaults(fn=lambda a: _admin(a, "netsim_partition",
                                             {"links": a.links, "down": not a.heal}))
    ns_run = netsim.add_parser("run", parents=[common], help="apply a scenario timeline")
    ns_run.add_argument("scenario")
    ns_run.set_defaults(fn=cmd_netsim_run)
    ns_fault = netsim.add_parser("fault", parents=[common], help="kill, pause, resume or skew a node")
    ns_fault.add_argument("node")
    ns_fault.add_argument("op", choices=["kill", "pause", "resume", "skew"])
    ns_fault.add_argument("--by", help="skew: e.g. 250ms or -1s")
    ns_fault.set_defaults(fn=cmd_netsim_fault)
    ns_feed = netsim.add_parser("feed", parents=[common], help="break one venue's spot feed")
    ns_feed.add_argument("venue", help="a venue name, or all (heal)")
    ns_feed.add_argument("op", choices=["freeze", "delay", "bias", "spike", "heal", "shock"])
    ns_feed.add_argument("--duration", help="freeze/spike: how long; delay: how late, e.g. 8s")
    ns_feed.add_argument("--ppm", type=int, help="bias/spike/shock: relative move in ppm")
    ns_feed.add_argument("--symbol", help="shock: the symbol")
    ns_feed.set_defaults(fn=cmd_netsim_feed)

    calc = sub.add_parser("calc", help="offline risk calculator").add_subparsers(dest="action",
                                                                                  required=True)
    c_mmr = calc.add_parser("mmr", parents=[common], help="ladder tier and maintenance margin")
    c_mmr.add_argument("--symbol", required=True)
    c_mmr.add_argument("--notional", required=True)
    c_mmr.set_defaults(fn=cmd_calc_mmr)
    c_liq = calc.add_parser("liq-price", parents=[common], help="liquidation and bankruptcy price")
    c_liq.add_argument("--symbol", required=True)
    c_liq.add_argument("--side", choices=["long", "short"], required=True)
    c_liq.add_argument("--qty", required=True)
    c_liq.add_argument("--entry", required=True)
    c_liq.add_argument("--wallet", required=True, help="isolated margin, or the cross wallet")
    c_liq.add_argument("--mode", choices=["isolated", "cross"], default="isolated")
    c_liq.add_argument("--other-mm", default="0", help="cross: other positions' maintenance margin")
    c_liq.add_argument("--other-upnl", default="0", help="cross: other positions' unrealized PnL")
    c_liq.add_argument("--fee-rate", help="forced-execution fee rate (default: the symbol's)")
    c_liq.add_argument("--funding-rate")
    c_liq.add_argument("--funding-periods", type=int, default=0)
    c_liq.add_argument("--stop")
    c_liq.add_argument("--stop-gap", default="0.005", help="warn when the stop is closer than this")
    c_liq.set_defaults(fn=cmd_calc_liq)
    c_fund = calc.add_parser("funding", parents=[common], help="funding rate and payment")
    c_fund.add_argument("--premium-index", required=True)
    c_fund.add_argument("--interest-rate", default="0.0001")
    c_fund.add_argument("--cap", default="0.0075")
    c_fund.add_argument("--notional", required=True)
    c_fund.add_argument("--side", choices=["long", "short"], required=True)
    c_fund.set_defaults(fn=cmd_calc_funding)

    # chaos experiments (#22): their commands live in cluster/chaos_cli.py
    from cluster import chaos_cli

    chaos_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except CliError as exc:
        as_json = getattr(args, "json", False)
        payload = {"error": exc.reason, "message": str(exc)}
        if exc.detail is not None:
            payload["detail"] = exc.detail
        if as_json:
            print(json.dumps(payload))
        else:
            print(f"perpx: {exc.reason}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`perpx ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
