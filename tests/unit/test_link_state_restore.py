"""A journaled node restored from a snapshot (a restart, a standby's resync) must read its live
links with the restored receiver. The inbox handler kept the receiver it was built with, so after
a restore every peer looked new: the first frame was a gap back to number 1, the peer resent
everything it still had, and risk applied those trades again (found by the failover soak: each
trade booked four times in a run with snapshots every 5 s)."""

from __future__ import annotations

import pickle

from cluster.links import LinkReceiver
from cluster.protocol import LinkSeq, Pong, Reply
from tests.unit.shell_inbox import risk_inbox


def test_frames_after_a_restore_are_applied_from_the_restored_numbers(tmp_path):
    shell, handle, got = risk_inbox(tmp_path)
    codec = shell.codec

    def frame(first: int, count: int) -> tuple[bytes, str]:
        """A frame on matching->risk, as read with its sender's role."""
        replies = [Reply(ref=first + i, body=Pong(req_id=first + i)) for i in range(count)]
        return codec.encode([LinkSeq(link="matching->risk", first=first, count=count)]
                            + replies), "matching"

    try:
        # What a snapshot restored: 500 messages of matching->risk already applied.
        restored = LinkReceiver(journaled=True)
        restored.applied(LinkSeq(link="matching->risk", first=1, count=500))
        shell.links_in = pickle.loads(pickle.dumps(restored))
        handle([frame(501, 2)])  # the next live messages
        assert [h.first for h, _ in got] == [501], got
        assert shell.links_in.state() == [("matching->risk", 0, 503)]
        handle([frame(1, 3)])  # a resend of old numbers: duplicates, not new inputs
        assert len(got) == 1 and shell.links_in.duplicates == 3
        assert not any(box.control for box in shell._outboxes.values())  # no resend asked
    finally:
        shell.audit.close()
        for sock in shell._sockets:
            sock.close(linger=0)
        shell.ctx.term()
