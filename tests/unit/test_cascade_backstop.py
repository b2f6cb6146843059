"""The cascade simulator takes over through the snapshot's backstop accounts by the ledger's own
auction (cluster/rules/backstop.py), and agrees with a real ledger: the same state (risk's
account views turned into a snapshot by `perpx cascade snapshot`'s own code), the same shock,
the same path (backstop, then the fund), to the lot and the atom."""

from __future__ import annotations

import msgspec
import pytest

from cluster import cascade as cz
from cluster.rules import backstop
from cluster.rules.stress import load_params
from cluster.stress_cli import snapshot_of
from tests.unit.liquidation_world import USD, World
from tests.unit.pipeline import TOPO

BTC = "BTC-PERP"
MULT = TOPO.symbols[BTC].atoms_per_tick_lot
FLOOR = TOPO.atoms(TOPO.nodes["liquidator"].insurance_floor, "insurance_floor")
FUND = 1_000_000 * USD
MARK, SHOCKED = 300_000, 279_000  # BTC 30,000 -> 27,900: -7 %, past alice's bankruptcy price


def world(backstop_usd: int, backstop_leverage: int | None) -> World:
    """alice long 10 BTC at 20x with 20,000 USD; the topology's backstop account with
    `backstop_usd`; the makers' orders gone afterwards (a gap: nothing to reduce into)."""
    assert TOPO.nodes["liquidator"].backstop_accounts == ["backstop"]
    w = World({"alice": 20_000 * USD, "mm": 10_000_000 * USD, "backstop": backstop_usd * USD},
              insurance=FUND, floor=FLOOR, backstops=["backstop"])
    w.mark(MARK)
    w.risk.accounts["alice"].leverage[BTC] = 20
    if backstop_leverage:
        w.risk.accounts["backstop"].leverage[BTC] = backstop_leverage
    w.place("mm", -1, 10_000, MARK)
    w.place("alice", 1, 10_000, MARK)
    w.cancel_all("mm")
    assert w.position("alice") == 10_000 and w.matching.books[BTC].bids.best() is None
    return w


def snapshot(w: World) -> cz.Snapshot:
    views = {name: w.risk.account_view(name) for name in w.risk.accounts if name != "insurance"}
    books = {s: ([], []) for s in TOPO.symbols}
    return snapshot_of(TOPO, views, books, w.risk.insurance_fund, "the test's ledger")


@pytest.mark.parametrize("backstop_usd, backstop_leverage", [(5_000, None), (5_000, 10),
                                                             (400_000, None)])
def test_the_simulator_and_a_ledger_take_over_the_same_lots(backstop_usd, backstop_leverage):
    w = world(backstop_usd, backstop_leverage)
    snap = snapshot(w)
    assert snap.backstops == ["backstop"] and snap.insurance_fund == FUND
    assert snap.accounts["backstop"].leverage == ({BTC: backstop_leverage}
                                                  if backstop_leverage else {})
    params = cz.CascadeParams(shock_symbol=BTC, shock_bps=-700, regime="calm", close="venue")
    sim = cz.simulate(snap, params, load_params())

    w.mark(SHOCKED)  # the same move, live: risk, matching and the liquidator's engine
    live = {r.kind: r for r in w.results if r.qty}
    assert "backstop" in live, [(r.kind, r.qty, r.reason) for r in w.results]
    ((name, lots, price),) = live["backstop"].counterparties
    assert sim["backstop"] == [{"round": 0, "liquidation": 1, "backstop": "backstop",
                                "symbol": BTC, "qty": lots, "price": price}]
    (liq,) = sim["liquidations"]
    assert (liq["key"], liq["backstop_qty"], liq["book_notional"]) == ("alice", lots, 0)
    assert liq["insurance_qty"] == (live["insurance"].qty if "insurance" in live else 0)
    assert lots + liq["insurance_qty"] == 10_000
    # the money ends in the same places: the backstop's position at the bankruptcy price, the
    # fund's cash (what it paid for the rest, less alice's deficit it covered)
    bs = w.risk.accounts["backstop"].positions[BTC]
    assert (bs.qty, bs.cost) == (lots, lots * price * MULT)
    s = sim["summary"]
    assert s["insurance_fund_end"] == w.risk.insurance_fund
    assert s["backstop_qty"] == lots and s["backstop_notional"] == lots * price * MULT
    assert s["money"]["before"] == s["money"]["after"]


def test_what_a_backstop_carries_is_the_rule_the_ledger_applies():
    """Taking a long above the mark: IM at the bankruptcy price plus the loss at once per lot."""
    bidder = backstop.Bidder(name="b", available=5_000 * USD, leverage=20, cross=True)
    price, mark = 280_150, 279_000
    per_lot = MULT * (price // 20) + (price - mark) * MULT  # (exact here: 280,150 / 20)
    assert backstop.lots_carried(bidder, price, mark, 1, MULT, 1_000_000) == \
        5_000 * USD // per_lot
    # below the mark, a long taken costs no loss at once: IM only
    assert backstop.lots_carried(bidder, mark - 100, mark, 1, MULT, 1_000_000) == \
        5_000 * USD * 20 // ((mark - 100) * MULT)
    # the largest available margin bids first; an isolated one does not bid
    rich = backstop.Bidder(name="z", available=10_000 * USD, leverage=20, cross=True)
    iso = backstop.Bidder(name="i", available=10**12, leverage=20, cross=False)
    takers = backstop.auction([bidder, rich, iso], 10_000, price, mark, 1, MULT, 1_000_000)
    carried = 10_000 * USD // per_lot, 5_000 * USD // per_lot
    assert takers == [("z", carried[0]), ("b", carried[1])]  # each what it carries; the rest left
    assert sum(carried) < 10_000


def test_the_full_close_policy_hands_the_book_s_remainder_to_the_backstop_first():
    w = world(5_000, None)
    snap = snapshot(w)
    full = cz.simulate(snap, cz.CascadeParams(shock_symbol=BTC, shock_bps=-700), load_params())
    venue = cz.simulate(snap, cz.CascadeParams(shock_symbol=BTC, shock_bps=-700, close="venue"),
                        load_params())
    assert full["backstop"] == venue["backstop"] and full["backstop"]
    without = msgspec.structs.replace(snap, backstops=[])
    none = cz.simulate(without, cz.CascadeParams(shock_symbol=BTC, shock_bps=-700), load_params())
    assert none["backstop"] == [] and none["liquidations"][0]["insurance_qty"] == 10_000


# ------------------------------------------------------------------ the fund: risk's live figure


def status(tmp_path, nodes: dict) -> None:
    import json

    (tmp_path / "status.json").write_text(json.dumps({"nodes": nodes}))


def test_the_snapshot_takes_the_fund_risk_reports_not_the_starting_cash(tmp_path):
    from cluster.stress_cli import live_insurance_fund

    start = TOPO.atoms(TOPO.nodes["risk"].insurance_fund, "insurance_fund")
    live = start - 12_345 * USD  # a fund that paid for takeovers since the start
    status(tmp_path, {"risk": {"state": "running", "stats": {"insurance_fund_atoms": live}}})
    assert live_insurance_fund(tmp_path) == (live, "live, risk (risk) at the snapshot")
    # a pair: the primary's figure, not the standby's copy
    status(tmp_path, {
        "risk": {"state": "running", "role": "standby", "stats": {"insurance_fund_atoms": 1}},
        "risk.b": {"state": "running", "role": "primary", "stats": {"insurance_fund_atoms": live}}})
    assert live_insurance_fund(tmp_path)[0] == live
    # no running risk reporting one: None (the caller says it took the topology's figure)
    status(tmp_path, {"risk": {"state": "exited", "stats": {"insurance_fund_atoms": live}}})
    assert live_insurance_fund(tmp_path) is None
    assert live_insurance_fund(tmp_path / "nowhere") is None

    w = world(5_000, None)
    views = {name: w.risk.account_view(name) for name in w.risk.accounts if name != "insurance"}
    snap = snapshot_of(TOPO, views, {s: ([], []) for s in TOPO.symbols}, live, "live")
    assert snap.insurance_fund == live != start and snap.source.endswith("insurance fund: live")


def test_cluster_snapshot_falls_back_to_the_starting_cash_and_says_so():
    import asyncio

    from cluster.stress_cli import cluster_snapshot

    w = world(5_000, None)

    class FakeClient:  # the SDK's calls cluster_snapshot makes, answered by the test's ledger
        async def connect(self):
            pass

        async def close(self):
            pass

        async def request(self, logon):
            self.account = next(a.name for a in TOPO.accounts.values()
                                if a.api_key == logon.api_key)
            return self.account

        def take_logon(self, ack):
            pass

        async def book(self, symbol, depth):
            return type("B", (), {"bids": [], "asks": []})()

        async def account_view(self):
            name = self.account
            return w.risk.account_view(name) if name in w.risk.accounts else \
                w.risk.account_view("mm").__class__(
                    account=name, balance=0, wallet_balance=0, equity=0, order_margin=0,
                    position_margin=0, available=0, maintenance_margin=0, fees_paid=0,
                    positions=[], open_orders=0)

    snap = asyncio.run(cluster_snapshot(TOPO, FakeClient, 10))
    assert snap.insurance_fund == TOPO.atoms(TOPO.nodes["risk"].insurance_fund, "insurance_fund")
    assert "starting cash (no live figure" in snap.source
    snap = asyncio.run(cluster_snapshot(TOPO, FakeClient, 10, (77, "live, risk")))
    assert snap.insurance_fund == 77 and snap.backstops == ["backstop"]


def test_the_readme_quotes_these_figures():
    from pathlib import Path

    text = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    quoted = []
    for usd, lev in ((5_000, None), (5_000, 10), (400_000, None)):
        sim = cz.simulate(snapshot(world(usd, lev)), cz.CascadeParams(
            shock_symbol=BTC, shock_bps=-700, close="venue"), load_params())
        quoted.append(sim["backstop"][0]["qty"])
    price = sim["backstop"][0]["price"]
    assert quoted[2] == 10_000
    for figure in (f"{quoted[0]:,} lots at the bankruptcy price {price // 10:,}.{price % 10}",
                   f"the other {10_000 - quoted[0]:,}", f"({quoted[1]:,} lots when the backstop's "
                   "leverage is 10x"):
        assert figure in text, figure


# ------------------------------------------------------------------ portfolio accounts


def hedged_pair() -> tuple[cz.Snapshot, World]:
    """alice and bob each long 20 BTC and short 225 ETH with 100,000 USD (the README's hedge);
    alice in the portfolio mode, bob in cross; a book on both sides of each symbol."""
    from cluster.protocol import Routed, SetAccountMarginMode, SetPortfolioAccess

    w = World({"alice": 100_000 * USD, "bob": 100_000 * USD, "mm": 10_000_000 * USD,
               "backstop": 0}, insurance=FUND, floor=FLOOR, backstops=["backstop"])
    eth = "ETH-PERP"
    w.mark(MARK)
    w.mark(200_000, eth)
    for name in ("alice", "bob"):
        w.place("mm", -1, 20_000, MARK)
        w.place(name, 1, 20_000, MARK)
        w.place("mm", 1, 22_500, 200_000, eth)
        w.place(name, -1, 22_500, 200_000, eth)
    for request in (SetPortfolioAccess(account="alice", enabled=True),
                    SetAccountMarginMode(mode="portfolio")):
        w.ref += 1
        w._to_risk(Routed(ref=w.ref, account="alice", body=request))
    assert w.risk.accounts["alice"].portfolio and not w.risk.accounts["bob"].portfolio
    return snapshot_of(TOPO, views_of(w), hedged_books(), w.risk.insurance_fund, "the ledger"), w


def views_of(w: World) -> dict:
    return {n: w.risk.account_view(n) for n in w.risk.accounts if n != "insurance"}


def hedged_books() -> dict:
    eth = "ETH-PERP"
    books = {s: ([], []) for s in TOPO.symbols}
    books[BTC] = ([(MARK - 100 * i, 5_000) for i in range(1, 40)],
                  [(MARK + 100 * i, 5_000) for i in range(1, 40)])
    books[eth] = ([(200_000 - 100 * i, 20_000) for i in range(1, 40)],
                  [(200_000 + 100 * i, 20_000) for i in range(1, 40)])
    return books


@pytest.mark.parametrize("close", ["full", "venue"])
def test_a_portfolio_account_is_triggered_on_the_grid_as_the_liquidator_does(close):
    """BTC -8 %, ETH -3.4 % (half its calm beta: decor50): alice's equity, 66,730 USD, is under
    the grid's maintenance (65,339 with the add-on) + the forced fee (2,408); bob, the same hedge
    in cross, is far above his summed ladder (8,202). Before, the simulator held every account to
    the ladder and liquidated neither."""
    snap, _ = hedged_pair()
    assert snap.accounts["alice"].portfolio and not snap.accounts["bob"].portfolio
    params = cz.CascadeParams(shock_symbol=BTC, shock_bps=-800, regime="decor50", close=close)
    result = cz.simulate(snap, params, load_params())
    assert {liq["key"] for liq in result["liquidations"]} == {"alice"}, result["liquidations"]
    assert result["summary"]["money"]["before"] == result["summary"]["money"]["after"]
    as_cross = msgspec.structs.replace(snap, accounts={
        **snap.accounts, "alice": msgspec.structs.replace(snap.accounts["alice"], portfolio=False)})
    assert cz.simulate(as_cross, params, load_params())["liquidations"] == []


def test_the_simulator_values_every_account_s_available_margin_as_risk_does():
    """What a backstop's bid rests on: the simulator's `available` of each account of a snapshot
    (a portfolio hedge, its cross twin, the maker with a leverage setting, the backstop) equals
    risk's own, at the snapshot's marks."""
    snap, w = hedged_pair()
    w.risk.accounts["mm"].leverage[BTC] = 7  # (no open orders to re-price)
    snap = snapshot_of(TOPO, views_of(w), hedged_books(), w.risk.insurance_fund, "the ledger")
    assert snap.accounts["mm"].leverage == {BTC: 7}
    sim = cz.Cascade(snap, cz.CascadeParams(shock_symbol=BTC, shock_bps=-1), load_params())
    for name, view in sorted(views_of(w).items()):
        assert sim.available(sim.accounts[name]) == view.available, name
    assert views_of(w)["alice"].available < views_of(w)["bob"].available  # (the grid's IM)
