"""The facade's exporter reads the nodes' labelled stats (cluster/stats.py) back into Prometheus
families: counters by label, cumulative histograms with every bucket, money in collateral units,
and the failover epoch and role when a node's status carries them."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster.stats import LATENCY_BOUNDS_US, count, observe, power_of_two_keys, split
from cluster.transport import BATCH_KEYS, MAX_BATCH
from nodes.rest.metrics import ClusterCollector, MarketGauges


def test_histogram_buckets_are_by_first_bound_not_exceeded():
    stats: dict = {}
    for value in (0, 250, 251, 999_999, 3_000_000):
        observe(stats, "lat", "PlaceOrder", value, LATENCY_BOUNDS_US)
    assert stats == {"lat|PlaceOrder|250": 2, "lat|PlaceOrder|500": 1,
                     "lat|PlaceOrder|1000000": 1, "lat|PlaceOrder|inf": 1,
                     "lat_sum|PlaceOrder": 0 + 250 + 251 + 999_999 + 3_000_000}
    assert split("lat|PlaceOrder|250") == ("lat", ["PlaceOrder", "250"]) and split("plain") is None


def test_batch_keys_index_by_size():
    keys = power_of_two_keys("b", MAX_BATCH)
    assert BATCH_KEYS == [k.replace("b|", "batch_frames|") for k in keys]
    for size, bound in ((1, "1"), (2, "2"), (3, "4"), (4, "4"), (5, "8"), (257, "512"),
                        (MAX_BATCH, str(MAX_BATCH))):
        assert keys[(size - 1).bit_length()] == f"b|{bound}", size


def scrape(tmp_path, nodes: dict) -> dict:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"nodes": nodes}))
    facade = SimpleNamespace(request_counts={}, sessions={}, stats={"orders": 0},
                             streams=SimpleNamespace(connections=set(), sent=0),
                             topo=SimpleNamespace(atom=Decimal("0.000001")))
    registry = CollectorRegistry()
    registry.register(ClusterCollector(facade, MarketGauges({}), path, {}))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def m(name: str, **labels: str) -> tuple:
    return name, tuple(sorted(labels.items()))


def test_labelled_stats_become_families(tmp_path):
    gateway: dict = {"frames_in": 7}
    count(gateway, "rejects", "insufficient_margin", by=3)
    count(gateway, "throttles", "key_weight")
    gateway["batch_frames|1"], gateway["batch_frames|4"] = 2, 1  # 2 wakes of 1 frame, 1 of 4..
    observe(gateway, "request_latency_us", "PlaceOrder", 700, LATENCY_BOUNDS_US)
    observe(gateway, "request_latency_us", "PlaceOrder", 9_000_000, LATENCY_BOUNDS_US)
    gateway["bad|label|x"] = 1  # an unknown family is left out, not an error
    risk = {"insurance_fund_atoms": 100_000_250_000, "funding_paid_atoms": 1_500_000,
            "funding_payments": 4}
    out = scrape(tmp_path, {
        "gateway": {"state": "running", "stats": gateway},
        "risk": {"state": "running", "stats": risk},
        # #19's shape: the role and epoch in the status, the same (and the lag) in the stats
        # (the primary measures how far its standby is behind: the lag is the primary's stat)
        "matching": {"state": "running", "role": "primary", "epoch": 3,
                     "stats": {"epoch": 3, "role_primary": 1, "standby_lag_inputs": 4,
                               "standby_lag_ms": 250, "link_messages_out|matching->risk": 7,
                               "link_messages_in|risk->matching": 5}},
        "matching.b": {"state": "running", "role": "standby", "epoch": 3,
                       "stats": {"epoch": 3, "role_primary": 0, "standby_lag_inputs": 0,
                                 "standby_lag_ms": 0}}})
    assert out[m("perpx_rejects_total", node="gateway", reason="insufficient_margin")] == 3
    assert out[m("perpx_throttles_total", node="gateway", rule="key_weight")] == 1
    lat = {"node": "gateway", "type": "PlaceOrder"}
    assert out[m("perpx_gateway_request_seconds_bucket", **lat, le="0.0005")] == 0
    assert out[m("perpx_gateway_request_seconds_bucket", **lat, le="0.001")] == 1
    assert out[m("perpx_gateway_request_seconds_bucket", **lat, le="2.5")] == 1
    assert out[m("perpx_gateway_request_seconds_bucket", **lat, le="+Inf")] == 2
    assert abs(out[m("perpx_gateway_request_seconds_sum", **lat)] - 9.0007) < 1e-9
    assert out[m("perpx_node_batch_frames_bucket", node="gateway", le="1")] == 2
    assert out[m("perpx_node_batch_frames_bucket", node="gateway", le="2")] == 2
    assert out[m("perpx_node_batch_frames_bucket", node="gateway", le="512")] == 3
    assert out[m("perpx_node_batch_frames_count", node="gateway")] == 3
    assert out[m("perpx_node_batch_frames_sum", node="gateway")] == 7  # the node's frames_in
    assert out[m("perpx_insurance_fund", node="risk")] == 100_000.25
    assert out[m("perpx_funding_paid_total", node="risk")] == 1.5
    assert out[m("perpx_funding_payments_total", node="risk")] == 4
    assert m("perpx_node_insurance_fund_atoms_total", node="risk") not in out
    assert out[m("perpx_node_epoch", node="matching")] == 3
    assert out[m("perpx_node_epoch", node="gateway")] == 0
    assert out[m("perpx_node_role", node="matching", role="primary")] == 1
    assert out[m("perpx_node_role", node="matching.b", role="standby")] == 1
    # the instance whose figures are the venue's: the pair's primary, and any lone node
    assert out[m("perpx_node_serving", node="matching")] == 1
    assert out[m("perpx_node_serving", node="matching.b")] == 0
    assert out[m("perpx_node_serving", node="gateway")] == 1
    assert out[m("perpx_node_standby_lag_inputs", node="matching")] == 4
    assert out[m("perpx_node_standby_lag_seconds", node="matching")] == 0.25
    assert out[m("perpx_link_messages_out_total", node="matching", link="matching->risk")] == 7
    assert out[m("perpx_link_messages_in_total", node="matching", link="risk->matching")] == 5
    assert not [k for k in out if k[0].startswith(("perpx_node_epoch_total",
                                                   "perpx_node_role_primary"))]
    assert not [k for k in out if "bad" in k[0]]
