"""Risk node shell: client requests in from the gateway, engine events in from matching, marks from
the oracle; checked orders out to matching, reports out to the gateway, account state out to the
liquidator, explanations to the audit journal."""

from __future__ import annotations

from cluster.config import Topology
from cluster.core import IllegalTransition
from cluster.protocol import AccountRisk, ClockTick, Error, Notice, Ping, Pong, Reply, Routed
from cluster.runner import CoreRunner
from cluster.signing import KEY_FILE_CHECK_MS, KeyFileWatch, load_keys, topology_keys
from cluster.transport import NodeShell
from nodes.risk.keys import key_table_input
from nodes.risk.ledger import RiskEngine

MARK_CHECK_MS = 100  # how often the marks' ages are looked at with no order to look at them


# Settings changes surveillance ranks (leverage anomalies; the others are context for a reviewer).
SURVEILLED_RULES = frozenset({"risk.leverage_changed", "risk.margin_mode_changed",
                              "risk.account_margin_mode_changed"})


def make_engine(topo: Topology) -> RiskEngine:
    """Risk's core as the topology starts it (the node, and an offline replay, build it here)."""
    conf = topo.nodes["risk"]
    return RiskEngine(topo.symbols, {a.name: a.deposit for a in topo.accounts.values()},
                      max_open_orders=conf.max_open_orders,
                      insurance_fund=topo.atoms(conf.insurance_fund, "insurance_fund"),
                      backstops=topo.nodes["liquidator"].backstop_accounts,
                      max_mark_age_ns=conf.max_mark_age_ms * 1_000_000)


def build(shell: NodeShell, topo: Topology):
    engine = make_engine(topo)
    for peer in ("matching", "gateway", "liquidator"):
        shell.peer(peer)
    send = shell.send
    audit = shell.audit
    # surveillance (advisory): account state and settings changes, copied when the node runs
    watched = "surveillance" in topo.nodes
    if watched:
        shell.peer("surveillance")

    def failed(msg, exc: Exception, now: int) -> None:
        """The engine raised on a message (a bug): log and count it; a client request gets an
        internal_error answer, so that it is not left waiting. An event a lifecycle table has
        no row for changed nothing, and is journaled with the state it met."""
        illegal = isinstance(exc, IllegalTransition)
        shell.failed("illegal_transition" if illegal else "message_failed", type(msg).__name__, exc)
        if illegal:
            audit.record(exc.explanation("risk", now))
        if type(msg) is Routed:
            send("gateway", Reply(ref=msg.ref, body=Error(
                req_id=0, reason="internal_error", detail={"error": type(exc).__name__})))

    stats = shell.stats
    stats.update(funding_settlements=0, funding_payments=0, funding_paid_atoms=0,
                 funding_received_atoms=0, insurance_fund_atoms=engine.insurance_fund)

    def process(msg, now: int) -> None:
        """One input (journaled by the runner first)."""
        t = type(msg)
        if t is Routed and type(msg.body) is Ping:
            body = msg.body
            hops = body.hops + [("risk", shell.mono_ns())]
            send("matching", Routed(ref=msg.ref, account=msg.account,
                                    body=Ping(req_id=body.req_id, hops=hops)))
            return
        if t is Reply and type(msg.body) is Pong:
            body = msg.body
            send("gateway", Reply(ref=msg.ref, body=Pong(
                req_id=body.req_id, hops=body.hops + [("risk", shell.mono_ns())])))
            return
        try:
            effects = engine.handle(msg, now)
        except Exception as exc:  # one bad message must not take its batch with it
            failed(msg, exc, now)
            return
        for dest, effect in effects:
            if dest == "audit":
                audit.record(effect)
                if effect.rule == "risk.funding":  # for /metrics (nodes/rest/metrics.py)
                    numbers = effect.numbers
                    stats["funding_settlements"] += 1
                    stats["funding_payments"] += numbers["payers"] + numbers["receivers"]
                    stats["funding_paid_atoms"] += numbers["paid"]
                    stats["funding_received_atoms"] += numbers["received"]
                if watched and effect.rule in SURVEILLED_RULES:
                    send("surveillance", Notice(rule=effect.rule, subject=effect.subject,
                                                decision=effect.decision, numbers=effect.numbers,
                                                ts_ns=now))
            else:
                send(dest, effect)
                if watched and dest == "liquidator" and type(effect) is AccountRisk:
                    send("surveillance", effect)

    runner = CoreRunner(shell, engine, process, topo.journal)

    # Risk's own key table (nodes/risk/keys.py): the run's key file, read as the gateway reads it,
    # handed to the core as a journaled input whenever it says something new.
    key_file_watch = KeyFileWatch(topo.run_dir)
    # (read again at the first tick as primary: a promoted standby's primary may have died before
    # it journaled the file's latest change)
    key_file_watch.seen = None
    key_source = topology_keys(topo)

    def refresh_keys(start: bool = False) -> None:
        if not start and not key_file_watch.changed():
            return
        try:
            table = key_table_input(key_source, load_keys(topo.run_dir))
        except (OSError, ValueError) as exc:  # the keys stay as they were (the gateway's rule)
            shell.log.error("key_file_unreadable", error=str(exc)[:300])
            if engine.keys.table is not None:
                return
            table = key_table_input(key_source, {})  # a first start: the topology's keys only
        if not engine.keys.holds(table):
            (runner.on_start if start else runner.on_messages)([table])
            if engine.keys.holds(table):  # (a standby's start applies none: its primary's comes)
                shell.log.info("key_table_applied", keys=len(table.keys),
                               revoked=len(table.revoked))

    def on_inbox(runs: list) -> None:
        # A key risk does not know may have been made since it last looked (the gateway reads the
        # file on its own timer): look now, before the request is judged by the old table.
        known = engine.keys.table
        if known is not None:
            for _, messages in runs:
                if any(type(m) is Routed and m.key_id not in known for m in messages):
                    refresh_keys()
                    break
        runner.on_runs(runs)

    shell.bind_inbox(on_inbox, runs=True)
    # (funding rates come on the inbox: the oracle pushes them, so none is lost to a reconnect)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark.", b"regime."], runner.on_messages)
    shell.every(250, runner.maybe_snapshot, always=True)
    # for /metrics: each instance its engine's fund (a standby's is its copy of the primary's)
    shell.every(200, lambda: stats.__setitem__("insurance_fund_atoms", engine.insurance_fund),
                always=True)
    # The timer is an input (journaled): marks' ages and the funding clock's start replay alike.
    shell.every(MARK_CHECK_MS, lambda: runner.on_messages([ClockTick()]))
    recovered = runner.recover()
    runner.on_start([ClockTick()])  # the funding clock starts before any rate can arrive
    refresh_keys(start=True)  # (a primary only: a standby has its primary's table)
    shell.every(KEY_FILE_CHECK_MS, refresh_keys)
    if recovered:
        shell.log.info("risk_recovered", **recovered)
        for name, acct in engine.accounts.items():  # the liquidator's view, afresh
            if any(p.qty for p in acct.positions.values()):
                send("liquidator", engine.account_risk(name))

    def on_stop() -> None:
        runner.close()
        held, owed = engine.conservation()
        shell.log.info("risk_final_state", money_held=held, money_owed=owed,
                       conserved=held == owed, fee_pool=engine.fee_pool,
                       state_hash=engine.state_hash(), next_order_id=engine.next_order_id)

    return on_stop
