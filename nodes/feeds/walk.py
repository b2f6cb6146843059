"""Simulated external spot venues: one shared random walk per symbol with occasional jumps, and each
venue quoting it with its own small noise. Pure: the random generator is handed in (seeded by the
shell), so the same seed gives the same ticks.
"""

from __future__ import annotations

from cluster.protocol import SpotTick

PPM = 1_000_000
JUMP_PPM = 2_000  # chance per step of a jump
JUMP_SIZE_PPM = (5_000, 30_000)  # jump size range, either direction
VENUE_NOISE_PPM = 150


class SpotWalk:
    def __init__(self, prices: dict[str, tuple[int, int]], venues: list[str], rng) -> None:
        """`prices`: symbol -> (initial price in ticks, per-step volatility in ppm)."""
        self.rng = rng
        self.venues = list(venues)
        self.true = {s: p * PPM for s, (p, _) in sorted(prices.items())}  # micro-ticks
        self.vol = {s: v for s, (_, v) in prices.items()}
        self.seq = 0

    def step(self, now_ns: int) -> list[SpotTick]:
        rng = self.rng
        ticks: list[SpotTick] = []
        for symbol, value in self.true.items():
            move_ppm = int(rng.gauss(0, self.vol[symbol]))
            if rng.randrange(PPM) < JUMP_PPM:
                move_ppm += rng.choice((-1, 1)) * rng.randrange(*JUMP_SIZE_PPM)
            value = max(PPM, value + value * move_ppm // PPM)
            self.true[symbol] = value
            for venue in self.venues:
                noise = int(rng.gauss(0, VENUE_NOISE_PPM))
                price = max(1, (value + value * noise // PPM) // PPM)
                self.seq += 1
                ticks.append(SpotTick(venue=venue, symbol=symbol, price=price, seq=self.seq,
                                      ts_ns=now_ns))
        return ticks

    def shock(self, symbol: str, ppm: int) -> None:
        """Move a symbol's true price by `ppm` at once (tests and scenarios: a crash)."""
        value = self.true[symbol]
        self.true[symbol] = max(PPM, value + value * ppm // PPM)
