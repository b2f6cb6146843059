"""The simulated venues' walk: a held symbol publishes nothing until it resumes, from the price it
is given (a restarted feeds process resumes from the oracle's index)."""

from __future__ import annotations

import random

from nodes.feeds.walk import SpotWalk

VENUES = ["alpha", "bravo", "charlie"]


def test_a_held_symbol_is_silent_until_it_resumes_from_the_given_price():
    walk = SpotWalk({"BTC-PERP": (300_000, 400), "ETH-PERP": (200_000, 400)}, VENUES,
                    random.Random(1))
    walk.hold("ETH-PERP")
    ticks = walk.step(1)
    assert {t.symbol for t in ticks} == {"BTC-PERP"} and len(ticks) == len(VENUES)
    walk.resume("ETH-PERP", 250_000)
    eth = [t.price for t in walk.step(2) if t.symbol == "ETH-PERP"]
    assert len(eth) == len(VENUES) and all(abs(p - 250_000) < 250_000 * 0.05 for p in eth)
    walk.resume("NOPE", 1)  # an unknown symbol changes nothing
    assert "NOPE" not in walk.true and not walk.held
