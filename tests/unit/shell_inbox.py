"""A risk NodeShell's inbox handler on a real keyring, without sockets: what a test feeds frames
(payload, sender role) to, and what the node would have been handed."""

from __future__ import annotations

from cluster import config, curve
from cluster.recording import RecordingLog
from cluster.transport import NodeShell


def risk_inbox(tmp_path):
    """(shell, handle, got): `handle([(payload, role), ...])` runs the inbox's decoding, and
    `got` collects the (header, messages) runs the node is given. Destroy `shell.ctx` after."""
    topo = config.load(run_dir=str(tmp_path))
    curve.create_for(topo)
    shell = NodeShell("risk", topo, log_dir=str(tmp_path))
    shell.log = RecordingLog()
    got: list = []
    return shell, shell._inbox_decoding(lambda runs: got.extend(runs), runs=True), got
