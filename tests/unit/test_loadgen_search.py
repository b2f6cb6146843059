"""The bench's search for the maximum sustainable rate, against a simulated venue: it brackets the
capacity, re-measures a step that kept up but missed p99 (a host stall), and gives up on a rate only
after TRIES misses in a row."""

from __future__ import annotations

import pytest

from perf import loadgen


def fake_venue(capacity: float, stalls: dict[float, int] | None = None,
               refuses_above: float | None = None):
    """run_step stand-in: keeps up below `capacity`; `stalls[rate]` first tries miss p99 anyway;
    above `refuses_above` it answers everything in time but refuses a tenth of the orders."""
    stalls = dict(stalls or {})
    calls: list[float] = []

    def run_step(endpoint, keys, step, symbol, price):
        calls.append(step.rate)
        sent = int(step.rate * step.seconds)
        if step.rate > capacity:
            return {"offered_per_s": step.rate, "sent": sent, "answered": sent // 2,
                    "outstanding": sent - sent // 2, "achieved_per_s": sent // 2 / step.seconds,
                    "latency_us": {"p99": 900_000.0}, "settled_s": 0.0, "rejected": 0}
        p99 = 10_000.0
        if stalls.get(step.rate, 0) > 0:
            stalls[step.rate] -= 1
            p99 = 120_000.0  # everything answered, one stall in the step
        refused = sent // 10 if refuses_above is not None and step.rate > refuses_above else 0
        return {"offered_per_s": step.rate, "sent": sent, "answered": sent, "outstanding": 0,
                "achieved_per_s": sent / step.seconds, "latency_us": {"p99": p99}, "settled_s": 0.0,
                "rejected": refused, "reject_reasons": {"too_many_open_orders": refused}}

    return run_step, calls


@pytest.mark.parametrize("capacity", [700, 9_000, 123_456])
def test_search_brackets_the_capacity(monkeypatch, capacity):
    run_step, calls = fake_venue(capacity)
    monkeypatch.setattr(loadgen, "run_step", run_step)
    best, steps = loadgen.find_max("ep", ["k"], "S", 100, seconds=1, log=lambda _: None)
    assert best <= capacity
    failed = [s["offered_per_s"] for s in steps if not s["sustainable"]]
    assert failed and min(failed) > capacity
    assert (min(failed) - best) / min(failed) < 0.25  # three bisections of a x1.6 bracket


def test_a_stalled_step_is_measured_again_and_a_rate_fails_only_after_tries_misses(monkeypatch):
    # 500 and 800 are the first rates tried: 500 stalls once, 800 stalls every time.
    run_step, calls = fake_venue(50_000, stalls={500: 1, 800: loadgen.TRIES})
    monkeypatch.setattr(loadgen, "run_step", run_step)
    best, steps = loadgen.find_max("ep", ["k"], "S", 100, seconds=1, refine=0,
                                   log=lambda _: None)
    assert calls[:2] == [500, 500] and calls.count(800) == loadgen.TRIES
    assert best == 500
    assert all(s["kept_up"] for s in steps)


def test_a_rate_served_by_refusing_orders_is_not_sustainable(monkeypatch):
    run_step, calls = fake_venue(100_000, refuses_above=20_000)
    monkeypatch.setattr(loadgen, "run_step", run_step)
    best, steps = loadgen.find_max("ep", ["k"], "S", 100, seconds=1, log=lambda _: None)
    assert 0 < best <= 20_000
    assert all(not s["sustainable"] for s in steps if s["rejected"])


def test_the_mixed_workload_quotes_cancels_and_crosses_without_crossing_its_own_quotes():
    """Each unit of four: a post-only quote one tick off, a far order and its cancel on the maker's
    session, and a one-lot IOC from the other session that reaches the quote but not the far
    order; sides alternate per pair, so quotes left behind never cross each other."""
    from cluster.protocol import CancelOrder, PlaceOrder
    from perf.loadgen import mixed_orders

    price = 300_000
    make = mixed_orders("BTC-PERP", price, sessions=6, tag="t")
    orders = [make(n) for n in range(48)]
    quotes = [(s, o) for s, o in orders if type(o) is PlaceOrder and o.post_only]
    fars = [(s, o) for s, o in orders if type(o) is PlaceOrder and o.client_order_id]
    cancels = [(s, o) for s, o in orders if type(o) is CancelOrder]
    iocs = [(s, o) for s, o in orders if type(o) is PlaceOrder and o.tif == "IOC"]
    assert len(quotes) == len(fars) == len(cancels) == len(iocs) == 12
    assert [o.client_order_id for _, o in cancels] == [o.client_order_id for _, o in fars]
    assert len({o.client_order_id for _, o in fars}) == 12
    assert all(sc == sf for (sc, _), (sf, _) in zip(cancels, fars))  # same session, in order
    for (sq, q), (st, t), (_, f) in zip(quotes, iocs, fars):
        assert sq != st and t.side == -q.side and t.qty == 1
        assert q.price == price - q.side  # one tick inside: bids below asks
        reach = t.price <= q.price if t.side == -1 else t.price >= q.price
        misses_far = t.price > f.price if t.side == -1 else t.price < f.price
        assert reach and misses_far
    assert {q.side for _, q in quotes} == {1, -1}
