"""Issue 17, defect 10: risk must not trade on a mark of unknown age. Marks carry their timestamp
into risk; past `[nodes.risk] max_mark_age_ms` the symbol goes reduce-only (orders that could
open exposure are refused `mark_stale` with the age and the limit), explained and announced, and
trading comes back, explained, when a fresh mark does."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.protocol import IndexMark, NewOrder, Notice, OrderRejected, PlaceOrder, Report, Routed
from cluster.recording import RecordingShell
from cluster.signing import key_id
from nodes.risk import service as risk_service
from nodes.risk.ledger import RiskEngine
from tests.unit.pipeline import TOPO

S = "BTC-PERP"
MS = 1_000_000
SEC = 1_000 * MS
PRICE = TOPO.symbols[S].initial_price
USD = 1_000_000


def engine() -> RiskEngine:
    return RiskEngine(TOPO.symbols, {"a": 100_000 * USD}, max_mark_age_ns=3 * SEC)


def mark(risk: RiskEngine, ts_ns: int, now_ns: int) -> list:
    return risk.handle(IndexMark(symbol=S, index=PRICE, mark=PRICE, last=0, seq=1, ts_ns=ts_ns),
                       now_ns)


def place(risk: RiskEngine, now_ns: int, reduce_only: bool = False, ref: int = 1):
    return risk.handle(Routed(ref=ref, account="a", body=PlaceOrder(
        symbol=S, side=1, qty=10, price=PRICE, reduce_only=reduce_only)), now_ns)


def of(effects, dest, cls):
    return [m for d, m in effects if d == dest and type(m) is cls]


def test_defect_10_risk_goes_reduce_only_on_a_stale_mark_and_comes_back_on_a_fresh_one():
    risk = engine()
    mark(risk, 1 * SEC, 1 * SEC)
    assert of(place(risk, 3_900 * MS), "matching", NewOrder)  # 2.9 s old: trades
    # the oracle died at 1 s; at 4.5 s the mark is 3.5 s old. Before: the order was accepted
    out = place(risk, 4_500 * MS, ref=2)
    assert not of(out, "matching", NewOrder)
    refused = of(out, "gateway", Report)[0].event
    assert type(refused) is OrderRejected and refused.reason == "mark_stale"
    assert (refused.detail["mark_age_ms"], refused.detail["max_mark_age_ms"]) == (3_500, 3_000)
    switch = [e for e in of(out, "audit", Explanation) if e.rule == "risk.mark_age"]
    assert [(e.subject, e.decision) for e in switch] == [(S, "reduce_only")]
    assert [(n.rule, n.decision) for n in of(out, "gateway", Notice)] == [
        ("risk.mark_age", "reduce_only")]
    # a reduce-only order still goes through; a second refusal is not a second switch
    assert of(place(risk, 4_600 * MS, reduce_only=True, ref=3), "matching", NewOrder)
    out = place(risk, 4_700 * MS, ref=4)
    assert of(out, "gateway", Report)[0].event.reason == "mark_stale" and not of(out, "gateway", Notice)
    # a mark that arrives already too old (held 3.2 s on the way) does not bring trading back
    assert not of(mark(risk, 2 * SEC, 5_200 * MS), "gateway", Notice)
    assert of(place(risk, 5_300 * MS, ref=5), "gateway", Report)[0].event.reason == "mark_stale"
    # a fresh one does, explained with how long the symbol was reduce-only
    out = mark(risk, 6 * SEC, 6_010 * MS)
    back = [e for e in of(out, "audit", Explanation) if e.rule == "risk.mark_age"]
    assert [(e.decision, e.numbers["reduce_only_for_ms"], e.numbers["mark_age_ms"]) for e in back] \
        == [("trading_resumed", 1_510, 10)]
    assert [n.decision for n in of(out, "gateway", Notice)] == ["trading_resumed"]
    assert of(place(risk, 6_100 * MS, ref=6), "matching", NewOrder)


def test_defect_10_the_switch_happens_with_no_order_to_notice_it():
    risk = engine()
    mark(risk, 1 * SEC, 1 * SEC)
    out: list = []
    risk.mark_ages.check(risk.specs, 3_900 * MS, out)
    assert out == []
    risk.mark_ages.check(risk.specs, 4_100 * MS, out)
    assert [(n.subject, n.decision) for n in of(out, "gateway", Notice)] == [
        (S, "reduce_only"), ("ETH-PERP", "reduce_only")]  # ETH never had a mark: age since start


def test_defect_10_the_topologys_max_mark_age_reaches_risk():
    shell = RecordingShell(TOPO.nodes["risk"])  # its clock stands at 0
    risk_service.build(shell, TOPO)
    assert TOPO.nodes["risk"].max_mark_age_ms == 3_000
    shell.inbox([IndexMark(symbol=S, index=PRICE, mark=PRICE, last=0, seq=1, ts_ns=-3_001 * MS),
                 Routed(ref=1, account="mm1", body=PlaceOrder(symbol=S, side=1, qty=1, price=PRICE),
                        key_id=key_id(TOPO.accounts["mm1"].api_key))])  # (as the gateway names it)
    answers = [m for peer, m in shell.sent if peer == "gateway" and type(m) is Report]
    assert answers[0].event.reason == "mark_stale" and answers[0].event.detail["mark_age_ms"] == 3_001
    assert [(e.rule, e.decision) for e in shell.explained] == [
        ("risk.mark_age", "reduce_only"), ("risk.mark_stale", "reject")]


def test_defect_10_and_8_the_incident_report_shows_risks_view_of_the_oracle():
    from cluster import config, reports
    from cluster.humanize import Units
    from cluster.protocol import FundingRate

    risk = engine()
    out = mark(risk, 1 * SEC, 1 * SEC) + place(risk, 4_500 * MS) + mark(risk, 5 * SEC, 5 * SEC)
    interval = TOPO.symbols[S].funding_interval_s * SEC
    rate = FundingRate(symbol=S, rate_e9=100, mark=PRICE, ts_ns=interval + 2 * SEC,
                       funding_ts_ns=interval)
    out += risk.handle(rate, interval + 2 * SEC) + risk.handle(rate, interval + 3 * SEC)
    records = [m for d, m in out if d == "audit"]
    report = reports.incident(records, None, None)
    assert [r["decision"] for r in report["mark_age_changes"]] == ["reduce_only", "trading_resumed"]
    assert [r["rule"] for r in report["funding_clock_events"]] == [
        "risk.funding_late", "risk.funding_already_settled"]
    md = reports.incident_markdown(report, Units.of(config.load()))
    assert f"{S}: risk.mark_age reduce_only (mark age ms 3500, max mark age ms 3000" in md
    assert f"{S}: risk.funding_late settled_late (funding ts ns {interval}" in md
