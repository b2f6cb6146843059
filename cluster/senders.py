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
    failover's control messages (a core's announcements; any node's replies and resend asks).

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

# The failover's control frames (cluster/failover.py): a core announces itself, asks the witness
# and says it detached; any node answers a witness query or asks a link's sender to resend.
FROM_CORES = frozenset({PrimaryIs, WitnessQuery, StandbyDetached})
FROM_NODES = frozenset({WitnessReply, ResendFrom})


def allowed(receiver: str, nodes) -> dict[str, frozenset[type]]:
    """What each role may send to `receiver` in a cluster of `nodes` (its topology's node names):
    the flows, plus the control messages of the nodes it has."""
    out = {role: set(types) for role, types in FLOWS.get(receiver, {}).items()}
    for node in nodes:
        extra = FROM_NODES | (FROM_CORES if node in JOURNALED_NODES else frozenset())
        out.setdefault(node, set()).update(extra)
    return {role: frozenset(types) for role, types in out.items()}


def refusal(allowed_here: dict[str, frozenset[type]], sender: str, batch: list) -> str | None:
    """Why a decoded inbox frame from `sender` (its authenticated role) is refused, or None."""
    types = allowed_here.get(sender)
    if types is None:
        return "sender_not_allowed"
    start = 0
    if batch and type(batch[0]) is LinkSeq:
        if batch[0].link.partition("->")[0] != sender:
            return "link_not_senders"
        start = 1
    for i in range(start, len(batch)):
        if type(batch[i]) not in types:
            return "message_not_allowed"
    return None
