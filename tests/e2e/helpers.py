from __future__ import annotations

import asyncio
import json
import time

from cluster.client import Client
from cluster.protocol import IndexMark


async def wait_mark(client: Client, symbol: str, timeout: float = 10.0) -> IndexMark:
    """The next mark the oracle publishes for `symbol` (via the gateway's market data)."""
    return await client.next_mark(symbol, timeout)


async def next_report(client: Client, kind: type, timeout: float = 5.0):
    """The next execution report of type `kind` for this client's account (others are skipped)."""

    async def find():
        while True:
            report = await client.reports.get()
            if type(report.event) is kind:
                return report.event

    return await asyncio.wait_for(find(), timeout)


def wait_netsim_applied(cluster, table: dict, node: str, timeout: float = 5.0) -> None:
    """Poll `node`'s log until it has applied netsim table `table["version"]` or a later one,
    instead of sleeping through a republish period. A node logs `netsim_link` with the table's
    version for each of its own links (the sender's side) that the table changed."""
    version = table["version"]
    if not poll(lambda: any(r.get("version", -1) >= version
                            for r in log_events(cluster, node, "netsim_link")), timeout, 0.05):
        raise AssertionError(f"{node} had not applied netsim table v{version} after {timeout} s")


def poll(check, timeout: float, step: float = 0.1):
    """check() until it returns something true or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def final_hash(run_dir, node: str) -> str:
    """The state hash `node` logged when it last stopped (`<node>_final_state`): a node the
    supervisor restarted may have logged one before, and the journal replays its whole life."""
    found = None
    for line in (run_dir / "log" / f"{node}.log").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == f"{node}_final_state":
            found = rec["state_hash"]
    if found is None:
        raise AssertionError(f"no {node}_final_state in {node}.log")
    return found


def log_events(cluster, node: str, *events: str) -> list[dict]:
    """`node`'s structured log records whose event is one of `events`."""
    path = cluster.run_dir / "log" / f"{node}.log"
    lines = path.read_text().splitlines() if path.exists() else []
    wanted = {f'"{e}"' for e in events}
    out = []
    for line in lines:
        if any(w in line for w in wanted):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") in events:
                out.append(record)
    return out


def shock(cluster, symbol: str, ppm: int, timeout: float = 5.0) -> None:
    """Move every simulated venue's price of `symbol` by `ppm` at once, and return only once the
    feeds process has logged applying it. The control socket is a PUSH with no answer, so a
    frame lost before its connection was up would otherwise show as a venue that ignored a
    crash; it is sent again once (never twice applied: the second send happens only when the
    first was not logged in `timeout`)."""
    from cluster import curve
    from cluster.protocol import FeedControl

    before = len(log_events(cluster, "feeds", "feed_shock"))
    for _ in range(2):
        curve.push_to_inbox(cluster.topo, "feeds", [
            FeedControl(action="shock", symbol=symbol, ppm=ppm)])
        if poll(lambda: len(log_events(cluster, "feeds", "feed_shock")) > before, timeout, 0.02):
            return
    raise AssertionError(f"the feeds process never logged the {ppm} ppm shock of {symbol}")


class HeardFills:
    """The fills some clients heard, as (account, trade id), drained from their report queues:
    what a test compares with the venue (nothing heard twice, nothing missing)."""

    def __init__(self, *clients: Client) -> None:
        self.clients = clients
        self.heard: list[tuple[str, int]] = []

    def collect(self) -> None:
        for client in self.clients:
            while not client.reports.empty():
                event = client.reports.get_nowait().event
                if type(event).__name__ == "Fill":
                    self.heard.append((event.account, event.trade_id))

    async def until(self, trades: int, timeout: float = 10.0) -> None:
        """Until both sides of `trades` trades are heard (each side by its own client)."""
        deadline = time.monotonic() + timeout
        while len(set(self.heard)) < 2 * trades and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.collect()


async def quote_and_cross(maker: Client, taker: Client, symbol: str) -> int:
    """Five asks and five bids of 3 lots, 10 ticks apart around the mark, and two takers that
    cross some of them: three trades (ask1 and ask2 by the buy, bid1 by the sell). The mark."""
    mark = (await maker.next_mark(symbol, 10.0)).mark
    for i in range(1, 6):
        await maker.place(symbol, -1, 3, mark + 10 * i, client_order_id=f"ask{i}")
        await maker.place(symbol, 1, 3, mark - 10 * i, client_order_id=f"bid{i}")
    await taker.place(symbol, 1, 4, mark + 20, tif="IOC")
    await taker.place(symbol, -1, 2, mark - 10, tif="IOC")
    return mark
