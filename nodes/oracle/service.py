"""Oracle node shell: spot ticks in from feeds, trades/deltas in from matching; index+mark, funding
rates, regimes and mode changes out on the oracle PUB; mode changes into the audit journal."""

from __future__ import annotations

import os

import msgspec

from cluster.audit import Explanation
from cluster.config import Topology
from cluster.protocol import FundingRate, IndexMark, OracleMode, OracleSource, Regime, SpotTick
from cluster.transport import NodeShell
from nodes.oracle.index import Oracle, OracleConf

PUBLISH_MS = 100
SNAPSHOT_MS = 1_000  # the state a restart must not lose is saved this often (oracle.snapshot())
PREFIXES = {IndexMark: b"mark.", FundingRate: b"funding.", Regime: b"regime.", OracleMode: b"oracle.",
            OracleSource: b"oracle."}


def build(shell: NodeShell, topo: Topology):
    oracle = Oracle(topo.symbols, OracleConf.from_nodes(shell.conf, topo.nodes["feeds"]),
                    restarted=shell.restarted)
    saved = os.path.join(topo.run_dir, "state", "oracle.snapshot")
    if shell.restarted:  # a first start begins afresh; a restart resumes its funding interval
        try:
            with open(saved, "rb") as f:
                oracle.restore(f.read())
            shell.log.info("oracle_state_restored", path=saved)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # lost or unreadable: catch up
            shell.log.warning("oracle_state_not_restored", path=saved, error=str(exc))
    shell.bind_pub(shell.conf.pub)
    # Funding rates go to risk on its inbox, not only on the PUB: a PUSH queues what it sends
    # until the connection is up, and the link is numbered (cluster/links.py), so a rate a
    # restarted oracle catches up is not lost while risk's subscription reconnects (a PUB drops
    # whatever it sends before a subscriber has joined).
    shell.peer("risk")

    def save() -> None:
        """Written whole to a temporary file and renamed over the old one, so a kill mid-write
        leaves the previous snapshot, never half of one."""
        try:
            os.makedirs(os.path.dirname(saved), exist_ok=True)
            with open(saved + ".tmp", "wb") as f:
                f.write(oracle.snapshot())
            os.replace(saved + ".tmp", saved)
        except OSError as exc:
            shell.log.warning("oracle_state_not_saved", path=saved, error=str(exc))

    def on_spot(messages: list) -> None:
        now = shell.now_ns()
        for msg in messages:
            if type(msg) is SpotTick:
                oracle.on_spot(msg, now)

    def on_md(messages: list) -> None:
        for msg in messages:
            oracle.on_market_data(msg)

    def publish() -> None:
        for msg in oracle.publish(shell.now_ns()):
            t = type(msg)
            shell.publish(PREFIXES[t] + msg.symbol.encode(), msg)
            if t is FundingRate:
                shell.send("risk", msg)
            if t is IndexMark or (t is Regime and not msg.changed):  # a repeat: nothing new
                continue
            shell.log.info(t.__name__, **msgspec.structs.asdict(msg))
            if t is OracleMode:
                shell.audit.record(Explanation(
                    ts_ns=msg.ts_ns, node="oracle", rule=f"oracle.{msg.reason}",
                    subject=msg.symbol, decision=f"{msg.previous}->{msg.mode}", numbers=msg.numbers))
            elif t is OracleSource:
                shell.audit.record(Explanation(
                    ts_ns=msg.ts_ns, node="oracle", rule=f"oracle.source_{msg.status}",
                    subject=msg.symbol, decision=f"{msg.venue}: {msg.previous}->{msg.status}",
                    numbers={"venue": msg.venue, "age_ms": msg.age_ms,
                             "deviation_ppm": msg.deviation_ppm}))
            elif t is Regime:
                shell.audit.record(Explanation(
                    ts_ns=msg.ts_ns, node="oracle", rule="oracle.regime", subject=msg.symbol,
                    decision=msg.regime, numbers={"realized_vol_ppm": msg.realized_vol_ppm,
                                                  "threshold_ppm": msg.threshold_ppm,
                                                  "window_s": msg.window_s}))

    shell.subscribe(topo.nodes["feeds"].pub, [b"spot."], on_spot)
    shell.subscribe(topo.nodes["matching"].pub, [b"md."], on_md)
    shell.every(PUBLISH_MS, publish)
    shell.every(SNAPSHOT_MS, save)
    return None
