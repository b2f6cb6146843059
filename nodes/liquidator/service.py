"""Liquidator node shell: account states and step results from risk, marks from the oracle, the
book from matching; liquidation steps out to risk, alerts to the gateway, every decision into the
audit journal."""

from __future__ import annotations

from cluster.config import Topology
from cluster.feed import CoreFeed
from cluster.protocol import AccountRiskRequest, ClockTick
from cluster.stats import count
from cluster.transport import NodeShell
from cluster.rules.units import rate_to_ppm
from nodes.liquidator.engine import LiquidationEngine, LiquidatorConf


def build(shell: NodeShell, topo: Topology):
    conf = shell.conf
    engine = LiquidationEngine(topo.symbols, LiquidatorConf(
        insurance_floor=topo.atoms(conf.insurance_floor, "insurance_floor"),
        position_share_ppm=rate_to_ppm(conf.chunk_position_share, "chunk_position_share"),
        depth_share_ppm=rate_to_ppm(conf.chunk_depth_share, "chunk_depth_share"),
        max_mark_age_ns=conf.max_mark_age_ms * 1_000_000,
        pause_when_degraded=conf.pause_when_degraded,
    ), id_base=shell.now_ns() // 1_000_000 * 1_000)  # ids stay unique across restarts
    shell.peer("risk")
    shell.peer("gateway")
    shell.send("risk", AccountRiskRequest())  # at a start or a restart: who to watch, from risk

    def on_effect(dest: str, msg) -> None:
        if dest != "audit":
            return
        # for /metrics, as the journal has them: steps carried out by kind, and liquidations
        # started and ended by outcome
        step = msg.rule.removeprefix("liquidation.")
        if msg.decision == "done":
            count(shell.stats, "liquidation_steps", step)
        elif step == "trigger":
            count(shell.stats, "liquidations", "started")
        elif step == "end":
            count(shell.stats, "liquidations", msg.decision)
        if msg.rule in ("liquidation.trigger", "liquidation.end", "liquidation.paused"):
            shell.log.warning(msg.rule, subject=msg.subject, decision=msg.decision,
                              **{k: v for k, v in msg.numbers.items() if k != "step"})

    feed = CoreFeed(shell, engine, "liquidator", on_effect=on_effect)
    shell.bind_inbox(feed.on_messages)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark."], feed.on_messages)
    shell.subscribe(topo.nodes["matching"].pub, [b"md."], feed.on_messages)
    shell.every(conf.check_interval_ms, lambda: feed.on_messages([ClockTick()]))
    return None
