"""Who may put what into which inbox: the cluster's message flows, as one table.

CURVE (cluster/curve.py) keeps out a process holding none of the cluster's keys. It does not stop
a holder of one key from speaking as another: the tools' key (the CLI's, the chaos runner's and
the tests', a 0600 file in the run directory) could push a `Routed` into risk's inbox naming any
API key, or a `Trade` that matching never made, and risk would apply it. So every inbox frame is
read with the role its connection authenticated as (the ZAP handler names it as the User-Id), and
is refused whole unless

  - its sequence header, when it has one, names that role as the link's sender (a frame cannot
    borrow another node's link, its numbers or its epoch), and
  - every message in it is one that role sends to this node: `FLOWS` below, or one of the
    failover's control messages (a core's announcements naming its own node, the witness's
    answers, a node's ask to resend its own incoming link).

The table is the venue's wiring, read from the services (who calls `send` with what); a test
drives a real cluster and checks that no frame it sends is refused. A role missing from a
receiver's row sends it nothing. With CURVE off (`[supervisor] curve = false`, a measurement of
its price) connections carry no role and nothing is checked: the topology says so.
"""

from __future__ import annotations

from typing import get_args

from cluster.protocol import (
    AccountRisk, AccountRiskRequest, Amend, Cancel, EngineEvent, FeedControl, FundingRate,
    LinkSeq, LiquidationResult, LiquidationStep, MaintenanceAlert, MassCancel, NewOrder, Notice,
    PrimaryIs, Reply, Report, ResendFrom, Routed, ShiftPosition, StandbyDetached, WitnessQuery,
    WitnessReply,
)
from cluster.config import JOURNALED_NODES

# receiver -> sender role -> the message types that sender puts into the receiver's inbox
FLOWS: dict[str, dict[str, frozenset[type]]] = {
    "risk": {
        "gateway": frozenset({Routed}),  # client requests, with the session's account and key
        "matching": frozenset({*get_args(EngineEvent), Reply}),  # engine events; Ping's pong
        "liquidator": frozenset({LiquidationStep, AccountRiskRequest}),
        "oracle": frozenset({FundingRate}),  # marks come on its PUB; funding is settled once
    },
    "matching": {
        "gateway": frozenset({Routed}),  # GetBook, Ping: answered by matching alone
        "risk": frozenset({NewOrder, Amend, Cancel, MassCancel, ShiftPosition, Routed}),
    },
    "gateway": {
        "risk": frozenset({Reply, Report, Notice}),
        "matching": frozenset({Reply}),
        "liquidator": frozenset({MaintenanceAlert}),
    },
    "liquidator": {
        "risk": frozenset({AccountRisk, LiquidationResult}),
    },
    "surveillance": {
        "risk": frozenset({AccountRisk, Notice}),
    },
    "feeds": {  # a stale or shocked feed: the supervisor's netsim faults, a drill's or test's shock
        "supervisor": frozenset({FeedControl}),
        "tools": frozenset({FeedControl}),
    },
}

# The failover's control frames (cluster/failover.py). A core announces itself, asks the witness
# and says it detached, each naming its own node; only the witness answers a witness query; any
# node asks the sender of one of its own incoming links to resend.
FROM_CORES = frozenset({PrimaryIs, WitnessQuery, StandbyDetached})
FROM_WITNESS = frozenset({WitnessReply})
FROM_NODES = frozenset({ResendFrom})


def allowed(receiver: str, nodes, witness: str) -> dict[str, frozenset[type]]:
    """What each role may send to `receiver` in a cluster of `nodes` (its topology's node names)
    whose failover witness is `witness`: the flows, plus the control messages of the nodes it
    has."""
    out = {role: set(types) for role, types in FLOWS.get(receiver, {}).items()}
    for node in nodes:
        extra = set(FROM_NODES)
        if node in JOURNALED_NODES:
            extra |= FROM_CORES
        if node == witness:
            extra |= FROM_WITNESS
        out.setdefault(node, set()).update(extra)
    return {role: frozenset(types) for role, types in out.items()}


def refusal(allowed_here: dict[str, frozenset[type]], sender: str, batch: list,
            receiver: str = "") -> str | None:
    """Why a decoded inbox frame from `sender` (its authenticated role) to `receiver` is refused,
    or None."""
    types = allowed_here.get(sender)
    if types is None:
        return "sender_not_allowed"
    start = 0
    if batch and type(batch[0]) is LinkSeq:
        if batch[0].link.partition("->")[0] != sender:
            return "link_not_senders"
        start = 1
    for i in range(start, len(batch)):
        t = type(batch[i])
        if t not in types:
            return "message_not_allowed"
        if t in NAMING and not NAMING[t](batch[i], sender, receiver):
            return "names_another_node"
    return None


# A control message must speak for its sender: a core's announcement names its own node (an
# instance "risk.b" speaks with its node's key), and a resend ask is for the asker's own link.
NAMING = {
    PrimaryIs: lambda m, sender, receiver: m.node == sender
    and m.instance.partition(".")[0] == sender,
    WitnessQuery: lambda m, sender, receiver: m.node == sender
    and m.instance.partition(".")[0] == sender,
    StandbyDetached: lambda m, sender, receiver: m.node == sender,
    ResendFrom: lambda m, sender, receiver: m.link == f"{receiver}->{sender}",
}
