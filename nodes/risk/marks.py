"""What risk knows about the oracle's inputs beyond their values: how old each mark is, and which
funding time it last settled. Pure: times come in as arguments (the core's injected now_ns).

Mark age (issue 17, defect 10). A mark carries the oracle's timestamp; its age is now - that time.
Past `max_age_ns` the symbol goes reduce-only: an order that could open exposure is refused
`mark_stale` with the age and the limit, and the switch is an explanation record and a notice to
clients. A fresh mark (younger than the limit) brings the symbol back, explained the same way.
Before its first mark a symbol's age counts from the first mark or check risk saw, so a starting
venue gets one `max_age_ns` for the oracle to come up.

Funding clock (defect 8). Funding times are multiples of the symbol's interval since the epoch.
Risk keeps, per symbol, the last funding time it settled: a rate for a time already settled (a
restarted oracle catching up, or a repeat) is refused and explained, so each interval is paid
exactly once whatever restarts; a rate that comes late (the oracle was down at the funding time)
is settled and explained as a catch-up, with how late and why; a jump over funding times nobody
published is explained with the ones that were missed.
"""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.protocol import FundingRate, Notice

MS = 1_000_000
SEC = 1_000_000_000
# A rate settled more than this after its funding time is a catch-up (the oracle publishes within
# one publish period, 100 ms, of the funding time when it is up).
FUNDING_LATE_NS = 1 * SEC


class MarkAges:
    __slots__ = ("max_age_ns", "times", "stale", "started_ns")

    def __init__(self, max_age_ns: int | None = None) -> None:
        self.max_age_ns = max_age_ns  # None: ages are kept but never stop trading
        self.times: dict[str, int] = {}  # symbol -> timestamp of its newest mark
        self.stale: dict[str, int] = {}  # symbol -> when it went reduce-only
        self.started_ns: int | None = None

    def state(self) -> list:
        return [sorted(self.times.items()), sorted(self.stale.items()), self.started_ns]

    def age_ns(self, symbol: str, now_ns: int) -> int:
        if self.started_ns is None:
            self.started_ns = now_ns
        return now_ns - self.times.get(symbol, self.started_ns)

    def on_mark(self, symbol: str, ts_ns: int, now_ns: int, out: list) -> None:
        """A mark stamped `ts_ns` (0: unstamped, taken as now); one out of order changes nothing."""
        if self.started_ns is None:
            self.started_ns = now_ns
        stamp = ts_ns or now_ns
        newest = self.times.get(symbol)
        if newest is not None and stamp <= newest:
            return
        self.times[symbol] = stamp
        if symbol in self.stale and now_ns - stamp <= self.max_age_ns:
            since = self.stale.pop(symbol)
            self._say(out, now_ns, symbol, "risk.mark_age", "trading_resumed", {
                "mark_age_ms": (now_ns - stamp) // MS, "max_mark_age_ms": self.max_age_ns // MS,
                "reduce_only_for_ms": (now_ns - since) // MS})

    def refusal(self, symbol: str, now_ns: int, out: list) -> dict | None:
        """None while the symbol's mark is fresh enough to trade on; else the numbers of the
        refusal (and, the first time, the switch to reduce-only, explained)."""
        if self.max_age_ns is None:
            return None
        age = self.age_ns(symbol, now_ns)
        if age <= self.max_age_ns:
            return None
        numbers = {"mark_age_ms": age // MS, "max_mark_age_ms": self.max_age_ns // MS,
                   "mark_ts_ns": self.times.get(symbol, 0)}
        if symbol not in self.stale:
            self.stale[symbol] = now_ns
            self._say(out, now_ns, symbol, "risk.mark_age", "reduce_only", numbers)
        return numbers

    def check(self, symbols, now_ns: int, out: list) -> None:
        """The timer's look at every symbol: a mark that aged past the limit with no order to
        notice it still switches its symbol, and says so."""
        for symbol in symbols:
            self.refusal(symbol, now_ns, out)

    @staticmethod
    def _say(out: list, now_ns: int, symbol: str, rule: str, decision: str, numbers: dict) -> None:
        out.append(("audit", Explanation(ts_ns=now_ns, node="risk", rule=rule, subject=symbol,
                                         decision=decision, numbers=numbers)))
        out.append(("gateway", Notice(rule=rule, subject=symbol, decision=decision,
                                      numbers=numbers, ts_ns=now_ns)))


class FundingClock:
    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled: dict[str, int] = {}  # symbol -> the last funding time settled

    def state(self) -> list:
        return sorted(self.settled.items())

    def begin(self, intervals_ns: dict[str, int], now_ns: int) -> None:
        """A venue starting at `now_ns` owes no funding time before it: each symbol's clock starts
        at the last one passed (a restarted oracle that lost its state says that one again)."""
        for symbol, interval_ns in sorted(intervals_ns.items()):
            self.settled.setdefault(symbol, now_ns // interval_ns * interval_ns)

    def admit(self, msg: FundingRate, interval_ns: int, now_ns: int, out: list) -> bool:
        """Is this rate's funding time still to be settled? Records it as settled when it is,
        and explains a repeat, a catch-up and any funding times skipped. A rate that names no
        funding time (funding_ts_ns 0: not from the oracle) is settled as it comes."""
        when = msg.funding_ts_ns
        if not when:
            return True
        last = self.settled.get(msg.symbol)
        numbers = {"funding_ts_ns": when, "rate_e9": msg.rate_e9}
        if last is not None and when <= last:
            out.append(("audit", Explanation(
                ts_ns=now_ns, node="risk", rule="risk.funding_already_settled", subject=msg.symbol,
                decision="ignored", numbers={**numbers, "last_settled_ts_ns": last})))
            return False
        self.settled[msg.symbol] = when
        if last is not None and when - last > interval_ns:
            missed = (when - last) // interval_ns - 1
            out.append(("audit", Explanation(
                ts_ns=now_ns, node="risk", rule="risk.funding_missed", subject=msg.symbol,
                decision="not_settled", numbers={
                    **numbers, "last_settled_ts_ns": last, "missed": missed,
                    "first_missed_ts_ns": last + interval_ns,
                    "why": "no rate was published for them (oracle down with its state lost)"})))
        late = max(now_ns, msg.ts_ns) - when
        if late > FUNDING_LATE_NS:
            out.append(("audit", Explanation(
                ts_ns=now_ns, node="risk", rule="risk.funding_late", subject=msg.symbol,
                decision="settled_late", numbers={
                    **numbers, "late_ms": late // MS, "published_ts_ns": msg.ts_ns,
                    "why": "the oracle was not publishing at the funding time (down or restarting) "
                           "and caught it up"})))
        return True
