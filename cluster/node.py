"""Entry point of one node process: `python -m cluster.node NAME --config FILE [--run-dir DIR]`."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

import uvloop

from cluster import config
from cluster.transport import NodeShell


SERVICES_ENV = "PERPX_SERVICES"  # a module whose build(node) returns that node's build(shell, topo)


def settle_gc() -> None:
    """Move everything built at start-up out of the collector's sight, and collect the young
    generation less often: the hot path allocates many short-lived containers (freed by reference
    counting), and every gen-0 pass and the full passes over start-up state are pure latency."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perpx-node")
    parser.add_argument("node", choices=config.NODE_NAMES + config.OPTIONAL_NODES + tuple(
        f"{n}.b" for n in config.JOURNALED_NODES), help="a node, or a core's standby (<node>.b)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--restarted", action="store_true",
                        help="the supervisor restarted this node while the cluster ran")
    args = parser.parse_args(argv)
    # A node outlives its supervisor (#19): it goes on serving, and a restarted supervisor adopts
    # it (cluster/supervisor.py); `perpx cluster down` stops whatever is left.
    topo = config.load(args.config, run_dir=args.run_dir)
    node, _, standby = args.node.partition(".")
    if standby and not topo.nodes[node].standby:
        parser.error(f"{args.node}: the topology gives {node} no standby")
    shell = NodeShell(node, topo, instance=args.node)
    shell.restarted = args.restarted
    if topo.nodes[node].standby and (standby or args.restarted):
        # A core's second instance starts as its standby, and so does any restarted instance:
        # it learns from the other (or the witness) who is primary (cluster/failover.py).
        shell.role = "standby"
    # Another set of services, named by module (the benchmarks' null pipeline: hops, no logic),
    # or the venue's own.
    services = os.environ.get(SERVICES_ENV)
    if services:
        on_stop = importlib.import_module(services).build(node)(shell, topo)
    else:
        on_stop = importlib.import_module(f"nodes.{node}.service").build(shell, topo)
    settle_gc()
    uvloop.run(shell.run(on_stop))
    return shell.exit_code


if __name__ == "__main__":
    sys.exit(main())
