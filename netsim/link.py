"""One directed simulated link: when does a message handed to it at `now` arrive, if at all.

Pure: the clock comes in as `now_ns`, randomness from the link's own seeded `random.Random`.

- delay: sampled from the latency model, measured from when the message was handed to the link, so
  processing time does not compound; order is kept (a message never arrives before the previous
  one) unless `reorder` is set;
- loss: on a reliable link (PUSH/ROUTER: TCP-like) a lost message comes back after `rto` (and again
  if lost again); on an unreliable one (PUB/SUB market data) it is dropped;
- bandwidth: serialization delay size x 8 / rate, queued behind earlier messages;
- queue bound: past `queue_limit` messages in flight the link drops (`on_full = "drop"`) or the
  message waits behind the others (`"block"`: delivered later, never lost);
- partition: while down, messages queue (or drop with `on_full = "drop"` beyond the bound) and are
  released in order when it heals.
"""

from __future__ import annotations

import random

import msgspec

from netsim.models import MAX_DELAY_NS, Model, build, duration_ns, rate_bps


class LinkSettings(msgspec.Struct, kw_only=True):
    latency: dict = msgspec.field(default_factory=dict)  # a model spec (netsim.models.build)
    loss: float = 0.0
    rto: str = "200ms"
    bandwidth: str = ""  # e.g. "10mbit"; "" = unlimited
    queue_limit: int = 100_000
    on_full: str = "block"  # or "drop"
    down: bool = False  # partitioned
    reorder: bool = False
    seed: int = 1

    def is_zero(self) -> bool:
        """Shapes nothing: such a link takes the direct path, at no cost."""
        no_delay = not self.latency or build(self.latency).describe() == {
            "model": "constant", "latency_ns": 0}
        return no_delay and not self.loss and not self.bandwidth and not self.down


class Link:
    __slots__ = ("name", "settings", "reliable", "model", "rng", "rto_ns", "rate", "last_due",
                 "busy_until", "in_flight", "held", "stats")

    def __init__(self, name: str, settings: LinkSettings, reliable: bool = True) -> None:
        self.name = name
        self.reliable = reliable
        self.rng = random.Random(f"{settings.seed}:{name}")
        self.last_due = 0
        self.busy_until = 0
        self.in_flight: list[int] = []  # due times of messages not yet delivered (for the bound)
        self.held: list[tuple[int, int]] = []  # (handed at, size) while partitioned
        self.stats = {"sent": 0, "dropped": 0, "retransmits": 0, "held": 0}
        self.configure(settings)

    def configure(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.model: Model | None = build(settings.latency) if settings.latency else None
        self.rto_ns = duration_ns(settings.rto)
        self.rate = rate_bps(settings.bandwidth) if settings.bandwidth else 0

    def _trim(self, now_ns: int) -> None:
        self.in_flight = [d for d in self.in_flight if d > now_ns]

    def schedule(self, now_ns: int, size: int) -> int | None:
        """Delivery time (ns) of a message handed over now, or None if it is lost for good or
        held by a partition (see `heal`)."""
        s = self.settings
        self._trim(now_ns)
        if len(self.in_flight) + len(self.held) >= s.queue_limit and s.on_full == "drop":
            self.stats["dropped"] += 1
            return None
        if s.down:
            self.held.append((now_ns, size))
            self.stats["held"] += 1
            return None
        return self._deliver(now_ns, now_ns, size)

    def _deliver(self, handed_ns: int, now_ns: int, size: int) -> int | None:
        s = self.settings
        delay = min(MAX_DELAY_NS, max(0, self.model.sample(self.rng))) if self.model else 0
        while s.loss and self.rng.random() < s.loss:
            if not self.reliable:
                self.stats["dropped"] += 1
                return None
            delay += self.rto_ns  # the retransmission arrives an RTO later
            self.stats["retransmits"] += 1
        start = max(now_ns, handed_ns)
        if self.rate:
            start = max(start, self.busy_until)
            self.busy_until = start + size * 8 * 1_000_000_000 // self.rate
            start = self.busy_until
        due = start + delay
        if not s.reorder:
            due = max(due, self.last_due)
        self.last_due = max(self.last_due, due)
        self.in_flight.append(due)
        self.stats["sent"] += 1
        return due

    def heal(self, now_ns: int) -> list[tuple[int, int]]:
        """Bring a partition down; (index in hold order, due) for every held message, in order."""
        held, self.held = self.held, []
        out = []
        for i, (handed, size) in enumerate(held):
            due = self._deliver(handed, now_ns, size)
            if due is not None:
                out.append((i, due))
        return out
