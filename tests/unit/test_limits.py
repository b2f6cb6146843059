"""Rate limits (nodes/gateway/limits.py): token buckets that never let more than limit + burst
through in any window and refill exactly; weights per request, usage on every answer,
retry_after_ms on a throttle, escalation to a ban and its end, and exits at the floor."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import LimitsPolicy, Rule
from cluster.protocol import (
    Ack, AmendOrder, CancelAll, CancelOrder, GetAccount, Logon, LogonAck, PlaceOrder, Reply, Routed,
)
from nodes.gateway.limits import MS, WEIGHTS, Bucket, Limiter
from nodes.gateway.sessions import Gateway

rules = st.builds(Rule, limit=st.integers(1, 50), window_ms=st.integers(1, 2000),
                  burst=st.integers(0, 80))


@settings(max_examples=200, deadline=None)
@given(rules, st.lists(st.tuples(st.integers(0, 3_000 * MS), st.integers(1, 10)), max_size=80))
def test_a_bucket_never_lets_more_than_limit_plus_burst_through_in_any_window(rule, steps):
    bucket = Bucket("b", rule, 0)
    now, taken = 0, []
    for gap, cost in steps:
        now += gap
        bucket.refill(now)
        if bucket.wait_ns(cost) == 0:
            bucket.take(cost)
            taken.append((now, cost))
        assert 0 <= bucket.level <= bucket.full
    window = rule.window_ms * MS
    for start, _ in taken:  # every window [t, t + window] that starts at an admission
        inside = sum(c for t, c in taken if start <= t <= start + window)
        assert inside <= rule.capacity + rule.limit, (start, inside)


@settings(max_examples=200, deadline=None)
@given(rules, st.integers(0, 5_000 * MS), st.integers(1, 10))
def test_refill_and_retry_after_are_exact(rule, elapsed, cost):
    bucket = Bucket("b", rule, 0)
    bucket.take(rule.capacity)  # empty at t=0
    bucket.refill(elapsed)
    window = rule.window_ms * MS
    assert bucket.level == min(bucket.full, elapsed * rule.limit)
    whole_tokens = min(rule.capacity, elapsed * rule.limit // window)
    assert bucket.used() == rule.capacity - whole_tokens
    wait = bucket.wait_ns(cost)
    if cost > rule.capacity:
        assert wait == -1
        return
    assert (wait == 0) == (whole_tokens >= cost)
    if wait > 0:  # one ns earlier it is still short; at the wait it is there
        early = Bucket("b", rule, 0)
        early.level = bucket.level
        early.last_ns = elapsed
        early.refill(elapsed + wait - 1)
        assert early.wait_ns(cost) > 0
        early.refill(elapsed + wait)
        assert early.wait_ns(cost) == 0


def tight(**rules) -> LimitsPolicy:
    wide = Rule(limit=10_000)
    base = dict(key_weight=wide, ip_weight=wide, account_weight=wide, account_orders=wide,
                exit_floor=Rule(limit=2, window_ms=1000))
    base.update(rules)
    return LimitsPolicy(**{k: v for k, v in base.items() if isinstance(v, Rule)},
                        **{k: v for k, v in base.items() if not isinstance(v, Rule)})


def order(i: int, **kw) -> PlaceOrder:
    return PlaceOrder(req_id=i, symbol="BTC-PERP", side=1, qty=1, price=1, **kw)


def test_orders_are_throttled_with_retry_after_and_usage_and_cancels_pass_at_the_floor():
    limiter = Limiter(tight(account_orders=Rule(limit=5, window_ms=1000)))
    args = ("1.1.1.1", "k", "alice")
    for i in range(5):
        refused, usage = limiter.admit(order(i), 0, *args)
        assert refused is None
    assert usage == {"rule": "account_orders", "used": 5, "limit": 5, "window_ms": 1000}
    refused, _ = limiter.admit(order(6), 0, *args)
    assert refused == ("rate_limited", {"rule": "account_orders", "used": 5, "limit": 5,
                                        "window_ms": 1000, "cost": 1, "retry_after_ms": 200,
                                        "violations": 1, "ban_after": 100})
    assert limiter.admit(order(7), 199 * MS, *args)[0][0] == "rate_limited"
    assert limiter.admit(order(8), 200 * MS, *args)[0] is None  # exactly when it said
    # reduce-only orders still go, at the floor (2 a second), then are throttled too
    for i in (9, 10):
        refused, usage = limiter.admit(order(i, reduce_only=True), 200 * MS, *args)
        assert refused is None and usage == {"rule": "exit_floor", "used": i - 8, "limit": 2,
                                             "window_ms": 1000}
    refused, _ = limiter.admit(order(11, reduce_only=True), 200 * MS, *args)
    assert refused[1]["rule"] == "exit_floor" and refused[1]["retry_after_ms"] == 500


def test_weights_are_charged_per_request_type():
    limiter = Limiter(tight(key_weight=Rule(limit=10, window_ms=1000)))
    assert WEIGHTS[GetAccount] == 5 and WEIGHTS[CancelAll] == 5
    assert limiter.admit(GetAccount(), 0, "ip", "k", "a")[1]["used"] == 5
    assert limiter.admit(GetAccount(), 0, "ip", "k", "a")[1]["used"] == 10
    refused, _ = limiter.admit(GetAccount(), 0, "ip", "k", "a")
    assert refused[1]["rule"] == "key_weight" and refused[1]["cost"] == 5
    # out of weight, a cancel still goes at the floor
    refused, usage = limiter.admit(CancelOrder(symbol="BTC-PERP", order_id=1), 0, "ip", "k", "a")
    assert refused is None and usage["rule"] == "exit_floor"


def test_repeated_violations_escalate_to_a_ban_that_ends_and_doubles_next_time():
    limiter = Limiter(tight(key_weight=Rule(limit=1, window_ms=1000), ban_after=3,
                            ban_window_ms=10_000, ban_ms=4000))
    limiter.wall_offset_ns = 50_000 * MS
    args = ("ip", "k", "a")
    assert limiter.admit(Logon(api_key="k"), 0, *args)[0] is None
    reasons = [limiter.admit(Logon(api_key="k"), 0, *args)[0] for _ in range(3)]
    assert [r[0] for r in reasons] == ["rate_limited", "rate_limited", "banned"]
    assert reasons[2][1] == {"who": "key", "bans": 1, "retry_after_ms": 4000, "until_ms": 54_000,
                             "ban_after": 3, "ban_window_ms": 10_000}
    # banned: refused even with tokens, until the end; a cancel still passes at the floor
    assert limiter.admit(Logon(api_key="k"), 3999 * MS, *args)[0][0] == "banned"
    assert limiter.admit(CancelAll(), 3999 * MS, *args)[0] is None
    assert limiter.admit(Logon(api_key="k"), 4000 * MS, *args)[0] is None
    for _ in range(3):
        last = limiter.admit(Logon(api_key="k"), 4000 * MS, *args)[0]
    assert last[0] == "banned" and last[1]["retry_after_ms"] == 8000 and last[1]["bans"] == 2
    # another key on the same address is not banned
    assert limiter.admit(Logon(api_key="k2"), 4000 * MS, "ip", "k2", "b")[0] is None


def test_the_gateway_answers_with_usage_and_refuses_a_flood_before_logon_per_address():
    gw = Gateway({"k": ("alice", ("trade",))}, {"BTC-PERP": {}},
                 limits=tight(ip_weight=Rule(limit=3, window_ms=1000)))
    (_, _, ack), = gw.on_request(b"s", Logon(req_id=1, api_key="k"), 0, "9.9.9.9")
    assert type(ack) is LogonAck and ack.usage["used"] == 1
    (_, routed), = gw.on_request(b"s", order(2), 0)
    assert type(routed) is Routed
    (_, _, answer), = gw.on_internal(Reply(ref=routed.ref, body=Ack(action="x")))
    assert answer.req_id == 2 and answer.usage == {"rule": "ip_weight", "used": 2, "limit": 3,
                                                  "window_ms": 1000}
    (_, _, answer), = gw.on_request(b"other", Logon(req_id=3, api_key="k"), 0, "9.9.9.9")
    assert answer.usage["used"] == 3
    (_, _, refused), = gw.on_request(b"third", Logon(req_id=4, api_key="k"), 0, "9.9.9.9")
    assert refused.reason == "rate_limited" and refused.detail["rule"] == "ip_weight"
    assert refused.detail["retry_after_ms"] == 334 and refused.req_id == 4


def test_a_flood_of_throttles_is_journaled_once_a_second_and_counted():
    import msgspec

    from cluster import config
    from cluster.recording import RecordingShell
    from nodes.gateway import service as gateway_service

    topo = config.load()
    conf = msgspec.structs.replace(topo.nodes["gateway"], rate_limits=tight(
        key_weight=Rule(limit=2, window_ms=1000), ban_after=1000))
    shell = RecordingShell(conf)
    gateway_service.build(shell, topo)
    me = b"flooder"
    shell.router([[me, msgspec.msgpack.encode(Logon(api_key=topo.accounts["bob"].api_key))]])
    shell.router([[me, msgspec.msgpack.encode([GetAccount(req_id=i + 1) for i in range(300)])]])
    refusals = [m for _, m in shell.sent if getattr(m, "reason", "") == "rate_limited"]
    assert len(refusals) == 300  # (the logon took the key's 1st token, weight 5 > 1 left)
    assert [e.rule for e in shell.explained] == ["gateway.rate_limited"]
    assert shell.stats["throttles_unjournaled"] == 299


def test_a_regime_change_halves_the_order_rate_and_tells_every_session_why():
    from cluster.protocol import GetLimits, Notice, Regime

    gw = Gateway({"k": ("alice", ("trade",)), "kb": ("bob", ("trade",)),
                  "adm": ("admin", ("admin",))}, {"BTC-PERP": {}},
                 limits=tight(account_orders=Rule(limit=10, window_ms=1000, burst=20)))
    gw.wall_offset_ns = 7_000 * MS
    for who, key in ((b"a1", "k"), (b"a2", "k"), (b"b1", "kb")):
        gw.on_request(who, Logon(api_key=key), 0, "ip")
    quiet = Regime(symbol="ETH-PERP", regime="normal", changed=False)
    assert gw.on_regime(quiet, 0) == []
    high = Regime(symbol="BTC-PERP", regime="high_volatility", realized_vol_ppm=80_000,
                  threshold_ppm=50_000, window_s=300)
    out = gw.on_regime(high, 5 * MS)
    notices = [(e[1], e[2]) for e in out if e[0] == "client"]
    assert sorted(who for who, _ in notices) == [b"a1", b"a2", b"b1"]
    notice = notices[0][1]
    assert type(notice) is Notice and notice.rule == "gateway.limit.account_orders"
    assert notice.decision == "10/1000ms burst 20 -> 5/1000ms burst 10"
    assert {k: notice.numbers[k] for k in ("old_limit", "new_limit", "regime", "symbol",
                                            "realized_vol_ppm", "threshold_ppm")} == {
        "old_limit": 10, "new_limit": 5, "regime": "high_volatility", "symbol": "BTC-PERP",
        "realized_vol_ppm": 80_000, "threshold_ppm": 50_000}
    assert notice.ts_ns == 7_005 * MS and "normal" in notice.numbers["until"]
    explained = [e[1] for e in out if e[0] == "explain"]
    assert sorted(e.subject for e in explained) == ["alice", "bob"]  # one record per account
    assert gw.on_regime(high, 6 * MS) == []  # the repeat changes nothing
    # the halved rate is what admission uses: a full bucket now holds 10, not 20
    answers = [gw.on_request(b"b1", order(i), 10 * MS)[0] for i in range(12)]
    assert [a[0] for a in answers].count("risk") == 10
    refused = answers[-1][2]
    assert refused.detail["limit"] == 10 and refused.detail["regime"] == "high_volatility"
    cancel = gw.on_request(b"b1", CancelOrder(req_id=50, symbol="BTC-PERP", order_id=1), 10 * MS)
    assert cancel[0][0] == "risk"  # cancels still pass
    # degraded anywhere: no new orders at all, reduce-only at the floor
    gw.on_regime(Regime(symbol="ETH-PERP", regime="degraded"), 20 * MS)
    (_, _, refused), = gw.on_request(b"a1", order(60), 2000 * MS)
    assert refused.reason == "rate_limited" and refused.detail["limit"] == 0
    assert gw.on_request(b"a1", order(61, reduce_only=True), 2000 * MS)[0][0] == "risk"
    # the view: what is in force, the rule without the market, and why
    (_, _, view), = gw.on_request(b"a1", GetLimits(req_id=70), 2000 * MS)
    assert view.action == "limits" and view.detail["regime"] == "degraded"
    assert (view.detail["account_orders.limit"], view.detail["account_orders.base_limit"],
            view.detail["account_orders.scale_ppm"]) == (0, 10, 0)
    (_, _, other), = gw.on_request(b"a1", GetLimits(req_id=71, account="bob"), 2000 * MS)
    assert other.reason == "not_your_account"
    # ETH recovers: BTC's high volatility is the most severe again; then BTC recovers too
    eased = gw.on_regime(Regime(symbol="ETH-PERP", regime="normal"), 3000 * MS)
    back = gw.on_regime(Regime(symbol="BTC-PERP", regime="normal"), 3000 * MS)
    assert [{e[2].decision for e in out if e[0] == "client"} for out in (eased, back)] == [
        {"0/1000ms burst 0 -> 5/1000ms burst 10"}, {"5/1000ms burst 10 -> 10/1000ms burst 20"}]


def test_a_scale_table_naming_no_rule_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no rule account_order"):
        Limiter(LimitsPolicy(scale={"degraded": {"account_order": 0}}))


def test_an_order_or_amend_before_logon_is_refused_not_logged_on_not_crashed():
    """After a gateway restart a client's first order arrives with no session: it is charged to
    its address and refused not_logged_on (the SDK logs on again), never an internal error."""
    gw = Gateway({"k": ("alice", ("trade",))}, {"BTC-PERP": {}}, limits=tight())
    for request in (order(1), AmendOrder(req_id=2, symbol="BTC-PERP", order_id=1, price=2)):
        (_, _, refused), = gw.on_request(b"s", request, 0, "9.9.9.9")
        assert refused.reason == "not_logged_on" and refused.usage["rule"] == "ip_weight"


def test_orders_the_degraded_regime_refuses_never_ban_the_bot_that_retries_them():
    """Found by the chaos experiments: with opening orders at a limit of 0, every retry counted
    as a violation, and a bot was banned (even from reading its orders) for orders the market
    refused. A refusal no pace would get through is no violation; pacing refusals still are."""
    limiter = Limiter(tight(account_orders=Rule(limit=3, window_ms=1000), ban_after=3,
                            ban_window_ms=10_000, ban_ms=4000))
    args = ("ip", "k", "alice")
    limiter.set_regime("degraded")
    for i in range(20):
        refused, _ = limiter.admit(order(i), i * MS, *args)
        assert refused[0] == "rate_limited" and refused[1]["limit"] == 0
        assert refused[1]["counts_toward_ban"] == 0 and refused[1]["violations"] == 0
    assert limiter.admit(GetAccount(), 20 * MS, *args)[0] is None  # not banned: reads go on
    assert limiter.admit(order(30, reduce_only=True), 20 * MS, *args)[0] is None  # exits too
    limiter.set_regime("normal")  # a flood at a limit the client can keep is still a violation
    answers = [limiter.admit(order(40 + i), 5000 * MS, *args)[0] for i in range(7)]
    assert [a[0] if a else None for a in answers] == [None] * 3 + ["rate_limited"] * 2 + [
        "banned"] * 2
