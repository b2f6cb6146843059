"""Feeds process: publishes every simulated venue's spot price on its PUB every interval."""

from __future__ import annotations

import random

from cluster.config import Topology
from cluster.protocol import FeedControl
from cluster.transport import NodeShell
from nodes.feeds.walk import SpotWalk


def build(shell: NodeShell, topo: Topology):
    conf = shell.conf
    walk = SpotWalk({s.name: (s.initial_price, s.volatility_ppm) for s in topo.symbols.values()},
                    conf.venues, random.Random(topo.seed))
    shell.bind_pub(conf.pub)
    topics = {name: b"spot." + name.encode() for name in topo.symbols}

    def tick() -> None:
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
