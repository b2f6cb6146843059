"""Surveillance features, each against a hand-computed value, and the incremental features against a
from-scratch recomputation over the same event stream (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.protocol import (
    EngineBatch, Notice, OrderAccepted, OrderAmended, OrderCancelled, OrdersCancelled, Trade,
)
from nodes.surveillance.features import (
    BUCKET_NS, COHORT_MIN, COHORT_NS, LEVERAGE_LEAD_NS, LIQ_BUCKET_BPS, OTR_MIN_MESSAGES, WINDOW_BUCKETS,
)
from perf.surveillance_sim import MS, Venue

S = "BTC-PERP"
MID = 300_000  # ticks (30,000.0)


def quoted(v: Venue, size: int = 10) -> tuple[int, int]:
    """A market maker 'mm' quoting 1 tick-pair around the mid: bid 299990, ask 300010."""
    return v.place("mm", 1, size, MID - 10, 0), v.place("mm", -1, size, MID + 10, 0)


def feats(v: Venue, account: str, now: int | None = None, window: str = "10m") -> dict:
    return v.core.features.values(v.now if now is None else now, window)[(account, S)]


def test_order_to_trade_ratios_by_number_and_volume():
    v = Venue()
    _, ask = quoted(v)
    v.place("x", 1, 3, 0, 5 * MS)  # buys 3 of mm's ask
    v.cancel("mm", ask, 6 * MS)
    for i in range(4):  # 4 more bids of 5 lots, 2 of them cancelled: 6 messages
        oid = v.place("mm", 1, 5, MID - 100 - i, (7 + 2 * i) * MS)
        if i < 2:
            v.cancel("mm", oid, (8 + 2 * i) * MS)
    mm = feats(v, "mm")
    assert (mm["orders"], mm["cancels"], mm["fills"]) == (6, 3, 1)  # 9 messages
    assert mm["otr_num_milli"] == 0 and mm["otr_vol_milli"] == 0  # 9 < OTR_MIN_MESSAGES: no ratio
    v.cancel("mm", oid, 20 * MS)
    mm = feats(v, "mm")
    # mm: 6 orders + 4 cancels = 10 messages, 1 fill: 10/1 - 1 = 9; volume 40 lots / 3 filled - 1
    assert (mm["orders"], mm["cancels"], mm["fills"], mm["order_qty"]) == (6, 4, 1, 40)
    assert mm["otr_num_milli"] == 9_000
    assert mm["otr_vol_milli"] == 40_000 // 3 - 1_000 == 12_333


def test_passive_lots_and_two_sided_quoting_pick_the_peer_group():
    v = Venue()
    bid, ask = quoted(v)  # mm rests 10 lots on each side at once
    v.place("x", 1, 3, 0, 5 * MS)  # x takes 3 of mm's ask
    v.place("r", -1, 4, MID + 5, 6 * MS)  # r rests one order, on one side only
    mm, x, r = feats(v, "mm"), feats(v, "x"), feats(v, "r")
    assert (mm["maker_qty"], mm["fill_qty"], mm["passive_ppm"]) == (3, 3, 1_000_000)
    assert mm["two_sided"] == 10  # the smaller side as it placed its ask: 10 lots each
    assert (x["maker_qty"], x["fill_qty"], x["passive_ppm"], x["two_sided"]) == (0, 3, 0, 0)
    assert (r["two_sided"], r["passive_ppm"]) == (0, 0)  # no fill: no passive share
    v.place("mm", 1, 2, 0, 7 * MS)  # mm lifts r's ask: 2 lots as the taker
    mm = feats(v, "mm")
    assert (mm["maker_qty"], mm["fill_qty"], mm["passive_ppm"]) == (3, 5, 600_000)


def test_zero_trade_rule_counts_every_message_once_there_are_enough():
    v = Venue()
    for i in range(4):
        v.place("z", 1, 2, MID - 100 - i, i * MS)
    # 4 unfilled orders (a retail account's, a market maker's first quotes) are no ratio: by the
    # zero-trade rule they would read 4 and 8, above most accounts that trade
    assert feats(v, "z")["otr_num_milli"] == 0 and feats(v, "z")["otr_vol_milli"] == 0
    for i in range(4, OTR_MIN_MESSAGES):
        v.place("z", 1, 2, MID - 100 - i, i * MS)
    z = feats(v, "z")
    assert z["orders"] == OTR_MIN_MESSAGES == 10
    assert z["otr_num_milli"] == 10_000  # ESMA Q&A 3.19: orders without a trade
    assert z["otr_vol_milli"] == 20_000


def test_share_of_orders_cancelled_within_1_10_100_ms():
    v = Venue()
    ages_ns = [500_000, 5 * MS, 50 * MS, 500 * MS]
    for i, age in enumerate(ages_ns):
        t = i * 1_000 * MS
        oid = v.place("f", 1, 1, MID - 100, t)
        v.cancel("f", oid, t + age)
    f = feats(v, "f")
    assert (f["cxl_1ms"], f["cxl_10ms"], f["cxl_100ms"]) == (1, 2, 3)
    assert (f["cxl_lt_1ms_ppm"], f["cxl_lt_10ms_ppm"], f["cxl_lt_100ms_ppm"]) == (
        250_000, 500_000, 750_000)


def test_max_cancels_in_any_100ms():
    v = Venue()
    times_ms = [0, 30, 60, 99, 150, 260]
    oids = [v.place("b", 1, 1, MID - 200 - i, 0) for i in range(len(times_ms))]
    for oid, t in zip(oids, times_ms):
        v.cancel("b", oid, t * MS)
    # (0, 30, 60, 99] all within 100 ms of 99; at 150: 60, 99, 150; at 260: 260 alone
    assert feats(v, "b")["burst_100ms"] == 4


def test_cancel_after_opposite_fill_and_layering():
    v = Venue()
    quoted(v)
    v.place("mm", -1, 10, MID + 20, 0)
    spoof = v.place("s", 1, 100, MID - 100, 1_000 * MS)  # large bid away from the touch
    v.place("s", -1, 1, MID + 5, 1_000 * MS)  # small ask at the (new) touch
    s = feats(v, "s")
    assert s["layer_milli"] == 100 * 1_000 // 1  # 100 lots away on the bid per lot at the ask
    assert s["levels"] == 1
    v.place("x", 1, 1, 0, 1_100 * MS)  # takes s's small ask: s sold 1
    v.cancel("s", spoof, 1_300 * MS)  # then the bid goes, 200 ms after the opposite fill
    s = feats(v, "s")
    assert s["spoof_cxl_qty"] == 100 and s["spoof_fill_qty"] == 1
    assert s["spoof_milli"] == 100_000  # 100 lots pulled per lot traded on the other side
    # mm's quotes: nothing away from its touch, nothing cancelled after a fill
    assert feats(v, "mm")["spoof_milli"] == 0 and feats(v, "mm")["layer_milli"] == 1_000 * 10 // 10


def test_cancel_long_after_the_fill_is_not_spoof():
    v = Venue()
    quoted(v)
    bid = v.place("s", 1, 100, MID - 100, 0)
    v.place("s", -1, 1, MID + 5, 0)
    v.place("x", 1, 1, 0, 10 * MS)
    v.cancel("s", bid, 10 * MS + 1_001 * MS)  # 1.001 s later: outside the 1 s window
    assert feats(v, "s")["spoof_cxl_qty"] == 0


def test_top_of_book_changes_per_second():
    v = Venue()
    quoted(v)  # mm changed the top twice at t=0
    for i in range(5):  # q improves the bid 5 times within 400 ms, then once 2 s later
        v.place("q", 1, 1, MID - 9 + i, i * 100 * MS)
    v.place("q", 1, 1, MID - 2, 2_400 * MS)
    v.place("q", 1, 1, MID - 500, 2_500 * MS)  # deep: top unchanged
    assert feats(v, "q")["touch_1s"] == 5
    assert feats(v, "mm")["touch_1s"] == 2


def test_own_share_of_depth_within_one_percent():
    v = Venue()
    quoted(v)  # 20 lots within 1 % of the mid
    v.place("t", 1, 20, MID - 50, MS)  # 20 more, 50 ticks (0.017 %) away
    v.place("t", 1, 30, MID - 5_000, 2 * MS)  # 1.7 % away: not within 1 %
    assert feats(v, "t")["depth_share_ppm"] == 20 * 1_000_000 // 40


def test_leverage_changes_jump_and_order_after_raise():
    v = Venue()
    quoted(v)
    v.set_leverage("l", 100, 1_000 * MS)  # 20x -> 100x
    v.place("l", 1, 50, MID - 30, 30_000 * MS)  # 29 s after the raise
    v.place("l", 1, 70, MID - 30, 62_000 * MS)  # 61 s after: not "shortly before"
    v.set_leverage("l", 50, 63_000 * MS)  # a cut: changes count it, the jump does not
    f = feats(v, "l")
    assert f["lev_changes"] == 2
    assert f["lev_jump_milli"] == 5_000
    assert f["lev_then_order"] == 50 * 5_000 // 1_000 == 250  # the order's lots x the raise


def test_momentum_ignition_share_times_move_then_reversal():
    v = Venue()
    v.place("mm", 1, 10, MID - 10, 0)
    for i in range(6):  # asks 300010 ... 300060, one lot each
        v.place("mm", -1, 1, MID + 10 * (i + 1), 0)
    v.place("i", 1, 5, 0, 1_000 * MS)  # sweeps 5 levels: best ask 300060, mid 300025
    v.place("mm", 1, 1, MID - 900, 6_500 * MS)  # any event of the symbol after 5 s closes it
    v.place("i", -1, 1, 0, 7_000 * MS)  # sells back within 10 s: a reversal
    # move 25 ticks on 300000 = 83 ppm, all 5 traded lots of the episode were i's
    assert feats(v, "i")["ignition_ppm"] == 25 * 1_000_000 // MID * 5 // 5 == 83


def test_no_reversal_no_ignition():
    v = Venue()
    v.place("mm", 1, 10, MID - 10, 0)
    for i in range(6):
        v.place("mm", -1, 1, MID + 10 * (i + 1), 0)
    v.place("i", 1, 5, 0, 1_000 * MS)
    v.place("mm", 1, 1, MID - 900, 6_500 * MS)
    v.place("i", -1, 1, 0, 17_000 * MS)  # 10.5 s after the close: too late
    assert feats(v, "i")["ignition_ppm"] == 0


def test_liquidation_prices_in_one_bucket():
    v = Venue()
    v.place("mm", 1, 100, MID - 10, 0)
    v.place("mm", -1, 100, MID + 10, 0)
    for name in ("c1", "c2", "c3", "far"):
        v.place(name, 1, 10, 0, MS)  # each long 10 lots (0.01 BTC) at 300010
    for name in ("c1", "c2", "c3"):
        v.account_risk(name, margin=30_000_000, at_ns=2 * MS)  # the same margin: one price
    v.account_risk("far", margin=100_000_000, at_ns=2 * MS)
    values = v.core.features.values(v.now)
    assert [values[(n, S)]["liq_cluster"] for n in ("c1", "c2", "c3", "far")] == [2, 2, 2, 0]
    liq = v.core.features.liq
    assert liq[("c1", S)] == liq[("c2", S)] and liq[("far", S)] < liq[("c1", S)]


def test_window_forgets_session_remembers():
    v = Venue()
    oid = v.place("w", 1, 1, MID - 100, 0)
    v.cancel("w", oid, MS // 2)
    later = (WINDOW_BUCKETS + 1) * BUCKET_NS
    assert ("w", S) not in v.core.features.values(later, "10m")
    session = v.core.features.values(later, "session")[("w", S)]
    assert session["cancels"] == 1 and session["burst_100ms"] == 1 and session["cxl_1ms"] == 1


# ---------------------------------------------------------------- incremental == from scratch

COUNTED = ("orders", "amends", "cancels", "order_qty", "fills", "fill_qty", "maker_qty", "cxl_1ms",
           "cxl_10ms", "cxl_100ms", "burst_100ms", "sweep_lots", "lev_then_order")


def recompute(batches: list, now: int) -> dict:
    """The counted features over the 10-minute window, straight from the whole stream."""
    first_bucket = now // BUCKET_NS - WINDOW_BUCKETS + 1
    accepted_at: dict[int, int] = {}
    out: dict = defaultdict(lambda: dict.fromkeys(COUNTED, 0))
    cancels: dict = defaultdict(list)
    raised: dict = {}  # key -> (time of its latest raise, new / old x1000)

    def counted(key, name, n, ts):
        if ts // BUCKET_NS >= first_bucket:
            out[key][name] += n

    def cancel(key, oid, ts):
        cancels[key].append(ts)
        counted(key, "cancels", 1, ts)
        if oid in accepted_at:
            age = ts - accepted_at[oid]
            for limit, name in ((MS, "cxl_1ms"), (10 * MS, "cxl_10ms"), (100 * MS, "cxl_100ms")):
                if age < limit:
                    counted(key, name, 1, ts)

    for msg, ts in batches:
        if type(msg) is Notice and msg.numbers["to"] > msg.numbers["from"]:
            raised[(msg.subject, msg.numbers["symbol"])] = (
                ts, msg.numbers["to"] * 1000 // msg.numbers["from"])
        if type(msg) is not EngineBatch:
            continue
        taken: dict = defaultdict(int)  # (account, symbol, aggressive order) -> lots it took
        sent = {ev.order_id: ev.qty for ev in msg.events if type(ev) is OrderAccepted}
        for ev in msg.events:
            if type(ev) is Trade:
                taken[(ev.taker_account, ev.symbol, ev.taker_order_id)] += ev.qty
        for account, symbol, oid in list(taken):  # an aggressive order counts as large as sent
            taken[(account, symbol, oid)] = max(taken[(account, symbol, oid)], sent.get(oid, 0))
        for (account, symbol, _), lots in taken.items():
            if ts // BUCKET_NS >= first_bucket:
                key = (account, symbol)
                out[key]["sweep_lots"] = max(out[key]["sweep_lots"], lots)
        for ev in msg.events:
            t = type(ev)
            if t is OrderAccepted:
                key = (ev.account, ev.symbol)
                counted(key, "orders", 1, ts)
                counted(key, "order_qty", ev.qty, ts)
                at, jump = raised.get(key, (None, 0))
                if at is not None and ts - at <= LEVERAGE_LEAD_NS and \
                        ts // BUCKET_NS >= first_bucket:
                    out[key]["lev_then_order"] = max(out[key]["lev_then_order"],
                                                     ev.qty * jump // 1000)
                if ev.price:
                    accepted_at[ev.order_id] = ts
            elif t is OrderCancelled and ev.reason == "user":
                cancel((ev.account, ev.symbol), ev.order_id, ts)
            elif t is OrdersCancelled:
                for oid, _ in ev.orders:
                    cancel((ev.account, ev.symbol), oid, ts)
            elif t is OrderAmended and ev.reason == "user":
                counted((ev.account, ev.symbol), "amends", 1, ts)
            elif t is Trade:
                for account in (ev.maker_account, ev.taker_account):
                    counted((account, ev.symbol), "fills", 1, ts)
                    counted((account, ev.symbol), "fill_qty", ev.qty, ts)
                counted((ev.maker_account, ev.symbol), "maker_qty", ev.qty, ts)
    for key, times in cancels.items():
        for i, ts in enumerate(times):  # cancels in (ts - 100 ms, ts], at each cancel in window
            if ts // BUCKET_NS >= first_bucket:
                n = sum(1 for other in times[:i + 1] if other > ts - 100 * MS)
                out[key]["burst_100ms"] = max(out[key]["burst_100ms"], n)
    return {k: v for k, v in out.items() if any(v.values())}


def cohorts(batches: list, liq: dict, positions: dict, mark: int) -> dict:
    """liq_cohort_lots from scratch: each position's opening time from the whole stream of
    fills, then every pair of accounts compared (liquidation prices as risk's AccountRisk gave
    them to the core)."""
    net: dict = defaultdict(int)
    opened: dict = {}
    for msg, ts in batches:
        if type(msg) is not EngineBatch:
            continue
        for ev in msg.events:
            if type(ev) is not Trade:
                continue
            for account, side in ((ev.maker_account, -ev.taker_side),
                                  (ev.taker_account, ev.taker_side)):
                key = (account, ev.symbol)
                before = net[key]
                net[key] += side * ev.qty
                if not net[key]:
                    opened.pop(key, None)
                elif net[key] * before <= 0:
                    opened[key] = ts
    width = mark * LIQ_BUCKET_BPS // 10_000
    out = {}
    for key in liq:
        members = [other for other in liq if other != key and other[1] == key[1]
                   and abs(liq[other] - liq[key]) <= width and key in opened and other in opened
                   and abs(opened[other] - opened[key]) <= COHORT_NS]
        out[key] = sum(abs(positions.get(m, 0)) for m in members) if len(members) >= COHORT_MIN \
            else 0
    return out


ops = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["bid", "ask", "buy", "sell", "cancel", "cancel", "mass", "leverage"]),
    st.integers(1, 5),  # lots (a leverage setting: 10 x that)
    st.integers(0, 20),  # ticks away from the mid
    st.sampled_from([0, 200_000, 3 * MS, 40 * MS, 700 * MS, COHORT_NS, COHORT_NS + 1,
                     9 * BUCKET_NS // 10, 35 * BUCKET_NS]),
), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops, st.one_of(st.sampled_from([WINDOW_BUCKETS - 1, WINDOW_BUCKETS]), st.integers(0, 70)))
def test_incremental_features_equal_recomputation(script, read_after_buckets):
    v = Venue()
    v.place("mm", 1, 50, MID - 30, 0)
    v.place("mm", -1, 50, MID + 30, 0)
    live: dict[str, list[int]] = defaultdict(list)
    now = 0
    for account, op, qty, away, gap in script:
        now += gap
        if op == "bid":
            live[account].append(v.place(account, 1, qty, MID - 1 - away, now))
        elif op == "ask":
            live[account].append(v.place(account, -1, qty, MID + 1 + away, now))
        elif op in ("buy", "sell"):
            v.place(account, 1 if op == "buy" else -1, qty, 0, now)
        elif op == "cancel" and live[account]:
            v.cancel(account, live[account].pop(away % len(live[account])), now)
        elif op == "mass":
            from cluster.protocol import MassCancel
            v.command(MassCancel(account=account, symbol=S), now)
            live[account].clear()
        elif op == "leverage":
            v.set_leverage(account, 10 * qty, now)
    for account in ("a", "b", "c", "d"):  # risk's view of each position, with a margin per lot that
        qty = v.positions.get(account, (0, 0))[0]  # puts one side's liquidation prices together
        if qty:
            v.account_risk(account, 3_000_000 * abs(qty), now)
    read_at = (now // BUCKET_NS + read_after_buckets) * BUCKET_NS  # the window's edge at times
    values = v.core.features.values(read_at)
    incremental = {k: {n: f[n] for n in COUNTED} for k, f in values.items()}
    incremental = {k: f for k, f in incremental.items() if any(f.values())}
    assert incremental == recompute(v.batches, read_at)
    liq = v.core.features.liq
    risk_positions = {(a, S): qty for a, (qty, _) in v.positions.items()}
    assert {k: values[k]["liq_cohort_lots"] for k in liq} == cohorts(
        v.batches, liq, risk_positions, v.core.features.marks[S])


GAPS = st.sampled_from([0, 300 * MS, 300 * MS, COHORT_NS, COHORT_NS + 1, 3 * COHORT_NS])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(GAPS, st.sampled_from([1, 1, -1]), st.integers(1, 5),
                          st.sampled_from([3_000_000, 3_000_000, 3_200_000])),
                min_size=4, max_size=8),
       st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["add", "close", "flip"]), GAPS),
                max_size=6))
def test_cohorts_equal_a_recomputation_over_every_pair(openings, later):
    """Accounts open positions against one maker at one price (mostly long; margin per lot one of
    two, liquidation prices about 70 bps apart), then some add to, close or flip theirs:
    liq_cohort_lots against every pair compared from scratch."""
    v = Venue()
    v.place("mm", 1, 10_000, MID - 10, 0)
    v.place("mm", -1, 10_000, MID + 10, 0)
    now = 0
    per_lot = {}
    for i, (gap, side, qty, margin) in enumerate(openings):
        now += gap
        per_lot[f"p{i}"] = margin
        v.place(f"p{i}", side, qty, 0, now)
    for i, action, gap in later:
        account = f"p{i % len(openings)}"
        now += gap
        qty = v.positions.get(account, (0, 0))[0]
        if action == "add" or not qty:
            v.place(account, 1 if qty >= 0 else -1, 2, 0, now)
        else:
            v.place(account, -1 if qty > 0 else 1, abs(qty) * (2 if action == "flip" else 1), 0,
                    now)
    for account, margin in per_lot.items():
        qty = v.positions.get(account, (0, 0))[0]
        if qty:
            v.account_risk(account, margin * abs(qty), now)
    values = v.core.features.values(now)
    liq = v.core.features.liq
    risk_positions = {(a, S): qty for a, (qty, _) in v.positions.items()}
    assert {k: values[k]["liq_cohort_lots"] for k in liq} == cohorts(
        v.batches, liq, risk_positions, v.core.features.marks[S])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-5, 5)), max_size=80),
       st.integers(0, 30), st.integers(0, 30))
def test_sorted_levels_equal_a_plain_dict(changes, low, high):
    from nodes.surveillance.features import Levels

    levels, plain = Levels(), {}
    for price, lots in changes:
        new = max(0, plain.get(price, 0) + lots)
        levels.put(price, new)
        if new:
            plain[price] = new
        else:
            plain.pop(price, None)
    assert levels.qty == plain and levels.prices == sorted(plain)
    assert levels.between(low, high) == sum(q for p, q in plain.items() if low <= p <= high)
