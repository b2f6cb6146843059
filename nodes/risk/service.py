"""Risk node shell: client requests in from the gateway, engine events in from matching, marks from
the oracle; checked orders out to matching, reports out to the gateway, account state out to the
liquidator, explanations to the audit journal."""

from __future__ import annotations

from cluster.config import Topology
from cluster.protocol import Error, Ping, Pong, Reply, Routed
from cluster.transport import NodeShell
from nodes.risk.ledger import RiskEngine

MARK_CHECK_MS = 100  # how often the marks' ages are looked at with no order to look at them


def build(shell: NodeShell, topo: Topology):
    engine = RiskEngine(topo.symbols, {a.name: a.deposit for a in topo.accounts.values()},
                        max_open_orders=shell.conf.max_open_orders,
                        insurance_fund=topo.atoms(shell.conf.insurance_fund, "insurance_fund"),
                        backstops=topo.nodes["liquidator"].backstop_accounts,
                        max_mark_age_ns=shell.conf.max_mark_age_ms * 1_000_000)
    engine.funding_clock.begin({name: spec.funding_interval_s * 1_000_000_000
                                for name, spec in engine.specs.items()}, shell.now_ns())
    for peer in ("matching", "gateway", "liquidator"):
        shell.peer(peer)
    send = shell.send
    record = shell.audit.record
    now_ns = shell.now_ns

    def failed(msg, exc: Exception) -> None:
        """The engine raised on a message (a bug): log and count it; a client request gets an
        internal_error answer, so that it is not left waiting."""
        shell.failed("message_failed", type(msg).__name__, exc)
        if type(msg) is Routed:
            send("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="internal_error", detail={"error": type(exc).__name__})))

    def on_messages(messages: list) -> None:
        now = now_ns()
        for msg in messages:
            t = type(msg)
            if t is Routed and type(msg.body) is Ping:
                body = msg.body
                hops = body.hops + [("risk", shell.mono_ns())]
                send("matching", Routed(ref=msg.ref, account=msg.account,
                                        body=Ping(req_id=body.req_id, hops=hops)))
                continue
            if t is Reply and type(msg.body) is Pong:
                body = msg.body
                send("gateway", Reply(ref=msg.ref, body=Pong(
                    req_id=body.req_id, hops=body.hops + [("risk", shell.mono_ns())])))
                continue
            try:
                effects = engine.handle(msg, now)
            except Exception as exc:  # one bad message must not take its batch with it
                failed(msg, exc)
                continue
            route(effects)

    def route(effects: list) -> None:
        for dest, effect in effects:
            if dest == "audit":
                record(effect)
            else:
                send(dest, effect)

    def check_marks() -> None:
        """A mark that stopped coming turns its symbol reduce-only even when no order asks."""
        effects: list = []
        engine.mark_ages.check(engine.specs, now_ns(), effects)
        route(effects)

    shell.bind_inbox(on_messages)
    shell.every(MARK_CHECK_MS, check_marks)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark.", b"funding.", b"regime."], on_messages)

    def on_stop() -> None:
        held, owed = engine.conservation()
        shell.log.info("risk_final_state", money_held=held, money_owed=owed,
                       conserved=held == owed, fee_pool=engine.fee_pool,
                       state_hash=engine.state_hash(), next_order_id=engine.next_order_id)

    return on_stop
