"""perf.logic_cost drives the bench's order through the real handlers of both pipelines: every
order must come back answered, and the cluster's rules must cost something over the null's."""

from __future__ import annotations

import pytest

from perf import logic_cost
from perf.cluster_load import ORDER_PATH


@pytest.mark.parametrize("pipeline", ["null", "cluster"])
def test_every_order_is_answered_and_every_node_is_timed(pipeline):
    costs = logic_cost.measure(pipeline, orders=3 * logic_cost.BATCH + 5)
    assert set(costs) == set(ORDER_PATH)
    assert all(us > 0 for us in costs.values())


def test_an_unanswered_order_is_an_error_not_a_figure(monkeypatch):
    real = logic_cost._take

    def lose_one(shell, peer):
        sent = real(shell, peer)
        return sent[1:] if peer == "client" else sent

    monkeypatch.setattr(logic_cost, "_take", lose_one)
    with pytest.raises(RuntimeError, match="answers to"):
        logic_cost.measure("cluster", orders=10)


def test_compare_reports_what_the_cluster_adds():
    r = logic_cost.compare(orders=200, runs=1)
    for n in ORDER_PATH:
        assert r["added_by_cluster"][n] == pytest.approx(r["cluster"][n] - r["null"][n], abs=1e-3)
    assert r["cluster"]["risk"] > r["null"]["risk"]  # pre-trade checks are not free
