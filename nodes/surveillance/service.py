"""Surveillance node shell: the core fed from matching's private engine feed, risk's account state
and settings changes, the oracle's marks / funding / regime and the books' snapshots; every
RANK_MS it ranks and writes what a person reads with `perpx surveillance top|explain`.

Advisory by construction: the node binds an inbox and subscribes; it connects to no other node's
inbox (it has no `peer`), so nothing it computes can reach a limit, a margin rule or an order. Its
output is files under run_dir/surveillance: alerts.jsonl (appended, one alert a line) and
state.json (the latest queue and every key's features, replaced atomically).
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

RANK_MS = 500  # alerts within 5 s of their event (RTS 7): ranking every half second
QUEUE_KEEP = 200


def out_dir(topo: Topology) -> Path:
    return Path(topo.run_dir) / "surveillance"


def build(shell: NodeShell, topo: Topology):
    core = SurveillanceCore(topo.symbols)
    where = out_dir(topo)
    where.mkdir(parents=True, exist_ok=True)
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
    shell.every(RANK_MS, rank)

    def on_stop() -> None:
        alerts_file.close()
        shell.log.info("surveillance_final_state", state_hash=core.state_hash(),
                       events=core.features.events, alerts=core.alerts)

    return on_stop
