"""Simulated external spot venues: one shared random walk per symbol with occasional jumps, and each
venue quoting it with its own small noise. Pure: the random generator is handed in (seeded by the
shell), so the same seed gives the same ticks.
"""

from __future__ import annotations

from collections import deque

from cluster.protocol import SpotTick

from cluster.rules.units import PPM
JUMP_PPM = 2_000  # chance per step of a jump
JUMP_SIZE_PPM = (5_000, 30_000)  # jump size range, either direction
VENUE_NOISE_PPM = 150


class VenueFaults:
    """What netsim has done to one venue's feed (times in the walk's clock, ns)."""

    __slots__ = ("frozen_until", "delay_ns", "bias_ppm", "spike_ppm", "spike_until", "delayed")

    def __init__(self) -> None:
        self.frozen_until = 0
        self.delay_ns = 0
        self.bias_ppm = 0
        self.spike_ppm = 0
        self.spike_until = 0
        self.delayed: deque[tuple[int, SpotTick]] = deque()


class SpotWalk:
    def __init__(self, prices: dict[str, tuple[int, int]], venues: list[str], rng) -> None:
        """`prices`: symbol -> (initial price in ticks, per-step volatility in ppm)."""
        self.rng = rng
        self.venues = list(venues)
        self.true = {s: p * PPM for s, (p, _) in sorted(prices.items())}  # micro-ticks
        self.vol = {s: v for s, (_, v) in prices.items()}
        self.seq = 0
        self.faults = {v: VenueFaults() for v in self.venues}
        self.held: set[str] = set()  # symbols waiting to resume (see hold)

    def fault(self, action: str, venue: str, ppm: int, duration_ms: int, now_ns: int) -> bool:
        """Apply a feed fault; False when the venue is unknown."""
        targets = self.venues if (action == "heal" and not venue) else [venue]
        if any(v not in self.faults for v in targets):
            return False
        for v in targets:
            f = self.faults[v]
            until = now_ns + duration_ms * 1_000_000
            if action == "freeze":
                f.frozen_until = until if duration_ms else 2**63
            elif action == "delay":
                f.delay_ns = duration_ms * 1_000_000
            elif action == "bias":
                f.bias_ppm = ppm
            elif action == "spike":
                f.spike_ppm, f.spike_until = ppm, until if duration_ms else 2**63
            elif action == "heal":
                f.frozen_until = f.bias_ppm = f.spike_ppm = f.spike_until = f.delay_ns = 0
        return True

    def hold(self, symbol: str) -> None:
        """Publish nothing for `symbol` until `resume` says where its price is."""
        self.held.add(symbol)

    def resume(self, symbol: str, price: int) -> None:
        """Continue `symbol`'s walk from `price` (ticks): where the venues were before a restart."""
        if symbol in self.true and price > 0:
            self.true[symbol] = price * PPM
            self.held.discard(symbol)

    def step(self, now_ns: int) -> list[SpotTick]:
        rng = self.rng
        ticks: list[SpotTick] = []
        for symbol, value in self.true.items():
            if symbol in self.held:
                continue
            move_ppm = int(rng.gauss(0, self.vol[symbol]))
            if rng.randrange(PPM) < JUMP_PPM:
                move_ppm += rng.choice((-1, 1)) * rng.randrange(*JUMP_SIZE_PPM)
            value = max(PPM, value + value * move_ppm // PPM)
            self.true[symbol] = value
            for venue in self.venues:
                noise = int(rng.gauss(0, VENUE_NOISE_PPM))  # drawn even when faulted: same walk
                f = self.faults[venue]
                off = noise + f.bias_ppm + (f.spike_ppm if now_ns < f.spike_until else 0)
                price = max(1, (value + value * off // PPM) // PPM)
                self.seq += 1
                tick = SpotTick(venue=venue, symbol=symbol, price=price, seq=self.seq, ts_ns=now_ns)
                if now_ns < f.frozen_until:
                    continue
                if f.delay_ns:
                    f.delayed.append((now_ns + f.delay_ns, tick))
                else:
                    ticks.append(tick)
        for f in self.faults.values():  # delayed ticks whose time has come (and all, once healed)
            while f.delayed and (f.delayed[0][0] <= now_ns or not f.delay_ns):
                ticks.append(f.delayed.popleft()[1])
        return ticks

    def shock(self, symbol: str, ppm: int) -> None:
        """Move a symbol's true price by `ppm` at once (tests and scenarios: a crash)."""
        value = self.true[symbol]
        self.true[symbol] = max(PPM, value + value * ppm // PPM)
