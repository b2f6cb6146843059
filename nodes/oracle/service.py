"""Oracle node shell: spot ticks in from feeds, trades/deltas in from matching; index+mark, funding
rates, regimes and mode changes out on the oracle PUB; mode changes into the audit journal."""

from __future__ import annotations

import os

import msgspec

from cluster.config import Topology
from cluster.feed import CoreFeed
from cluster.protocol import ClockTick, FundingRate, IndexMark, OracleMode, OracleSource, Regime
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

    def on_effect(dest: str, msg) -> None:
        t = type(msg)
        if dest == "pub" and t is not IndexMark and not (t is Regime and not msg.changed):
            shell.log.info(t.__name__, **msgspec.structs.asdict(msg))  # news, not a repeat

    feed = CoreFeed(shell, oracle, "oracle", on_effect=on_effect,
                    topic=lambda msg: PREFIXES[type(msg)] + msg.symbol.encode())
    shell.subscribe(topo.nodes["feeds"].pub, [b"spot."], feed.on_messages)
    shell.subscribe(topo.nodes["matching"].pub, [b"md."], feed.on_messages)
    shell.every(PUBLISH_MS, lambda: feed.on_messages([ClockTick()]))
    shell.every(SNAPSHOT_MS, save)
    return None
