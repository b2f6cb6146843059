"""Small pyzmq helpers shared by the node shell and the SDK (which must not import the shell)."""

from __future__ import annotations

import zmq.asyncio


def wake_reader(sock: zmq.asyncio.Socket) -> None:
    """After sending on a socket through its sync shadow, let pyzmq's asyncio side re-check it:
    ZMQ_FD is edge-triggered and our send may have consumed the edge a waiting poll needed."""
    schedule = getattr(sock, "_schedule_remaining_events", None)
    if schedule is not None:
        schedule()
