"""The oracle's fallback chain for one symbol, as a small state machine.

    normal   -- quorum lost -->                          carry    (last good index, <= max_carry)
    carry    -- max_carry passed, book usable -->        book     (book mid, clamped to a band
                                                                   around the last good index)
    carry    -- max_carry passed, book unusable -->      degraded (mark frozen)
    book     -- book unusable or book_max passed -->     degraded
    any      -- quorum held for `recovery` -->           normal   (hysteresis)

Every transition returns the reason and the numbers that decided it.
"""

from __future__ import annotations

import msgspec

from cluster.rules.units import PPM
MODES = ("normal", "carry", "book", "degraded")


class FallbackConf(msgspec.Struct, frozen=True, kw_only=True):
    min_sources: int = 3
    max_carry_ns: int = 3_000_000_000
    book_max_ns: int = 10_000_000_000
    book_band_ppm: int = 20_000
    recovery_ns: int = 2_000_000_000


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    previous: str
    mode: str
    reason: str


class Fallback:
    __slots__ = ("conf", "mode", "since_ns", "last_good", "last_good_ns", "quorum_since_ns")

    def __init__(self, conf: FallbackConf) -> None:
        self.conf = conf
        self.mode = "normal"
        self.since_ns = 0
        self.last_good = 0
        self.last_good_ns = 0
        self.quorum_since_ns: int | None = None

    def _go(self, mode: str, now_ns: int, reason: str) -> Transition:
        previous, self.mode, self.since_ns = self.mode, mode, now_ns
        return Transition(previous=previous, mode=mode, reason=reason)

    def step(self, now_ns: int, quorum_index: int | None, book_price: int | None
             ) -> tuple[int | None, Transition | None]:
        """The index to publish now (None: nothing to publish yet) and any transition."""
        c = self.conf
        transition = None
        if quorum_index is not None:
            if self.mode == "normal":
                self.last_good, self.last_good_ns = quorum_index, now_ns
                return quorum_index, None
            if self.quorum_since_ns is None:
                self.quorum_since_ns = now_ns
            if now_ns - self.quorum_since_ns >= c.recovery_ns:
                self.quorum_since_ns = None
                self.last_good, self.last_good_ns = quorum_index, now_ns
                return quorum_index, self._go("normal", now_ns, "quorum_restored")
        else:
            self.quorum_since_ns = None
            if self.mode == "normal":
                if not self.last_good:
                    return None, None  # never had a good index: nothing to carry
                transition = self._go("carry", now_ns, "quorum_lost")
        if self.mode == "carry" and now_ns - self.since_ns > c.max_carry_ns:
            if book_price is not None:
                transition = self._go("book", now_ns, "carry_expired")
            else:
                transition = self._go("degraded", now_ns, "carry_expired_book_unusable")
        elif self.mode == "book" and (book_price is None or now_ns - self.since_ns > c.book_max_ns):
            transition = self._go("degraded", now_ns,
                                  "book_unusable" if book_price is None else "book_fallback_expired")
        if self.mode == "book" and book_price is not None:
            band = self.last_good * c.book_band_ppm // PPM
            return max(self.last_good - band, min(self.last_good + band, book_price)), transition
        return self.last_good or None, transition
