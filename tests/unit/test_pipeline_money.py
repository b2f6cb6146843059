"""The pure order path (risk -> matching -> risk) driven by random traffic that builds positions.

After every message risk handles: money is conserved, and the ledger agrees atom for atom with an
independent money model (tests/unit/money_model.py) on every balance, fee, position cost, isolated
cash, the fee pool and the insurance fund. At the end: open interest balances, risk and matching
agree on positions and orders, and replay gives the same state.

The generators reach the states that matter (issue #26 measured the old ones: orders were 31% of
steps and 9 of 150 examples traded): kinds are drawn with weights from one sampled index, each
script starts by seeding positions (crossing orders against a market maker), closes are sized from
the position it has at the time, and marks move against positions toward liquidation.
test_generators_reach_the_money_states asserts the shares.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import event, given, settings, target
from hypothesis import strategies as st

from cluster.protocol import (
    AdjustIsolatedMargin, AmendOrder, CancelAll, FundingRate, LiquidationStep, PlaceOrder, Regime,
    SetAccountMarginMode, SetLeverage, SetMarginMode, SetPortfolioAccess, Trade,
)
from nodes.risk.ledger import RiskEngine
from tests.unit.money_model import MoneyModel
from tests.unit.pipeline import TOPO, Pipeline

SYMBOLS = sorted(TOPO.symbols)
USD = 1_000_000  # atoms
DEPOSITS = {"mm": 10_000_000 * USD, "a": 20_000 * USD, "b": 3_000 * USD,
            "i": 20_000 * USD, "j": 3_000 * USD}
INSURANCE_FUND = 100_000 * USD
ISOLATED = ("i", "j")  # isolated in every symbol; j at 100x, so marks reach its liquidation;
# i at 7x and 13x, whose IM is rarely a whole atom (20x and 100x divide a tick-lot's atoms)
TRADERS = ("a", "b", "i", "j")
PORTFOLIO = ("a",)  # the `portfolio` margin mode (#24): moves no money, decides what is accepted
LEVERAGE = {"i": {"BTC-PERP": 7, "ETH-PERP": 13}, "j": {s: 100 for s in SYMBOLS}}

# Weighted kinds: one index drawn from a list with repeats (st.one_of would collapse repeats).
WEIGHTS = {"cross": 5, "place": 3, "close": 4, "mark": 2, "squeeze": 2, "funding": 2,
           "liquidate": 3, "cancel_all": 1, "regime": 1, "adjust": 2, "amend": 1, "leverage": 1}
KINDS = [k for k, w in WEIGHTS.items() for _ in range(w)]

symbol = st.sampled_from(SYMBOLS)
side = st.sampled_from((1, -1))
trader = st.sampled_from(TRADERS)
qty = st.integers(1, 300)
offset = st.integers(-600, 600)  # ticks from the mark: within 0.3% of either symbol's price

STEPS = {
    "cross": st.fixed_dictionaries({"maker": st.sampled_from(("mm",) + TRADERS), "taker": trader,
                                    "symbol": symbol, "side": side, "qty": qty, "offset": offset}),
    "place": st.fixed_dictionaries({
        "account": st.sampled_from(("mm",) + TRADERS), "symbol": symbol, "side": side, "qty": qty,
        "offset": offset, "type": st.sampled_from(("limit", "limit", "market")),
        "tif": st.sampled_from(("GTC", "IOC")), "reduce_only": st.booleans()}),
    "close": st.fixed_dictionaries({"account": trader, "symbol": symbol,
                                    "quarters": st.integers(1, 4), "reduce_only": st.booleans(),
                                    "offset": offset}),
    "mark": st.fixed_dictionaries({"symbol": symbol, "ppm": st.integers(-15_000, 15_000)}),
    "squeeze": st.fixed_dictionaries({"account": trader, "symbol": symbol,
                                      "ppm": st.integers(2_000, 30_000)}),
    "funding": st.fixed_dictionaries({"symbol": symbol,
                                      "rate_e9": st.integers(-2_000_000, 2_000_000)}),
    "liquidate": st.fixed_dictionaries({"account": trader, "symbol": symbol,
                                        "quarters": st.integers(1, 4), "offset": offset,
                                        "how": st.sampled_from(("reduce", "reduce", "insurance"))}),
    "cancel_all": st.fixed_dictionaries({"account": trader}),
    "regime": st.fixed_dictionaries({"symbol": symbol,
                                     "regime": st.sampled_from(("normal", "high_volatility"))}),
    "adjust": st.fixed_dictionaries({"account": st.sampled_from(ISOLATED), "symbol": symbol,
                                     "amount": st.integers(-50 * USD, 300 * USD)}),
    "amend": st.fixed_dictionaries({"account": trader, "symbol": symbol, "nth": st.integers(0, 5),
                                    "qty": qty, "offset": offset}),
    # settings whose IM is rarely a whole atom (value x buffer / leverage), so that every IM's
    # rounding is exercised; 20x and 100x divide the atoms of a tick-lot exactly
    "leverage": st.fixed_dictionaries({"account": trader, "symbol": symbol,
                                       "leverage": st.sampled_from((3, 7, 13, 20, 33, 100))}),
}
step = st.sampled_from(KINDS).flatmap(lambda kind: STEPS[kind].map(lambda s: {"kind": kind, **s}))
seed = st.fixed_dictionaries({"taker": trader, "symbol": symbol, "side": side, "qty": qty,
                              "offset": offset}).map(lambda s: {"kind": "cross", "maker": "mm", **s})
scripts = st.tuples(st.lists(seed, min_size=2, max_size=6), st.lists(step, min_size=10, max_size=60))


class Run:
    """One script through risk + matching, with the model checked after every message."""

    def __init__(self) -> None:
        self.model = MoneyModel(TOPO.symbols, DEPOSITS, INSURANCE_FUND,
                                modes={n: {s: "isolated" for s in SYMBOLS} for n in ISOLATED},
                                leverage=LEVERAGE, resting_close_cost=self._resting_close_cost)
        self.pipe = Pipeline(DEPOSITS, observe=self._observe, insurance_fund=INSURANCE_FUND)
        self.marks = {s: TOPO.symbols[s].initial_price for s in SYMBOLS}
        self.liquidations = 0
        self.trades = 0
        for name in PORTFOLIO:
            self._ok(name, SetPortfolioAccess(account=name, enabled=True))
            self._ok(name, SetAccountMarginMode(mode="portfolio"))
        for s in SYMBOLS:
            self.pipe.mark(s, self.marks[s])
            for name in ISOLATED:
                self._ok(name, SetMarginMode(symbol=s, mode="isolated"))
            for name, levs in LEVERAGE.items():
                self._ok(name, SetLeverage(symbol=s, leverage=levs[s]))

    def _resting_close_cost(self, account: str, symbol: str) -> int:
        """The ledger's own figure (the model follows no orders): read after the message, the
        state the ledger released from (it releases after re-pricing the account's orders)."""
        return self.pipe.risk._pending_close_cost(self.pipe.risk.accounts[account], symbol)

    def _observe(self, msg, effects) -> None:
        self.model.observe(msg, effects)
        self.trades += type(msg) is Trade
        diff = self.model.differences(self.pipe.risk)
        assert not diff, f"after {type(msg).__name__} {msg}:\n" + "\n".join(diff)

    def _ok(self, account: str, body) -> None:
        replies = self.pipe.request(account, body)
        assert all(type(r.body).__name__ == "Ack" for r in replies), replies

    def portfolio_seen(self) -> set[str]:
        """States of the portfolio mode this history reached (it moves no money itself)."""
        traded = any(type(m) is Trade and PORTFOLIO[0] in (m.taker_account, m.maker_account)
                     for m in self.pipe.wire)
        return {"portfolio account traded"} if traded else set()

    def position(self, account: str, symbol: str) -> int:
        pos = self.pipe.risk.accounts[account].positions.get(symbol)
        return pos.qty if pos is not None else 0

    def limit(self, account: str, symbol: str, side: int, qty: int, price: int, tif: str = "GTC",
              reduce_only: bool = False, otype: str = "limit") -> None:
        self.pipe.request(account, PlaceOrder(
            symbol=symbol, side=side, qty=qty, type=otype, price=0 if otype == "market" else price,
            tif="IOC" if otype == "market" else tif, reduce_only=reduce_only))

    def set_mark(self, symbol: str, mark: int) -> None:
        self.marks[symbol] = max(1, mark)
        self.pipe.mark(symbol, self.marks[symbol])

    def step(self, s: dict) -> None:  # noqa: C901 - one branch per kind, each a few lines
        kind = s["kind"]
        sym = s.get("symbol")
        mark = self.marks.get(sym, 0)
        if kind == "cross":  # a resting order, then an IOC that takes it
            price = mark + s["offset"]
            if s["maker"] != s["taker"]:
                self.limit(s["maker"], sym, -s["side"], s["qty"], price)
                self.limit(s["taker"], sym, s["side"], s["qty"], price, tif="IOC")
        elif kind == "place":
            self.limit(s["account"], sym, s["side"], s["qty"], mark + s["offset"], s["tif"],
                       s["reduce_only"], s["type"])
        elif kind == "close":  # a quarter to all of the position, into the market maker's order
            pos = self.position(s["account"], sym)
            if pos:
                lots = max(1, abs(pos) * s["quarters"] // 4)
                closing = -1 if pos > 0 else 1
                price = mark + s["offset"]
                self.limit("mm", sym, -closing, lots, price)
                self.limit(s["account"], sym, closing, lots, price, "IOC", s["reduce_only"])
        elif kind == "mark":
            self.set_mark(sym, mark + mark * s["ppm"] // 1_000_000)
        elif kind == "squeeze":  # the mark moves against the position, toward its liquidation
            pos = self.position(s["account"], sym)
            direction = -1 if pos > 0 else 1
            self.set_mark(sym, mark + direction * (mark * s["ppm"] // 1_000_000))
        elif kind == "funding":
            self.pipe.send(FundingRate(symbol=sym, rate_e9=s["rate_e9"], mark=mark))
        elif kind == "liquidate":
            pos = self.position(s["account"], sym)
            lots = abs(pos) * s["quarters"] // 4
            if pos and lots > 0:
                self.liquidations += 1
                price = mark + s["offset"]
                if s["how"] == "reduce":  # liquidity for the liquidation IOC
                    self.limit("mm", sym, 1 if pos > 0 else -1, lots, price)
                self.pipe.send(LiquidationStep(liquidation_id=self.liquidations, kind=s["how"],
                                               account=s["account"], symbol=sym, qty=lots,
                                               price=price))
        elif kind == "cancel_all":
            self.pipe.request(s["account"], CancelAll())
        elif kind == "regime":
            self.pipe.send(Regime(symbol=sym, regime=s["regime"]))
        elif kind == "adjust":
            if s["amount"]:
                self.pipe.request(s["account"], AdjustIsolatedMargin(symbol=sym, amount=s["amount"]))
        elif kind == "leverage":
            self.pipe.request(s["account"], SetLeverage(symbol=sym, leverage=s["leverage"]))
        elif kind == "amend":
            orders = sorted(o.order_id for o in self.pipe.risk.accounts[s["account"]].orders.values()
                            if o.symbol == sym)
            if orders:
                self.pipe.request(s["account"], AmendOrder(
                    symbol=sym, order_id=orders[s["nth"] % len(orders)], qty=s["qty"],
                    price=mark + s["offset"]))

    def play(self, script) -> Run:
        seeds, steps = script
        for s in seeds + steps:
            self.step(s)
        return self


def check_agreement(run: Run) -> None:
    risk, matching = run.pipe.risk, run.pipe.matching
    for s in SYMBOLS:
        qtys = [a.positions[s].qty for a in risk.accounts.values() if s in a.positions]
        assert sum(qtys) == 0, "long and short open interest differ"
        for name, acct in risk.accounts.items():  # risk and matching agree on every position
            pos = acct.positions.get(s)
            assert (pos.qty if pos else 0) == matching.position(name, s)
    assert not risk.pending, "a placement matching never answered, as risk sees it"
    for acct in risk.accounts.values():  # reservations are exactly those of the open orders
        assert acct.order_margin == sum(o.reserve for o in acct.orders.values())
        acct.check_indexes()
        assert set(acct.orders) == {oid for oid, o in matching.orders.items() if o.account == acct.name}
        for oid, mine in acct.orders.items():  # and they agree on every term of every order
            theirs = matching.orders[oid]
            assert (mine.symbol, mine.side, mine.price, mine.qty, mine.remaining, mine.type,
                    mine.trigger_price, mine.reduce_only) == \
                (theirs.symbol, theirs.side, theirs.price, theirs.qty, theirs.remaining,
                 theirs.type, theirs.trigger_price, theirs.reduce_only), oid


# States the property test's examples must reach, with the least share of examples that must
# reach each. Hypothesis's random runs vary widely (isolated full closes: 29% to 86% of 120
# examples across runs of the default profile; the derandomized CI run: 69%), so the floors are
# set under the worst run seen; at least half of the examples trade, as the issue asks. Funding:
# the derandomized run reached 21% alone and 17% inside the whole suite (the examples hypothesis
# derives depend on more than the seed), so its floor is 15%.
COVERAGE = {"trade": 0.5, "cross partial close": 0.3, "isolated partial close": 0.25,
            "cross full close": 0.15, "isolated full close": 0.15, "isolated release": 0.15,
            "isolated release, IM rounded up": 0.1,
            "funding paid": 0.15, "funding received": 0.15, "maker rebate": 0.2,
            "forced fee": 0.1, "insurance takeover": 0.05, "isolated transfer": 0.05,
            "portfolio account traded": 0.3}


REACHED: Counter = Counter()  # state -> examples of the property test below that reached it


@settings(max_examples=120, deadline=None)
@given(scripts)
def test_ledger_matches_the_money_model(script):
    run = Run().play(script)
    check_agreement(run)
    REACHED["examples"] += 1
    for what in [*run.model.seen, *run.portfolio_seen()]:
        REACHED[what] += 1
        event(what)  # shown by pytest --hypothesis-show-statistics
    target(float(run.trades), label="trades")


def test_generators_reach_the_money_states():
    """Runs after the property test above and reads what its examples reached (or runs it, when
    it was not selected): a generator that stops reaching a state fails here, not silently."""
    if REACHED["examples"] < 50:
        REACHED.clear()
        test_ledger_matches_the_money_model()
    examples = REACHED["examples"]
    shares = {what: REACHED[what] / examples for what in COVERAGE}
    print({what: f"{share:.0%}" for what, share in shares.items()})
    short = {what: f"{share:.0%}" for what, share in shares.items() if share < COVERAGE[what]}
    assert not short, f"states reached by too few of {examples} examples: {short}"


def test_partial_close_of_losing_isolated_short_keeps_im_at_mark():
    """#17 defect 2's worked case. Short 1 BTC @ 30,000 at 10x isolated, mark 32,000, buy back
    0.75: the remaining 0.25 needs 800 USD of IM at the mark; before the fix 1,116 USD went back
    and the isolated equity was left at -128 USD (a strict xfail until wip-risk's fix merged)."""
    deposits = {"t": 10_000 * USD, "mm": 1_000_000 * USD}
    pipe = Pipeline(deposits)
    pipe.mark("BTC-PERP", 300_000)
    pipe.request("t", SetMarginMode(symbol="BTC-PERP", mode="isolated"))
    pipe.request("t", SetLeverage(symbol="BTC-PERP", leverage=10))
    pipe.request("mm", PlaceOrder(symbol="BTC-PERP", side=1, qty=1000, price=300_000))
    pipe.request("t", PlaceOrder(symbol="BTC-PERP", side=-1, qty=1000, price=300_000, tif="IOC"))
    pipe.mark("BTC-PERP", 320_000)
    pipe.request("mm", PlaceOrder(symbol="BTC-PERP", side=-1, qty=750, price=320_000))
    pipe.request("t", PlaceOrder(symbol="BTC-PERP", side=1, qty=750, price=320_000, tif="IOC"))
    pos = pipe.risk.accounts["t"].positions["BTC-PERP"]
    assert pos.qty == -250
    equity = pos.iso_cash + pos.qty * 320_000 * 100
    assert equity >= 800 * USD, f"isolated equity {Fraction(equity, USD)} USD under IM 800 USD"


@settings(max_examples=40, deadline=None)
@given(scripts)
def test_same_input_same_state(script):
    r1, r2 = Run().play(script), Run().play(script)
    assert r1.pipe.log == r2.pipe.log and r1.pipe.matching.state_hash() == r2.pipe.matching.state_hash()
    assert r1.pipe.risk.state_hash() == r2.pipe.risk.state_hash()


def test_fee_rounding_charges_up_and_rebates_down():
    risk = RiskEngine(TOPO.symbols, {"m": 10**12, "t": 10**12})
    spec = TOPO.symbols["ETH-PERP"]  # maker rebate -1 bp, taker 6 bp
    trade = Trade(seq=1, trade_id=1, symbol="ETH-PERP", price=200_001, qty=3, taker_side=1,
                  taker_order_id=2, taker_account="t", taker_remaining=0, maker_order_id=1,
                  maker_account="m", maker_remaining=0)
    risk.handle(trade, 0)
    notional = 200_001 * 3 * spec.atoms_per_tick_lot  # 60,000,300 atoms
    assert risk.accounts["t"].fees_paid == -(-notional * 600 // 1_000_000)  # 36,000.18 -> 36,001
    assert risk.accounts["m"].fees_paid == -(notional * 100 // 1_000_000)  # rebate 6,000.03 -> 6,000
    assert risk.fee_pool == 36_001 - 6_000
    held, owed = risk.conservation()
    assert held == owed


def test_positive_maker_fee_rounds_up():
    """BTC-PERP's maker fee is 2 bp: 300,001 ticks x 7 lots x 100 = 210,000,700 atoms, fee 42,000.14
    atoms, charged 42,001 (a charge never rounds in the account's favour)."""
    risk = RiskEngine(TOPO.symbols, {"m": 10**12, "t": 10**12})
    trade = Trade(seq=1, trade_id=1, symbol="BTC-PERP", price=300_001, qty=7, taker_side=-1,
                  taker_order_id=2, taker_account="t", taker_remaining=0, maker_order_id=1,
                  maker_account="m", maker_remaining=0)
    risk.handle(trade, 0)
    assert risk.accounts["m"].fees_paid == 42_001
    assert risk.accounts["t"].fees_paid == 105_001  # 5 bp: 105,000.35 -> 105,001


@pytest.mark.parametrize("lots, leverage", [(2000, 125), (2001, 100)])
def test_order_reserve_takes_the_tier_its_notional_falls_in(lots, leverage):
    """BTC-PERP's tier 1 ends at exactly 50,000 USD (floor < notional <= cap): 2 BTC at 25,000 is
    still tier 1 (125x), 2.001 BTC is tier 2 (100x). The reserve is IM + the taker fee (5 bp)."""
    from tests.unit.money_model import initial_margin, trading_fee
    spec = TOPO.symbols["BTC-PERP"]
    pipe = Pipeline({"t": 1_000_000 * USD})
    pipe.mark("BTC-PERP", 250_000)
    pipe.request("t", SetLeverage(symbol="BTC-PERP", leverage=125))
    pipe.request("t", PlaceOrder(symbol="BTC-PERP", side=1, qty=lots, price=250_000))
    notional = 250_000 * lots * spec.atoms_per_tick_lot
    im = notional // leverage + (notional % leverage > 0)
    assert im == initial_margin(spec, 125, 1_000_000, notional, notional)
    assert pipe.risk.accounts["t"].order_margin == im + trading_fee(notional, spec.taker_fee_ppm)


def cross(taker: str, side: int, qty: int, symbol: str = "BTC-PERP") -> dict:
    return {"kind": "cross", "maker": "mm", "taker": taker, "symbol": symbol, "side": side,
            "qty": qty, "offset": 0}


@pytest.mark.parametrize("side", [1, -1])
def test_isolated_position_closed_down_to_one_lot_keeps_the_margin_it_needs(side):
    """4 lots isolated at 7x, 3 closed at the entry price: the last lot keeps its IM at mark and
    the rest goes back, atom for atom with the model (the random scripts rarely leave exactly one
    lot: a release keyed on `qty == 1` instead of a flat position survived them)."""
    close = {"kind": "close", "account": "i", "symbol": "BTC-PERP", "quarters": 3,
             "reduce_only": True, "offset": 0}
    run = Run().play(([cross("i", side, 4)], [close]))
    pos = run.pipe.risk.accounts["i"].positions["BTC-PERP"]
    assert pos.qty == side and run.model.seen.get("isolated release") == 1
    mark = run.marks["BTC-PERP"]
    im = -(-mark * 100 // 7)  # 1 lot at 7x, rounded up
    assert pos.iso_cash + pos.qty * mark * 100 >= im  # what is left is as safe as a new lot


def test_isolated_position_closed_past_bankruptcy_is_covered_by_the_insurance_fund():
    """j's 100x long closed whole by a liquidation 2% under the mark: its cash is negative, the
    insurance fund takes the deficit and the cross wallet is untouched."""
    liquidate = {"kind": "liquidate", "account": "j", "symbol": "BTC-PERP", "quarters": 4,
                 "offset": -6_000, "how": "reduce"}
    run = Run()
    run.play(([cross("j", 1, 50)], []))
    wallet = run.pipe.risk.accounts["j"].balance
    run.play(([], [liquidate]))
    assert "BTC-PERP" not in run.pipe.risk.accounts["j"].positions
    assert run.model.seen.get("isolated deficit to insurance") == 1
    assert run.pipe.risk.accounts["j"].balance == wallet
