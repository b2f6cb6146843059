"""`perpx chaos run`: a chaos experiment against a real cluster (#22).

It starts the cluster (its own run directory, loopback tcp ports), sets up the positions the
experiment names, starts the load (open-loop probe orders, market makers), measures a steady
state for `before`, plays the fault timeline through the supervisor (netsim.scenario.run, the same
code as `perpx netsim run`, which heals everything at `end`), observes for `observe`, stops the
cluster, and turns what it measured into 100 ms samples (cluster.chaos checks them):

- probe orders, bucketed by their intended send time (open loop: an order leaves at its time
  whatever the venue did with the previous ones, and its latency counts from that time): sent,
  answered, refused, unknown (no answer within `timeout`: the same client order id is sent again,
  and its first answer is the outcome) and their latencies;
- sampled every 100 ms: each symbol's oracle mode, mark, index and regime (from the gateway's
  market data), the gap between the mark and the median of the venues no step faults (read
  straight from the feeds' publisher), how many nodes run, the maker's counts;
- from the audit journal, by timestamp: liquidations started and paused, ADL events, the
  insurance fund's movement, oracle mode changes;
- at the end: acknowledged resting orders that are neither open nor reported done
  (acked_orders_lost), client order ids answered with two different orders (orders_doubled),
  and risk's money conservation as it logged it at stop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from cluster import curve
from cluster import chaos, config
from cluster.audit import read as read_audit
from cluster.client import Client, RequestFailed
from cluster.protocol import (BUY, SELL, Codec, Fill, IndexMark, OrderAccepted, OrderCancelled,
                              OrderRejected, PlaceOrder, Regime, SetMarginMode, SpotTick)
from cluster.runstate import read_status

SAMPLE_S = 0.1
RESENDS = 5  # an unknown outcome is asked again this many times before it counts as unanswered
MAX_RESTING = 100  # probe orders left resting (the topology allows 200 open orders per account)
PROBE_ACCOUNT = "taker1"
LIMITS_EVERY_S = 0.25  # how often the limits in force are read (as the probe's account sees them)
ROOT = Path(__file__).resolve().parent.parent


def _deep_merge(base: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def write_topology(exp: dict, run_dir: Path) -> Path:
    """The built-in topology on free loopback ports, with the experiment's overrides."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # a core's standby needs endpoints of its own: ports are given out with the others
    standby = {name: {"standby": True} for name, node in
               (exp["topology"] or {}).get("nodes", {}).items() if node.get("standby")}
    path = config.write_tcp_topology(config.DEFAULT_CONFIG, run_dir / "topology.toml",
                                     config.free_tcp_ports(28), run_dir / "var",
                                     node_settings=standby)
    if exp["topology"]:
        raw = tomllib.loads(path.read_text())
        _deep_merge(raw, exp["topology"])
        path.write_text(config._dump_toml(raw))
    return path


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


class Observer:
    """What the venue publishes, kept as the latest value per series, plus the honest venues'
    spot prices straight from the feeds (the oracle's inputs, before any netsim link)."""

    def __init__(self, topo: config.Topology, honest_venues: list[str]) -> None:
        self.topo = topo
        self.honest = set(honest_venues)
        self.marks: dict[str, IndexMark] = {}
        self.mark_seen: dict[str, float] = {}  # symbol -> when its latest mark arrived
        self.regimes: dict[str, str] = {}
        self.spot: dict[str, dict[str, tuple[int, float]]] = {}  # symbol -> venue -> (price, t)
        self.mark_history: list[tuple[float, dict[str, int]]] = []  # for a delayed maker's view

    async def run(self, client: Client) -> None:
        await client.subscribe(b"mark.", b"regime.")
        while True:
            for msg in await client.market_data():
                if type(msg) is IndexMark:
                    self.marks[msg.symbol] = msg
                    self.mark_seen[msg.symbol] = time.monotonic()
                elif type(msg) is Regime:
                    self.regimes[msg.symbol] = msg.regime

    async def run_feeds(self, ctx: zmq.asyncio.Context) -> None:
        sock = curve.tools_socket(ctx, zmq.SUB, self.topo, self.topo.nodes["feeds"].pub)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        codec = Codec(SpotTick)
        try:
            while True:
                _topic, frame = await sock.recv_multipart()
                now = time.monotonic()
                for tick in codec.decode(frame):
                    self.spot.setdefault(tick.symbol, {})[tick.venue] = (tick.price, now)
        finally:
            sock.close()

    def honest_median(self, symbol: str, now: float, fresh_s: float = 2.0) -> int | None:
        prices = [p for v, (p, t) in self.spot.get(symbol, {}).items()
                  if v in self.honest and now - t <= fresh_s]
        return int(statistics.median(prices)) if prices else None

    def sample(self, now: float) -> dict:
        out: dict = {}
        for symbol, m in self.marks.items():
            out[f"oracle_mode.{symbol}"] = m.mode
            out[f"mark.{symbol}"] = m.mark
            out[f"index.{symbol}"] = m.index
            out[f"mark_age_ms.{symbol}"] = int((now - self.mark_seen[symbol]) * 1000)
            median = self.honest_median(symbol, now)
            if median:
                out[f"mark_gap_ppm.{symbol}"] = abs(m.mark - median) * 1_000_000 // median
        for symbol, regime in self.regimes.items():
            out[f"regime.{symbol}"] = regime
        self.mark_history.append((now, {s: m.mark for s, m in self.marks.items()}))
        if len(self.mark_history) > 600:
            del self.mark_history[:100]
        return out

    async def wait_mark(self, symbol: str, timeout_s: float = 20.0) -> int:
        """The latest mark of `symbol` once there is one (the observer is the market-data
        socket's only reader: a second reader would race it for the messages)."""
        deadline = time.monotonic() + timeout_s
        while symbol not in self.marks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mark for {symbol} in {timeout_s:g} s")
            await asyncio.sleep(0.05)
        return self.marks[symbol].mark

    def mark_as_of(self, symbol: str, when: float) -> int | None:
        """The mark as a client that sees market data `now - when` late knew it."""
        for t, marks in reversed(self.mark_history):
            if t <= when and symbol in marks:
                return marks[symbol]
        first = self.mark_history[0][1] if self.mark_history else {}
        return first.get(symbol)


class Probe:
    """Open-loop probe orders: IOC buys 2% under the mark (they never fill; their answer is the
    final OrderCancelled) and, one in `post_only_share`, a post-only sell 4% over the mark that
    rests (an acknowledged order that must still be there, or reported done, at the end)."""

    def __init__(self, client: Client, observer: Observer, load: dict) -> None:
        self.client, self.observer, self.load = client, observer, load
        self.orders: list[dict] = []
        self.acked_resting: dict[int, str] = {}  # order id -> client order id
        self.order_ids: dict[str, set[int]] = {}  # client order id -> order ids answered
        self.done: set[int] = set()  # resting orders reported filled or cancelled
        self.fill_ids: dict[tuple[int, int], int] = {}  # (trade id, order id) -> times reported
        self._tasks: set[asyncio.Task] = set()

    async def run(self, t0: float, stop_at: float) -> None:
        rate = self.load["rate"]
        if rate <= 0:
            return
        symbol = self.load["symbol"]
        share = self.load["post_only_share"]
        every = max(1, round(1 / share)) if share > 0 else 0  # one order in `every` rests
        n = 0
        loop = asyncio.get_running_loop()
        while True:
            intended = t0 + n / rate
            if intended >= stop_at:
                break
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            mark = self.observer.marks.get(symbol)
            n += 1
            if mark is None:
                continue
            resting = every and n % every == 0 and len(self.acked_resting) < MAX_RESTING
            record = {"t": intended - t0, "coid": f"p{n}", "resting": bool(resting)}
            self.orders.append(record)
            task = asyncio.create_task(self._one(record, intended, symbol, mark.mark, resting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.load["timeout_s"] * (RESENDS + 1))

    async def _one(self, record: dict, intended: float, symbol: str, mark: int,
                   resting: bool) -> None:
        loop = asyncio.get_running_loop()
        if resting:
            fields = {"side": SELL, "price": mark + mark // 25, "post_only": True}
        else:
            fields = {"side": BUY, "price": mark - mark // 50, "tif": "IOC"}
        for attempt in range(RESENDS + 1):
            try:
                report = await asyncio.wait_for(
                    self.client.request(_place(symbol, record["coid"], fields),
                                        raise_on_error=False), self.load["timeout_s"])
            except asyncio.TimeoutError:
                record["unknown"] = record.get("unknown", 0) + 1
                continue
            except Exception as exc:  # a client error is an outcome to report, not a crash
                record["error"] = f"{type(exc).__name__}: {exc}"
                return
            record["latency_ms"] = (loop.time() - intended) * 1000
            record["attempts"] = attempt + 1
            event = getattr(report, "event", None)
            if event is None:  # an Error from the gateway
                record["rejected"] = getattr(report, "reason", "error")
                return
            if type(event) is OrderRejected:
                record["rejected"] = event.reason
                return
            if event.order_id:
                self.order_ids.setdefault(record["coid"], set()).add(event.order_id)
            if type(event) is OrderAccepted and resting:
                self.acked_resting[event.order_id] = record["coid"]
            return

    def on_report(self, report) -> None:
        event = report.event
        if type(event) is Fill:
            key = (event.trade_id, event.order_id)
            self.fill_ids[key] = self.fill_ids.get(key, 0) + 1
            if event.remaining == 0:
                self.done.add(event.order_id)
        elif type(event) is OrderCancelled and not event.duplicate:
            self.done.add(event.order_id)

    async def finals(self) -> dict:
        try:
            view = await self.client.open_orders()
        except RequestFailed as exc:
            # The gateway bans a key after ban_after refusals (the probe's orders refused while
            # limits are tightened count): wait out the ban once, within its own retry_after.
            wait_ms = int(exc.error.detail.get("retry_after_ms", 0) or 0)
            if not 0 < wait_ms <= 35_000:
                return {"finals_error": f"{exc.error.reason}: {exc.error.detail}"}
            await asyncio.sleep(wait_ms / 1000 + 0.2)
            view = await self.client.open_orders()
        open_ids = {o.order_id for o in view.orders}
        lost = sorted(set(self.acked_resting) - open_ids - self.done)
        doubled = sorted(c for c, ids in self.order_ids.items() if len(ids) > 1)
        return {"acked_orders_lost": len(lost), "acked_resting": len(self.acked_resting),
                "lost_order_ids": lost[:20], "orders_doubled": len(doubled),
                "doubled_client_ids": doubled[:20],
                "fills_doubled": sum(1 for n in self.fill_ids.values() if n > 1)}


def _place(symbol: str, coid: str, fields: dict) -> PlaceOrder:
    return PlaceOrder(symbol=symbol, qty=1, client_order_id=coid, **fields)


class Maker:
    """Quotes post-only both sides around the mark every `quote_every`; with `latency_s` it sees
    the mark that late and its requests leave that late (its own link, which netsim does not
    shape per client). Counts its quotes, the ones refused as would-take, its fills and fees."""

    def __init__(self, client: Client, observer: Observer, load: dict, latency_s: float = 0.0):
        self.client, self.observer, self.load = client, observer, load
        self.latency_s = latency_s
        self.quotes = self.would_take = self.refused = self.fills_maker = self.fills_taker = 0
        self.fees = 0

    async def run(self, stop_at: float) -> None:
        symbol = self.load["symbol"]
        loop = asyncio.get_running_loop()
        off = self.load["quote_offset_ppm"]
        while loop.time() < stop_at:
            view_at = time.monotonic() - self.latency_s
            mark = self.observer.mark_as_of(symbol, view_at) if self.latency_s else \
                (self.observer.marks[symbol].mark if symbol in self.observer.marks else None)
            if mark:
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                try:
                    await self.client.cancel_all(symbol)
                    for side, price in ((BUY, mark - mark * off // 1_000_000),
                                        (SELL, mark + mark * off // 1_000_000)):
                        report = await self.client.place(symbol, side, self.load["quote_qty"],
                                                         price, post_only=True)
                        self.quotes += 1
                        if type(report.event) is OrderRejected:
                            self._refused(report.event.reason)
                except RequestFailed as exc:
                    self._refused(exc.error.reason)
                except asyncio.TimeoutError:
                    self.refused += 1
            await asyncio.sleep(self.load["quote_every_s"])

    def _refused(self, reason: str) -> None:
        self.refused += 1
        if "post_only" in reason or "would_take" in reason:
            self.would_take += 1

    def on_report(self, report) -> None:
        if type(report.event) is Fill:
            if report.event.liquidity == "taker":
                self.fills_taker += 1
            else:
                self.fills_maker += 1
            self.fees += report.event.fee

    def sample(self, name: str) -> dict:
        return {f"maker.{name}.quotes": self.quotes, f"maker.{name}.would_take": self.would_take,
                f"maker.{name}.fills_taker": self.fills_taker,
                f"maker.{name}.fills_maker": self.fills_maker, f"maker.{name}.fees": self.fees,
                f"maker.{name}.would_take_share":
                    round(self.would_take / self.quotes, 4) if self.quotes else 0.0}


async def _drain_reports(client: Client, handlers: list) -> None:
    while True:
        report = await client.reports.get()
        for handle in handlers:
            handle(report)


async def open_position(topo, spec: dict, observer: Observer, symbol_default: str) -> dict:
    """A leveraged position for the experiment: the counterparty rests an order at the mark and
    the account takes it (`side` is the account's). Returns what was opened."""
    gw = topo.nodes["gateway"]
    symbol = spec.get("symbol", symbol_default)
    side = BUY if spec.get("side", "buy") == "buy" else SELL
    async with Client(gw.client, api_key=topo.accounts[spec["account"]].api_key) as acct, \
            Client(gw.client, api_key=topo.accounts[spec.get("counterparty", "mm2")].api_key) \
            as cp:
        mark = await observer.wait_mark(symbol)
        if spec.get("mode"):
            await acct.request(SetMarginMode(symbol=symbol, mode=spec["mode"]))
        if spec.get("leverage"):
            await acct.set_leverage(symbol, int(spec["leverage"]))
        qty = acct.lots(symbol, str(spec["qty"]))
        await cp.place(symbol, -side, qty, mark)
        report = await acct.place(symbol, side, qty, mark, tif="IOC")
        return {"account": spec["account"], "symbol": symbol, "side": spec.get("side", "buy"),
                "qty": str(spec["qty"]), "price": mark, "answer": type(report.event).__name__}


def audit_series(run_dir: Path) -> list[tuple[int, dict]]:
    """(wall ns, audit record) of every record of the run, in time order."""
    out = []
    for path in sorted((run_dir / "audit").glob("*.jsonl")):
        records, _bad = read_audit(str(path))
        out += [(r.ts_ns, {"node": r.node, "rule": r.rule, "subject": r.subject,
                           "decision": r.decision, "numbers": r.numbers}) for r in records]
    out.sort(key=lambda x: x[0])
    return out


def audit_counters(records: list[tuple[int, dict]], until_ns: int) -> dict:
    """Cumulative counts up to `until_ns` (pure): liquidations started and paused, ADL events,
    the insurance fund's movement from liquidation steps and funding remainders."""
    liqs: set[str] = set()
    paused = adl = fund = modes = outliers = stale = promotions = fenced = refused = 0
    for ts, r in records:
        if ts > until_ns:
            break
        rule = r["rule"]
        if rule.startswith("liquidation."):
            if rule == "liquidation.paused":
                paused += 1
                continue
            liqs.add(r["subject"])
            if r["decision"] == "done":
                fund += int(r["numbers"].get("fund_delta", 0) or 0)
                if rule == "liquidation.adl":
                    adl += 1
        elif rule == "risk.funding":
            fund += int(r["numbers"].get("remainder_to_insurance", 0) or 0)
        elif rule == "failover.promoted":
            promotions += 1
        elif rule == "failover.fenced":
            fenced += 1
            refused += int(r["numbers"].get("refused_sends", 0) or 0)
        elif rule == "oracle.source_outlier":
            outliers += 1
        elif rule == "oracle.source_stale":
            stale += 1
        elif r["node"] == "oracle" and rule.startswith("oracle.") and rule != "oracle.regime" \
                and not rule.startswith("oracle.source_"):
            modes += 1
    return {"liquidations": len(liqs), "liquidations_paused": paused, "adl_events": adl,
            "insurance_fund_delta": fund, "oracle_changes": modes,
            "oracle_outlier_exclusions": outliers, "oracle_stale_exclusions": stale,
            "failover_promotions": promotions, "primaries_fenced": fenced,
            "fenced_refused_sends": refused}


def build_samples(start_wall_ns: int, ticks: list[dict], orders: list[dict],
                  records: list[tuple[int, dict]], end_s: float) -> list[dict]:
    """Merge the probe orders (by intended time), the sampled series and the audit counters into
    one sample per 100 ms (pure)."""
    n = int(end_s / SAMPLE_S) + 1
    samples = [{"t": round(i * SAMPLE_S, 1), "sent": 0, "answered": 0, "rejected": 0,
                "unknown": 0, "lat_ms": []} for i in range(n)]
    for o in orders:
        s = samples[min(n - 1, int(o["t"] / SAMPLE_S))]
        s["sent"] += 1
        if "latency_ms" in o:
            s["answered"] += 1
            s["lat_ms"].append(round(o["latency_ms"], 3))
        if "rejected" in o:
            s["rejected"] += 1
        if o.get("unknown"):
            s["unknown"] += 1
    j = 0
    last: dict = {}
    for s in samples:  # the latest sampled value at or before each sample's time
        while j < len(ticks) and ticks[j]["t"] <= s["t"] + 1e-9:
            last = ticks[j]
            j += 1
        s.update({k: v for k, v in last.items() if k != "t"})
        s.update(audit_counters(records, start_wall_ns + int((s["t"] + SAMPLE_S) * 1e9)))
    return samples


def money_conserved(run_dir: Path) -> bool | None:
    """Risk's money check as it logged it at its last stop (risk_final_state)."""
    path = run_dir / "log" / "risk.log"
    if not path.exists():
        return None
    found = None
    for line in path.read_text(errors="replace").splitlines():
        if "risk_final_state" in line:
            try:
                found = bool(json.loads(line).get("conserved"))
            except ValueError:
                continue
    return found


def admin_sender(topo: config.Topology, timeout_s: float = 5.0):
    """send(cmd, args) -> reply dict, over the supervisor's admin socket (one thread)."""
    from cluster.protocol import AdminReply, AdminRequest, encode_one

    ctx = zmq.Context.instance()
    lock = threading.Lock()

    def send(cmd: str, args: dict) -> dict:
        with lock:
            sock = curve.tools_socket(ctx, zmq.DEALER, topo, topo.supervisor.admin)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.send(encode_one(AdminRequest(cmd=cmd, args=args)))
                if not sock.poll(int(timeout_s * 1000)):
                    return {"ok": False, "error": "no answer from the supervisor"}
                reply = msgspec.msgpack.decode(sock.recv(), type=AdminReply)
            finally:
                sock.close()
        return {"ok": reply.ok, "data": reply.data, "error": reply.error}

    return send


def honest_venues(topo: config.Topology, plan: dict | None) -> list[str]:
    faulted = {s.get("venue") for s in (plan or {}).get("steps", []) if s["action"] == "feed"}
    return [v for v in topo.nodes["feeds"].venues if v not in faulted]


def with_curve_point(exp: dict, latency: str) -> dict:
    """The experiment with one point of its curve applied: the named links slowed from the
    start of the run (steps at 0 s, before every other step), or the maker's own latency."""
    from netsim import scenario

    curve = exp["curve"]
    point = dict(exp, curve_point=latency)
    if curve.get("target", "links") == "maker":
        point["maker_latency_s"] = chaos._seconds(latency, "curve latency")
        return point
    steps = [{"at": "0s", "at_ns": 0, "action": "set", "link": link, "latency": latency}
             for link in curve["links"]]
    for step in steps:
        step["command"] = scenario.to_command(step)
    plan = dict(exp["scenario"], steps=steps + exp["scenario"]["steps"])
    point["scenario"] = plan
    point["before_links_s"] = True
    return point


async def _run(exp: dict, topo: config.Topology, echo) -> dict:
    from netsim import scenario

    load = exp["load"]
    plan = exp["scenario"]
    observer = Observer(topo, honest_venues(topo, plan))
    gw = topo.nodes["gateway"]
    ctx = zmq.asyncio.Context()
    tasks: list[asyncio.Task] = []
    md = Client(gw.client, api_key=topo.accounts[PROBE_ACCOUNT].api_key, market_data=gw.pub,
                ctx=ctx, timeout=load["timeout_s"])
    await md.connect()
    try:
        tasks.append(asyncio.create_task(observer.run(md)))
        tasks.append(asyncio.create_task(observer.run_feeds(ctx)))
        await observer.wait_mark(load["symbol"])
        if load["withdraw"]:  # a smaller wallet than the topology's demo deposit
            async with Client(gw.client, api_key=topo.accounts["admin"].api_key) as admin:
                for account, amount in load["withdraw"].items():
                    await admin.withdraw(account, admin.atoms(str(amount)))
                    echo(f"withdrew {amount} from {account}")
        opened = [await open_position(topo, p, observer, load["symbol"])
                  for p in load["positions"]]
        for o in opened:
            echo(f"position  {o['account']} {o['side']} {o['qty']} {o['symbol']} @ ticks "
                 f"{o['price']}: {o['answer']}")
        probe = Probe(md, observer, load)
        makers: dict[str, Maker] = {}
        maker_clients = []
        for name in load["makers"]:
            c = Client(gw.client, api_key=topo.accounts[name].api_key, ctx=ctx,
                       timeout=load["timeout_s"] * 3)
            await c.connect()
            maker_clients.append(c)
            makers[name] = Maker(c, observer, load, exp.get("maker_latency_s", 0.0) if
                                 name == load["makers"][0] else 0.0)
            tasks.append(asyncio.create_task(_drain_reports(c, [makers[name].on_report])))
        tasks.append(asyncio.create_task(_drain_reports(md, [probe.on_report])))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        start_wall = time.time_ns()
        mono0 = time.monotonic()
        end_s = exp["before_s"] + chaos._seconds(plan["end"], "end") + exp["observe_s"]
        stop_at = t0 + end_s
        ticks: list[dict] = []

        limits_seen: dict = {}

        async def limits_poller() -> None:
            """The limits in force, as the probe's account sees them (GetLimits, weight 1)."""
            while loop.time() < stop_at:
                try:
                    view = (await md.limits()).detail
                    limits_seen.update({"limit.account_orders": view.get("account_orders.limit"),
                                        "limit.regime": view.get("regime")})
                except Exception:  # a refused or late answer: the series keeps its last value
                    pass
                await asyncio.sleep(LIMITS_EVERY_S)

        async def sampler() -> None:
            while loop.time() < stop_at + SAMPLE_S:
                now = time.monotonic()
                tick = {"t": round(now - mono0, 3)} | observer.sample(now) | limits_seen
                try:
                    nodes = (read_status(topo.run_dir) or {})["nodes"]
                    tick["nodes_running"] = sum(1 for n in nodes.values()
                                                if n["state"] == "running")
                    # (however many nodes the experiment's topology runs)
                    tick["nodes_down"] = len(nodes) - tick["nodes_running"]
                    tick["node_restarts"] = sum(n["restarts"] for n in nodes.values())
                    tick["node_errors"] = sum(n.get("stats", {}).get("errors", 0)
                                              for n in nodes.values())
                    for name, n in nodes.items():  # per-node counters from the heartbeats
                        if "msgs_in" in n.get("stats", {}):
                            tick[f"msgs_in.{name}"] = n["stats"]["msgs_in"]
                except (OSError, ValueError, KeyError):
                    pass
                for name, m in makers.items():
                    tick |= m.sample(name)
                ticks.append(tick)
                await asyncio.sleep(SAMPLE_S)

        sampling = asyncio.create_task(sampler())
        polling = asyncio.create_task(limits_poller())
        load_tasks = [asyncio.create_task(probe.run(t0, stop_at))]
        load_tasks += [asyncio.create_task(m.run(stop_at)) for m in makers.values()]
        await asyncio.sleep(exp["before_s"])
        log: list[dict] = []

        admin = admin_sender(topo)
        sent_at = [0.0]

        def send(cmd: str, args: dict) -> dict:
            sent_at[0] = time.monotonic()  # a fault takes effect from here, not from the reply
            return admin(cmd, args)

        def say(record: dict) -> None:
            record["t"] = round(sent_at[0] - mono0, 3)
            record["answered_after_ms"] = round((time.monotonic() - sent_at[0]) * 1000, 1)
            echo(f"t={record['t']:6.2f}s  {record['action']:12} {record['command']} "
                 f"{json.dumps(record['args'])}" + ("" if record["ok"] else
                                                    f"  REFUSED: {record['error']}"))

        log = await asyncio.to_thread(scenario.run, plan, send, say)
        await sampling
        await asyncio.gather(polling, return_exceptions=True)
        await asyncio.gather(*load_tasks, return_exceptions=True)
        finals = await probe.finals()
        for c in maker_clients:
            await c.close()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await md.close()
        ctx.destroy(linger=0)
    faults = [r for r in log if r["action"] != "heal_at_end"]
    heals = [r for r in log if r["action"] == "heal_at_end"]
    fault_s = faults[0]["t"] if faults else exp["before_s"]
    heal_s = heals[0]["t"] if heals else end_s
    return {"start_wall_ns": start_wall, "fault_s": fault_s, "heal_s": heal_s, "end_s": end_s,
            "timeline": log, "ticks": ticks, "orders": probe.orders, "finals": finals,
            "positions": opened,
            "makers": {n: m.sample(n) for n, m in makers.items()}}


def fresh_run_dir(exp: dict, run_root: Path) -> Path:
    """The experiment's (or curve point's) run directory, emptied: `cluster up` keeps a run
    directory's audit journals (it removes only the input journals), so a previous run's
    liquidations would be counted as this one's."""
    run_dir = run_root / (exp["id"] + (f"-{exp['curve_point']}" if exp.get("curve_point")
                                       else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def run_experiment(exp: dict, run_root: Path, echo=print) -> dict:
    """Run one experiment (or one point of its curve) on a fresh cluster whose run directory
    goes under `run_root`; the run as a dict (JSON-ready): samples, verdicts, timeline, audit
    records in the fault window."""
    run_dir = fresh_run_dir(exp, run_root)
    cfg = write_topology(exp, run_dir)
    topo = config.load(cfg, run_dir=str(run_dir / "var"))
    var = run_dir / "var"
    started = time.monotonic()
    began_ns = time.time_ns()
    up = _cli("cluster", "up", "--detach", "--same-session", "--config", str(cfg),
              "--run-dir", str(var), "--json")
    if up.returncode != 0:
        raise RuntimeError(f"cluster did not start: {up.stdout}{up.stderr}")
    echo(f"cluster up in {time.monotonic() - started:.1f}s ({var})")
    try:
        import uvloop

        measured = uvloop.run(_run(exp, topo, echo))
    finally:
        down = _cli("cluster", "down", "--run-dir", str(var), "--json")
        if down.returncode != 0:
            echo(f"cluster down: {down.stdout}{down.stderr}")
    measured["finals"]["money_conserved"] = money_conserved(var)
    records = [r for r in audit_series(var) if r[0] >= began_ns]
    samples = build_samples(measured["start_wall_ns"], measured.pop("ticks"),
                            measured.pop("orders"), records, measured["end_s"])
    run = measured | {"samples": samples}
    verdicts = chaos.evaluate_all(exp, run)
    lo = measured["start_wall_ns"] + int((measured["fault_s"] - 1) * 1e9)
    hi = measured["start_wall_ns"] + int(measured["end_s"] * 1e9)
    explained = [dict(r, ts_ns=ts, t=round((ts - measured["start_wall_ns"]) / 1e9, 3))
                 for ts, r in records if lo <= ts <= hi and not _routine(r)]
    return run | {"experiment": {k: exp[k] for k in ("id", "name", "description", "path",
                                                      "hypotheses", "load")},
                  "curve_point": exp.get("curve_point"), "verdicts": verdicts,
                  "passed": chaos.passed(verdicts), "explanations": explained[:400],
                  "explanations_total": len(explained), "run_dir": str(var),
                  "wall_seconds": round(time.monotonic() - started, 1)}


def _routine(record: dict) -> bool:
    """Audit records the probe and makers cause by the hundred (their own IOC remainders and
    post-only refusals): counted in the samples, not listed as explanations."""
    return record["rule"].startswith("matching.") and record["decision"] in ("cancel", "reject")
