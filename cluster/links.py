"""Sequenced links between nodes: nothing a restarted core said is lost, nothing is applied twice.

Every frame on a sequenced link starts with a `LinkSeq` header: the link's name, the sender's
incarnation, and the sequence number of the frame's first message (0 for a control frame that is
not part of the sequence). Messages are numbered by the order they were sent, so a core that
replays its journal after a restart sends the same messages under the same numbers again.

- The sender keeps its latest messages per link (`LinkSender.buffer`) and resends from any number a
  receiver asks for (`ResendFrom`): after a restart the buffer is rebuilt by the replay itself.
- The receiver (`LinkReceiver`) applies each number once, in order: a number below the one it
  expects is a duplicate (dropped), one above is a gap (the frame is dropped and the sender asked
  to resend from the expected number). A *durable* sender (risk, matching: incarnation 0) keeps its
  numbering across restarts; any other sender starts again at 1 under a new incarnation, which the
  receiver takes as a new baseline.
- A sender announces its next number on an idle link (an empty frame, `count` 0), so a receiver
  learns of messages it missed without waiting for the next real one.
"""

from __future__ import annotations

from collections import deque

from cluster.protocol import LinkSeq, ResendFrom

RESEND_BUFFER = 200_000  # messages kept per link for resends
RESEND_RETRY_NS = 500_000_000  # ask again if a gap is still open after this long
GIVE_UP_AFTER = 6  # requests for one gap before it is accepted as lost (and said loudly)


class LinkSender:
    """One outgoing sequenced link."""

    __slots__ = ("link", "incarnation", "next_seq", "buffer", "resend_from", "idle_due", "epoch")

    def __init__(self, link: str, incarnation: int = 0, buffer_size: int = RESEND_BUFFER) -> None:
        self.link = link
        self.incarnation = incarnation
        self.next_seq = 1
        self.buffer: deque = deque(maxlen=buffer_size)
        self.resend_from = 0  # a receiver asked for everything from this number (0: nothing)
        self.idle_due = False  # announce the next number (nothing was sent for a while)
        self.epoch = 0  # the sender's failover epoch, on every header (cluster/failover.py)

    def stamp(self, messages: list) -> LinkSeq:
        """Number `messages` (sent now, in this order) and keep them for resends."""
        header = LinkSeq(link=self.link, incarnation=self.incarnation, first=self.next_seq,
                         count=len(messages), epoch=self.epoch)
        self.next_seq += len(messages)
        self.buffer.extend(messages)
        return header

    def idle(self) -> LinkSeq:
        return LinkSeq(link=self.link, incarnation=self.incarnation, first=self.next_seq, count=0,
                       epoch=self.epoch)

    def oldest(self) -> int:
        return self.next_seq - len(self.buffer)

    def resend_frames(self, chunk: int = 1000) -> list[list]:
        """The frames (header + messages) a pending ResendFrom asked for; what the buffer no
        longer holds starts at the oldest number it has (the receiver sees the gap and says so)."""
        start = max(self.resend_from, self.oldest())
        self.resend_from = 0
        frames = []
        held = list(self.buffer)
        for first in range(start, self.next_seq, chunk):
            part = held[first - self.oldest():first - self.oldest() + chunk]
            frames.append([LinkSeq(link=self.link, incarnation=self.incarnation, first=first,
                                   count=len(part), epoch=self.epoch)] + part)
        return frames


class LinkReceiver:
    """The sequence state of every link arriving at one node. Plain data (picklable), so that a
    journaled node's snapshot carries it."""

    def __init__(self, journaled: bool = False) -> None:
        # A journaled receiver has applied every message of every link since the venue started
        # (its journal says so), so a link it has never heard from starts at 1; any other
        # receiver joins a durable sender's numbering wherever it is when it first hears it.
        self.journaled = journaled
        self.expected: dict[str, tuple[int, int]] = {}  # link -> (incarnation, next number)
        self.gaps: dict[str, tuple[int, int, int]] = {}  # link -> (expected, asked at ns, times)
        self.duplicates = 0
        self.lost = 0
        self.given_up: list[tuple[str, int, int]] = []  # (link, expected, resumed at): to say

    def accept(self, header: LinkSeq, messages: list, now_ns: int,
               asks: list[tuple[str, ResendFrom]] | None = None) -> list:
        """The messages of one frame to apply (none, some or all). A gap adds a ResendFrom to
        `asks` (the sender's node, from the link's name) when one is due."""
        link = header.link
        if header.first == 0:  # a control frame outside the sequence
            return messages
        state = self.expected.get(link)
        if state is None or state[0] != header.incarnation:
            # A sender that numbers afresh at every start (a new incarnation) starts at 1.
            fresh = header.incarnation != 0 or self.journaled
            state = (header.incarnation, 1 if fresh else header.first)
        incarnation, expected = state
        first, count = header.first, header.count
        if first > expected:  # a gap: ask (again, when due), give up loudly after a while
            gap = self.gaps.get(link)
            if gap is None or gap[0] != expected:
                gap = (expected, now_ns, 1)
                self._ask(link, expected, asks)
            elif now_ns - gap[1] >= RESEND_RETRY_NS:
                if gap[2] >= GIVE_UP_AFTER:
                    self.lost += first - expected
                    self.given_up.append((link, expected, first))
                    self.gaps.pop(link, None)
                    self.expected[link] = (incarnation, first + count)
                    return messages
                gap = (expected, now_ns, gap[2] + 1)
                self._ask(link, expected, asks)
            self.gaps[link] = gap
            self.expected[link] = state
            return []
        self.gaps.pop(link, None)
        skip = expected - first
        if skip >= count:
            self.duplicates += count
            self.expected[link] = state
            return []
        self.duplicates += skip
        self.expected[link] = (incarnation, first + count)
        return messages[skip:] if skip else messages

    def applied(self, header: LinkSeq) -> None:
        """Replay: the run this journaled header describes was applied (in order, by
        construction), whatever gap may have been given up on live."""
        self.expected[header.link] = (header.incarnation, header.first + header.count)

    @staticmethod
    def _ask(link: str, expected: int, asks) -> None:
        if asks is not None:
            sender = link.split("->", 1)[0]
            asks.append((sender, ResendFrom(link=link, next_seq=expected)))

    def state(self) -> list:
        return sorted((link, inc, nxt) for link, (inc, nxt) in self.expected.items())
