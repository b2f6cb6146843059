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
import select
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
from cluster.client import Client, RequestFailed, venue_client
from cluster.protocol import (BUY, SELL, Codec, Fill, IndexMark, OrderAccepted, OrderCancelled,
                              OrderRejected, PlaceOrder, Regime, SetMarginMode, SpotTick)
from cluster.runstate import read_status

SAMPLE_S = 0.1
RESENDS = 5  # an unknown outcome is asked again this many times before it counts as unanswered
MAX_RESTING = 100  # probe orders left resting (the topology allows 200 open orders per account)
PROBE_ACCOUNT = "taker1"
PROXY_START_S = 20  # a netsim client-link proxy prints its ready line within this
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
    """Quotes post-only both sides around the mark (or the index: load.quote_around) every
    `quote_every`, serially (cancel all, bid, ask: a round trip each). Counts its quotes, the
    ones refused as would-take, its fills and fees, and times its requests' round trips.

    A maker behind a netsim client link (netsim/proxy.py) reads the mark from its own market-data
    connection through that link (`own_marks`, fed by `follow_marks`), so it sees the mark as
    late as the link makes it; otherwise it reads the observer's."""

    def __init__(self, client: Client, observer: Observer, load: dict, own_marks: bool = False):
        self.client, self.observer, self.load = client, observer, load
        self.own_marks: dict[str, IndexMark] | None = {} if own_marks else None
        self.quotes = self.would_take = self.refused = self.fills_maker = self.fills_taker = 0
        self.fees = 0
        # (monotonic send time, ms) of each place request's round trip, as the maker saw it
        self.rtt_ms: list[tuple[float, float]] = []
        self.quoted: list[tuple[float, int]] = []  # (send time, would-take count so far) per quote

    async def follow_marks(self) -> None:
        await self.client.subscribe(b"mark.")
        while True:
            for msg in await self.client.market_data():
                if type(msg) is IndexMark:
                    self.own_marks[msg.symbol] = msg

    def _mark(self, symbol: str) -> int | None:
        """The price it quotes around (load.quote_around: the mark, or the index)."""
        seen = self.own_marks.get(symbol) if self.own_marks is not None else \
            self.observer.marks.get(symbol)
        return None if seen is None else getattr(seen, self.load["quote_around"])

    async def run(self, stop_at: float) -> None:
        symbol = self.load["symbol"]
        loop = asyncio.get_running_loop()
        off = self.load["quote_offset_ppm"]
        while loop.time() < stop_at:
            mark = self._mark(symbol)
            if mark:
                try:
                    await self.client.cancel_all(symbol)
                    for side, price in ((BUY, mark - mark * off // 1_000_000),
                                        (SELL, mark + mark * off // 1_000_000)):
                        sent = time.monotonic()
                        report = await self.client.place(symbol, side, self.load["quote_qty"],
                                                         price, post_only=True)
                        self.rtt_ms.append((sent, (time.monotonic() - sent) * 1000))
                        self.quotes += 1
                        if type(report.event) is OrderRejected:
                            self._refused(report.event.reason)
                        self.quoted.append((sent, self.would_take))
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
                f"maker.{name}.refused": self.refused,
                f"maker.{name}.fills_taker": self.fills_taker,
                f"maker.{name}.fills_maker": self.fills_maker, f"maker.{name}.fees": self.fees,
                f"maker.{name}.would_take_share":
                    round(self.would_take / self.quotes, 4) if self.quotes else 0.0}


class ExitBot:
    """A bot getting out of a long position in slices (the issue's "bot's exits"): every `every`
    it decides to sell `qty` lots reduce-only, IOC, at most `slippage_ppm` under the mark it sees
    then. An exit the venue refuses (a throttle: retried after its retry_after_ms; a refusal
    with no retry time: after 50 ms) or that finds no bid in its band (retried 100 ms later with
    the mark as it is then) is tried again until `deadline` after the decision. Per exit it
    records:

    - delay_ms: decision to the last fill (an exit filled at its first attempt is not delayed);
    - throttled: attempts refused by a rate limit; missed: not filled by the deadline;
    - slippage_ppm: how far under the mark at the decision its average fill price was (positive:
      worse for the bot), so a delay's cost is counted in the price, not only in time.
    """

    RETRY_NO_TIME_S = 0.05
    RETRY_UNFILLED_S = 0.1  # a bot that finds no bid waits this long before looking again

    def __init__(self, client: Client, observer: Observer, symbol: str, conf: dict) -> None:
        self.client, self.observer, self.symbol, self.conf = client, observer, symbol, conf
        self.exits: list[dict] = []
        self.events: dict[int, list] = {}  # order id -> its fills and cancel (reports)
        self._tasks: set[asyncio.Task] = set()

    def on_report(self, report) -> None:
        event = report.event
        if type(event) in (Fill, OrderCancelled) and event.symbol == self.symbol:
            self.events.setdefault(event.order_id, []).append(event)
            if len(self.events) > 5_000:  # bounded: the oldest orders' events go first
                del self.events[next(iter(self.events))]

    async def run(self, mono0: float, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        every = self.conf["every_s"]
        start = loop.time()
        n = 0
        while True:
            intended = start + n * every  # open loop: on time whatever the last exit did
            if intended >= stop_at - self.conf["deadline_s"]:
                break  # an exit must have its whole deadline inside the run
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            mark = self.observer.marks.get(self.symbol)
            if mark is None:
                continue
            record = {"t": time.monotonic() - mono0, "mark": mark.mark, "attempts": 0,
                      "throttled": 0, "filled": 0, "notional": 0}
            self.exits.append(record)
            task = asyncio.create_task(self._exit(record, n))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.conf["deadline_s"] + 2)

    async def _exit(self, record: dict, n: int) -> None:
        conf = self.conf
        decided = time.monotonic()
        deadline = decided + conf["deadline_s"]
        want = conf["qty"]
        while record["filled"] < want and time.monotonic() < deadline:
            mark = self.observer.marks[self.symbol].mark
            price = mark - mark * conf["slippage_ppm"] // 1_000_000
            record["attempts"] += 1
            try:
                answer = await asyncio.wait_for(self.client.request(PlaceOrder(
                    symbol=self.symbol, side=SELL, qty=want - record["filled"], price=price,
                    tif="IOC", reduce_only=True, client_order_id=f"x{n}.{record['attempts']}"),
                    raise_on_error=False), max(0.05, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            event = getattr(answer, "event", None)
            if event is None or type(event) is OrderRejected:  # refused: nothing changed
                reason = answer.reason if event is None else event.reason
                record.setdefault("refusals", []).append(reason)
                detail = answer.detail if event is None else event.detail
                if reason == "rate_limited":
                    record["throttled"] += 1
                wait_s = (detail.get("retry_after_ms", 0) or 0) / 1000 or self.RETRY_NO_TIME_S
                await asyncio.sleep(max(0.0, min(wait_s, deadline - time.monotonic())))
                continue
            self.on_report(answer)  # the answer is the order's first event, not repeated later
            await self._settled(event.order_id, record, deadline)
            if record["filled"] < want:  # no bid in its band: look again a little later
                record["unfilled"] = record.get("unfilled", 0) + 1
                await asyncio.sleep(max(0.0, min(self.RETRY_UNFILLED_S,
                                                 deadline - time.monotonic())))
        if record["filled"]:
            avg = record["notional"] / record["filled"]
            record["slippage_ppm"] = round((record["mark"] - avg) * 1_000_000 / record["mark"])
        record["missed"] = record["filled"] < want
        if not record["missed"]:
            record["delay_ms"] = round((record["done"] - decided) * 1000, 1)
        record["delayed"] = record["attempts"] > 1 and not record["missed"]

    async def _settled(self, order_id: int, record: dict, deadline: float) -> None:
        """Wait (polling, bounded by the deadline) until the IOC is filled or its rest cancelled;
        count its fills into the record."""
        counted = 0
        while True:
            events = self.events.get(order_id, [])
            for ev in events[counted:]:
                if type(ev) is Fill:
                    record["filled"] += ev.qty
                    record["notional"] += ev.price * ev.qty
                    record["done"] = time.monotonic()
            counted = len(events)
            if any(type(ev) is OrderCancelled or (type(ev) is Fill and ev.remaining == 0)
                   for ev in events) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)


def exit_samples(exits: list[dict]) -> list[dict]:
    """The exits as sample contributions by decision time (pure; merged by build_samples)."""
    return [{"t": e["t"], "exits": 1, "exits_missed": int(e["missed"]),
             "exits_delayed": int(e["delayed"]), "exits_throttled": int(e["throttled"] > 0),
             **({"exit_delay_ms": e["delay_ms"]} if "delay_ms" in e else {}),
             **({"exit_slippage_ppm": e["slippage_ppm"]} if "slippage_ppm" in e else {})}
            for e in exits if "missed" in e]


async def _drain_reports(client: Client, handlers: list) -> None:
    while True:
        report = await client.reports.get()
        for handle in handlers:
            handle(report)


async def open_position(topo, spec: dict, observer: Observer, symbol_default: str) -> dict:
    """A leveraged position for the experiment: the counterparty rests an order at the mark and
    the account takes it (`side` is the account's). Returns what was opened."""
    symbol = spec.get("symbol", symbol_default)
    side = BUY if spec.get("side", "buy") == "buy" else SELL
    async with venue_client(topo, api_key=topo.accounts[spec["account"]].api_key) as acct, \
            venue_client(topo, api_key=topo.accounts[spec.get("counterparty", "mm2")].api_key) \
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
                  records: list[tuple[int, dict]], end_s: float,
                  exits: list[dict] = ()) -> list[dict]:
    """Merge the probe orders (by intended time), the exit bot's exits (by decision time), the
    sampled series and the audit counters into one sample per 100 ms (pure)."""
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
    for e in exit_samples(exits):
        s = samples[min(n - 1, int(e.pop("t") / SAMPLE_S))]
        for key, value in e.items():
            if key.startswith("exit_"):  # a value per exit: kept as a list
                s.setdefault(key, []).append(value)
            else:
                s[key] = s.get(key, 0) + value
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
    start of the timeline (steps at 0 s, before every other step)."""
    from netsim import scenario

    curve = exp["curve"]
    point = dict(exp, curve_point=latency)
    steps = [{"at": "0s", "at_ns": 0, "action": "set", "link": link, "latency": latency}
             for link in curve["links"]]
    for step in steps:
        step["command"] = scenario.to_command(step)
    plan = dict(exp["scenario"], steps=steps + exp["scenario"]["steps"])
    point["scenario"] = plan
    point["before_links_s"] = True
    return point


def shaped_clients(exp: dict) -> list[str]:
    """The clients whose own links the experiment shapes (client:NAME->gateway or
    gateway->client:NAME in its timeline or curve): each connects through a netsim proxy."""
    from netsim.proxy import client_link_name

    links = [step.get("link", "") for step in (exp["scenario"] or {}).get("steps", [])]
    links += [link for step in (exp["scenario"] or {}).get("steps", [])
              for link in step.get("links", [])]
    links += (exp["curve"] or {}).get("links", [])
    return sorted({n for n in map(client_link_name, links) if n})


class Proxies:
    """One netsim client-link proxy process per shaped client (netsim/proxy.py), started after
    the cluster and stopped, by its own pid, before it."""

    def __init__(self, cfg: Path, var: Path, topo: config.Topology, names: list[str]) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.listening: dict[str, dict[str, str]] = {}
        self.stats_path = {n: var / f"netsim-proxy-{n}.json" for n in names}
        gw = topo.nodes["gateway"]
        try:
            for name in names:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "netsim.proxy", "--config", str(cfg), "--run-dir",
                     str(var), "--client", name, "--upstream", f"client={gw.client}",
                     "--upstream", f"pub={gw.pub}", "--stats", str(self.stats_path[name])],
                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
                self.procs[name] = proc
                if not select.select([proc.stdout], [], [], PROXY_START_S)[0]:
                    raise RuntimeError(f"netsim proxy for {name}: not ready in {PROXY_START_S} s")
                line = proc.stdout.readline()  # its ready line (or EOF if it failed)
                if not line:
                    raise RuntimeError(f"netsim proxy for {name} did not start "
                                       f"(exit {proc.wait(timeout=5)})")
                self.listening[name] = json.loads(line)["listening"]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> dict[str, dict]:
        """Stop each proxy; what each measured (netsim.proxy.ClientLinkProxy.stats)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        out = {}
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()
            try:
                out[name] = json.loads(self.stats_path[name].read_text())
            except (OSError, ValueError):
                pass
        self.procs.clear()
        return out


def client_link_figures(stats: dict[str, dict]) -> dict:
    """Per shaped link, the delay its proxy measured under the setting it carried most chunks
    with (the fault's, not the unshaped before and after): `client_link.LINK.delay_ms_p50`, ..."""
    out: dict = {}
    for client in stats.values():
        for link, s in client.get("links", {}).items():
            shaped = {k: v for k, v in s.get("measured_ms", {}).items() if k != "unshaped"}
            if not shaped:
                continue
            setting, m = max(shaped.items(), key=lambda kv: kv[1]["chunks"])
            out[f"client_link.{link}.set"] = setting
            for key in ("chunks", "p50", "p99", "max"):
                out[f"client_link.{link}.delay_ms_{key}" if key != "chunks"
                    else f"client_link.{link}.chunks"] = m[key]
    return out


async def _run(exp: dict, topo: config.Topology, echo, proxies: dict | None = None) -> dict:
    from netsim import scenario

    load = exp["load"]
    plan = exp["scenario"]
    observer = Observer(topo, honest_venues(topo, plan))
    ctx = zmq.asyncio.Context()
    tasks: list[asyncio.Task] = []
    md = venue_client(topo, api_key=topo.accounts[PROBE_ACCOUNT].api_key, market_data=True,
                      ctx=ctx, timeout=load["timeout_s"])
    await md.connect()
    try:
        tasks.append(asyncio.create_task(observer.run(md)))
        tasks.append(asyncio.create_task(observer.run_feeds(ctx)))
        await observer.wait_mark(load["symbol"])
        if load["withdraw"]:  # a smaller wallet than the topology's demo deposit
            async with venue_client(topo, api_key=topo.accounts["admin"].api_key) as admin:
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
            via = (proxies or {}).get(name)  # behind its own netsim link: both its connections
            c = venue_client(topo, endpoint=via["client"] if via else None,
                             api_key=topo.accounts[name].api_key, ctx=ctx,
                             timeout=load["timeout_s"] * 3)
            c.market_data_endpoint = via["pub"] if via else None
            await c.connect()
            maker_clients.append(c)
            makers[name] = Maker(c, observer, load, own_marks=bool(via))
            if via:
                tasks.append(asyncio.create_task(makers[name].follow_marks()))
                await _wait_for(lambda m=makers[name]: load["symbol"] in m.own_marks, 20.0,
                                f"{name}'s first mark through its proxy")
            tasks.append(asyncio.create_task(_drain_reports(c, [makers[name].on_report])))
        tasks.append(asyncio.create_task(_drain_reports(md, [probe.on_report])))
        exit_bot = None
        if load["exits"]:  # its own connection, as a bot's exits would have
            xc = venue_client(topo, api_key=topo.accounts[load["exits"]["account"]].api_key,
                              ctx=ctx, timeout=load["timeout_s"] * 3)
            await xc.connect()
            maker_clients.append(xc)
            exit_bot = ExitBot(xc, observer, load["symbol"], load["exits"])
            tasks.append(asyncio.create_task(_drain_reports(xc, [exit_bot.on_report])))
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
        if exit_bot is not None:
            load_tasks.append(asyncio.create_task(exit_bot.run(mono0, stop_at)))
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
    for name, m in makers.items():  # while the faults were in force: its round trips, quotes
        during = [ms for sent, ms in m.rtt_ms if fault_s <= sent - mono0 < heal_s]
        if during:
            finals[f"maker.{name}.rtt_ms_p50_during"] = round(statistics.median(during), 1)
        quoted = [(sent, wt) for sent, wt in m.quoted if fault_s <= sent - mono0 < heal_s]
        if quoted:
            before = [wt for sent, wt in m.quoted if sent - mono0 < fault_s]
            would_take = quoted[-1][1] - (before[-1] if before else 0)
            finals[f"maker.{name}.quotes_during"] = len(quoted)
            finals[f"maker.{name}.would_take_during"] = would_take
            finals[f"maker.{name}.would_take_share_during"] = round(would_take / len(quoted), 4)
    return {"start_wall_ns": start_wall, "fault_s": fault_s, "heal_s": heal_s, "end_s": end_s,
            "timeline": log, "ticks": ticks, "orders": probe.orders, "finals": finals,
            "positions": opened, "exits": exit_bot.exits if exit_bot else [],
            "makers": {n: m.sample(n) for n, m in makers.items()}}


async def _wait_for(ready, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} in {timeout_s:g} s")
        await asyncio.sleep(0.05)


def fresh_run_dir(exp: dict, run_root: Path) -> Path:
    """The experiment's (or curve point's) run directory, emptied: `cluster up` keeps a run
    directory's audit journals (it removes only the input journals), so a previous run's
    liquidations would be counted as this one's."""
    run_dir = run_root / (exp["id"] + (f"-{exp['curve_point']}" if exp.get("curve_point")
                                       else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


START_ATTEMPTS = 3
PORT_TAKEN = "Address already in use"


def start_cluster(exp: dict, run_root: Path, echo=print) -> tuple[Path, config.Topology]:
    """A fresh cluster for the experiment: (its topology file, its topology). The free ports a
    topology is written with can be taken by another program before the cluster binds them
    (other clusters run on this machine); such a start is tried again on new ports, up to
    START_ATTEMPTS times. Any other failure is raised at once."""
    for attempt in range(1, START_ATTEMPTS + 1):
        run_dir = fresh_run_dir(exp, run_root)
        cfg = write_topology(exp, run_dir)
        topo = config.load(cfg, run_dir=str(run_dir / "var"))
        up = _cli("cluster", "up", "--detach", "--same-session", "--config", str(cfg),
                  "--run-dir", str(run_dir / "var"), "--json")
        if up.returncode == 0:
            return cfg, topo
        failure = f"{up.stdout}{up.stderr}"
        if PORT_TAKEN not in failure or attempt == START_ATTEMPTS:
            raise RuntimeError(f"cluster did not start: {failure}")
        echo(f"cluster did not start (a port was taken meanwhile); again on new ports "
             f"({attempt}/{START_ATTEMPTS})")
    raise AssertionError("unreachable: the last attempt returns or raises")


def run_experiment(exp: dict, run_root: Path, echo=print) -> dict:
    """Run one experiment (or one point of its curve) on a fresh cluster whose run directory
    goes under `run_root`; the run as a dict (JSON-ready): samples, verdicts, timeline, audit
    records in the fault window."""
    started = time.monotonic()
    began_ns = time.time_ns()
    cfg, topo = start_cluster(exp, run_root, echo)
    var = Path(topo.run_dir)
    echo(f"cluster up in {time.monotonic() - started:.1f}s ({var})")
    proxies = None
    link_stats: dict = {}
    try:
        import uvloop

        proxies = Proxies(cfg, var, topo, shaped_clients(exp))
        for name, where in proxies.listening.items():
            echo(f"netsim proxy for {name}: {where}")
        measured = uvloop.run(_run(exp, topo, echo, proxies.listening))
    finally:
        if proxies is not None:
            link_stats = proxies.stop()
        down = _cli("cluster", "down", "--run-dir", str(var), "--json")
        if down.returncode != 0:
            echo(f"cluster down: {down.stdout}{down.stderr}")
    measured["finals"]["money_conserved"] = money_conserved(var)
    measured["finals"] |= client_link_figures(link_stats)
    if link_stats:
        measured["client_links"] = link_stats
    records = [r for r in audit_series(var) if r[0] >= began_ns]
    samples = build_samples(measured["start_wall_ns"], measured.pop("ticks"),
                            measured.pop("orders"), records, measured["end_s"],
                            measured["exits"])
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
