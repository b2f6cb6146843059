"""The REST facade's /metrics after real traffic (#25): orders, refusals, a throttle, a liquidation
and funding on a running cluster, each metric read back and compared with what the venue itself
answered or journaled (the clients' own answers, the audit journal, status.json)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from cluster.client import Client, RequestFailed
from cluster.protocol import BUY, SELL, OrderRejected, SetMarginMode
from tests.conftest import ClusterHandle, stop_and_reap
from tests.e2e.helpers import poll, shock, wait_mark
from tests.e2e.test_liquidation import liquidations, requote

pytestmark = pytest.mark.e2e

BTC, ETH = "BTC-PERP", "ETH-PERP"
KEY_WEIGHT = {"limit": 40, "window_ms": 1000, "burst": 40}
FUNDING_S = 2  # ETH pays funding every 2 s; BTC (liquidated here) keeps the default interval


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    handle = ClusterHandle(tmp_path_factory.mktemp("metrics"),
                           symbol_overrides={ETH: {"funding_interval_s": FUNDING_S}},
                           node_settings={"gateway": {"rate_limits": {"key_weight": KEY_WEIGHT}}})
    handle.base = "http://" + handle.topo.nodes["rest"].http
    try:
        handle.up()
        yield handle
    finally:
        stop_and_reap(handle)


def scrape(venue) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(venue.base + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(name: str, **labels) -> tuple[str, tuple]:
    return name, tuple(sorted(labels.items()))


def audit(venue, node: str) -> list[dict]:
    path = venue.run_dir / "audit" / f"{node}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def settled(venue, wanted: dict[tuple, float], timeout: float = 10.0) -> dict:
    """Scrape until every wanted sample has its value (node stats reach /metrics with the next
    heartbeat, 200 ms, and status file, 250 ms); the last scrape either way."""
    last: dict = {}

    def check():
        nonlocal last
        last = scrape(venue)
        return all(last.get(k) == v for k, v in wanted.items())

    poll(check, timeout, 0.1)
    return last


async def refusal_reason(call) -> str | None:
    try:
        report = await call
    except RequestFailed as exc:
        return exc.error.reason
    return report.event.reason if type(report.event) is OrderRejected else None


def test_metrics_follow_orders_refusals_throttles_and_liquidation(venue):
    before = scrape(venue)
    rejects: dict[str, int] = {}
    throttled = 0
    placed = 0

    async def run():
        nonlocal throttled, placed
        async with Client(venue.endpoint(), api_key=venue.api_key("alice"),
                          market_data=venue.md_endpoint()) as alice, \
                Client(venue.endpoint(), api_key=venue.api_key("mm1")) as mm, \
                Client(venue.endpoint(), api_key=venue.api_key("mm2")) as mm2, \
                Client(venue.endpoint(), api_key=venue.api_key("bob")) as bob:
            price = (await wait_mark(alice, BTC)).mark
            # refusals: a post-only order that would take, and an order beyond alice's margin
            await mm.place(BTC, SELL, qty=1_000, price=price + 10)
            placed += 1
            for call in (alice.place(BTC, BUY, qty=10, price=price + 10, post_only=True),
                         alice.place(BTC, BUY, qty=900_000, price=price - 10)):
                reason = await refusal_reason(call)
                assert reason is not None
                rejects[reason] = rejects.get(reason, 0) + 1
                placed += 1
            # a throttle: bob's burst of full-path pings past his key's weight
            answers = await asyncio.gather(*(bob.ping(full=True) for _ in range(60)),
                                           return_exceptions=True)
            throttled = sum(isinstance(a, RequestFailed) and a.error.reason == "rate_limited"
                            for a in answers)
            assert throttled > 0, answers[:3]
            # funding: ETH positions (mm2 long, mm1 short) settle every FUNDING_S
            eth = (await wait_mark(alice, ETH)).mark
            await mm.place(ETH, SELL, qty=1_000, price=eth)
            await mm2.place(ETH, BUY, qty=1_000, price=eth)
            placed += 2
            # a liquidation: alice 5 BTC isolated at 50x, then every venue 3% lower
            await alice.request(SetMarginMode(symbol=BTC, mode="isolated"))
            await alice.set_leverage(BTC, 50)
            await mm.place(BTC, SELL, qty=5_000, price=price)
            await alice.place(BTC, BUY, qty=5_000, price=price)
            placed += 2
            shock(venue, BTC, -30_000)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                    r["rule"] == "liquidation.end" for r in liquidations(venue.run_dir)):
                await requote(mm, mm2, (await wait_mark(alice, BTC)).index)
                await asyncio.sleep(0.3)
            assert any(r["rule"] == "liquidation.end" for r in liquidations(venue.run_dir))

    asyncio.run(run())
    records = liquidations(venue.run_dir)
    steps: dict[str, int] = {}
    for r in records:
        if r["decision"] == "done":
            kind = r["rule"].removeprefix("liquidation.")
            steps[kind] = steps.get(kind, 0) + 1
    ends = [r for r in records if r["rule"] == "liquidation.end"]
    wanted = {metric("perpx_liquidation_steps_total", node="liquidator", kind=k): float(n)
              for k, n in steps.items()}
    wanted[metric("perpx_liquidations_total", node="liquidator", outcome="started")] = float(
        sum(r["rule"] == "liquidation.trigger" for r in records))
    wanted[metric("perpx_liquidations_total", node="liquidator",
                  outcome=ends[-1]["decision"])] = float(sum(
                      r["decision"] == ends[-1]["decision"] for r in ends))
    for reason, n in rejects.items():
        key = metric("perpx_rejects_total", node="gateway", reason=reason)
        wanted[key] = before.get(key, 0) + n
    key = metric("perpx_throttles_total", node="gateway", rule="key_weight")
    wanted[key] = before.get(key, 0) + throttled
    after = settled(venue, wanted)
    for key, value in wanted.items():
        assert after.get(key) == value, (key, after.get(key), value)
    assert steps, steps
    assert set(rejects) == {"post_only_would_take", "insufficient_margin"}, rejects

    # the insurance fund: risk's figure, as the liquidator last journaled it (BTC pays no funding
    # in this test, ETH's remainders move it by whole atoms at most: compared to the atom)
    atom = float(venue.topo.atom)
    fund = after[metric("perpx_insurance_fund", node="risk")]
    assert abs(fund - ends[-1]["numbers"]["insurance_fund"] * atom) <= 10 * atom, (fund, ends[-1])

    # the gateway's latency by request type: every order placed was timed, within its buckets
    count = after[metric("perpx_gateway_request_seconds_count", node="gateway", type="PlaceOrder")]
    assert count >= placed
    assert after[metric("perpx_gateway_request_seconds_bucket", node="gateway", type="PlaceOrder",
                        le="+Inf")] == count
    assert 0 < after[metric("perpx_gateway_request_seconds_sum", node="gateway",
                            type="PlaceOrder")] < count * 1.0
    # batch sizes: the histogram's sum is the node's frames in, its count its wakes
    frames = after[metric("perpx_node_frames_in_total", node="gateway")]
    assert after[metric("perpx_node_batch_frames_sum", node="gateway")] == frames
    assert 0 < after[metric("perpx_node_batch_frames_count", node="gateway")] <= frames
    # no failover yet: every node's epoch is 0 (or what its status says, once #19 reports one)
    status = venue.status()["nodes"]
    for node, entry in status.items():
        assert after[metric("perpx_node_epoch", node=node)] == entry.get("epoch", 0)


def test_funding_metrics_match_the_journal_and_the_accounts(venue):
    """Funding settlements, payments and amounts against risk's journal, and against the
    funding entries `perpx account show` lists for the accounts that paid and received."""
    def journal() -> list[dict]:
        return [r for r in audit(venue, "risk") if r["rule"] == "risk.funding"]

    assert poll(lambda: any(r["numbers"]["payers"] for r in journal()), 5 * FUNDING_S, 0.2), \
        "no funding settled with a payer"
    for _ in range(3):  # a settlement between reading the journal and scraping: read again
        records = journal()
        numbers = [r["numbers"] for r in records]
        atom = float(venue.topo.atom)
        wanted = {
            metric("perpx_funding_settlements_total", node="risk"): float(len(records)),
            metric("perpx_funding_payments_total", node="risk"):
                float(sum(n["payers"] + n["receivers"] for n in numbers)),
            metric("perpx_funding_paid_total", node="risk"): sum(n["paid"] for n in numbers) * atom,
            metric("perpx_funding_received_total", node="risk"):
                sum(n["received"] for n in numbers) * atom,
        }
        after = settled(venue, wanted, timeout=1.0)
        if all(after.get(k) == v for k, v in wanted.items()):
            break
    for key, value in wanted.items():
        assert after.get(key) == pytest.approx(value), (key, after.get(key), value)
    # the accounts' own ledgers: the ETH payments mm1 (short) and mm2 (long) were charged and
    # credited (fewer than 20 each, so `account show` lists them all) sum to the journal's
    for _ in range(3):  # (a settlement between the two reads: read both again)
        payments = [e["payment"] for name in ("mm1", "mm2")
                    for e in venue.cli_json("account", "show", name)["funding"]
                    if e["symbol"] == ETH]
        eth = [r["numbers"] for r in journal() if r["subject"] == ETH]
        if len(payments) == sum(n["payers"] + n["receivers"] for n in eth):
            break
    assert len(payments) < 40 and payments
    assert -sum(p for p in payments if p < 0) == sum(n["paid"] for n in eth)
    assert sum(p for p in payments if p > 0) == sum(n["received"] for n in eth)
