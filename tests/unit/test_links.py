"""Sequenced links (cluster/links.py): whatever the delivery does (duplicates, lost frames, a
receiver or sender starting again), each message is applied once, in order, and a gap is asked for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.links import GIVE_UP_AFTER, RESEND_RETRY_NS, LinkReceiver, LinkSender
from cluster.protocol import LinkSeq, ResendFrom

LINK = "risk->matching"


def frames_of(sender: LinkSender, sizes: list[int], start: int = 0) -> list[list]:
    frames, n = [], start
    for size in sizes:
        messages = list(range(n, n + size))
        n += size
        frames.append([sender.stamp(messages)] + messages)
    return frames


def test_in_order_duplicates_and_a_gap_that_is_asked_for():
    sender, receiver = LinkSender(LINK), LinkReceiver()
    f1, f2, f3 = frames_of(sender, [3, 2, 4])
    asks: list = []
    assert receiver.accept(f1[0], f1[1:], 0, asks) == [0, 1, 2]
    assert receiver.accept(f1[0], f1[1:], 0, asks) == []  # the same frame again
    assert receiver.accept(f3[0], f3[1:], 0, asks) == []  # 5.. before 3..4: a gap
    assert asks == [("risk", ResendFrom(link=LINK, next_seq=4))]
    sender.resend_from = 4
    for frame in sender.resend_frames():
        got = receiver.accept(frame[0], frame[1:], 0, asks)
        assert got == [3, 4, 5, 6, 7, 8]
    assert receiver.accept(f2[0], f2[1:], 0, asks) == []  # the late original: a duplicate
    assert receiver.duplicates == 3 + 2


def test_a_frame_that_overlaps_what_was_applied_gives_only_the_new_part():
    receiver = LinkReceiver()
    receiver.accept(LinkSeq(link=LINK, first=1, count=5), list("abcde"), 0)
    assert receiver.accept(LinkSeq(link=LINK, first=4, count=4), list("defg"), 0) == ["f", "g"]


def test_an_idle_announcement_reveals_what_was_missed():
    receiver, asks = LinkReceiver(), []
    receiver.accept(LinkSeq(link=LINK, first=1, count=2), ["a", "b"], 0, asks)
    assert receiver.accept(LinkSeq(link=LINK, first=7, count=0), [], 0, asks) == []
    assert asks == [("risk", ResendFrom(link=LINK, next_seq=3))]


def test_a_restarted_non_durable_sender_starts_at_1_a_durable_one_is_joined_where_it_is():
    receiver = LinkReceiver()
    receiver.accept(LinkSeq(link="gateway->risk", incarnation=11, first=1, count=3), [1, 2, 3], 0)
    # the gateway started again: numbers from 1 under a new incarnation are new messages
    assert receiver.accept(LinkSeq(link="gateway->risk", incarnation=12, first=1, count=1),
                           ["x"], 0) == ["x"]
    asks: list = []
    assert receiver.accept(LinkSeq(link="gateway->risk", incarnation=13, first=3, count=1),
                           ["z"], 0, asks) == []  # 1 and 2 of that start were lost: asked for
    assert asks == [("gateway", ResendFrom(link="gateway->risk", next_seq=1))]
    # a gateway that starts while risk is at 500 joins there (it had no earlier sessions) ...
    assert receiver.accept(LinkSeq(link=LINK, incarnation=0, first=500, count=1), [1], 0) == [1]
    # ... and a journaled core replaying what it sent: the same numbers are the same messages
    assert receiver.accept(LinkSeq(link=LINK, incarnation=0, first=500, count=1), [1], 0) == []
    journaled = LinkReceiver(journaled=True)  # it has seen everything since the start: from 1
    assert journaled.accept(LinkSeq(link=LINK, incarnation=0, first=500, count=1), [1], 0) == []


def test_a_gap_nobody_can_fill_is_given_up_loudly_after_its_retries():
    receiver, asks = LinkReceiver(), []
    receiver.accept(LinkSeq(link=LINK, first=1, count=1), ["a"], 0, asks)
    now = 0
    for _ in range(GIVE_UP_AFTER):
        assert receiver.accept(LinkSeq(link=LINK, first=5, count=1), ["e"], now, asks) == []
        now += RESEND_RETRY_NS
    assert len(asks) == GIVE_UP_AFTER
    assert receiver.accept(LinkSeq(link=LINK, first=5, count=1), ["e"], now, asks) == ["e"]
    assert receiver.given_up == [(LINK, 2, 5)] and receiver.lost == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=25),
       st.lists(st.sampled_from(("deliver", "deliver", "deliver", "drop", "duplicate")),
                min_size=25, max_size=25))
def test_every_message_is_applied_once_and_in_order_whatever_the_delivery(sizes, fates):
    sender, receiver = LinkSender(LINK), LinkReceiver(journaled=True)
    applied, asks = [], []
    for frame, fate in zip(frames_of(sender, sizes), fates):
        if fate == "drop":
            continue
        for _ in range(2 if fate == "duplicate" else 1):
            applied += receiver.accept(frame[0], frame[1:], 0, asks)
        for _, request in asks:  # the sender serves what the receiver asked for
            sender.resend_from = request.next_seq
            for resent in sender.resend_frames():
                applied += receiver.accept(resent[0], resent[1:], 0)
        asks.clear()
    idle = sender.idle()  # the sender's next announcement closes any gap left at the end
    receiver.accept(idle, [], 0, asks)
    for _, request in asks:
        sender.resend_from = request.next_seq
        for resent in sender.resend_frames():
            applied += receiver.accept(resent[0], resent[1:], 0)
    assert applied == list(range(sum(sizes)))
