"""Order-flow agents for the surveillance evaluation: normal market makers, takers and retail limit
orders, and the abuse injectors of issue #23, all driving the real matching engine (perf/
surveillance_sim.Venue) on a simulated clock. Each agent is one account; `act(now)` does what the
agent does at `now` and returns when it wants to act next.

Difficulty: `scale` is the abuse's size against the normal median order (20x / 5x / 2x for easy /
medium / hard), and each injector's other knob (levels, burst size, leverage jump, group size)
moves with it (LEVELS below).
"""

from __future__ import annotations

import random

from cluster.protocol import BUY, SELL
from perf.surveillance_sim import MS, Venue

S_NS = 1_000 * MS
MEDIAN_QTY = 10  # lots: the normal flow's median order

# difficulty -> size multiple of the median, layering levels, stuffing burst, leverage jump,
# liquidation cluster group size and spread of its targets, spoof cancel delay after the fill
LEVELS = {
    "easy": {"scale": 20, "layers": 6, "burst": 120, "jump": 5, "group": 6, "jitter_bps": 0,
             "cancel_ms": 30},
    "medium": {"scale": 5, "layers": 4, "burst": 40, "jump": 3, "group": 4, "jitter_bps": 4,
               "cancel_ms": 200},
    "hard": {"scale": 2, "layers": 3, "burst": 15, "jump": 2, "group": 3, "jitter_bps": 8,
             "cancel_ms": 600},
}


def size(rng: random.Random, median: int = MEDIAN_QTY) -> int:
    """A normal order size: lognormal around the median (sigma 0.6), at least one lot."""
    return max(1, round(median * rng.lognormvariate(0, 0.6)))


class Market:
    """The fair price the normal flow quotes around (a random walk), and the venue's top."""

    def __init__(self, venue: Venue, rng: random.Random, start: int = 300_000) -> None:
        self.venue, self.rng, self.fair = venue, rng, start

    def walk(self, now: int) -> int:
        """Each second: a random step, and half the way to the last trade (traders follow a
        move: what makes momentum ignition pay, and detectable)."""
        last = self.venue.last_price or self.fair
        self.fair += round(self.rng.gauss(0, 15)) + (last - self.fair) // 2
        self.venue.mark(self.fair, now)
        return now + S_NS

    def top(self) -> tuple[int, int]:
        _, bids, asks = self.venue.engine.depth(self.venue.symbol, 1)
        return (bids[0][0] if bids else self.fair - 10), (asks[0][0] if asks else self.fair + 10)


class Agent:
    abusive = False
    kind = "normal"

    def __init__(self, name: str, venue: Venue, market: Market, rng: random.Random) -> None:
        self.name, self.v, self.m, self.rng = name, venue, market, rng
        self.live: list[int] = []
        self.started_ns: int | None = None  # the first abusive action (time to first alert)

    def place(self, side: int, qty: int, price: int, now: int, tif: str = "GTC",
              post_only: bool = False) -> int:
        return self.v.place(self.name, side, qty, price, now, tif, post_only)

    def still_open(self, oid: int) -> bool:
        return oid in self.v.engine.orders

    def cancel_all(self, now: int) -> None:
        for oid in self.live:
            if self.still_open(oid):
                self.v.cancel(self.name, oid, now)
        self.live = []

    def act(self, now: int) -> int:
        raise NotImplementedError


class MarketMaker(Agent):
    """Two-sided quotes, one or two levels, requoted every `period` (fast makers: 100-300 ms)."""

    def __init__(self, *a, fast: bool = False) -> None:
        super().__init__(*a)
        self.fast = fast
        self.spread = self.rng.randint(5, 15)

    def act(self, now: int) -> int:
        self.cancel_all(now)
        fair = self.m.fair
        for level in range(self.rng.randint(1, 2)):
            q = size(self.rng)
            gap = self.spread + 5 * level
            self.live.append(self.place(BUY, q, fair - gap, now, post_only=True))
            self.live.append(self.place(SELL, q, fair + gap, now, post_only=True))
        period_ms = self.rng.randint(100, 300) if self.fast else self.rng.randint(500, 2_000)
        return now + period_ms * MS


class Taker(Agent):
    """IOC orders that cross the spread, every few seconds, either side."""

    def act(self, now: int) -> int:
        bid, ask = self.m.top()
        side = self.rng.choice((BUY, SELL))
        price = ask + 20 if side == BUY else bid - 20
        self.place(side, size(self.rng, 5), price, now, "IOC")
        return now + int(self.rng.expovariate(1 / 5.0) * S_NS) + MS


class Retail(Agent):
    """A passive limit order a few ticks behind the touch, cancelled after seconds; an occasional
    leverage change (at most double)."""

    def act(self, now: int) -> int:
        self.cancel_all(now)
        if self.rng.random() < 0.05:
            self.v.set_leverage(self.name, self.rng.choice((15, 20, 25, 30)), now)
        bid, ask = self.m.top()
        side = self.rng.choice((BUY, SELL))
        price = bid - self.rng.randint(1, 30) if side == BUY else ask + self.rng.randint(1, 30)
        self.live.append(self.place(side, size(self.rng), price, now))
        return now + self.rng.randint(2, 30) * S_NS


# ------------------------------------------------------------------ abuse


class Abuser(Agent):
    abusive = True

    def __init__(self, *a, level: dict, start_ns: int) -> None:
        super().__init__(*a)
        self.level, self.start_ns = level, start_ns

    def began(self, now: int) -> None:
        if self.started_ns is None:
            self.started_ns = now


class Spoofer(Abuser):
    """A large order away from the touch on one side, a small one at the touch on the other; once
    the small one fills, the large one is cancelled (cancel_ms later)."""

    kind = "spoofer"
    layers = 1

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.bait = None
        self.deadline = 0
        self.cancel_at = 0

    def act(self, now: int) -> int:
        if now < self.start_ns:
            return self.start_ns
        if self.bait is None:
            bid, ask = self.m.top()
            self.began(now)
            big = self.level["scale"] * MEDIAN_QTY
            each = max(1, big // self.layers) if self.layers > 1 else big
            self.live = [self.place(BUY, each, bid - 3 - 2 * i, now) for i in range(self.layers)]
            self.bait = self.place(SELL, 2, max(bid + 1, ask - 1), now)
            self.deadline, self.cancel_at = now + 3 * S_NS, 0
            return now + 20 * MS
        if self.cancel_at:
            if now >= self.cancel_at:
                self.cancel_all(now)
                self.bait = None
                return now + self.rng.randint(2, 5) * S_NS
            return self.cancel_at
        if not self.still_open(self.bait):  # the small order traded
            self.cancel_at = now + self.level["cancel_ms"] * MS
            return self.cancel_at
        if now >= self.deadline:  # nobody took it: start again
            self.live.append(self.bait)
            self.cancel_all(now)
            self.bait = None
            return now + S_NS
        return now + 20 * MS


class Layerer(Spoofer):
    """A ladder of orders on several levels away from the touch, the same cycle as the spoofer."""

    kind = "layering"

    @property
    def layers(self) -> int:  # type: ignore[override]
        return self.level["layers"]


class QuoteStuffer(Abuser):
    """Bursts of orders improving the touch, each cancelled a millisecond later."""

    kind = "stuffer"

    def act(self, now: int) -> int:
        if now < self.start_ns:
            return self.start_ns
        burst = self.level["burst"]
        t = now
        for _ in range(burst):
            bid, ask = self.m.top()
            if ask - bid > 1:  # room to improve the bid (into a 1-tick spread it sends nothing)
                self.began(t)  # its first order, not a burst that sent none
                oid = self.place(BUY, 1, bid + 1, t)
                self.v.cancel(self.name, oid, t + MS)
            t += 1_000_000_000 // max(burst, 1) // 2  # the burst lasts half a second
        return now + self.rng.randint(4, 8) * S_NS


class MomentumIgniter(Abuser):
    """An aggressive sweep of `scale` x the median, then the position sold back 6 s later."""

    kind = "igniter"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.holding = 0

    def act(self, now: int) -> int:
        if now < self.start_ns:
            return self.start_ns
        bid, ask = self.m.top()
        if not self.holding:
            self.began(now)
            qty = self.level["scale"] * MEDIAN_QTY
            before = self.v.positions.get(self.name, (0, 0))[0]
            self.place(BUY, qty, ask + 300, now, "IOC")
            self.holding = self.v.positions.get(self.name, (0, 0))[0] - before
            return now + 6 * S_NS
        self.place(SELL, self.holding, bid - 300, now, "IOC")
        self.holding = 0
        return now + self.rng.randint(10, 20) * S_NS


class LeverageJumper(Abuser):
    """Leverage raised `jump` times, then a `scale` x median order within seconds."""

    kind = "leverage"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.base = 10
        self.raised = False

    def act(self, now: int) -> int:
        if now < self.start_ns:
            return self.start_ns
        if not self.raised:
            self.began(now)
            self.v.set_leverage(self.name, self.base, now)
            self.v.set_leverage(self.name, self.base * self.level["jump"], now + MS)
            self.raised = True
            return now + self.rng.randint(2, 8) * S_NS
        bid, ask = self.m.top()
        side = self.rng.choice((BUY, SELL))
        self.place(side, self.level["scale"] * MEDIAN_QTY, ask + 50 if side == BUY else bid - 50,
                   now, "IOC")
        self.raised = False
        return now + self.rng.randint(20, 40) * S_NS


class Clusterer(Abuser):
    """One of a group that opens longs and sizes its margin so that its liquidation price lands on
    the group's target (a crowd of forced sells waiting at one price in the book); `jitter_bps`
    spreads the targets (the group shares `plan`: size and target)."""

    kind = "liq_cluster"

    def __init__(self, *a, plan: dict, **kw) -> None:
        super().__init__(*a, **kw)
        self.plan = plan
        self.margin = 0

    def act(self, now: int) -> int:
        if now < self.start_ns:
            return self.start_ns
        if not self.margin:
            self.began(now)
            bid, ask = self.m.top()
            self.place(BUY, self.plan["qty"], ask + 50, now, "IOC")
            qty, cost = self.v.positions.get(self.name, (0, 0))
            if qty <= 0:
                return now + S_NS
            if "target" not in self.plan:
                self.plan["target"] = ask * 95 // 100  # 5 % below: ~20x leverage
            jitter = self.rng.randint(-self.level["jitter_bps"], self.level["jitter_bps"])
            target = self.plan["target"] * (10_000 + jitter) // 10_000
            spec = self.v.specs[self.v.symbol]
            keep = 1_000_000 - spec.tiers[0].mmr_ppm - spec.forced_fee_ppm
            # a long is liquidated where wallet + qty x mult x (p - entry) = maintenance + fee,
            # i.e. wallet = cost - p x qty x mult x (1 - mmr - fee) on the first tier
            self.margin = cost - target * qty * spec.atoms_per_tick_lot * keep // 1_000_000
        self.v.account_risk(self.name, self.margin, now)
        return now + 5 * S_NS
