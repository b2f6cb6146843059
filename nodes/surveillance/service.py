"""Surveillance node shell: the core fed from matching's private engine feed, risk's account state
and settings changes, the oracle's marks / funding / regime and the books' snapshots; every
RANK_MS it ranks and writes what a person reads with `perpx surveillance top|explain`.

Advisory by construction: the node binds an inbox and subscribes; it connects to no other node's
inbox (it has no `peer`), so nothing it computes can reach a limit, a margin rule or an order. Its
output is files under run_dir/surveillance: alerts.jsonl (appended, one alert a line) and
state.json (the latest queue and every key's features, replaced atomically).

Its own state survives a restart: every SNAPSHOT_MS, and as it stops, the core's state goes to
run_dir/surveillance/snapshot.msgpack (nodes/surveillance/snapshot.py: written whole or not at
all); a node that starts with one restores it, the buckets that left the window meanwhile dropped.
A snapshot it cannot read is logged with its reason and the node starts empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster.config import Topology
from cluster.protocol import BookLevels
from cluster.transport import NodeShell
from nodes.surveillance.core import SurveillanceCore
from nodes.surveillance.feed import TOPIC
from nodes.surveillance.snapshot import FILE, SnapshotError, dump, load, write_atomic

RANK_MS = 500  # alerts within 5 s of their event (RTS 7): ranking every half second
QUEUE_KEEP = 200
SNAPSHOT_MS = 5_000


def out_dir(topo: Topology) -> Path:
    return Path(topo.run_dir) / "surveillance"


def run_token(topo: Topology) -> str:
    """This run of the venue: the supervisor copies the topology into the journal directory when
    a run starts afresh (and keeps it on --resume), so the copy's inode and time name the run."""
    try:
        st = (Path(topo.run_dir) / "journal" / "topology.toml").stat()
    except OSError:
        return ""
    return f"{st.st_ino}:{st.st_mtime_ns}"


def restore(shell: NodeShell, topo: Topology, path: Path, run: str) -> SurveillanceCore:
    """The core from the snapshot at `path`, else (none, unreadable or another run's: logged) an
    empty one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SurveillanceCore(topo.symbols)
    now = shell.now_ns()
    try:
        core = load(raw, topo.symbols, now, run)
    except SnapshotError as exc:
        shell.log.warning("surveillance_snapshot_refused", reason=exc.reason, detail=exc.detail,
                          path=str(path), bytes=len(raw))
        return SurveillanceCore(topo.symbols)
    f = core.features
    shell.log.info("surveillance_restored", keys=len(f.keys), open_orders=len(f.open),
                   buckets=sum(len(c.buckets) for c in f.keys.values()), events=f.events,
                   age_ms=(now - f.last_event_ns) // 1_000_000 if f.last_event_ns else None,
                   state_hash=core.state_hash())
    return core


def build(shell: NodeShell, topo: Topology):
    where = out_dir(topo)
    where.mkdir(parents=True, exist_ok=True)
    snapshot_path = where / FILE
    run = run_token(topo)
    core = restore(shell, topo, snapshot_path, run)
    alerts_file = open(where / "alerts.jsonl", "a", encoding="utf-8")

    def on_messages(messages: list) -> None:
        now = shell.now_ns()
        for msg in messages:
            try:
                core.handle(msg, now)
            except Exception as exc:  # a node never dies on a message
                shell.failed("surveillance_failed", type(msg).__name__, exc)

    def on_book(messages: list) -> None:
        """Market data: only the books' snapshots (the deltas come on the private feed)."""
        on_messages([m for m in messages if type(m) is BookLevels])

    def rank() -> None:
        now = shell.now_ns()
        alerts = core.tick(now)
        for alert in alerts:
            alerts_file.write(json.dumps(alert, separators=(",", ":")) + "\n")
            shell.log.info("surveillance_alert", kind=alert["kind"], account=alert["account"],
                           symbol=alert["symbol"], score=alert["score"],
                           latency_ms=(now - alert["event_ns"]) // 1_000_000)
        if alerts:
            alerts_file.flush()
        state = {
            "ts_ns": now, "events": core.features.events, "alerts": core.alerts,
            "engine_batches": core.features.engine_batches,
            "state_hash": core.state_hash(), "queue": core.queue[:QUEUE_KEEP],
            "features": [{"account": a, "symbol": s, "values": v}
                         for (a, s), v in core.features.values(now).items()],
            "market": core.features.market,
        }
        tmp = where / "state.json.tmp"
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        os.replace(tmp, where / "state.json")
        shell.stats["alerts"] = core.alerts

    shell.bind_inbox(on_messages)  # risk: AccountRisk and settings Notices
    shell.subscribe(topo.nodes["matching"].private, [TOPIC], on_messages)
    shell.subscribe(topo.nodes["matching"].pub, [b"md."], on_book)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark.", b"funding.", b"regime."], on_messages)
    def save() -> None:
        try:
            write_atomic(snapshot_path, dump(core, run))
        except OSError as exc:  # a full disk: the node goes on ranking; the last snapshot stays
            shell.failed("surveillance_snapshot_failed", str(snapshot_path), exc)

    shell.every(RANK_MS, rank)
    shell.every(SNAPSHOT_MS, save)

    def on_stop() -> None:
        save()
        alerts_file.close()
        shell.log.info("surveillance_final_state", state_hash=core.state_hash(),
                       events=core.features.events, alerts=core.alerts)

    return on_stop
