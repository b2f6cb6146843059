"""Random crashes through risk + matching + the liquidator, with whales, thin and stale books and
gaps past bankruptcy, so that every part of the liquidation path is reached (the events say how
often). After every event money is conserved (the harness checks), and the world checks, from the
rules rather than the ledger's helpers (liquidation_world.World):
- every liquidation order is inside the price band when it reaches matching;
- a forced fee never exceeds its rate, nor the margin balance the fill leaves;
- each step's fund delta is what its own fees, takeovers and deficit covers moved;
once the world settles:
- no account (or isolated position) at or below its trigger on a fresh mark is left unliquidated;
- no account is left with no position and a negative wallet;
- positions balance and agree between risk and matching; no liquidation is left running."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from cluster.protocol import Routed, SetMarginMode
from tests.unit.liquidation_world import USD, World

BTC = "BTC-PERP"
TRADERS = ("a", "b", "c", "d", "whale")

trade = st.fixed_dictionaries({
    "buyer": st.sampled_from(TRADERS), "seller": st.sampled_from(TRADERS),
    "lots": st.integers(1_000, 20_000), "offset": st.integers(-300, 300)})
# a whale's position reaches the ladder's upper tiers (MMR 10% past 20M), where the bankruptcy
# price lies outside the band and the liquidation order must be kept inside it
whale = st.fixed_dictionaries({"whale_lots": st.integers(300_000, 900_000),
                               "whale_side": st.sampled_from((1, -1))})
# a mark move; the market maker's quotes follow, or (stale) stay where they were. Small moves walk
# an account into its trigger with equity left; gaps jump past bankruptcy.
move = st.fixed_dictionaries({"mark_ppm": st.one_of(st.integers(-15_000, 15_000),
                                                    st.integers(-90_000, 90_000)),
                              "bid_lots": st.sampled_from((0, 300, 3_000, 30_000)),
                              "requote": st.booleans()})
# A funding payment that reaches risk while a liquidation's step is on its way there (the
# cluster's links give no order between the oracle's rate and the liquidator's step): the step's
# price (the bankruptcy price) was worked out on the wallet before the payment, so a payer's
# takeover or IOC at that price can leave its wallet below zero, a deficit the fund must cover and
# no one else. It lands before the account's first step of the drawn kinds (the fund's or ADL's
# takeover is the path's last step: a later step is priced afresh); `payer`: the account pays it.
funding_in_flight = st.fixed_dictionaries({
    "kinds": st.sampled_from((("insurance", "adl"), ("insurance", "adl"), ("backstop",),
                              ("reduce",))),
    "rate_e9": st.integers(100_000, 3_000_000), "payer": st.booleans()})
lag = st.fixed_dictionaries({"lag_ppm": st.integers(-40_000, 40_000), "funding": funding_in_flight,
                             "account": st.sampled_from(TRADERS)})
# last, a trend against a whale at tier 6 (MMR 10% less the tier's amount: 5.8% of 30M,
# and the forced fee), the quotes following each move: it reaches its trigger with its bankruptcy
# price past the band, so its liquidation orders must be clamped to the band's edge. A funding
# payment the whale owes lands before its takeover (insurance or ADL), priced before it: a cross
# deficit. Always drawn: hypothesis's derandomized run drew st.none() for all 120 examples when
# it was optional, and reached no whale liquidation at all.
trend = st.fixed_dictionaries({
    "lots": st.integers(900_000, 1_000_000), "side": st.sampled_from((1, -1)),
    "step_ppm": st.integers(5_000, 15_000), "funding_e9": st.integers(100_000, 3_000_000)})
mode = st.fixed_dictionaries({"account": st.sampled_from(TRADERS),
                              "isolated": st.booleans(), "leverage": st.integers(20, 100)})


def fill(w: World, buyer: str, seller: str, lots: int, price: int) -> None:
    w.place(seller, -1, lots, price)
    w.place(buyer, 1, lots, price, tif="IOC")
    w.cancel_all(seller)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mode, max_size=4),
       st.lists(st.sampled_from([trade, trade, trade, move, move, whale, lag]).flatmap(lambda s: s),
                min_size=6, max_size=25),
       st.sampled_from((5_000, 200_000, 0, 1_000_000, 30_000)), st.booleans(), trend)
def test_liquidations_reach_every_step_and_keep_the_rules(modes, script, fund, backstop, trend):
    w = World({"a": 30_000 * USD, "b": 30_000 * USD, "c": 5_000 * USD, "d": 200_000 * USD,
               "whale": 7_000_000 * USD, "mm": 500_000_000 * USD, "bs": 500_000 * USD},
              insurance=fund * USD, floor=20_000 * USD, backstops=["bs"] if backstop else [])
    mark = 300_000
    w.mark(mark)
    w.risk.accounts["whale"].leverage[BTC] = 10
    w.risk.accounts["mm"].leverage[BTC] = 5
    for m in modes:
        w.risk.accounts[m["account"]].leverage[BTC] = m["leverage"]
        if m["isolated"]:
            w.ref += 1
            w._to_risk(Routed(ref=w.ref, account=m["account"], body=SetMarginMode(
                symbol=BTC, mode="isolated")))
    for step in script:
        if "buyer" in step:
            if step["buyer"] != step["seller"]:
                fill(w, step["buyer"], step["seller"], step["lots"], mark + step["offset"])
        elif "whale_lots" in step:
            if step["whale_side"] > 0:
                fill(w, "whale", "mm", step["whale_lots"], mark)
            else:
                fill(w, "mm", "whale", step["whale_lots"], mark)
            if abs(w.position("whale")) * mark * 100 > 20_000_000 * USD:
                event("whale at tier 6 or above")
        elif "lag_ppm" in step:
            mark = max(150_000, mark + mark * step["lag_ppm"] // 1_000_000)
            w.funding_before_step = {**step["funding"], "account": step["account"]}
            w.mark(mark)
            w.funding_before_step = None
        else:
            mark = max(150_000, mark + mark * step["mark_ppm"] // 1_000_000)
            if step["requote"]:
                w.cancel_all("mm")
            if step["bid_lots"]:  # quotes within the band of the mark before the move
                w.place("mm", 1, step["bid_lots"], mark - 200)
                w.place("mm", -1, step["bid_lots"], mark + 200)
            w.mark(mark)
    if trend is not None:  # the whale's payment waits for its takeover, however late it comes
        w.funding_before_step = {"kinds": ("insurance", "adl"), "account": "whale",
                                 "rate_e9": trend["funding_e9"], "payer": True}
        w.cancel_all("whale")
        if trend["side"] > 0:
            fill(w, "whale", "mm", trend["lots"], mark)
        else:
            fill(w, "mm", "whale", trend["lots"], mark)
        if abs(w.position("whale")) * mark * 100 > 20_000_000 * USD:
            event("whale at tier 6 or above")
        for _ in range(40):  # at most 40 moves of 0.5..1.5%: the trigger is some 17% away
            if any(e.rule == "liquidation.trigger" and e.numbers["account"] == "whale"
                   for e in w.audit) or not w.position("whale"):
                break
            mark = max(150_000, mark - trend["side"] * mark * trend["step_ppm"] // 1_000_000)
            w.cancel_all("mm")
            w.place("mm", 1, 50_000, mark - 200)
            w.place("mm", -1, 50_000, mark + 200)
            w.mark(mark)
    w.mark(mark)  # a fresh mark: the world settles on it
    risk, matching = w.risk, w.matching
    assert not w.problems, w.problems
    assert not w.unliquidated(), w.unliquidated()
    assert not w.negative_wallets(), w.negative_wallets()
    total = sum(a.positions[BTC].qty for a in risk.accounts.values() if BTC in a.positions)
    assert total == 0
    for name, acct in risk.accounts.items():
        pos = acct.positions.get(BTC)
        assert (pos.qty if pos else 0) == matching.position(name, BTC), name
    # every liquidation that started has finished (the path never stalls)
    assert not w.liq.active, [(l.key, l.phase) for l in w.liq.active.values()]
    ends = [e.decision for e in w.audit if e.rule == "liquidation.end"]
    assert set(ends) <= {"restored", "closed", "incomplete"}
    starts = sum(1 for e in w.audit if e.rule == "liquidation.trigger")
    event("liquidation" if starts else "no liquidation")
    if any(r.counterparties and r.counterparties[0][0] == "insurance" for r in w.results):
        w.seen.add("insurance takeover")
    REACHED["examples"] += 1
    for state in sorted(w.seen):
        REACHED[state] += 1
        event(state)  # shown by pytest --hypothesis-show-statistics
    target(float(len(w.seen)), label="liquidation states reached")


# States the property test above must reach, with the least share of its examples. Measured
# (120 examples): cross deficit covered 58% derandomized alone and inside the whole fast suite
# (hypothesis also draws from constants in the modules imported, so the suite's examples differ
# from a lone run's: an optional trend once gave 47% alone and 0% in the suite), 53-57% in three
# random runs. Other states swing with hypothesis's targeting (ADL 7-51%, forced fee capped
# 1-55%, the band edge 13-67% across runs and contexts); their floors say they are reached at all.
COVERAGE = {"step reduce": 0.4, "step backstop": 0.3, "insurance takeover": 0.1,
            "cross deficit covered by the fund": 0.3}
REACHED: Counter = Counter()  # state -> examples of the property test that reached it


def test_generators_reach_the_money_states():
    """Runs after the property test above and reads what its examples reached (or runs it, when
    it was not selected): a generator that stops reaching a state fails here, not silently."""
    if REACHED["examples"] < 50:
        REACHED.clear()
        test_liquidations_reach_every_step_and_keep_the_rules()
    examples = REACHED["examples"]
    shares = {what: REACHED[what] / examples for what in COVERAGE}
    print({what: f"{share:.0%}" for what, share in shares.items()})
    short = {what: f"{share:.0%}" for what, share in shares.items() if share < COVERAGE[what]}
    assert not short, f"states reached by too few of {examples} examples: {short}"

