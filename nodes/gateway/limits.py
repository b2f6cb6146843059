"""Rate limits as weighted token buckets, per API key, per source address and per account. Pure:
exact integer arithmetic on an injected monotonic clock (ns), no IO.

A bucket holds up to `burst` tokens and refills `limit` tokens per `window_ms`. Its level is kept in
token-nanoseconds (one token = window_ns units) and refills by elapsed_ns x limit units, so refill is
exact with no rounding anywhere; in any closed interval of one window at most burst + limit tokens
are taken. A request costs its weight (WEIGHTS, like the venues publish) in the address's, the key's
and the account's weight buckets, and an order or amend as much in the account's order bucket;
it is admitted only if every one of them has the tokens (all or nothing). A session holds its
buckets (SessionLimits, made at logon), so admitting a request looks nothing up.

Cancels and reduce-only orders ("exits") that the buckets refuse, or that come during a ban, are
admitted against the account's floor bucket: a trader can always get out, at the floor's rate.

Each refusal is a violation of its key (or, before logon, its address), except one the market
made (every bucket refusing it has a limit of 0: the degraded regime allows no opening orders, and
no pace of the client's would get through); `ban_after` violations within `ban_window_ms` ban it (Binance's 429 -> 418) for `ban_ms`, doubled for every ban before
(at most MAX_BAN_DOUBLINGS times), and every request but exits is refused until the ban ends.
"""

from __future__ import annotations

from collections import OrderedDict

from cluster.config import LimitsPolicy, Rule
from cluster.protocol import (
    AdjustIsolatedMargin, AmendOrder, CancelAll, CancelOrder, Deposit, GetAccount, GetBook,
    GetLimits, GetOrders, Logon, Logout, Ping, PlaceOrder, SetLeverage, SetMarginMode, Withdraw,
)

MS = 1_000_000
MAX_TRACKED_ADDRESSES = 100_000  # address buckets kept (least recently used go first)
MAX_BAN_DOUBLINGS = 6

# Request weights (the cost in the weight buckets), as venues publish them.
WEIGHTS: dict[type, int] = {
    Logon: 1, Logout: 1, Ping: 1, PlaceOrder: 1, AmendOrder: 1, CancelOrder: 1, CancelAll: 5,
    GetBook: 2, GetAccount: 5, GetOrders: 5, SetLeverage: 1, SetMarginMode: 1,
    AdjustIsolatedMargin: 1, Deposit: 1, Withdraw: 1, GetLimits: 1,
}
REGIMES = ("normal", "high_volatility", "degraded")  # least to most severe
ORDER_REQUESTS = (PlaceOrder, AmendOrder)  # these also take the account's order tokens
EXITS = (CancelOrder, CancelAll)  # (and reduce-only PlaceOrders)
NO_USAGE: dict = {}


class Bucket:
    __slots__ = ("name", "rule", "limit", "capacity", "window_ns", "full", "level", "last_ns")

    def __init__(self, name: str, rule: Rule, now_ns: int) -> None:
        self.name = name
        self.last_ns = now_ns
        self.window_ns = rule.window_ms * MS
        self.level = rule.capacity * self.window_ns  # a new bucket starts full
        self.set_rule(rule)

    def set_rule(self, rule: Rule) -> None:
        """A new rule in force (limits that tighten): the tokens held are kept (rounded down to
        the new window's units), up to the new capacity."""
        window_ns = rule.window_ms * MS
        level = self.level * window_ns // self.window_ns
        self.rule = rule
        self.limit = rule.limit
        self.capacity = rule.capacity
        self.window_ns = window_ns
        self.full = self.capacity * window_ns
        self.level = min(level, self.full)

    def refill(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            self.level = min(self.full, self.level + (now_ns - self.last_ns) * self.limit)
            self.last_ns = now_ns

    def wait_ns(self, cost: int) -> int:
        """0 if `cost` tokens are there now (after refill), else the exact ns until they are;
        -1 if they never will be (more than the bucket holds, or a limit of 0)."""
        short = cost * self.window_ns - self.level
        if short <= 0:
            return 0
        if cost > self.capacity or self.limit <= 0:
            return -1
        return -(-short // self.limit)

    def take(self, cost: int) -> None:
        self.level -= cost * self.window_ns

    def used(self) -> int:
        """Tokens below full, rounded up (what a usage header shows)."""
        return -(-(self.full - self.level) // self.window_ns)

    def usage(self) -> dict:
        return {"rule": self.name, "used": self.used(), "limit": self.capacity,
                "window_ms": self.rule.window_ms}


class Offender:
    """Refusals of one key (or address) in the current window, and its ban."""

    __slots__ = ("who", "violations", "since_ns", "banned_until_ns", "bans")

    def __init__(self, who: str) -> None:
        self.who = who  # "key" or "ip"
        self.violations = 0
        self.since_ns = 0
        self.banned_until_ns = 0
        self.bans = 0


class SessionLimits:
    """A logged-on session's buckets: weights (address, key, account), orders, the exit floor,
    and the key's offender record (shared by every session of the key)."""

    __slots__ = ("weights", "orders", "floor", "offender")

    def __init__(self, weights: tuple, orders: tuple, floor: Bucket, offender: Offender) -> None:
        self.weights = weights
        self.orders = orders  # weights + the account's order bucket
        self.floor = floor
        self.offender = offender


class Limiter:
    RULES = ("key_weight", "ip_weight", "account_weight", "account_orders", "exit_floor")

    def __init__(self, policy: LimitsPolicy | None = None) -> None:
        self.policy = policy or LimitsPolicy()
        self.enabled = self.policy.enabled
        self.rules: dict[str, Rule] = {name: getattr(self.policy, name) for name in self.RULES}
        # rule name -> who -> bucket (who: a key, an address or an account)
        self.buckets: dict[str, dict[str, Bucket]] = {name: {} for name in self.RULES}
        self.buckets["ip_weight"] = OrderedDict()  # least recently used first (bounded)
        self.offenders: dict[str, Offender] = {}  # "key:..." or "ip:..."
        self.wall_offset_ns = 0  # wall clock minus the injected clock, for ban ends
        self.regime = "normal"
        for regime, table in self.policy.scale.items():
            unknown = set(table) - set(self.RULES)
            if unknown:
                raise ValueError(f"rate_limits.scale.{regime}: no rule {', '.join(sorted(unknown))}"
                                 f" (rules: {', '.join(self.RULES)})")

    def scale_ppm(self, name: str, regime: str | None = None) -> int:
        return self.policy.scale.get(regime or self.regime, {}).get(name, 1_000_000)

    def rule_in(self, name: str, regime: str) -> Rule:
        """`name`'s rule under `regime`: the policy's, scaled by the table (rounded down)."""
        base = getattr(self.policy, name)
        ppm = self.scale_ppm(name, regime)
        if ppm == 1_000_000:
            return base
        return Rule(limit=base.limit * ppm // 1_000_000, window_ms=base.window_ms,
                    burst=base.capacity * ppm // 1_000_000)

    def set_regime(self, regime: str) -> list[tuple[str, Rule, Rule]]:
        """Put the rules of `regime` in force; the ones that changed, (name, old, new)."""
        changed = []
        for name in self.RULES:
            old, new = self.rules[name], self.rule_in(name, regime)
            if new != old:
                self.set_rule(name, new)
                changed.append((name, old, new))
        self.regime = regime
        return changed

    # ------------------------------------------------------------------ buckets

    def bucket(self, name: str, who: str, now_ns: int) -> Bucket:
        table = self.buckets[name]
        bucket = table.get(who)
        if bucket is None:
            if name == "ip_weight" and len(table) >= MAX_TRACKED_ADDRESSES:
                table.popitem(last=False)
            bucket = table[who] = Bucket(name, self.rules[name], now_ns)
        elif name == "ip_weight":
            table.move_to_end(who)
        return bucket

    def offender(self, offender_id: str, now_ns: int) -> Offender:
        offender = self.offenders.get(offender_id)
        if offender is None:
            if len(self.offenders) >= MAX_TRACKED_ADDRESSES:  # forget the ones not banned
                self.offenders = {k: o for k, o in self.offenders.items()
                                  if now_ns < o.banned_until_ns}
            offender = self.offenders[offender_id] = Offender(offender_id.split(":", 1)[0])
        return offender

    def session(self, ip: str, key: str, account: str, now_ns: int) -> SessionLimits:
        """The buckets a session logged on from `ip` with `key` for `account` draws from."""
        weights = (self.bucket("ip_weight", ip, now_ns), self.bucket("key_weight", key, now_ns),
                   self.bucket("account_weight", account, now_ns))
        return SessionLimits(weights, weights + (self.bucket("account_orders", account, now_ns),),
                             self.bucket("exit_floor", account, now_ns),
                             self.offender("key:" + key, now_ns))

    def set_rule(self, name: str, rule: Rule) -> None:
        """Put `rule` in force for every bucket of `name` (limits that tighten with the market)."""
        self.rules[name] = rule
        for bucket in self.buckets[name].values():
            bucket.set_rule(rule)

    # ------------------------------------------------------------------ admission

    def admit(self, msg, now_ns: int, ip: str, key: str = "", account: str = "",
              limits: SessionLimits | None = None) -> tuple[tuple | None, dict]:
        """(None, usage) if `msg` may go on (its tokens taken), else (refusal, usage): the refusal
        is (reason, detail) for an Error. A logged-on session passes its `limits`; before logon
        only the address's weight is charged."""
        if not self.enabled:
            return None, NO_USAGE
        t = type(msg)
        cost = WEIGHTS.get(t, 1)
        if limits is None:
            if key:
                limits = self.session(ip, key, account, now_ns)
            else:
                weights = (self.bucket("ip_weight", ip, now_ns),)  # (an order too: refused
                limits = SessionLimits(weights, weights, None,  # not_logged_on after this)
                                       self.offender("ip:" + ip, now_ns))
        buckets = limits.orders if t is PlaceOrder or t is AmendOrder else limits.weights
        offender = limits.offender
        free = now_ns >= offender.banned_until_ns
        if free:
            for bucket in buckets:
                if now_ns > bucket.last_ns:  # (Bucket.refill, inline: this runs per request)
                    level = bucket.level + (now_ns - bucket.last_ns) * bucket.limit
                    bucket.level = level if level < bucket.full else bucket.full
                    bucket.last_ns = now_ns
                if bucket.level < cost * bucket.window_ns:
                    free = False
                    break
            if free:
                tightest, left = None, 2.0
                for bucket in buckets:
                    bucket.level -= cost * bucket.window_ns
                    share = bucket.level / bucket.full if bucket.full else 0.0
                    if share < left:
                        tightest, left = bucket, share
                return None, tightest.usage()
        for bucket in buckets:
            bucket.refill(now_ns)
        if limits.floor is not None and (t in EXITS or (t is PlaceOrder and msg.reduce_only)):
            floor = limits.floor
            floor.refill(now_ns)
            wait = floor.wait_ns(1)
            if wait == 0:
                floor.take(1)
                return None, floor.usage()
            refused = [(wait, floor, 1)]
        else:
            refused = [(w, b, cost) for b in buckets if (w := b.wait_ns(cost)) != 0]
        usage = _tightest(buckets)
        if now_ns < offender.banned_until_ns:
            return self._banned(offender, now_ns), usage
        # Closed by the market (a limit of 0, the degraded regime's for opening orders): no pace
        # of the client's would get through, so it is no violation: a bot retrying is told so,
        # and is not banned from its reads and exits for orders the market refused.
        counts = not all(b.limit <= 0 for _, b, _ in refused)
        if counts:
            self._violation(offender, now_ns)
            if now_ns < offender.banned_until_ns:  # this refusal was the one too many
                return self._banned(offender, now_ns), usage
        wait, bucket, c = max(refused, key=lambda r: (r[0] < 0, r[0]))
        detail = bucket.usage()
        detail.update(cost=c, retry_after_ms=-(-wait // MS) if wait > 0 else -1,
                      violations=offender.violations, ban_after=self.policy.ban_after)
        if not counts:
            detail["counts_toward_ban"] = 0
        if self.regime != "normal":
            detail["regime"] = self.regime
        return ("rate_limited", detail), usage

    def _violation(self, offender: Offender, now_ns: int) -> None:
        policy = self.policy
        if offender.violations == 0 or now_ns - offender.since_ns > policy.ban_window_ms * MS:
            offender.violations, offender.since_ns = 0, now_ns
        offender.violations += 1
        if offender.violations >= policy.ban_after:
            ban_ms = policy.ban_ms << min(offender.bans, MAX_BAN_DOUBLINGS)
            offender.banned_until_ns = now_ns + ban_ms * MS
            offender.bans += 1
            offender.violations = 0

    def _banned(self, offender: Offender, now_ns: int) -> tuple[str, dict]:
        wait = offender.banned_until_ns - now_ns
        return "banned", {"who": offender.who, "bans": offender.bans,
                          "retry_after_ms": -(-wait // MS),
                          "until_ms": (offender.banned_until_ns + self.wall_offset_ns) // MS,
                          "ban_after": self.policy.ban_after,
                          "ban_window_ms": self.policy.ban_window_ms}


def _tightest(buckets) -> dict:
    """The usage of the bucket nearest its limit (the one a client should watch)."""
    return min(buckets, key=lambda b: b.level / b.full if b.full else 0.0).usage()
