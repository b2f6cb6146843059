"""Matching node shell: commands in from risk/liquidator, marks in from the oracle; every engine
event goes to risk, market data (trades without their accounts, L2 deltas) goes out on the
matching PUB."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.config import Topology
from cluster.protocol import (
    MAX_BOOK_DEPTH, BookDelta, BookLevels, Error, GetBook, IndexMark, MarkPrice, OrderAccepted,
    OrderAmended, OrderCancelled, OrderRejected, Ping, Pong, Reply, Routed, Trade, public_trade,
)
from cluster.runner import CoreRunner
from cluster.transport import NodeShell
from nodes.matching.engine import MatchingEngine


SNAPSHOT_MS = 1_000  # how often each book's snapshot is published on its market data

# Cancels and resizes the venue decided, explained in the audit journal like every reject; a user's
# cancel, a mass cancel and an IOC's unfilled rest are the order doing what it was asked to.
EXPLAINED = frozenset({
    "self_trade_prevention", "reduce_only_position_changed", "reduce_only_would_increase",
    "reduce_only_resize", "price_out_of_band", "market_protection", "no_liquidity",
    "fok_not_fillable",
})


DECISIONS = {OrderRejected: "reject", OrderCancelled: "cancel", OrderAmended: "resize"}


def explained(ev) -> bool:
    """Does the journal explain this event: every refusal, and the cancels and resizes the venue
    decided (not a replayed answer to a resubmitted client order id: explained the first time)."""
    t = type(ev)
    if t is OrderRejected or ((t is OrderCancelled or t is OrderAmended) and ev.reason in EXPLAINED):
        return not getattr(ev, "duplicate", False)
    return False


def explanation(ev, now_ns: int) -> Explanation:
    """The audit record of an event `explained()` selects, with the numbers that decided it."""
    numbers = {"symbol": ev.symbol, "order_id": ev.order_id, "seq": ev.seq}
    numbers.update(getattr(ev, "detail", None) or {})
    if type(ev) is OrderAmended:
        numbers.update(qty=ev.qty, remaining=ev.remaining)
    return Explanation(ts_ns=now_ns, node="matching", rule=f"matching.{ev.reason}",
                       subject=ev.account, decision=DECISIONS[type(ev)], numbers=numbers)


def make_engine(topo: Topology) -> MatchingEngine:
    """Matching's core as the topology starts it (the node, and an offline replay, build it)."""
    return MatchingEngine(topo.symbols)


def build(shell: NodeShell, topo: Topology):
    engine = make_engine(topo)
    shell.peer("risk")
    shell.peer("gateway")
    shell.bind_pub(shell.conf.pub)
    topics = {name: b"md." + name.encode() for name in topo.symbols}
    audit = shell.audit
    clock = [0]  # the input's time, for its explanations (the journaled one on replay)
    # surveillance: the private engine feed, only when the topology runs the node (feed.py)
    private = None
    if "surveillance" in topo.nodes and shell.conf.private:
        from nodes.surveillance.feed import PrivateFeed
        private = PrivateFeed(shell, shell.conf.private)

    def emit(events: list) -> None:
        if private is not None:
            private.add(clock[0], events)
        for ev in events:
            t = type(ev)
            if t is BookDelta:
                shell.publish(topics[ev.symbol], ev)
                continue
            if t is Trade:  # risk needs the accounts; market data names none
                shell.publish(topics[ev.symbol], public_trade(ev))
            elif t is not OrderAccepted and explained(ev):
                audit.record(explanation(ev, clock[0]))
            shell.send("risk", ev)

    def failed(msg, exc: Exception) -> None:
        """The engine raised on a command (a bug): log and count it, and refuse the command, so
        that the rest of its batch is still handled and risk releases what the command held."""
        shell.failed("command_failed", type(msg).__name__, exc)
        shell.send("risk", OrderRejected(
            seq=engine.seq, ref=getattr(msg, "ref", 0), order_id=getattr(msg, "order_id", 0),
            account=getattr(msg, "account", ""), symbol=getattr(msg, "symbol", ""),
            reason="internal_error", detail={"error": type(exc).__name__},
            client_order_id=getattr(msg, "client_order_id", "")))

    def query(msg: Routed) -> None:
        """A client request matching answers directly: Ping (hop stamps) or GetBook."""
        body = msg.body
        if type(body) is Ping:
            hops = body.hops + [("matching", shell.mono_ns())]
            shell.send("risk", Reply(ref=msg.ref, body=Pong(req_id=body.req_id, hops=hops)))
        elif type(body) is GetBook:
            if body.symbol not in engine.books:
                shell.send("gateway", Reply(ref=msg.ref, body=Error(
                    req_id=body.req_id, reason="unknown_symbol", detail={"symbol": body.symbol})))
                return
            book_seq, bids, asks = engine.depth(body.symbol, body.depth)
            shell.send("gateway", Reply(ref=msg.ref, body=BookLevels(
                req_id=body.req_id, symbol=body.symbol, book_seq=book_seq, bids=bids, asks=asks)))

    def process(msg, now: int) -> None:
        """One input (journaled by the runner first): a command, a client query, or a mark."""
        clock[0] = now
        t = type(msg)
        if t is Routed:
            query(msg)
            return
        if t is IndexMark:
            msg = MarkPrice(symbol=msg.symbol, mark=msg.mark, index=msg.index, seq=msg.seq,
                            ts_ns=msg.ts_ns)
        try:
            emit(engine.handle(msg))
        except Exception as exc:  # one bad command must not take its batch with it
            failed(msg, exc)

    def publish_snapshots() -> None:
        """Every book's levels with its book_seq, on its market data topic: a subscriber whose copy
        lost a delta (PUB drops for slow or lossy links) heals from the next one by itself."""
        for symbol, topic in topics.items():
            book_seq, bids, asks = engine.depth(symbol, MAX_BOOK_DEPTH)
            shell.publish(topic, BookLevels(symbol=symbol, book_seq=book_seq, bids=bids, asks=asks))

    runner = CoreRunner(shell, engine, process, topo.journal)
    shell.bind_inbox(runner.on_runs, runs=True)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark."], runner.on_messages)
    shell.every(SNAPSHOT_MS, publish_snapshots)
    shell.every(250, runner.maybe_snapshot, always=True)
    recovered = runner.recover()
    if private is not None:
        private.pending.clear()  # a replay's events: surveillance saw them before the restart
    if recovered:
        shell.log.info("matching_recovered", **recovered)

    def on_stop() -> None:
        runner.close()
        shell.log.info("matching_final_state", state_hash=engine.state_hash(), seq=engine.seq,
                       trades=engine.trade_id)

    return on_stop
