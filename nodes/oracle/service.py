"""Oracle node shell: spot ticks in from feeds, trades/deltas in from matching; index+mark out on
the oracle PUB every interval."""

from __future__ import annotations

from cluster.config import Topology
import msgspec

from cluster.protocol import FundingRate, IndexMark, Regime, SpotTick
from cluster.transport import NodeShell
from nodes.oracle.index import Oracle

PUBLISH_MS = 100


def build(shell: NodeShell, topo: Topology):
    oracle = Oracle(topo.symbols)
    shell.bind_pub(shell.conf.pub)
    prefixes = {IndexMark: b"mark.", FundingRate: b"funding.", Regime: b"regime."}

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
            shell.publish(prefixes[type(msg)] + msg.symbol.encode(), msg)
            if type(msg) is not IndexMark:
                shell.log.info(type(msg).__name__, **msgspec.structs.asdict(msg))

    shell.subscribe(topo.nodes["feeds"].pub, [b"spot."], on_spot)
    shell.subscribe(topo.nodes["matching"].pub, [b"md."], on_md)
    shell.every(PUBLISH_MS, publish)
    return None
