"""The SDK's manners toward the venue's rate limits (#20): a client-side token bucket that paces
requests before the gateway has to refuse them, and retries that honour the gateway's
retry_after_ms and spread out with full-jitter exponential backoff.

What is retried, and why it is safe:
- a request the gateway throttled (rate_limited, banned, logon_delayed) never went past it, so any
  request may be sent again, after the retry_after_ms it was told (plus jitter, so that clients
  throttled together do not come back together);
- a request that timed out may have been carried out: only idempotent ones (reads, cancels) are
  sent again, after a full-jitter wait: uniform in [0, min(cap, base * 2^attempt)].
Every retry is bounded: at most `max_attempts` sends and `max_wait_ms` of waiting in all.

The bucket is the gateway's own (nodes/gateway/limits.Bucket, exact integers) with the request
weights the gateway charges (limits.WEIGHTS): one rule, defined once.
"""

from __future__ import annotations

import random

from cluster.config import Rule
from cluster.protocol import CancelAll, CancelOrder, GetAccount, GetBook, GetLimits, GetOrders, Ping
from nodes.gateway.limits import WEIGHTS, Bucket

IDEMPOTENT = (GetAccount, GetOrders, GetBook, GetLimits, Ping, CancelOrder, CancelAll)
THROTTLED = frozenset({"rate_limited", "banned", "logon_delayed"})  # refused before anything ran


class Backoff:
    """One client's pacing and retry policy. `rate`: None, or the Rule the client keeps itself
    within (e.g. the key's weight rule, from `perpx limits show`). `rand` and the clock the caller
    passes in (ns) are injectable, for tests."""

    def __init__(self, *, base_ms: int = 50, cap_ms: int = 5000, max_attempts: int = 5,
                 max_wait_ms: int = 30_000, rate: Rule | None = None,
                 rand: random.Random | None = None, now_ns: int = 0) -> None:
        self.base_ms, self.cap_ms = base_ms, cap_ms
        self.max_attempts, self.max_wait_ms = max_attempts, max_wait_ms
        self.rand = rand or random.Random()
        self.bucket = Bucket("client", rate, now_ns) if rate is not None else None
        self.retries = 0  # sent again, in all (for a caller's stats)
        self.paced_ms = 0  # waited for the client-side bucket, in all

    def jitter_ms(self, attempt: int) -> int:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (attempt 0 is the first retry)."""
        return self.rand.randint(0, min(self.cap_ms, self.base_ms << min(attempt, 30)))

    def pace_ms(self, message, now_ns: int) -> int:
        """How long to wait before sending `message` to keep within the client's own rate (0: now;
        its tokens are then taken). A weight the bucket can never hold is sent unpaced."""
        bucket = self.bucket
        if bucket is None:
            return 0
        cost = WEIGHTS.get(type(message), 1)
        bucket.refill(now_ns)
        wait = bucket.wait_ns(cost)
        if wait < 0:
            return 0
        if wait == 0:
            bucket.take(cost)
            return 0
        wait_ms = -(-wait // 1_000_000)
        self.paced_ms += wait_ms
        return wait_ms

    def retry_ms(self, message, attempt: int, waited_ms: int, *, reason: str | None = None,
                 retry_after_ms: int = 0, timed_out: bool = False) -> int | None:
        """After send number `attempt + 1` failed (refused for `reason`, or `timed_out`): how
        long to wait before sending again, or None to give up (not safe, or out of attempts or
        time). A ban that outlasts the time left is given up at once."""
        if attempt + 1 >= self.max_attempts:
            return None
        if reason in THROTTLED:
            if retry_after_ms < 0:  # the gateway says it never will be admitted (too heavy)
                return None
            delay = retry_after_ms + self.jitter_ms(attempt)
        elif timed_out and isinstance(message, IDEMPOTENT):
            delay = self.jitter_ms(attempt)
        else:
            return None
        if waited_ms + delay > self.max_wait_ms:
            return None
        self.retries += 1
        return delay
