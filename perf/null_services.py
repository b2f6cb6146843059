"""The null pipeline: the cluster's processes, sockets, codec, batching and hops with no business
logic, as the physical limit of this host for this topology.

    client -> gateway -> risk -> matching -> risk -> gateway -> client

gateway: decodes client frames, accepts any logon, wraps a PlaceOrder (or a CancelOrder: the
bench's mixed workload) as Routed -> risk;
risk: Routed(PlaceOrder or CancelOrder) -> NewOrder -> matching, and OrderAccepted -> Report -> gateway;
matching: NewOrder -> OrderAccepted -> risk. feeds, oracle and liquidator only heartbeat.
A node runs its null service when PERPX_SERVICES=perf.null_services is in its environment
(perf.cluster_load.Cluster sets it for PERPX_PIPELINE=null).
"""

from __future__ import annotations

import msgspec

from cluster.config import Topology
from cluster.protocol import (
    CancelOrder, ClientRequest, Codec, Error, Logon, LogonAck, NewOrder, OrderAccepted, PlaceOrder,
    Report, Routed,
)
from cluster.transport import NodeShell

ROUTER = "clients"


def build_gateway(shell: NodeShell, topo: Topology):
    codec = Codec(ClientRequest)
    shell.peer("risk")
    refs: dict[int, tuple[bytes, int]] = {}
    next_ref = [1]
    symbols = {name: spec.public() for name, spec in topo.symbols.items()}

    def on_client(frames: list) -> None:
        for parts in frames:
            identity = parts[0]
            try:
                requests = codec.decode_request(parts[-1])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                shell.reply(ROUTER, identity, Error(reason="malformed_message",
                                                    detail={"error": str(exc)[:100]}))
                continue
            for req in requests:
                if type(req) is Logon:
                    shell.reply(ROUTER, identity, LogonAck(req_id=req.req_id, account="null",
                                                           session=0, symbols=symbols))
                elif type(req) is PlaceOrder or type(req) is CancelOrder:
                    ref = next_ref[0]
                    next_ref[0] += 1
                    refs[ref] = (identity, req.req_id)
                    shell.send("risk", Routed(ref=ref, account="null", body=req))

    def on_internal(messages: list) -> None:
        for msg in messages:
            if type(msg) is Report:
                identity, req_id = refs.pop(msg.ref, (None, 0))
                if identity is not None:
                    shell.reply(ROUTER, identity, msgspec.structs.replace(msg, ref=req_id))

    shell.bind_router(ROUTER, shell.conf.client, on_client)
    shell.bind_inbox(on_internal)
    shell.bind_pub(shell.conf.pub)


def build_risk(shell: NodeShell, topo: Topology):
    shell.peer("matching")
    shell.peer("gateway")
    next_id = [1]

    def on_messages(messages: list) -> None:
        for msg in messages:
            t = type(msg)
            if t is Routed and type(msg.body) is PlaceOrder:
                b = msg.body
                shell.send("matching", NewOrder(
                    ref=msg.ref, order_id=next_id[0], account=msg.account, symbol=b.symbol,
                    side=b.side, qty=b.qty, type=b.type, price=b.price, tif=b.tif))
                next_id[0] += 1
            elif t is Routed and type(msg.body) is CancelOrder:  # the same hops, no logic
                shell.send("matching", NewOrder(
                    ref=msg.ref, order_id=next_id[0], account=msg.account, symbol=msg.body.symbol,
                    side=1, qty=1, type="limit", price=1, tif="GTC"))
                next_id[0] += 1
            elif t is OrderAccepted:
                shell.send("gateway", Report(ref=msg.ref, account=msg.account, event=msg))

    shell.bind_inbox(on_messages)


def build_matching(shell: NodeShell, topo: Topology):
    shell.peer("risk")
    seq = [0]

    def on_messages(messages: list) -> None:
        for msg in messages:
            if type(msg) is NewOrder:
                seq[0] += 1
                shell.send("risk", OrderAccepted(
                    seq=seq[0], ref=msg.ref, order_id=msg.order_id, account=msg.account,
                    symbol=msg.symbol, side=msg.side, price=msg.price, qty=msg.qty))

    shell.bind_inbox(on_messages)
    shell.bind_pub(shell.conf.pub)


def build_idle(shell: NodeShell, topo: Topology):
    if shell.conf.inbox:
        shell.bind_inbox(lambda messages: None)
    if shell.conf.pub:
        shell.bind_pub(shell.conf.pub)


BUILDERS = {"gateway": build_gateway, "risk": build_risk, "matching": build_matching}


def build(name: str):
    return BUILDERS.get(name, build_idle)
