"""Feeds process: publishes every simulated venue's spot price on its PUB every interval."""

from __future__ import annotations

import random

from cluster.config import Topology
from cluster.protocol import FeedControl, IndexMark
from cluster.transport import NodeShell
from nodes.feeds.walk import SpotWalk


RESUME_WAIT_NS = 5_000_000_000  # a restarted feeds process waits this long for the oracle's index


def build(shell: NodeShell, topo: Topology):
    conf = shell.conf
    # A fresh cluster starts every walk at the symbol's initial price, from the topology's seed.
    # A restarted feeds process must not: its venues would all snap back to the initial price
    # (and replay the same path), a jump the oracle cannot reject since every venue makes it. It
    # resumes each symbol from the oracle's index instead (the oracle carries its last good index
    # while no venue is heard from), and falls back to the initial price if none comes.
    walk = SpotWalk({s.name: (s.initial_price, s.volatility_ppm) for s in topo.symbols.values()},
                    conf.venues, random.Random(topo.seed if not shell.restarted
                                               else f"{topo.seed}:{shell.now_ns()}"))
    shell.bind_pub(conf.pub)
    topics = {name: b"spot." + name.encode() for name in topo.symbols}
    resume_by = shell.now_ns() + RESUME_WAIT_NS
    if shell.restarted:
        for symbol in topics:
            walk.hold(symbol)

        def on_marks(messages: list) -> None:
            for msg in messages:
                if type(msg) is IndexMark and msg.symbol in walk.held:
                    walk.resume(msg.symbol, msg.index)
                    shell.log.info("feed_resumed", symbol=msg.symbol, index=msg.index)

        shell.subscribe(topo.nodes["oracle"].pub, [b"mark."], on_marks)

    def tick() -> None:
        if walk.held and shell.now_ns() > resume_by:  # no index came: start where a fresh one does
            shell.log.warning("feed_resume_timeout", symbols=sorted(walk.held))
            walk.held.clear()
        for t in walk.step(shell.now_ns()):
            shell.publish(topics[t.symbol], t)

    def on_control(messages: list) -> None:
        for msg in messages:
            if type(msg) is not FeedControl:
                continue
            if msg.action == "shock":
                if msg.symbol in walk.true:
                    walk.shock(msg.symbol, msg.ppm)
                    shell.log.warning("feed_shock", symbol=msg.symbol, ppm=msg.ppm)
                continue
            ok = walk.fault(msg.action, msg.venue, msg.ppm, msg.duration_ms, shell.now_ns())
            shell.log.warning("feed_fault", action=msg.action, venue=msg.venue, ppm=msg.ppm,
                              duration_ms=msg.duration_ms, applied=ok)

    shell.bind_inbox(on_control)
    shell.every(conf.interval_ms, tick)
    return None
