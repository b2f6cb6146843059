"""Client order ids: the first answer to each, so that a resubmission gets that answer again
(marked duplicate) and never a second order, and so that cancel/amend can name an order by it.

Bounded per account: an account's client ids of live orders are always kept; past `memory` ids,
the account's oldest ones whose orders are finished (or were rejected) are forgotten, and such an
id, sent again, is a new order. Without a bound, a client that tags every order (as trading firms
do) grows the node by the size of an answer per order, for ever. Per account, so that one busy
account cannot push out another's recent ids, and so that each table stays small enough to
rebuild quickly (a dict with churn rebuilds itself now and then, in time proportional to its size).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container


class ClientIds:
    __slots__ = ("memory", "live", "_answers", "_order")

    def __init__(self, memory: int, live: Container[int]) -> None:
        self.memory = memory
        self.live = live  # order ids that are open (their client ids are never forgotten)
        self._answers: dict[str, dict[str, object]] = {}  # account -> client id -> answer
        self._order: dict[str, deque[str]] = {}  # account -> its client ids, oldest first

    def get(self, account: str, client_id: str):
        mine = self._answers.get(account)
        return mine.get(client_id) if mine is not None else None

    def remember(self, account: str, client_id: str, answer) -> None:
        """Store (or replace: an ack later collapsed into its cancel) the answer to a client id."""
        mine = self._answers.get(account)
        if mine is None:
            mine = self._answers[account] = {}
            self._order[account] = deque()
        if client_id not in mine:
            self._order[account].append(client_id)
        mine[client_id] = answer
        if len(mine) > self.memory:
            self._forget_oldest(mine, self._order[account])

    def _forget_oldest(self, mine: dict, order: deque) -> None:
        # Look at a few of the oldest ids: a live order's goes back to the end, the first
        # finished one is forgotten. Live orders per account are few (risk caps open orders),
        # so this nearly always forgets at the first look.
        for _ in range(min(len(order), 8)):
            client_id = order.popleft()
            if getattr(mine[client_id], "order_id", 0) in self.live:
                order.append(client_id)
                continue
            del mine[client_id]
            return

    def items(self):
        """(account, client id, answer), per account oldest first: part of the state hash, since
        the order decides what is forgotten next."""
        for account in sorted(self._order):
            mine = self._answers[account]
            for client_id in self._order[account]:
                yield account, client_id, mine[client_id]
