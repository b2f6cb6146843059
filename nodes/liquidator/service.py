"""Liquidator node shell: account states from risk, marks from the oracle; alerts out to the
gateway (published to clients) and into the audit journal."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.config import Topology
from cluster.protocol import AccountRisk, IndexMark
from cluster.transport import NodeShell
from nodes.liquidator.monitor import MaintenanceMonitor


def build(shell: NodeShell, topo: Topology):
    monitor = MaintenanceMonitor(topo.symbols)
    shell.peer("gateway")

    def on_messages(messages: list) -> None:
        for msg in messages:
            t = type(msg)
            if t is AccountRisk:
                monitor.on_account(msg)
            elif t is IndexMark:
                monitor.on_mark(msg.symbol, msg.mark)

    def check() -> None:
        for alert in monitor.check(shell.now_ns()):
            shell.log.warning("below_maintenance", account=alert.account, equity=alert.equity,
                              maintenance_margin=alert.maintenance_margin)
            shell.audit.record(Explanation(
                ts_ns=alert.ts_ns, node="liquidator", rule="liquidator.maintenance",
                subject=alert.account, decision="below_maintenance",
                numbers={"equity": alert.equity, "maintenance_margin": alert.maintenance_margin,
                         "forced_fee": alert.forced_fee,
                         **{f"mark.{s}": m for s, m in alert.marks.items()}}))
            shell.send("gateway", alert)

    shell.bind_inbox(on_messages)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark."], on_messages)
    shell.every(shell.conf.check_interval_ms, check)
    return None
