"""Random crashes through risk + matching + the liquidator: money is conserved after every event
(the harness checks), positions stay balanced and agree between risk and matching, and no account
is left liquidatable-and-forgotten with an active liquidation stuck."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.liquidation_world import USD, World

BTC = "BTC-PERP"
TRADERS = ("a", "b", "c", "d")

trade = st.fixed_dictionaries({
    "buyer": st.sampled_from(TRADERS), "seller": st.sampled_from(TRADERS),
    "lots": st.integers(1_000, 20_000), "offset": st.integers(-300, 300)})
move = st.fixed_dictionaries({"mark_ppm": st.integers(-80_000, 80_000),
                              "bid_lots": st.integers(0, 3_000)})
mode = st.fixed_dictionaries({"account": st.sampled_from(TRADERS),
                              "isolated": st.booleans(), "leverage": st.integers(20, 100)})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mode, max_size=4),
       st.lists(st.sampled_from([trade, trade, move]).flatmap(lambda s: s), min_size=4, max_size=25),
       st.integers(0, 200_000), st.booleans())
def test_liquidations_under_random_crashes_keep_the_books_straight(modes, script, fund, backstop):
    from cluster.protocol import SetMarginMode, Routed

    w = World({"a": 30_000 * USD, "b": 30_000 * USD, "c": 5_000 * USD, "d": 200_000 * USD,
               "mm": 50_000_000 * USD, "bs": 500_000 * USD},
              insurance=fund * USD, floor=20_000 * USD, backstops=["bs"] if backstop else [])
    mark = 300_000
    w.mark(mark)
    for m in modes:
        w.risk.accounts[m["account"]].leverage[BTC] = m["leverage"]
        if m["isolated"]:
            w.ref += 1
            w._to_risk(Routed(ref=w.ref, account=m["account"], body=SetMarginMode(
                symbol=BTC, mode="isolated")))
    for step in script:
        if "buyer" in step:
            if step["buyer"] == step["seller"]:
                continue
            price = mark + step["offset"]
            w.place(step["seller"], -1, step["lots"], price)
            w.place(step["buyer"], 1, step["lots"], price, tif="IOC")
            w.cancel_all(step["seller"])
        else:
            mark = max(150_000, mark + mark * step["mark_ppm"] // 1_000_000)
            w.cancel_all("mm")
            if step["bid_lots"]:
                w.place("mm", 1, step["bid_lots"], mark - 200)
                w.place("mm", -1, step["bid_lots"], mark + 200)
            w.mark(mark)
    risk, matching = w.risk, w.matching
    total = sum(a.positions[BTC].qty for a in risk.accounts.values() if BTC in a.positions)
    assert total == 0
    for name, acct in risk.accounts.items():
        pos = acct.positions.get(BTC)
        assert (pos.qty if pos else 0) == matching.position(name, BTC), name
    # every liquidation that started has finished (the path never stalls)
    assert not w.liq.active, [(l.key, l.phase) for l in w.liq.active.values()]
    ends = [e.decision for e in w.audit if e.rule == "liquidation.end"]
    assert set(ends) <= {"restored", "closed", "incomplete"}
