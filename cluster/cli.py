"""The `perpx` command line.

    perpx cluster up [--detach [--same-session]] [--demo] [--seconds N] [--config F] [--run-dir D]
    perpx surveillance top [--k 20] [--since 15m] [--json] | explain ACCOUNT
    perpx cluster down | status [--json]
    perpx order place --account A --symbol S --side buy|sell --qty 0.01 [--price 30000.5] ... [--json]
    perpx order cancel --account A --symbol S (--order-id N | --client-order-id X) [--json]
    perpx book SYMBOL [--depth N] [--json]
    perpx account show ACCOUNT [--json]
    perpx ping [--local] [--json]

Commands that talk to a running cluster find it through <run-dir>/status.json (default ./var),
or through --config. Exit codes: 0 ok, 1 the venue refused (reason in the output), 2 bad input or
no cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import math
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec

from cluster import curve
from cluster import config
from cluster import render
from cluster.humanize import Units, describe
from cluster.protocol import to_jsonable
from cluster.runstate import read_status, status_path
from cluster.rules.units import PLAIN_DECIMAL, UnitError, from_units, rate_to_ppm

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, reason: str, message: str, code: int = EXIT_USAGE,
                 detail: dict | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.detail = detail  # the venue's numbers, as it sent them (for --json)


# ------------------------------------------------------------------ one validation layer for numbers
#
# Every number a person types goes through Number (argparse's `type=`) before anything connects:
# ASCII digits only (Python's Decimal would also take '３００００', '3_0000' and ' 30000 '), finite,
# in the flag's range; a refusal exits 2 and names the flag. The grid (tick, lot, atom) is checked
# when the symbol is known, by the SDK's exact conversions, also before anything is sent.

ASCII_NUMBER = re.compile(PLAIN_DECIMAL)  # and no exponent: a person types 1000, not 1e3
# A price relative to the oracle's mark: 'mark', 'mark-1%', 'mark+0.5%', 'mark-25' (price units).
MARK_RELATIVE = re.compile(r"mark(?:([+-])((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(%?))?")


class Number:
    """argparse type: an ASCII decimal in [low, high] (`low_open`: above low), as the exact text
    (kind "decimal", for exact conversion to ticks, lots or atoms), an int or a float."""

    def __init__(self, *, kind: str = "decimal", low=None, high=None, low_open: bool = False,
                 example: str = "") -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.example = example
        self.__name__ = "number" if kind != "int" else "whole number"  # argparse's error wording

    def range_text(self) -> str:
        low = "" if self.low is None else (f"above {self.low}" if self.low_open
                                           else f"at least {self.low}")
        high = "" if self.high is None else f"at most {self.high}"
        return " and ".join(part for part in (low, high) if part)

    def __call__(self, text: str):
        example = f", e.g. {self.example}" if self.example else ""
        if not ASCII_NUMBER.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"not_a_number: {text!r} is not a number: ASCII digits 0-9 with an optional sign and '.'"
                f"{example}")
        value = Decimal(text)
        if self.kind == "int" and value != value.to_integral_value():
            raise argparse.ArgumentTypeError(f"not_a_whole_number: {text} is not a whole number"
                                             f"{example}")
        if (self.low is not None and (value < self.low or (self.low_open and value == self.low))) \
                or (self.high is not None and value > self.high):
            raise argparse.ArgumentTypeError(f"out_of_range: {text} is out of range: "
                                             f"{self.range_text()}"
                                             f"{example}")
        if self.kind == "int":
            return int(value)
        if self.kind == "float":
            return float(value)
        return text


def price_type(text: str) -> str:
    """argparse type of a price: a positive ASCII decimal, or one relative to the mark."""
    if text.startswith("mark"):
        if not MARK_RELATIVE.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"bad_price: {text!r}: a price relative to the mark is mark, mark-1%, mark+0.5% or mark-25")
        return text
    return Number(low=0, low_open=True, example="30000.5 or mark-1%")(text)


TIMEOUT = Number(kind="float", low=0, low_open=True, high=3600, example="5")
SECONDS = Number(kind="float", low=0, low_open=True, high=86_400, example="30")
QTY = Number(low=0, low_open=True, example="0.01")
MONEY = Number(low=0, low_open=True, example="1000")
SIGNED_MONEY = Number(example="250 or -50")
ORDER_ID = Number(kind="int", low=1, example="42")
DECIMAL = Number()
FRACTION = Number(low=0, high=1, example="0.005")


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
        cfg = (read_status(run) or {}).get("config")
    cfg = cfg or os.environ.get("PERPX_CONFIG") or None
    try:
        return config.load(cfg, run_dir=str(run))
    except config.ConfigError as exc:
        raise CliError("bad_config", str(exc)) from None


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


def with_standbys(topo: config.Topology) -> config.Topology:
    """`cluster up --standby`: the topology with a hot standby for risk and matching (#19),
    written beside the run (RUN/topology-standby.toml) so every process reads the same one."""
    import tomllib

    raw = tomllib.loads(Path(topo.path).read_text())
    wanted: list[tuple[dict, str, str]] = []  # (node, key, host) of each endpoint to give
    for core in config.JOURNALED_NODES:
        node = raw["nodes"][core]
        node["standby"] = True
        if node.get("inbox", "").startswith("tcp://"):  # the standby's own, on the same host
            host = node["inbox"][len("tcp://"):].rpartition(":")[0]
            keys = ["repl", "standby_inbox", "standby_repl"] + (["standby_pub"] if node.get("pub")
                                                                else [])
            keys += ["standby_private"] if node.get("private") else []
            wanted += [(node, key, host) for key in keys if not node.get(key)]
    # Free now is not enough: the topology's own ports are not bound before `up`, so a port it
    # names is free too. Every port is picked once, none the topology already has.
    taken = {int(m) for m in re.findall(r":(\d+)\b", Path(topo.path).read_text())}
    ports: list[int] = []
    for _ in range(20):
        if len(ports) >= len(wanted):
            break
        for port in config.free_tcp_ports(len(wanted) - len(ports)):
            if port not in taken:
                taken.add(port)
                ports.append(port)
    if len(ports) < len(wanted):
        raise CliError("bad_config", f"--standby: found {len(ports)} free loopback ports of the "
                       f"{len(wanted)} the standbys need")
    for (node, key, host), port in zip(wanted, ports):
        node[key] = f"tcp://{host}:{port}"
    run = Path(topo.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = run / "topology-standby.toml"
    raw["cluster"]["run_dir"] = str(run)
    path.write_text(config._dump_toml(raw))
    try:
        return config.load(path, run_dir=str(run))
    except config.ConfigError as exc:
        raise CliError("bad_config", f"--standby: {exc}") from None


def cmd_cluster_up(args) -> int:
    topo = load_topology(args, starting=True)
    if getattr(args, "standby", False):
        topo = with_standbys(topo)
    run = Path(topo.run_dir)
    status = read_status(run)
    if status and pid_alive(status.get("supervisor_pid")) and status.get("state") in ("starting", "running"):
        raise CliError("already_running", f"a cluster is already running from {run} "
                       f"(supervisor pid {status['supervisor_pid']}); `perpx cluster down` first")
    # Its supervisor died but nodes still serve: the new supervisor adopts them (never a second set).
    adopt = bool(status) and status.get("state") in ("starting", "running") and any(
        pid_alive(n.get("pid")) for n in (status.get("nodes") or {}).values())
    if args.detach:
        (run / "log").mkdir(parents=True, exist_ok=True)
        try:
            if not adopt:  # (adopting: the file names the nodes until the new supervisor writes)
                status_path(run).unlink()
        except FileNotFoundError:
            pass
        out = open(run / "log" / "supervisor.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.supervisor", "--config", topo.path, "--run-dir", str(run)]
            + (["--resume"] if args.resume else []) + (["--adopt"] if adopt else []),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=not args.same_session,
        )
        out.close()
        deadline = time.monotonic() + topo.supervisor.ready_timeout_ms / 1000 + 5
        while time.monotonic() < deadline:
            status = read_status(run)
            if status and status.get("state") == "running" and \
                    status.get("supervisor_pid") == proc.pid:
                emit(with_liveness(status), args.json, render.cluster_status)
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
                       f" (see {run}/log/){start_failure_hint(failure or '')}", EXIT_REFUSED)
    import uvloop

    from cluster.supervisor import run_cluster

    seconds = args.seconds if args.seconds is not None else (
        float(os.environ["DEMO_SECONDS"]) if os.environ.get("DEMO_SECONDS") else None)
    code = uvloop.run(run_cluster(topo, demo_seconds=seconds, demo=args.demo, resume=args.resume,
                                  adopt=adopt))
    hint = start_failure_hint((read_status(run) or {}).get("failure") or "")
    if code and hint:
        print(f"perpx:{hint}", file=sys.stderr)
    return code


def start_failure_hint(failure: str) -> str:
    """What to do about a start that failed for a reason the person can act on."""
    if "Address already in use" in failure:
        return ("; another cluster (another checkout's, or one started with another --run-dir) "
                "or program holds that port: stop it (`perpx cluster down --run-dir DIR`), or give "
                "this one other ports (a topology of your own: --config FILE or PERPX_CONFIG)")
    return ""


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


def with_liveness(status: dict) -> dict:
    """status.json with what the processes say now: each node's `alive`, and `supervisor_dead`
    for a cluster whose supervisor is gone though the file says it runs."""
    alive = pid_alive(status.get("supervisor_pid"))
    if not alive and status.get("state") in ("starting", "running"):
        status["state"] = "supervisor_dead"
    for node in status.get("nodes", {}).values():
        node["alive"] = pid_alive(node.get("pid"))
    return status


def no_cluster_hint(run: Path) -> str:
    """What to do when `run` holds no cluster: start one, or point at the one running."""
    hint = "`perpx cluster up --detach` starts one"
    if not (Path.cwd() / "var").resolve() == run or not run.exists():
        hint += ("; a cluster started in another directory is found with --run-dir DIR "
                 "(or PERPX_RUN_DIR), DIR being that directory's var/")
    return hint


def cmd_cluster_status(args) -> int:
    run = run_dir_of(args)
    status = read_status(run)
    if status is None:
        emit({"state": "absent", "run_dir": str(run), "hint": no_cluster_hint(run)}, args.json,
             render.cluster_status)
        return EXIT_REFUSED
    status = with_liveness(status)
    emit(status, args.json, render.cluster_status)
    return EXIT_OK if status["state"] == "running" else EXIT_REFUSED


def require_cluster(args) -> None:
    """Refuse at once, before waiting on a socket, when the run directory says its cluster is not
    running (stopped, failed, its supervisor gone) or holds none; --config alone names a cluster
    by its endpoints, which are then tried."""
    run = run_dir_of(args)
    status = read_status(run)
    if status is None:
        if getattr(args, "config", None):
            return
        raise CliError("no_cluster", f"no cluster in {run} (no status.json); "
                       + no_cluster_hint(run))
    state = with_liveness(status)["state"]
    if state not in ("running", "starting"):
        why = f" ({status['failure']})" if status.get("failure") else ""
        raise CliError("cluster_not_running", f"the cluster in {run} is {state}{why}; "
                       "`perpx cluster up --detach` starts it, `perpx cluster status` shows it")


# ------------------------------------------------------------------ discovery (the topology)


def pct(ppm: int) -> str:
    """A rate in ppm as a percent: 50000 -> '5%', 200 -> '0.02%'."""
    return f"{format((Decimal(ppm) / 10_000).normalize(), 'f')}%"


def cmd_symbols(args) -> int:
    """Every rule a trader needs before sending an order (what exchanges call exchangeInfo), from
    the topology the cluster runs with: no cluster needed."""
    topo = load_topology(args)

    def money(atoms: int) -> str:
        return from_units(atoms, topo.atom)

    out = {"collateral": topo.collateral, "atom": str(topo.atom), "symbols": []}
    for name, spec in sorted(topo.symbols.items()):
        out["symbols"].append({
            "symbol": name, "tick_size": str(spec.tick_size), "lot_size": str(spec.lot_size),
            "min_qty": from_units(spec.min_qty, spec.lot_size),
            "max_qty": from_units(spec.max_qty, spec.lot_size),
            "max_notional": money(spec.max_notional),
            "price_band": pct(spec.band_ppm), "market_protection": pct(spec.protection_ppm),
            "maker_fee": pct(spec.maker_fee_ppm), "taker_fee": pct(spec.taker_fee_ppm),
            "forced_fee": pct(spec.forced_fee_ppm),
            "default_leverage": spec.default_leverage, "max_leverage": spec.max_leverage,
            "funding_interval_s": spec.funding_interval_s,
            "funding_cap": f"{format((Decimal(spec.funding_cap_e9) / 10**7).normalize(), 'f')}%",
            "ladder": [{"tier": t.number, "notional_from": money(t.floor),
                        "notional_to": money(t.cap), "max_leverage": t.max_leverage,
                        "maintenance_rate": pct(t.mmr_ppm),
                        "maintenance_amount": money(t.amount)} for t in spec.tiers],
        })
    emit(out, args.json, render.symbols)
    return EXIT_OK


def cmd_accounts(args) -> int:
    """The topology's accounts: what `--account NAME` takes. Keys are not printed."""
    topo = load_topology(args)
    out = {"collateral": topo.collateral, "accounts": [
        {"account": a.name, "scopes": list(a.scopes),
         "initial_deposit": from_units(a.deposit, topo.atom)} for a in topo.accounts.values()]}
    emit(out, args.json, render.accounts)
    return EXIT_OK


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


def public_key_for(topo: config.Topology, args) -> str | None:
    """The key for public reads (book, watch, ping): the one given, else the topology's first
    read-scoped account; the gateway serves nothing but logon and a local ping before logon."""
    if (getattr(args, "api_key", None) or getattr(args, "account", None)
            or os.environ.get("PERPX_API_KEY")):
        return api_key_for(topo, args)
    return next((a.api_key for a in topo.accounts.values() if "read" in a.scopes), None)


async def with_client(args, fn, *, logon: bool | str = True):
    """`logon`: True (an account's key is needed), "public" (public_key_for) or False. Requests
    are signed when the run's key file holds the key's secret (or $PERPX_API_SECRET gives it)."""
    from cluster.client import Client, RequestFailed
    from cluster.signing import secret_for

    require_cluster(args)
    topo = load_topology(args)
    gw = topo.nodes["gateway"]
    key = (public_key_for(topo, args) if logon == "public"
           else api_key_for(topo, args) if logon else None)
    secret = None
    if key and os.environ.get("PERPX_API_SECRET"):  # a key's secret where there is no key file
        try:
            secret = bytes.fromhex(os.environ["PERPX_API_SECRET"])
        except ValueError:
            raise CliError("bad_secret", "PERPX_API_SECRET: the key's secret in hex, as "
                           "`perpx keys create` showed it") from None
    elif key:
        secret = secret_for(topo.run_dir, key)
    client = Client(gw.client, api_key=None, market_data=gw.pub, timeout=args.timeout,
                    secret=secret, server_key=curve.client_server_key(topo))
    answered = False  # whether the venue answered anything: then it is up, and a request is late
    try:
        await client.connect()
        if key is not None:
            from cluster.protocol import Logon

            ack = await client.request(Logon(api_key=key))
            answered = True
            named = getattr(args, "account", None)
            if named and ack.account != named:  # never show or trade another account than named
                raise CliError("key_of_another_account", f"the API key given logs on as "
                               f"{ack.account!r}, not {named!r}: give {named}'s key, or name "
                               f"{ack.account}")
            client.take_logon(ack)
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


async def price_ticks(client, symbol: str, text: str | None, flag: str) -> int:
    """A typed price (price_type) in ticks, 0 when not given. An absolute price must be on the
    tick grid (never rounded); a relative one ('mark-1%', 'mark+25') is taken from the oracle's
    next mark, and a percentage is rounded away from the mark onto the grid, so 'mark-1%' is at
    least 1% below it."""
    if text is None:
        return 0
    found = MARK_RELATIVE.fullmatch(text)
    try:
        if not found:
            return client.ticks(symbol, text)
        try:
            mark = (await client.next_mark(symbol, MARK_WAIT_S)).mark
        except TimeoutError:
            raise CliError("no_mark", f"{flag} {text}: no mark for {symbol} from the oracle within "
                           f"{MARK_WAIT_S:g} s", EXIT_REFUSED) from None
        sign, amount, percent = found.groups()
        if not sign:
            return mark
        offset = math.ceil(Fraction(Decimal(amount)) * mark / 100) if percent \
            else client.ticks(symbol, amount)
        ticks = mark + offset if sign == "+" else mark - offset
    except UnitError as exc:
        raise CliError(exc.reason, f"{flag}: {exc}") from None
    if ticks <= 0:
        raise CliError("bad_price", f"{flag} {text}: {client.price_str(symbol, ticks)} with the "
                       f"mark at {client.price_str(symbol, mark)}; a price is above 0")
    return ticks


def qty_lots(client, symbol: str, text: str | None, flag: str) -> int:
    """A typed quantity in lots (0 when not given), exactly on the lot grid."""
    if text is None:
        return 0
    try:
        return client.lots(symbol, text)
    except UnitError as exc:
        raise CliError(exc.reason, f"{flag}: {exc}") from None


def cmd_order_place(args) -> int:
    from cluster.protocol import PlaceOrder

    max_slippage_ppm = _ppm_arg(args.max_slippage, "--max-slippage")  # refused before connecting

    async def run(client, topo):
        symbol = known_symbol(client, args.symbol)
        qty = qty_lots(client, symbol, args.qty, "--qty")
        price = await price_ticks(client, symbol, args.price, "--price")
        trigger = await price_ticks(client, symbol, args.trigger_price, "--trigger-price")
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
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    r = await client.reports.get()
            except TimeoutError:
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
        known_symbol(client, args.symbol)
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
        price = await price_ticks(client, args.symbol, args.price, "--price")
        qty = qty_lots(client, args.symbol, args.qty, "--qty")
        trigger = await price_ticks(client, args.symbol, args.trigger_price, "--trigger-price")
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
            if order["status"] == "new" and order["remaining"] < order["qty"]:
                order["status"] = "partially_filled"  # the venue's "new" means "still open"
            order["human"] = {**units.numbers("", {k: order[k] for k in (
                "price", "qty", "remaining", "trigger_price")}, order["symbol"]),
                "reserved": from_units(order["reserved"], topo.atom)}
        data["collateral"] = topo.collateral
        emit(data, args.json, render.orders)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


MARK_WAIT_S = 3.0  # the oracle publishes marks every few hundred ms; a new SUB joins slowly


def cmd_watch(args) -> int:
    """A symbol's market data as it happens (cluster/watch.py), for --seconds or until Ctrl-C."""
    from cluster.watch import watch

    require_cluster(args)
    topology_symbol(args, args.symbol)

    async def run(client, topo):
        client.symbols = {name: spec.public() for name, spec in topo.symbols.items()}
        await watch(client, args.symbol, args.seconds, args.json)
        return EXIT_OK

    try:
        return asyncio.run(with_client(args, run, logon="public"))
    except KeyboardInterrupt:
        return EXIT_OK


def topology_symbol(args, symbol: str) -> str:
    """`symbol` if the cluster's topology lists it, else a usage error (exit 2) naming those it
    does, before anything is sent (as `order place` does after logon)."""
    topo = load_topology(args)
    if symbol not in topo.symbols:
        raise CliError("unknown_symbol", f"unknown symbol {symbol!r}; known: "
                       f"{', '.join(sorted(topo.symbols))}")
    return symbol


def cmd_book(args) -> int:
    """The book's levels, with the oracle's next mark, index and mode for the symbol."""
    require_cluster(args)
    topology_symbol(args, args.symbol)

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
        except TimeoutError:
            mark = None
        prices = None if mark is None else {
            "mark": price(mark.mark), "index": price(mark.index), "last": price(mark.last),
            "oracle_mode": mark.mode, "sources": mark.sources, "mark_ticks": mark.mark}
        emit({"symbol": book.symbol, "book_seq": book.book_seq, "bids": human(book.bids),
              "asks": human(book.asks), "prices": prices}, args.json, render.book)
        return EXIT_OK

    return asyncio.run(with_client(args, run, logon="public"))


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
        data["units"] = {  # what the integers are; every *_human / human figure is in trader's units
            "money": f"atoms of {topo.collateral} ({topo.atom} each)",
            "prices": "ticks (entry_price: the exact average entry in ticks, as decimal text)",
            "quantities": "lots"}
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
        pong = await client.ping(full=not args.local)
        end = time.monotonic_ns()
        hops = [{"node": n, "mono_ns": t, "since_send_us": (t - start) / 1000} for n, t in pong.hops]
        emit({"rtt_us": (end - start) / 1000, "hops": hops,
              "path": " -> ".join(["client"] + [n for n, _ in pong.hops] + ["client"])}, args.json,
             render.ping)
        return EXIT_OK

    return asyncio.run(with_client(args, run, logon=False if args.local else "public"))


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


def cmd_account_margin_mode(args) -> int:
    """The account's margin mode as a whole (#24): cross (each symbol's ladder) or portfolio."""
    from cluster.protocol import SetAccountMarginMode

    args.account = args.name
    return _account_change(args, lambda c, t: c.request(SetAccountMarginMode(mode=args.mode)))


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

    run = Path(args.path).resolve() if args.path else run_dir_of(args)
    if not (run / "journal" / verify.TOPOLOGY_COPY).exists():  # nothing to verify: not damage
        raise CliError("no_journals", f"no journals in {run} (no journal/{verify.TOPOLOGY_COPY},"
                       " which `perpx cluster up` writes); " + no_cluster_hint(run))
    result = verify.verify(run)
    emit(result, args.json, verify.text)
    return EXIT_OK if result["ok"] else EXIT_REFUSED


def journals(args) -> list:
    """The audit journals' records; lines that could not be read are skipped and said (stderr)."""
    from cluster import reports

    run = run_dir_of(args)
    if not (run / "audit").is_dir():  # the wrong directory, not a quiet venue: say so
        raise CliError("no_journals", f"no audit journals in {run} (no audit/ directory); "
                       + no_cluster_hint(run))
    records, unreadable = reports.load(str(run))
    if unreadable:
        print("perpx: skipped unreadable journal lines (torn or damaged writes): "
              + ", ".join(f"{name} {n}" for name, n in unreadable.items()), file=sys.stderr)
    return records


def liquidation_id(text: str) -> int:
    """argparse type: a liquidation id as `explain account` prints it (liq-N) or N."""
    number = text.removeprefix("liq-")
    if not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise argparse.ArgumentTypeError(f"bad_liquidation_id: {text!r} is not a liquidation id: "
                                         "liq-N or N, as `perpx explain account` prints it")
    return int(number)


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

    require_cluster(args)
    topo = load_topology(args)
    if not topo.supervisor.admin:
        raise CliError("no_admin_endpoint", "the topology has no supervisor.admin endpoint")
    ctx = zmq.Context.instance()
    sock = curve.tools_socket(ctx, zmq.DEALER, topo, topo.supervisor.admin)
    sock.setsockopt(zmq.LINGER, 0)
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


FAULT_OPS = ("kill", "pause", "resume", "skew")


def cmd_netsim_fault(args) -> int:
    if args.node in FAULT_OPS and args.op not in FAULT_OPS:  # `fault kill risk` reads as well
        args.node, args.op = args.op, args.node
    if args.op not in FAULT_OPS:
        raise CliError("unknown_fault", f"unknown fault {args.op!r}: {', '.join(FAULT_OPS)}")
    if args.op == "skew":
        ns = _duration_ns_arg(args.by or "0", "--by")
        return _admin(args, "skew", {"node": args.node, "ns": ns})
    which = {"primary": True} if getattr(args, "primary", False) else (
        {"standby": True} if getattr(args, "standby", False) else {})
    if args.seconds is not None:
        if args.op != "pause" or not 0.05 <= args.seconds <= 600:
            raise CliError("out_of_range", "--seconds goes with pause, 0.05 to 600")
        which["seconds"] = args.seconds
    return _admin(args, "fault", {"node": args.node, "op": args.op, **which}, render.node_fault)


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

    if args.mode == "isolated" and (args.other_mm != "0" or args.other_upnl != "0"
                                    or args.other_fees != "0"):
        raise CliError("isolated_has_no_others",
                       "--other-mm/--other-fees/--other-upnl apply to --mode cross")
    return _calc(args, lambda topo: calc.liq_price(
        topo, symbol=args.symbol, side=args.side, qty=args.qty, entry=args.entry,
        wallet=args.wallet, mode=args.mode, fee_rate=args.fee_rate,
        funding_rate_=args.funding_rate, funding_periods=args.funding_periods, stop=args.stop,
        stop_gap=args.stop_gap, other_mm=args.other_mm, other_upnl=args.other_upnl,
        other_fees=args.other_fees))


def cmd_calc_funding(args) -> int:
    from cluster import calc

    return _calc(args, lambda topo: calc.funding(
        topo, premium_index=args.premium_index, interest_rate=args.interest_rate, cap=args.cap,
        notional=args.notional, side=args.side))


# ------------------------------------------------------------------ parser


class Parser(argparse.ArgumentParser):
    """argparse with its refusals as CliError: exit 2, the flag named, a stable reason code (the
    `reason: ` a Number puts first in its message, else bad_usage), and JSON with --json."""

    def error(self, message: str):
        found = re.match(r"(argument \S+: )([a-z_]+): (.*)", message, re.S)
        if found:
            raise CliError(found.group(2), found.group(1) + found.group(3))
        raise CliError("bad_usage", f"{message} (see `{self.prog} --help`)")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("perpx")
    except PackageNotFoundError:
        return "unknown (not installed: `make setup`)"


def parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = Parser(prog="perpx", formatter_class=fmt, description=(
        "perpx: run, trade on, watch, break and explain a perpetual-futures exchange cluster.\n\n"
        "Prices, quantities and money are typed in trader's units (30000.5, 0.01, 250) and\n"
        "converted exactly to the venue's ticks, lots and atoms; a value off the grid is refused,\n"
        "never rounded. Exit codes: 0 ok, 1 the venue refused (reason and numbers on stdout),\n"
        "2 bad input or no cluster, 3 no answer in --timeout (outcome unknown)."),
        epilog="example:\n  perpx cluster up --detach && perpx symbols && perpx book BTC-PERP\n\n"
               "`perpx COMMAND --help` describes each command, its flags' units and defaults.")
    p.add_argument("--version", action="version", version=f"perpx {version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="topology TOML (default: the running "
                        "cluster's, from the run directory; else $PERPX_CONFIG; else built-in)")
    common.add_argument("--run-dir", metavar="DIR", help="run directory of the cluster "
                        "(default: $PERPX_RUN_DIR, else ./var)")
    common.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    common.add_argument("--timeout", type=TIMEOUT, default=5.0, metavar="SECONDS",
                        help="how long to wait for each answer, in seconds, above 0 and at most "
                             "3600 (default: 5)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group, name: str, text: str, example: str, parents=(common,)):
        return group.add_parser(name, parents=list(parents), help=text, description=text,
                                epilog="example:\n  " + example, formatter_class=fmt)

    def group(name: str, text: str):
        g = sub.add_parser(name, help=text, description=text, formatter_class=fmt)
        return g.add_subparsers(dest="action", required=True, metavar="ACTION")

    def who(cmd, *, account: bool = True) -> None:
        if account:
            cmd.add_argument("--account", metavar="NAME", help="an account of the topology "
                             "(`perpx accounts`); its API key is looked up there")
        cmd.add_argument("--api-key", metavar="KEY", help="log on with this key instead "
                         "(default: $PERPX_API_KEY when no account is named); it must be the "
                         "named account's")

    price_help = ("in price units on the symbol's tick grid (e.g. 30000.5), or relative to the "
                  "oracle's mark: mark, mark-1%%, mark+0.5%% (rounded away from the mark onto the "
                  "grid), mark-25 (price units)")

    # cluster
    cluster = group("cluster", "start, stop and inspect the local cluster")
    up = command(cluster, "up", "start the cluster (every node its own process)",
                 "perpx cluster up --detach     # or: perpx cluster up --demo --seconds 20")
    up.add_argument("--detach", action="store_true", help="run in the background and return "
                    "once every node is ready; state in the run directory")
    up.add_argument("--same-session", action="store_true",
                    help="with --detach: stay in this session, so in this scheduling group when the "
                         "kernel groups by session (autogroup), e.g. beside a load generator")
    up.add_argument("--demo", action="store_true", help="drive demo traffic (two market makers, "
                    "two takers) and print it")
    up.add_argument("--standby", action="store_true",
                    help="run risk and matching each with a hot standby (README: Failover)")
    up.add_argument("--resume", action="store_true",
                    help="keep the journals of the run dir's last run: risk and matching restore "
                         "their state from them (default: start afresh)")
    up.add_argument("--seconds", type=SECONDS, default=None, metavar="SECONDS",
                    help="stop after this many seconds (default: $DEMO_SECONDS, else run until "
                         "Ctrl-C)")
    up.set_defaults(fn=cmd_cluster_up)
    command(cluster, "down", "stop every node and remove the ipc sockets",
            "perpx cluster down").set_defaults(fn=cmd_cluster_down)
    command(cluster, "status", "the nodes: state, pid, liveness, restarts, heartbeat age; exit 0 "
            "only when running", "perpx cluster status --json").set_defaults(fn=cmd_cluster_status)

    # discovery
    command(sub, "symbols", "every rule a trader needs before sending an order, per symbol: tick, "
            "lot, limits, price band, fees, leverage ladder, funding (exchangeInfo)",
            "perpx symbols --json").set_defaults(fn=cmd_symbols)
    command(sub, "accounts", "the topology's accounts: name, scopes, initial deposit (no keys "
            "printed)", "perpx accounts").set_defaults(fn=cmd_accounts)

    # orders
    order = group("order", "place, amend, cancel and list orders")
    place = command(order, "place", "send an order; prints the venue's answer and the fills that "
                    "follow within --wait",
                    "perpx order place --account alice --symbol BTC-PERP --side buy --qty 0.01 "
                    "--price mark-1% --client-order-id bid-1")
    who(place)
    place.add_argument("--symbol", required=True, help="e.g. BTC-PERP (`perpx symbols`)")
    place.add_argument("--side", choices=["buy", "sell"], required=True, help="buy or sell")
    place.add_argument("--qty", type=QTY, required=True, metavar="QTY",
                       help="in contracts on the symbol's lot grid, above 0, e.g. 0.01")
    place.add_argument("--price", type=price_type, metavar="PRICE",
                       help="limit price (not for market orders), " + price_help)
    place.add_argument("--type", default="limit", choices=[
        "limit", "market", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit"],
        help="default: limit")
    place.add_argument("--tif", default="GTC", choices=["GTC", "IOC", "FOK"],
                       help="time in force (default: GTC)")
    place.add_argument("--post-only", action="store_true", help="refused if it would take")
    place.add_argument("--reduce-only", action="store_true",
                       help="only ever shrinks the position (sized down to it)")
    place.add_argument("--client-order-id", metavar="ID", help="your id, up to 36 characters: "
                       "names the order in amend/cancel, and sending it again returns the first "
                       "answer, never a second order")
    place.add_argument("--trigger-price", type=price_type, metavar="PRICE",
                       help="stops and take-profits: the trigger, " + price_help)
    place.add_argument("--trigger-by", default="mark", choices=["mark", "last"],
                       help="the price a trigger watches (default: mark)")
    place.add_argument("--stp", default="cancel_taker",
                       choices=["cancel_taker", "cancel_maker", "cancel_both"],
                       help="self-trade prevention: which side is cancelled when this order "
                            "would trade with the account's own (default: cancel_taker)")
    place.add_argument("--max-slippage", type=FRACTION, metavar="FRACTION",
                       help="market orders: how far from mark the order may trade, as a fraction "
                            "(0.005 = 0.5%%; default: the symbol's)")
    place.add_argument("--wait", type=Number(kind="float", low=0, high=60, example="0.3"),
                       default=0.3, metavar="SECONDS",
                       help="seconds to collect fills after the answer, 0 to 60 (default: 0.3)")
    place.set_defaults(fn=cmd_order_place)
    existing = argparse.ArgumentParser(add_help=False)  # cancel and amend name an order
    who(existing)
    existing.add_argument("--symbol", required=True, help="the order's symbol")
    existing.add_argument("--order-id", type=ORDER_ID, metavar="N",
                          help="the venue's order id (from the ACCEPTED line or `order list`)")
    existing.add_argument("--client-order-id", metavar="ID", help="or the id you gave it")
    command(order, "cancel", "cancel one order, named by --order-id or --client-order-id",
            "perpx order cancel --account alice --symbol BTC-PERP --client-order-id bid-1",
            (common, existing)).set_defaults(fn=cmd_order_cancel)
    amend = command(order, "amend", "change a resting order's price, quantity or trigger: a "
                    "quantity decrease at the same price keeps its place in the queue",
                    "perpx order amend --account alice --symbol BTC-PERP --client-order-id bid-1 "
                    "--qty 0.005", (common, existing))
    amend.add_argument("--price", type=price_type, metavar="PRICE", help="new limit price, "
                       + price_help)
    amend.add_argument("--qty", type=QTY, metavar="QTY",
                       help="new total quantity in contracts (filled part included), e.g. 0.02")
    amend.add_argument("--trigger-price", type=price_type, metavar="PRICE",
                       help="a waiting stop or take-profit's new trigger, " + price_help)
    amend.set_defaults(fn=cmd_order_amend)
    wipe = command(order, "cancel-all", "cancel every open order (in one symbol, or all), as one "
                   "event", "perpx order cancel-all --account alice --symbol BTC-PERP")
    who(wipe)
    wipe.add_argument("--symbol", default="", help="one symbol (default: all)")
    wipe.set_defaults(fn=cmd_order_cancel_all)
    listing = command(order, "list", "the account's open orders: terms, status (new or "
                      "partially_filled), margin held", "perpx order list --account alice")
    who(listing)
    listing.add_argument("--symbol", default="", help="one symbol (default: all)")
    listing.set_defaults(fn=cmd_order_list)

    # market data
    book = command(sub, "book", "a symbol's book levels with the oracle's mark, index and mode",
                   "perpx book BTC-PERP --depth 5")
    book.add_argument("symbol", help="e.g. BTC-PERP")
    book.add_argument("--depth", type=Number(kind="int", low=1, high=1000, example="10"),
                      default=10, metavar="LEVELS", help="levels a side, 1 to 1000 (default: 10)")
    book.set_defaults(fn=cmd_book)
    watch = command(sub, "watch", "a symbol's market data as it happens, one timestamped line "
                    "per event: trades, top of book, mark, funding, regime, oracle mode",
                    "perpx watch BTC-PERP --seconds 10")
    watch.add_argument("symbol", help="e.g. BTC-PERP")
    watch.add_argument("--seconds", type=SECONDS, metavar="SECONDS",
                       help="stop after this many seconds, at most a day (default: Ctrl-C)")
    watch.set_defaults(fn=cmd_watch)
    ping = command(sub, "ping", "a round trip through the order path with each hop's time "
                   "(logged on: a read key of the topology, or --account/--api-key)", "perpx ping")
    ping.add_argument("--local", action="store_true",
                      help="answered by the gateway alone (no logon needed)")
    who(ping)
    ping.set_defaults(fn=cmd_ping)

    # accounts
    account = group("account", "an account's state, settings and transfers")
    show = command(account, "show", "balances, positions (entry, mark, PnL, margins, "
                   "liquidation price), latest fills and funding", "perpx account show alice",
                   (common,))
    show.add_argument("name", help="the account (its key from the topology, or --api-key)")
    show.add_argument("--api-key", metavar="KEY", help="log on with this key; it must be NAME's")
    show.set_defaults(fn=cmd_account_show)
    lev = command(account, "leverage", "set the leverage for a symbol (capped by the ladder tier "
                  "the position falls into)", "perpx account leverage alice --symbol BTC-PERP "
                  "--leverage 50")
    lev.add_argument("name", help="the account (`perpx accounts`)")
    lev.add_argument("--symbol", required=True, help="e.g. BTC-PERP")
    lev.add_argument("--leverage", type=Number(kind="int", low=1, high=1000, example="20"),
                     required=True, metavar="X", help="a whole multiple, 1 to the symbol's "
                     "maximum (`perpx symbols`)")
    lev.add_argument("--api-key", metavar="KEY", help="log on with this key; it must be NAME's")
    lev.set_defaults(fn=cmd_account_leverage)
    mode = command(account, "mode", "cross or isolated margin for a symbol (only when flat)",
                   "perpx account mode alice --symbol ETH-PERP --mode isolated")
    mode.add_argument("name", help="the account (`perpx accounts`)")
    mode.add_argument("--symbol", required=True, help="e.g. ETH-PERP")
    mode.add_argument("--mode", choices=["cross", "isolated"], required=True,
                      help="cross: the position shares the wallet; isolated: it has its own")
    mode.add_argument("--api-key", metavar="KEY", help="log on with this key; it must be NAME's")
    mode.set_defaults(fn=cmd_account_mode)
    account_mode = command(
        account, "margin-mode", "the account's margin mode as a whole: cross (each symbol's "
        "ladder, summed) or portfolio (the stress grid's requirement when higher; `perpx stress`)",
        "perpx account margin-mode alice portfolio")
    account_mode.add_argument("name", help="the account (`perpx accounts`)")
    account_mode.add_argument("mode", choices=["cross", "portfolio"], help="the mode to switch to")
    account_mode.add_argument("--api-key", metavar="KEY", help="log on with this key; it must be "
                              "NAME's")
    account_mode.set_defaults(fn=cmd_account_margin_mode)
    margin = command(account, "margin", "move collateral into (+) or out of (-) an isolated "
                     "position", "perpx account margin alice --symbol ETH-PERP --amount 250")
    margin.add_argument("name", help="the account (`perpx accounts`)")
    margin.add_argument("--symbol", required=True, help="the isolated position's symbol")
    margin.add_argument("--amount", type=SIGNED_MONEY, required=True, metavar="AMOUNT",
                        help="in collateral (e.g. USDC) on its atom grid: 100 in, -50 out")
    margin.add_argument("--api-key", metavar="KEY", help="log on with this key; it must be NAME's")
    margin.set_defaults(fn=cmd_account_margin)
    for verb in ("deposit", "withdraw"):
        tr = command(account, verb, f"{verb} collateral (needs an admin-scoped key)",
                     f"perpx account {verb} alice --amount 500")
        tr.add_argument("name", help="the account credited or debited")
        tr.add_argument("--amount", type=MONEY, required=True, metavar="AMOUNT",
                        help="in collateral (e.g. USDC), above 0, on its atom grid")
        tr.add_argument("--admin", metavar="NAME", help="an admin-scoped account of the topology "
                        "(default: the first one)")
        tr.add_argument("--api-key", metavar="KEY", help="an admin-scoped API key")
        tr.set_defaults(fn=cmd_account_transfer)

    # post-incident
    explain = group("explain", "explain the venue's decisions from the audit journals")
    ex_liq = command(explain, "liquidation", "a liquidation's whole path, step by step",
                     "perpx explain liquidation liq-1796622411222001")
    ex_liq.add_argument("id", type=liquidation_id, help="the id as printed (liq-N) or N")
    ex_liq.set_defaults(fn=cmd_explain_liquidation)
    period = argparse.ArgumentParser(add_help=False)  # a window of the journals (cli.window)
    period.add_argument("--since", metavar="TIME", help="ISO time, epoch seconds, or an age like "
                        "15m (ago), 2h, 1d (default: the journals' start)")
    period.add_argument("--until", metavar="TIME", help="as --since (default: now)")
    ex_acct = command(explain, "account", "every decision about an account: refusals, venue "
                      "cancels, settings, liquidations", "perpx explain account alice --since 15m",
                      (common, period))
    ex_acct.add_argument("name", help="the account (`perpx accounts`)")
    ex_acct.add_argument("--limit", type=Number(kind="int", low=0, example="50"), default=50,
                         metavar="N", help="the newest N decisions, 0 for all (default: 50)")
    ex_acct.set_defaults(fn=cmd_explain_account)
    incident = group("incident", "post-incident summaries")
    report = command(incident, "report", "liquidations, oracle modes, regimes, insurance fund and "
                     "ADL in a window, with a summary of what happened for how long",
                     "perpx incident report --since 15m", (common, period))
    report.add_argument("--format", choices=["md", "json"], default="md",
                        help="default: md (markdown)")
    report.set_defaults(fn=cmd_incident_report)

    # journals
    audit = group("audit", "the journals of a run")
    verify = command(audit, "verify", "replay every journal of a run offline: inputs, snapshots "
                     "checked, final state hash, money, and any divergence or damage; exit 1 when "
                     "damaged", "perpx audit verify var --json")
    verify.add_argument("path", nargs="?", help="the run directory (default: --run-dir or ./var)")
    verify.set_defaults(fn=cmd_audit_verify)

    # surveillance (advisory): nodes/surveillance/cli.py
    from nodes.surveillance.cli import add_commands as surveillance_commands
    surveillance_commands(group, command, common, period, sys.modules[__name__])

    # netsim
    netsim = group("netsim", "the network simulator between the nodes (a running cluster)")
    command(netsim, "show", "the link table: each shaped link's model, loss, bandwidth, state",
            "perpx netsim show").set_defaults(fn=lambda a: _admin(a, "netsim_show", {}))
    ns_set = command(netsim, "set", "shape one directed link (`perpx netsim show` lists them)",
                     "perpx netsim set 'gateway->risk' --latency 2ms --jitter 200us --loss 0.01")
    ns_set.add_argument("link", help="e.g. gateway->risk (quote it: > is a shell redirect)")
    ns_set.add_argument("--latency", metavar="DURATION", help="e.g. 2ms, 300us (constant model, "
                        "or the model's centre)")
    ns_set.add_argument("--jitter", metavar="DURATION", help="uniform +- jitter, e.g. 200us")
    ns_set.add_argument("--model", choices=["constant", "uniform", "normal", "lognormal", "pareto",
                                            "empirical", "mixture"],
                        help="latency model (default: constant with --latency); mixture needs "
                             "--spec")
    for flag, what in (("--min", "uniform, pareto: the least delay"),
                       ("--max", "uniform: the largest delay"), ("--mean", "normal: the mean"),
                       ("--stddev", "normal: the standard deviation"),
                       ("--median", "lognormal: the median")):
        ns_set.add_argument(flag, metavar="DURATION", help=f"{what}, e.g. 1ms")
    # netsim's own ranges (netsim.control, netsim.models) are checked there, naming the field
    ns_set.add_argument("--sigma", type=Number(kind="float", example="0.5"),
                        help="lognormal: the log's standard deviation, above 0")
    ns_set.add_argument("--alpha", type=Number(kind="float", example="2"),
                        help="pareto: the tail index, above 0")
    ns_set.add_argument("--csv", metavar="FILE",
                        help="empirical: a file of delay samples, one per line")
    ns_set.add_argument("--spec", metavar="JSON", help="a full latency model as JSON, e.g. "
                        '\'{"model": "mixture", "parts": [[0.99, {...}], [0.01, {...}]]}\'')
    ns_set.add_argument("--loss", type=Number(kind="float", example="0.01"),
                        metavar="FRACTION", help="fraction of messages lost, 0 to below 1 "
                        "(0.01 = 1%%); a reliable link delivers them after --rto")
    ns_set.add_argument("--rto", metavar="DURATION", help="retransmission delay of a lost "
                        "message on a reliable link, e.g. 50ms")
    ns_set.add_argument("--bandwidth", metavar="RATE", help="e.g. 10mbit, 1gbit")
    ns_set.add_argument("--queue-limit", dest="queue_limit",
                        type=Number(kind="int", example="1000"), metavar="MESSAGES",
                        help="messages in flight on the link before --on-full applies, at least 1 "
                             "(default: 100000)")
    ns_set.add_argument("--on-full", dest="on_full", choices=["block", "drop"],
                        help="what a full queue does (default: block)")
    ns_set.add_argument("--seed", type=Number(kind="int", example="7"),
                        help="the link's random seed (default: 1)")
    ns_set.add_argument("--down", action="store_true", help="partition the link")
    ns_set.add_argument("--reorder", action="store_true",
                        help="market-data links only: let jitter reorder messages")
    ns_set.set_defaults(fn=cmd_netsim_set)
    ns_clear = command(netsim, "clear", "unshape one link, or every link", "perpx netsim clear")
    ns_clear.add_argument("link", nargs="?", help="default: every link")
    ns_clear.set_defaults(fn=lambda a: _admin(a, "netsim_clear", {"link": a.link}))
    ns_prof = command(netsim, "profile", "apply a named profile of netsim/profiles.toml",
                      "perpx netsim profile same-dc")
    ns_prof.add_argument("name", help="colo, same-dc, cross-region, noisy-commodity")
    ns_prof.set_defaults(fn=lambda a: _admin(a, "netsim_profile", {"name": a.name}))
    ns_part = command(netsim, "partition", "take links down (messages queue), or --heal them "
                      "(released in order)", "perpx netsim partition 'risk->matching'")
    ns_part.add_argument("links", nargs="*", help="e.g. risk->matching")
    ns_part.add_argument("--heal", action="store_true", help="bring the links back up")
    ns_part.set_defaults(fn=lambda a: _admin(a, "netsim_partition",
                                             {"links": a.links, "down": not a.heal}))
    ns_run = command(netsim, "run", "apply a scenario timeline; ends by healing everything",
                     "perpx netsim run examples/scenarios/stale-feeds.toml")
    ns_run.add_argument("scenario", help="a scenario TOML (netsim/scenario.py)")
    ns_run.set_defaults(fn=cmd_netsim_run)
    ns_fault = command(netsim, "fault", "kill, pause, resume or skew a node",
                       "perpx netsim fault matching pause")
    ns_fault.add_argument("node", help="gateway, risk, matching, oracle, liquidator, feeds")
    ns_fault.add_argument("op", help="kill (the supervisor's policy applies), pause (SIGSTOP), "
                          "resume, skew its clock by --by (`fault kill risk` works too)")
    ns_fault.add_argument("--by", metavar="DURATION", help="skew: e.g. 250ms or -1s (write "
                          "--by=-1s)")
    which = ns_fault.add_mutually_exclusive_group()
    which.add_argument("--primary", action="store_true", help="risk/matching with a standby: "
                       "the instance that is primary now")
    which.add_argument("--standby", action="store_true", help="... the one that is standby now")
    ns_fault.add_argument("--seconds", type=float, default=None, metavar="SECONDS",
                          help="pause: resume after this many seconds (0.05 to 600)")
    ns_fault.set_defaults(fn=cmd_netsim_fault)
    ns_feed = command(netsim, "feed", "break one venue's spot feed (or heal them)",
                      "perpx netsim feed bravo freeze --duration 8s")
    ns_feed.add_argument("venue", help="a venue name, or all (heal)")
    ns_feed.add_argument("op", choices=["freeze", "delay", "bias", "spike", "heal", "shock"],
                         help="freeze (stop quoting), delay, bias (a steady offset), spike, heal, "
                              "shock (a market move on every venue)")
    ns_feed.add_argument("--duration", metavar="DURATION",
                         help="freeze/spike: how long; delay: how late, e.g. 8s")
    ns_feed.add_argument("--ppm", type=Number(kind="int", example="20000"),  # range: FeedControl's
                         help="bias/spike/shock: relative move in ppm (10000 = 1%%)")
    ns_feed.add_argument("--symbol", help="shock: the symbol")
    ns_feed.set_defaults(fn=cmd_netsim_feed)

    # calculator
    calc = group("calc", "the risk node's own formulas, offline (no cluster needed)")
    c_mmr = command(calc, "mmr", "ladder tier and maintenance margin of a notional",
                    "perpx calc mmr --symbol BTC-PERP --notional 60000")
    c_mmr.add_argument("--symbol", required=True, help="e.g. BTC-PERP")
    c_mmr.add_argument("--notional", type=DECIMAL, required=True, metavar="AMOUNT",
                       help="position value in collateral (e.g. USDC)")
    c_mmr.set_defaults(fn=cmd_calc_mmr)
    c_liq = command(calc, "liq-price", "liquidation and bankruptcy price of a position",
                    "perpx calc liq-price --symbol BTC-PERP --side long --qty 1 --entry 30000 "
                    "--wallet 3000")
    c_liq.add_argument("--symbol", required=True, help="e.g. BTC-PERP")
    c_liq.add_argument("--side", choices=["long", "short"], required=True,
                       help="the position's side")
    c_liq.add_argument("--qty", type=DECIMAL, required=True, help="in contracts")
    c_liq.add_argument("--entry", type=DECIMAL, required=True, help="entry price")
    c_liq.add_argument("--wallet", type=DECIMAL, required=True, metavar="AMOUNT",
                       help="isolated margin, or the cross wallet, in collateral")
    c_liq.add_argument("--mode", choices=["isolated", "cross"], default="isolated",
                       help="default: isolated")
    c_liq.add_argument("--other-mm", type=DECIMAL, default="0", metavar="AMOUNT",
                       help="cross: the other positions' maintenance margin (default: 0)")
    c_liq.add_argument("--other-upnl", type=DECIMAL, default="0", metavar="AMOUNT",
                       help="cross: the other positions' unrealized PnL (default: 0)")
    c_liq.add_argument("--other-fees", type=DECIMAL, default="0", metavar="AMOUNT",
                       help="cross: the other positions' forced-execution fees, which the trigger "
                            "counts (default: 0)")
    c_liq.add_argument("--fee-rate", type=DECIMAL, metavar="FRACTION",
                       help="forced-execution fee rate (default: the symbol's)")
    c_liq.add_argument("--funding-rate", type=DECIMAL, metavar="FRACTION",
                       help="per period, e.g. 0.0001 (= 0.01%%)")
    c_liq.add_argument("--funding-periods", type=Number(kind="int", low=0, example="3"),
                       default=0, metavar="N", help="periods of that funding paid (default: 0)")
    c_liq.add_argument("--stop", type=DECIMAL, metavar="PRICE", help="a stop price to check")
    c_liq.add_argument("--stop-gap", type=DECIMAL, default="0.005", metavar="FRACTION",
                       help="warn when the stop is closer than this to the liquidation price "
                            "(default: 0.005 = 0.5%%)")
    c_liq.set_defaults(fn=cmd_calc_liq)
    c_fund = command(calc, "funding", "funding rate and payment",
                     "perpx calc funding --premium-index 0.0003 --notional 30000 --side long")
    c_fund.add_argument("--premium-index", type=DECIMAL, required=True, metavar="FRACTION",
                        help="e.g. 0.0003 (= 0.03%%)")
    c_fund.add_argument("--interest-rate", type=DECIMAL, default="0.0001", metavar="FRACTION",
                        help="per period (default: 0.0001 = 0.01%%)")
    c_fund.add_argument("--cap", type=DECIMAL, default="0.0075", metavar="FRACTION",
                        help="the rate's cap either way (default: 0.0075 = 0.75%%)")
    c_fund.add_argument("--notional", type=DECIMAL, required=True, metavar="AMOUNT",
                        help="position value in collateral (e.g. USDC)")
    c_fund.add_argument("--side", choices=["long", "short"], required=True,
                        help="the position's side (longs pay a positive rate)")
    c_fund.set_defaults(fn=cmd_calc_funding)
    from cluster import stress_cli  # perpx stress, perpx cascade [snapshot|sweep] (#24)

    stress_cli.register(sub, common)

    from cluster import cli_security  # `limits`, `keys` (#20): its own module, for clean merges

    cli_security.add_parsers(sub, common)

    # chaos experiments (#22): their commands live in cluster/chaos_cli.py
    from cluster import chaos_cli

    chaos_cli.add_parser(sub)
    numbers_through_one_layer(p)
    return p


def numbers_through_one_layer(parser: argparse.ArgumentParser) -> None:
    """A flag declared `type=int` or `type=float` (by a module that adds its own commands) still
    goes through Number: Python's int() and float() take '３', '1_0', ' 5 ', and float() 'nan'
    and 'inf'. The flag's range is its command's to check."""
    for action in parser._actions:
        if action.type is int or action.type is float:
            action.type = Number(kind="int" if action.type is int else "float")
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                numbers_through_one_layer(sub)


def joined_negative_values(argv: list[str]) -> list[str]:
    """'--price -inf' as '--price=-inf': argparse takes a value starting with '-' that is not a
    plain negative number for an option and would say "expected one argument"; joined, the
    value reaches the flag's own check, which says what is wrong with it."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in VALUE_FLAGS and token[:1] == "-" and token[:2] != "--":
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


VALUE_FLAGS = ("--price", "--trigger-price", "--qty", "--timeout", "--amount", "--seconds",
               "--wait", "--leverage", "--depth", "--loss", "--ppm", "--notional", "--entry",
               "--wallet", "--stop", "--other-mm", "--other-upnl", "--cap", "--premium-index",
               "--interest-rate", "--funding-rate", "--fee-rate", "--order-id", "--limit", "--by",
               "--max-slippage", "--sigma", "--alpha", "--queue-limit", "--seed", "--stop-gap")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = parser().parse_args(joined_negative_values(argv))
        as_json = getattr(args, "json", False)
        return args.fn(args)
    except CliError as exc:
        payload = {"error": exc.reason, "message": str(exc)}
        if exc.detail is not None:
            payload["detail"] = exc.detail
        if as_json:
            print(json.dumps(payload))
        elif exc.code == EXIT_REFUSED:  # the venue's answer, like an order's REJECTED: stdout
            print(f"REFUSED    {exc.reason}\n           {exc}")
        else:
            print(f"perpx: {exc.reason}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`perpx ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # (`python -m cluster.cli`: run the imported module's main, so that the CliError a command
    # module raises, imported from cluster.cli, is the one main catches, not __main__'s copy)
    from cluster.cli import main as imported_main

    sys.exit(imported_main())
