"""`make cascade-live` (#24's end-to-end check at full size): a snapshot of a cluster after a real
locust load, cascaded with a -8 % shock (`perpx cascade --close venue`), against the same shock
applied live through the feeds to the same state. Writes perf/results/cascade-live.{json,md} (and
the snapshot and the simulator's result beside them); exit 0 when the liquidated accounts match or
every difference has a named cause, 1 otherwise. Never part of `make test`; about 1.5 minutes.

1. A cluster of its own (free loopback ports, run dir var/cascade-live; no surveillance or REST
   node, which the comparison does not need) and LOAD_SECONDS (30) of perf/locustfile.py's users.
   The load leaves alice and bob with isolated longs at ~100x (HighLeverageTrader) and everyone
   else far from any trigger, so after it, on top, LEVERED accounts open positions whose triggers
   lie on both sides of the shock (isolated 9x..20x longs, cross longs, a BTC-long/ETH-short
   hedge, a short) against mm1 at the mark.
2. `perpx cascade snapshot`, then `perpx cascade --snapshot .. --shock -0.08 --close venue`.
3. Live: the makers' orders are replaced by the snapshot's book shifted to the shocked index (the
   simulator holds levels as distances from the reference: makers re-quote around the index),
   then every symbol's venues move by the simulator's exogenous move for it (the driver -8 %, the
   others by the calm regime's beta) in one feeds frame. The book is placed just before the
   shock, so this run's topology widens the price band to 25 % (a bid 8 % below the pre-shock
   mark is refused at 5 %); after the shock every level is well inside 5 % again, and the band
   only ever tightens a liquidation's limit. Then until the liquidator is done (every started
   liquidation ended and QUIET_S without a new one, at most SETTLE_S).
4. Compared per liquidation key (an account, or account:symbol for an isolated position); every
   difference gets a cause from the snapshot's own state evaluated with the venue's trigger rule
   (nodes/liquidator/monitor.py) at the simulator's marks and at every live mark: the simulator's
   walks moved its mark (impact the live oracle does not have), the live index walked past or
   short of the shocked level, the market liquidated it between the snapshot and the shock, the
   liquidator paused, or the account changed. A difference none of these explains is
   "unexplained" (exit 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
RUN_BASE = ROOT / "var" / "cascade-live"
QUIET_S = 3.0  # no new liquidation for this long after the shock: the liquidator is done
SETTLE_S = 30.0  # at most this long after the shock
BAND = "0.25"  # this run's price band (see the module docstring)
MAX_LEVELS = 190  # per side: below risk's max_open_orders (200) for the one maker placing them
BUY, SELL = 1, -1

# (name, deposit, margin mode, leverage, legs (symbol, side, qty)): triggers on both sides of -8 %
# (BTC) and -6.8 % (ETH, the calm regime's beta), from ~-4 % to ~-12 % and one that the shock helps.
LEVERED = [
    ("iso-btc-20x", "5000", "isolated", 20, [("BTC-PERP", BUY, "0.5")]),
    ("iso-btc-14x", "5000", "isolated", 14, [("BTC-PERP", BUY, "0.5")]),
    ("iso-btc-13x", "5000", "isolated", 13, [("BTC-PERP", BUY, "0.5")]),
    ("iso-btc-12x", "5000", "isolated", 12, [("BTC-PERP", BUY, "0.5")]),
    ("iso-btc-11x", "5000", "isolated", 11, [("BTC-PERP", BUY, "0.5")]),
    ("iso-btc-9x", "5000", "isolated", 9, [("BTC-PERP", BUY, "0.5")]),
    ("iso-eth-16x", "5000", "isolated", 16, [("ETH-PERP", BUY, "5")]),
    ("iso-eth-15x", "5000", "isolated", 15, [("ETH-PERP", BUY, "5")]),
    ("iso-eth-11x", "5000", "isolated", 11, [("ETH-PERP", BUY, "5")]),
    ("iso-btc-short-20x", "5000", "isolated", 20, [("BTC-PERP", SELL, "0.5")]),
    ("cross-btc-thin", "990", "cross", 20, [("BTC-PERP", BUY, "0.5")]),
    ("cross-btc-thick", "1650", "cross", 20, [("BTC-PERP", BUY, "0.5")]),
    ("cross-hedge", "450", "cross", 100, [("BTC-PERP", BUY, "0.5"), ("ETH-PERP", SELL, "6")]),
]


def log(msg: str) -> None:
    print(f"cascade-live: {msg}", flush=True)


# ------------------------------------------------------------------ the cluster


class Run:
    def __init__(self) -> None:
        from cluster import config

        if RUN_BASE.exists():  # an earlier run's cluster (an interrupted one) is stopped first
            subprocess.run([sys.executable, "-m", "cluster.cli", "cluster", "down", "--run-dir",
                            str(RUN_BASE / "run")], cwd=ROOT, capture_output=True, timeout=60)
            shutil.rmtree(RUN_BASE)
        RUN_BASE.mkdir(parents=True)
        self.run_dir = RUN_BASE / "run"
        self.config_path = RUN_BASE / "topology.toml"
        self.configure()
        self.topo = config.load(self.config_path, run_dir=str(self.run_dir))

    def configure(self) -> None:
        from cluster import config

        config.write_tcp_topology(config.DEFAULT_CONFIG, self.config_path,
                                  config.free_tcp_ports(20), self.run_dir, internal_ipc=True)
        raw = tomllib.loads(self.config_path.read_text())
        for name in config.OPTIONAL_NODES:
            raw["nodes"].pop(name, None)
        for sym in raw["symbols"].values():
            sym["price_band"] = BAND
        raw["accounts"] += [{"name": name, "api_key": f"cascade-live-{name}", "deposit": deposit}
                            for name, deposit, *_ in LEVERED]
        self.config_path.write_text(config._dump_toml(raw))

    def perpx(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster.cli", *args, "--run-dir",
                               str(self.run_dir)], cwd=ROOT, text=True, capture_output=True,
                              timeout=timeout)

    def up(self) -> None:
        from cluster import config

        for attempt in range(3):  # a port taken between choosing and binding it: fresh ones
            proc = self.perpx("cluster", "up", "--detach", "--same-session", "--config",
                              str(self.config_path), "--json")
            if proc.returncode == 0:
                self.topo = config.load(self.config_path, run_dir=str(self.run_dir))
                return
            self.perpx("cluster", "down")
            if "Address already in use" not in proc.stdout + proc.stderr:
                break
            self.configure()
        raise RuntimeError(f"cluster up failed: {proc.stdout} {proc.stderr}")

    def down(self) -> None:
        self.perpx("cluster", "down", "--json")

    def endpoint(self) -> str:
        return self.topo.nodes["gateway"].client

    def md_endpoint(self) -> str:
        return self.topo.nodes["gateway"].pub

    def client(self, account: str, market_data: bool = False):
        from cluster.client import Client

        return Client(self.endpoint(), api_key=self.topo.accounts[account].api_key,
                      market_data=self.md_endpoint() if market_data else None, timeout=10)

    def audit(self, node: str) -> Path:
        return self.run_dir / "audit" / f"{node}.jsonl"


def read_jsonl(path: Path, offset: int = 0) -> list[dict]:
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    data = data[:data.rfind(b"\n") + 1]  # a line still being written is read next time
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def run_load(run: Run, seconds: int) -> dict:
    """perf/locustfile.py headless for `seconds`; its CSVs in the run's directory. The latency
    files the locustfile drops in perf/results are this run's, not make load's: removed."""
    before = set(RESULTS.glob("load_latency.*.json"))
    users = os.environ.get("LOAD_USERS", "20")
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "perf" / "locustfile.py"),
           "--headless", "-u", users, "-r", "5", "-t", f"{seconds}s", "--stop-timeout", "5",
           "--csv", str(RUN_BASE / "locust"), "--only-summary"]
    env = {**os.environ, "PERPX_RUN_DIR": str(run.run_dir), "PERPX_CONFIG": str(run.config_path)}
    code = subprocess.run(cmd, cwd=ROOT, env=env, timeout=seconds + 90, capture_output=True,
                          text=True).returncode
    for path in set(RESULTS.glob("load_latency.*.json")) - before:
        path.unlink()
    stats = {"seconds": seconds, "users": int(users), "locust_exit": code}
    try:
        import csv

        with (RUN_BASE / "locust_stats.csv").open() as f:
            for row in csv.DictReader(f):
                if row["Name"] == "Aggregated":
                    stats["requests"] = int(row["Request Count"])
                    stats["failures"] = int(row["Failure Count"])
    except (OSError, KeyError, ValueError):
        pass
    return stats


def wait_liquidator_idle(run: Run, quiet: float, bound: float) -> bool:
    """Until every liquidation in the audit has ended and none started for `quiet` s."""
    deadline = time.monotonic() + bound
    last_size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = size(run.audit("liquidator"))
        if now_size != last_size:
            last_size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            liqs = live_liquidations(read_jsonl(run.audit("liquidator")))
            if all(liq["status"] != "active" for liq in liqs.values()):
                return True
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------ positions on top of the load


async def open_levered(run: Run) -> list[dict]:
    """Each LEVERED account's legs, filled against mm1 one tick inside the spread (so the load's
    book is left as it was; mm1's remainder, if any, cancelled)."""
    from cluster.protocol import SetMarginMode

    opened = []
    async with run.client("mm1") as mm:
        for name, _, mode, leverage, legs in LEVERED:
            async with run.client(name) as c:
                for symbol, side, qty_text in legs:
                    qty = c.lots(symbol, qty_text)
                    if mode == "isolated":
                        await c.request(SetMarginMode(symbol=symbol, mode="isolated"))
                    await c.set_leverage(symbol, leverage)
                    price = await inside_spread(mm, symbol, side)
                    resting = await mm.place(symbol, -side, qty, price)
                    await c.place(symbol, side, qty, price, tif="IOC")
                    order_id = getattr(resting.event, "order_id", 0)
                    if order_id:
                        await mm.request(_cancel(symbol, order_id), raise_on_error=False)
                view = await c.account_view()
                held = {p.symbol: p.qty for p in view.positions if p.qty}
                opened.append({"account": name, "mode": mode, "leverage": leverage,
                               "positions": held, "balance": view.balance})
    return opened


async def inside_spread(mm, symbol: str, side: int) -> int:
    """A price one tick inside the spread on the taker's far side (a buy one tick above the best
    bid), so that the levered order meets only mm1's fresh one, not the load's book; the mark
    when the book has no such side."""
    book = await mm.book(symbol, depth=1)
    if side == BUY and book.bids:
        return book.bids[0][0] + 1
    if side == SELL and book.asks:
        return book.asks[0][0] - 1
    marks = {p.symbol: p.mark for p in (await mm.account_view()).positions if p.mark}
    if symbol not in marks:
        raise RuntimeError(f"{symbol}: no book side and no mark to open a position at")
    return marks[symbol]


def _cancel(symbol: str, order_id: int):
    from cluster.protocol import CancelOrder

    return CancelOrder(symbol=symbol, order_id=order_id)


# ------------------------------------------------------------------ the live shock


def send_shock(run: Run, ppm: dict[str, int], timeout: float = 5.0) -> None:
    """Every symbol's venues moved at once (one FeedControl frame, applied in one feeds tick),
    confirmed by the feeds log (as tests/e2e/helpers.py `shock`; sent again once if unheard)."""
    from cluster import curve
    from cluster.protocol import FeedControl

    log_path = run.run_dir / "log" / "feeds.log"

    def applied() -> int:
        text = log_path.read_text() if log_path.exists() else ""
        return text.count('"feed_shock"')

    before = applied()
    shocks = [FeedControl(action="shock", symbol=s, ppm=p) for s, p in sorted(ppm.items()) if p]
    for _ in range(2):
        curve.push_to_inbox(run.topo, "feeds", shocks)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if applied() >= before + len(ppm):
                return
            time.sleep(0.02)
    raise RuntimeError("the feeds process never logged the shock")


async def live_shock(run: Run, snap: dict, exo_bps: dict[str, int], audit_from: int) -> dict:
    """Replace the book by the snapshot's shifted to the shocked index, shock the feeds, collect
    every mark until the liquidator is done. Returns the marks, times and book placed."""
    marks: list[tuple[int, str, int, int, str]] = []  # (wall ns, symbol, mark, index, mode)

    async with run.client("viewer", market_data=True) as watcher:
        await watcher.subscribe(b"mark.")

        async def collect() -> None:
            from cluster.protocol import IndexMark

            while True:
                for msg in await watcher.market_data():
                    if type(msg) is IndexMark:
                        marks.append((time.time_ns(), msg.symbol, msg.mark, msg.index, msg.mode))

        collector = asyncio.create_task(collect())
        try:
            return await _shock_and_watch(run, snap, exo_bps, audit_from, marks)
        finally:
            collector.cancel()


async def _shock_and_watch(run: Run, snap: dict, exo_bps: dict[str, int], audit_from: int,
                           marks: list) -> dict:
    traders = [n for n, a in run.topo.accounts.items() if "trade" in a.scopes]
    cancelled = 0
    for name in traders:  # every resting order goes: the book becomes the snapshot's, shifted
        async with run.client(name) as c:
            view = await c.open_orders()
            if view.orders:
                cancelled += len(view.orders)
                await c.cancel_all()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {s for _, s, *_ in marks} < set(snap["symbols"]):
        await asyncio.sleep(0.05)
    latest = {s: m for _, s, m, _, _ in marks}
    placed: dict[str, dict] = {}
    async with run.client("mm1") as bidder, run.client("mm2") as asker:
        for symbol, sym in sorted(snap["symbols"].items()):
            # the shocked reference as the simulator computes it, from the live mark now
            ref = latest[symbol] + latest[symbol] * exo_bps[symbol] // 10_000
            shift = ref - sym["mark"]
            count = {"bids": 0, "asks": 0, "dropped": 0}
            for side, levels, who in ((BUY, sym["bids"], bidder), (SELL, sym["asks"], asker)):
                for i, (price, qty) in enumerate(levels):
                    if i >= MAX_LEVELS or price + shift <= 0:
                        count["dropped"] += 1
                        continue
                    r = await who.place(symbol, side, qty, price + shift)
                    ok = type(r.event).__name__ != "OrderRejected"
                    count["bids" if side == BUY else "asks"] += ok
                    count["dropped"] += not ok
            placed[symbol] = {"live_mark_before": latest[symbol], "reference": ref,
                              "shift_ticks": shift, **count}
    t_shock = time.time_ns()
    send_shock(run, {s: bps * 100 for s, bps in exo_bps.items()})
    t_landed = 0
    log(f"shock sent: {exo_bps} bps; book placed {placed}")
    # until the liquidator is done: the shock visible, every liquidation ended, QUIET_S quiet
    start = time.monotonic()
    last_count, last_change = -1, time.monotonic()
    done = False
    while time.monotonic() - start < SETTLE_S:
        await asyncio.sleep(0.25)
        liqs = live_liquidations(read_jsonl(run.audit("liquidator"), audit_from))
        if not t_landed:
            t_landed = next((t for t, s, m, _, _ in marks if t > t_shock and abs(
                m - placed[s]["live_mark_before"]) * 10_000 > abs(exo_bps[s]) *
                placed[s]["live_mark_before"] // 2), 0)
        seen = bool(t_landed)
        if len(liqs) != last_count:
            last_count, last_change = len(liqs), time.monotonic()
        if seen and time.monotonic() - last_change >= QUIET_S and \
                all(liq["status"] != "active" for liq in liqs.values()):
            done = True
            break
    return {"t_shock_ns": t_shock, "t_landed_ns": t_landed,
            "shock_landed_after_ms": (t_landed - t_shock) // 1_000_000 if t_landed else None,
            "cancelled_orders": cancelled, "book": placed,
            "settled": done, "watched_s": round(time.monotonic() - start, 1),
            "marks": [list(m) for m in marks]}


# ------------------------------------------------------------------ reading both sides


def live_liquidations(records: list[dict]) -> dict[str, dict]:
    """The liquidator's audit as liquidations (by subject): key, trigger numbers, lots per step
    kind, the end's decision."""
    out: dict[str, dict] = {}
    for r in records:
        subject, rule, n = r.get("subject", ""), r.get("rule", ""), r.get("numbers", {})
        if rule == "liquidation.trigger":
            key = n["account"] if not n.get("isolated") else f"{n['account']}:{n['symbol']}"
            out[subject] = {"key": key, "ts_ns": r["ts_ns"], "mark": n.get("mark"),
                            "equity": n.get("equity"),
                            "maintenance_margin": n.get("maintenance_margin"),
                            "forced_fee": n.get("forced_fee"), "position": n.get("position"),
                            "symbol": n.get("symbol"), "status": "active",
                            "path": {"book": 0, "backstop": 0, "insurance": 0, "adl": 0}}
        elif subject in out:
            kind = rule.removeprefix("liquidation.")
            if kind == "end":
                out[subject]["status"] = r["decision"]
            elif kind in ("reduce", "backstop", "insurance", "adl") and r["decision"] == "done":
                out[subject]["path"]["book" if kind == "reduce" else kind] += abs(n.get("qty", 0))
    return out


def paused(records: list[dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for r in records:
        if r.get("rule") == "liquidation.paused":
            found.setdefault(r["subject"], []).append(r["numbers"].get("reason", ""))
    return found


def sim_liquidations(sim: dict) -> dict[str, dict]:
    out = {}
    for liq in sim["liquidations"]:
        lots = sum(abs(q) for q in liq["qty"].values())
        entry = out.setdefault(liq["key"], {"status": liq["status"], "round": liq["round_triggered"],
                                            "path": {"book": 0, "backstop": 0, "insurance": 0,
                                                     "adl": 0}})
        backstop = liq.get("backstop_qty", 0)  # (a result from before backstops were simulated)
        entry["path"]["book"] += lots - backstop - liq["insurance_qty"] - liq["adl_qty"]
        entry["path"]["backstop"] += backstop
        entry["path"]["insurance"] += liq["insurance_qty"]
        entry["path"]["adl"] += liq["adl_qty"]
        entry["status"] = liq["status"]
    return out


# ------------------------------------------------------------------ the comparison (pure)


class Rule:
    """The venue's trigger (nodes/liquidator/monitor.py, the simulator's and the liquidator's
    own) over the snapshot's accounts, at any marks."""

    def __init__(self, snap) -> None:
        from cluster import cascade as cz
        from nodes.liquidator.monitor import MaintenanceMonitor

        self.snap = snap
        self.specs = {s: cz.spec_of(s, sym) for s, sym in snap.symbols.items()}
        self.monitor = MaintenanceMonitor(self.specs)
        for name, a in snap.accounts.items():
            self.monitor.on_account(cz.Acct(name, a.balance, a.positions, a.isolated).risk())

    def holds(self, key: str) -> bool:
        account, _, symbol = key.partition(":")
        acct = self.snap.accounts.get(account)
        if acct is None:
            return False
        if symbol:
            return symbol in acct.isolated and bool(acct.positions.get(symbol, (0,))[0])
        return any(q for s, (q, _) in acct.positions.items() if s not in acct.isolated)

    def breached(self, key: str, marks: dict[str, int]) -> bool:
        from cluster.rules.margin import triggered

        for s, m in marks.items():
            self.monitor.on_mark(s, m)
        account, _, symbol = key.partition(":")
        equity, mm, fee = (self.monitor.assess_isolated(account, symbol) if symbol
                           else self.monitor.assess(account))
        return triggered(equity, mm, fee)

    def trigger(self, key: str) -> dict[str, int]:
        """Per symbol the key holds: the mark (whole ticks, rounded against the account) at which
        it is liquidated, the other symbols held at the snapshot's marks."""
        from cluster import cascade as cz
        from cluster.rules.prices import round_price

        account, _, only = key.partition(":")
        acct = self.snap.accounts.get(account)
        out = {}
        for s, (q, _) in sorted((acct.positions if acct else {}).items()):
            if q and ((s == only) if only else (s not in acct.isolated)):
                price = cz.trigger_price(self.snap, self.specs, acct, s)
                if price is not None:
                    out[s] = round_price(price, 1 if q > 0 else -1)
        return out


def mark_states(marks: list, start: dict[str, int], t_from: int) -> list[tuple[int, dict]]:
    """The live marks from `t_from` on as successive states (every symbol's latest), starting
    from `start`."""
    state = dict(start)
    out = []
    for t, s, m, *_ in marks:
        if t < t_from:
            state[s] = m
            continue
        state[s] = m
        out.append((t, dict(state)))
    return out


def fmt_pct(price: int, base: int) -> str:
    return f"{float(Fraction(price - base, base) * 100):+.2f}%"


class Marks:
    """Both sides' marks, as the causes quote them."""

    def __init__(self, snap, sim: dict, marks: list, t_snapshot: int, t_shock: int,
                 t_landed: int, at_shock: dict[str, int]) -> None:
        self.snapshot = {s: sym.mark for s, sym in snap.symbols.items()}
        self.sim = [{s: r[s] for s in self.snapshot} for r in sim["marks"]]
        self.exogenous = self.sim[0] if self.sim else dict(self.snapshot)
        self.sim_lowest = {s: min(st[s] for st in self.sim) if self.sim else self.snapshot[s]
                           for s in self.snapshot}
        self.at_shock = {s: at_shock.get(s, m) for s, m in self.snapshot.items()}
        states = mark_states(marks, self.snapshot, t_snapshot)
        self.after_shock = [st for t, st in states if t >= t_shock]  # the rule is judged on all
        # the range quoted: each symbol's marks from its first one past half the shock
        self.lowest, self.highest = {}, {}
        for s, m0 in self.snapshot.items():
            half = abs(self.exogenous[s] - m0) // 2
            landed = [m for t, sym, m, *_ in marks if sym == s and t >= (t_landed or t_shock)]
            first = next((i for i, m in enumerate(landed) if abs(m - self.at_shock[s]) > half), None)
            seen = landed[first:] if first is not None else []
            self.lowest[s] = min(seen, default=None)
            self.highest[s] = max(seen, default=None)

    def drift(self) -> str:
        return ", ".join(f"{s} {self.at_shock[s]} ({fmt_pct(self.at_shock[s], m)} from the "
                         f"snapshot's {m})" for s, m in sorted(self.snapshot.items()))

    def live_range(self) -> str:
        return ", ".join(f"{s} {self.lowest[s]}..{self.highest[s]}" for s in sorted(self.snapshot)
                         if self.lowest[s] is not None)

    def to_dict(self) -> dict:
        return {"snapshot": self.snapshot, "simulated_exogenous": self.exogenous,
                "simulated_lowest": self.sim_lowest, "live_at_shock": self.at_shock,
                "live_lowest_after_shock": self.lowest, "live_highest_after_shock": self.highest,
                "live_marks_after_shock": len(self.after_shock)}


def compare(snap, sim: dict, live: dict[str, dict], pauses: dict[str, list[str]],
            marks: Marks, t_shock: int) -> dict:
    """Per key: simulated, live, both; for every difference the cause with its numbers."""
    rule = Rule(snap)
    simulated = sim_liquidations(sim)
    live_by_key: dict[str, list[dict]] = {}
    for liq in sorted(live.values(), key=lambda x: x["ts_ns"]):
        live_by_key.setdefault(liq["key"], []).append(liq)
    rows = []
    for key in sorted(set(simulated) | set(live_by_key)):
        in_sim, in_live = key in simulated, key in live_by_key
        row = {"key": key, "account": key.split(":")[0], "simulated": in_sim, "live": in_live,
               "trigger_marks": {s: {"ticks": p, "from_snapshot_mark":
                                     fmt_pct(p, marks.snapshot[s])}
                                 for s, p in rule.trigger(key).items()}}
        if in_sim:
            row["sim"] = simulated[key]
        if in_live:
            row["live_liquidations"] = [{k: v for k, v in liq.items() if k != "key"}
                                        for liq in live_by_key[key]]
        if in_sim and in_live:
            row["cause"], row["why"] = None, ""
            row["path_note"] = path_note(simulated[key], live_by_key[key])
        else:
            row["cause"], row["why"] = cause(key, rule, in_sim, live_by_key.get(key, []),
                                             pauses, marks, t_shock)
        rows.append(row)
    differences = [r for r in rows if r["simulated"] != r["live"]]
    return {
        "keys_simulated": sorted(simulated), "keys_live": sorted(live_by_key),
        "accounts_simulated": sorted({r["account"] for r in rows if r["simulated"]}),
        "accounts_live": sorted({r["account"] for r in rows if r["live"]}),
        "matched_keys": sorted(k for k in simulated if k in live_by_key),
        "differences": [{"key": r["key"], "side": "simulated only" if r["simulated"]
                         else "live only", "cause": r["cause"], "why": r["why"]}
                        for r in differences],
        "unexplained": [r["key"] for r in differences if r["cause"] == "unexplained"],
        "marks": marks.to_dict(),
        "rows": rows,
    }


def path_note(sim: dict, lives: list[dict]) -> str:
    """How the two closed the same key, when they differ (not a difference in who)."""
    live = {"book": 0, "backstop": 0, "insurance": 0, "adl": 0}
    for liq in lives:
        for k, v in liq["path"].items():
            live[k] += v
    simulated = {"backstop": 0, **sim["path"]}
    if all(simulated[k] == live[k] for k in live):
        return "same path"
    parts = [f"lots: simulated book {simulated['book']} / backstop {simulated['backstop']} / "
             f"fund {simulated['insurance']} / ADL {simulated['adl']}; live book {live['book']} / "
             f"backstop {live['backstop']} / fund {live['insurance']} / ADL {live['adl']}"]
    if simulated["backstop"] != live["backstop"]:
        parts.append("the backstop took another share: its margin carried a different amount "
                     "(its equity and the mark when the step ran differ between the two)")
    if sim["path"]["book"] != live["book"]:
        parts.append("the book walked differently: the live index moved after the book was "
                     "placed, so its levels stood at other distances from the live mark and "
                     "bankruptcy price than in the simulation")
    return "; ".join(parts)


def cause(key: str, rule: Rule, in_sim: bool, lives: list[dict], pauses: dict[str, list[str]],
          marks: Marks, t_shock: int) -> tuple[str, str]:
    """Why one side liquidated `key` and the other did not: the snapshot's own state judged by
    the venue's trigger at the simulator's marks and at every live mark after the shock."""
    trig = rule.trigger(key)
    trig_text = ", ".join(f"{s} {p} ({fmt_pct(p, marks.snapshot[s])})"
                          for s, p in trig.items()) or "no single-price trigger"
    if not rule.holds(key):
        return "not_in_snapshot", (f"{key} held no such position in the snapshot: opened or "
                                   "switched after it")
    at_exo = rule.breached(key, marks.exogenous)
    at_sim = any(rule.breached(key, st) for st in marks.sim)
    at_live = any(rule.breached(key, st) for st in marks.after_shock)
    if in_sim:
        if not at_exo and at_sim:
            return "simulator_impact", (
                f"trigger {trig_text}; the exogenous move alone ({marks.exogenous}) leaves it "
                f"above, the simulator's own walks took its marks to {marks.sim_lowest}; the "
                f"live mark follows the index (a fill moves only the last price): live "
                f"{marks.live_range()}")
        if at_exo and not at_live:
            return "live_index_above_shock", (
                f"trigger {trig_text}; breached at the simulated marks {marks.exogenous}, at "
                f"none of the {len(marks.after_shock)} live marks after the shock (live "
                f"{marks.live_range()}); live marks at the shock: {marks.drift()}")
        if pauses.get(key):
            return "liquidator_paused", f"the live liquidator held it: {sorted(set(pauses[key]))}"
        return "unexplained", (f"trigger {trig_text}; breached in the simulation and at live "
                               f"marks ({marks.live_range()}), yet never started live")
    first = lives[0]
    if first["ts_ns"] < t_shock:
        return "market_before_shock", (
            f"liquidated {(t_shock - first['ts_ns']) / 1e9:.2f} s before the shock at mark "
            f"{first['mark']} ({fmt_pct(first['mark'], marks.snapshot[first['symbol']])} from "
            f"the snapshot's), by the market's own walk since the snapshot (trigger {trig_text})")
    if at_live and not at_sim:
        return "live_index_below_shock", (
            f"trigger {trig_text}; the simulated marks never reach it (lowest "
            f"{marks.sim_lowest}); live marks at the shock: {marks.drift()}, then "
            f"{marks.live_range()}: the live index walked below the shocked level")
    snap_pos = {s: q for s, (q, _) in rule.snap.accounts[key.split(":")[0]].positions.items()}
    if first["position"] != snap_pos.get(first["symbol"]):
        return "state_changed", (f"its {first['symbol']} position was {first['position']} at "
                                 f"the live trigger, {snap_pos.get(first['symbol'])} in the "
                                 "snapshot")
    return "unexplained", (f"trigger {trig_text}; live trigger at mark {first['mark']} (equity "
                           f"{first['equity']} <= {first['maintenance_margin']} + "
                           f"{first['forced_fee']}); the snapshot's state is "
                           f"{'breached' if at_live else 'not breached'} at the live marks and "
                           f"{'breached' if at_sim else 'not breached'} at the simulated ones")


# ------------------------------------------------------------------ report


def render(report: dict) -> str:
    c = report["comparison"]
    lines = [
        "# Cascade simulator against a live crash (#24)", "",
        f"Load: {report['load'].get('requests', '?')} requests in {report['load']['seconds']} s "
        f"({report['load']['users']} locust users), {report['load_liquidations']} liquidations "
        f"during it; then {len(report['levered'])} levered accounts on top (perf/cascade_live.py "
        "LEVERED). Shock: " + ", ".join(f"{s} {b:+d} bps" for s, b in report["exogenous_bps"].items())
        + f" (`perpx cascade --shock {report['shock']} --close venue`, calm regime).", "",
        f"**Simulated {len(c['keys_simulated'])} liquidations of {len(c['accounts_simulated'])} "
        f"accounts, live {len(c['keys_live'])} of {len(c['accounts_live'])}; "
        f"{len(c['matched_keys'])} matched, {len(c['differences'])} differences, "
        f"{len(c['unexplained'])} unexplained.** Verdict: {report['verdict']}.", "",
        "| key | trigger (from the snapshot mark) | simulated | live | cause / how |",
        "|---|---|---|---|---|"]
    for r in c["rows"]:
        trig = ", ".join(f"{s} {t['ticks']} ({t['from_snapshot_mark']})"
                         for s, t in r["trigger_marks"].items()) or "-"
        sim = (f"{r['sim']['status']}, book {r['sim']['path']['book']} / backstop "
               f"{r['sim']['path'].get('backstop', 0)} / fund {r['sim']['path']['insurance']} / "
               f"ADL {r['sim']['path']['adl']}") \
            if r["simulated"] else "-"
        live = "; ".join(
            f"{liq['status']} at mark {liq['mark']}, book {liq['path']['book']} / backstop "
            f"{liq['path']['backstop']} / fund {liq['path']['insurance']} / ADL "
            f"{liq['path']['adl']}" for liq in r.get("live_liquidations", [])) or "-"
        note = r["cause"] and f"**{r['cause']}**: {r['why']}" or r.get("path_note", "")
        lines.append(f"| {r['key']} | {trig} | {sim} | {live} | {note} |")
    m = c["marks"]
    lines += ["", "Marks (ticks): snapshot " + json.dumps(m["snapshot"]) + "; simulated after "
              "the exogenous move " + json.dumps(m["simulated_exogenous"]) + ", lowest "
              + json.dumps(m["simulated_lowest"]) + "; live when the shock was sent "
              + json.dumps(m["live_at_shock"]) + ", after it landed ("
              + f"{report['live']['shock_landed_after_ms']} ms) "
              + ", ".join(f"{s} {m['live_lowest_after_shock'][s]}..{m['live_highest_after_shock'][s]}"
                          for s in m["snapshot"]) + ".", "",
              f"Insurance fund: snapshot {report['fund']['snapshot']} atoms, live at the snapshot "
              f"{report['fund']['live_at_snapshot']}. Funding settlements between the snapshot and "
              f"the end: {report['funding_records']}. Orders cancelled for the book swap: "
              f"{report['live']['cancelled_orders']}; book placed: {json.dumps(report['live']['book'])}. "
              f"Liquidator settled: {report['live']['settled']} after {report['live']['watched_s']} s. "
              f"Run time {report['elapsed_s']} s.", ""]
    return "\n".join(lines)


def main() -> int:
    from cluster import cascade as cz
    from cluster.runstate import read_status

    seconds = int(os.environ.get("LOAD_SECONDS", "30"))
    shock = os.environ.get("CASCADE_SHOCK", "-0.08")
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    snap_path, sim_path = RESULTS / "cascade-live.snapshot.json", RESULTS / "cascade-live.sim.json"
    run = Run()
    report: dict = {"shock": shock}
    try:
        run.up()
        log(f"cluster up in {run.run_dir}; {seconds} s of locust load")
        report["load"] = run_load(run, seconds)
        report["load_idle"] = wait_liquidator_idle(run, 2.0, 20.0)
        report["load_liquidations"] = len(live_liquidations(read_jsonl(run.audit("liquidator"))))
        report["levered"] = asyncio.run(open_levered(run))
        wait_liquidator_idle(run, 1.0, 10.0)
        audit_from, risk_from = size(run.audit("liquidator")), size(run.audit("risk"))
        fund_live = ((read_status(run.run_dir) or {}).get("nodes", {}).get("risk", {})
                     .get("stats", {}).get("insurance_fund_atoms"))
        t_snapshot = time.time_ns()
        proc = run.perpx("cascade", "snapshot", "--out", str(snap_path), "--json")
        if proc.returncode:
            raise RuntimeError(f"snapshot: {proc.stdout} {proc.stderr}")
        proc = run.perpx("cascade", "--snapshot", str(snap_path), "--shock", shock, "--close",
                         "venue", "--out", str(sim_path), "--json")
        if proc.returncode:
            raise RuntimeError(f"cascade: {proc.stdout} {proc.stderr}")
        sim = json.loads(sim_path.read_text())
        report["exogenous_bps"] = {s: a["exogenous_bps"]
                                   for s, a in sim["summary"]["amplification"].items()}
        snap_raw = json.loads(snap_path.read_text())
        log(f"simulated: {sorted(sim_liquidations(sim))}")
        live_run = asyncio.run(live_shock(run, snap_raw, report["exogenous_bps"], audit_from))
        records = read_jsonl(run.audit("liquidator"), audit_from)
        funding = [r for r in read_jsonl(run.audit("risk"), risk_from) if "funding" in r["rule"]]
    finally:
        run.down()
    snap = cz.decode_snapshot(snap_path.read_bytes())
    live = live_liquidations(records)
    marks = Marks(snap, sim, live_run["marks"], t_snapshot, live_run["t_shock_ns"],
                  live_run["t_landed_ns"], {s: b["live_mark_before"]
                                            for s, b in live_run["book"].items()})
    comparison = compare(snap, sim, live, paused(records), marks, live_run["t_shock_ns"])
    live_run["marks"] = [m[:3] for m in live_run["marks"]]  # (wall ns, symbol, mark)
    live_run["liquidator_records"] = records
    ok = live_run["settled"] and not comparison["unexplained"] and \
        comparison["marks"]["live_marks_after_shock"] > 0
    report.update({
        "verdict": ("match" if not comparison["differences"] else "every difference explained")
        if ok else ("unexplained differences" if comparison["unexplained"]
                    else "the live run did not settle"),
        "fund": {"snapshot": snap.insurance_fund, "live_at_snapshot": fund_live},
        "funding_records": len(funding), "live": live_run,
        "sim_summary": {k: sim["summary"][k] for k in (
            "liquidations", "accounts_liquidated", "rounds", "bad_debt", "fund_drawdown",
            "adl_volume", "amplification")},
        "comparison": comparison, "elapsed_s": round(time.monotonic() - started, 1)})
    (RESULTS / "cascade-live.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    text = render(report)
    (RESULTS / "cascade-live.md").write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
