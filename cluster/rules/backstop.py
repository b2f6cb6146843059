"""The backstop auction: who takes over a bankrupt position at its bankruptcy price, and how much.
One rule for risk's ledger (nodes/risk/liquidation.py, the liquidator's `backstop` step) and the
cascade simulator (cluster/cascade.py), which hand it each backstop account's numbers as they
value them.

Every backstop bids the bankruptcy price for what its margin carries; the best price wins (all
bid the same one), then the largest available margin, then the name. What a margin carries: the
initial margin of each lot, plus, when the bankruptcy price is worse than the mark for the side
taken (a long taken above the mark), the loss each lot makes at once. On initial margin alone a
backstop taking over in a gap could be left bankrupt itself. A backstop holding the symbol in
isolated margin does not bid (the takeover lands on the cross wallet)."""

from __future__ import annotations

from typing import NamedTuple

from cluster.rules.units import PPM


class Bidder(NamedTuple):
    name: str
    available: int  # atoms its cross wallet can still commit (equity - IM - order margin)
    leverage: int  # the leverage its setting gives on the notional taken (capped by the tier)
    cross: bool  # it holds the symbol in cross margin


def lots_carried(bidder: Bidder, price: int, mark: int, side: int, mult: int,
                 buffer_ppm: int) -> int:
    """Lots of `side` (the bankrupt position's: +1 a long is taken) at `price` that the bidder's
    available margin carries, at `mark`."""
    if not price:
        return 0
    loss_per_lot = max(0, side * (price - mark)) * mult
    # per lot, x leverage x PPM: price x mult x buffer (IM) + the loss at mark
    per_lot = buffer_ppm * price * mult + loss_per_lot * bidder.leverage * PPM
    return bidder.available * bidder.leverage * PPM // per_lot


def auction(bidders: list[Bidder], qty: int, price: int, mark: int, side: int, mult: int,
            buffer_ppm: int) -> list[tuple[str, int]]:
    """(backstop, lots) in the order they take `qty` lots, each no more than it carries; what
    nobody carries is left (the liquidator goes on to the fund, then ADL)."""
    bids = []
    for bidder in bidders:
        lots = lots_carried(bidder, price, mark, side, mult, buffer_ppm)
        if lots > 0 and bidder.cross:
            bids.append((-bidder.available, bidder.name, lots))
    takers, left = [], qty
    for _, name, lots in sorted(bids):
        take = min(left, lots)
        if take:
            takers.append((name, take))
            left -= take
    return takers
