"""Matching node shell: commands in from risk/liquidator, marks in from the oracle; every engine
event goes to risk, market data (trades, L2 deltas) goes out on the matching PUB."""

from __future__ import annotations

from cluster.config import Topology
from cluster.protocol import (
    BookDelta, BookLevels, Error, GetBook, IndexMark, MarkPrice, Ping, Pong, Reply, Routed, Trade,
)
from cluster.transport import NodeShell
from nodes.matching.engine import MatchingEngine


def build(shell: NodeShell, topo: Topology):
    engine = MatchingEngine(topo.symbols)
    shell.peer("risk")
    shell.peer("gateway")
    shell.bind_pub(shell.conf.pub)
    topics = {name: b"md." + name.encode() for name in topo.symbols}
    handle = engine.handle

    def emit(events: list) -> None:
        for ev in events:
            t = type(ev)
            if t is BookDelta or t is Trade:
                shell.publish(topics[ev.symbol], ev)
                if t is BookDelta:
                    continue
            shell.send("risk", ev)

    def on_messages(messages: list) -> None:
        for msg in messages:
            t = type(msg)
            if t is Routed:
                body = msg.body
                if type(body) is Ping:
                    hops = body.hops + [("matching", shell.mono_ns())]
                    shell.send("risk", Reply(ref=msg.ref, body=Pong(req_id=body.req_id, hops=hops)))
                elif type(body) is GetBook:
                    if body.symbol not in engine.books:
                        shell.send("gateway", Reply(ref=msg.ref, body=Error(
                            req_id=body.req_id, reason="unknown_symbol",
                            detail={"symbol": body.symbol})))
                        continue
                    book_seq, bids, asks = engine.depth(body.symbol, body.depth)
                    shell.send("gateway", Reply(ref=msg.ref, body=BookLevels(
                        req_id=body.req_id, symbol=body.symbol, book_seq=book_seq,
                        bids=bids, asks=asks)))
                continue
            emit(handle(msg))

    def on_marks(messages: list) -> None:
        for msg in messages:
            if type(msg) is IndexMark:
                emit(handle(MarkPrice(symbol=msg.symbol, mark=msg.mark, index=msg.index,
                                      seq=msg.seq, ts_ns=msg.ts_ns)))

    shell.bind_inbox(on_messages)
    shell.subscribe(topo.nodes["oracle"].pub, [b"mark."], on_marks)

    def on_stop() -> None:
        shell.log.info("matching_final_state", state_hash=engine.state_hash(), seq=engine.seq,
                       trades=engine.trade_id)

    return on_stop
