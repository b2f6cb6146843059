"""make bench's report: the markdown says every figure the issue asks for, from the result's keys
(a result from a real run is too slow for the suite; this one has the same shape)."""

from __future__ import annotations

from perf import bench, hops
from perf.cluster_load import ORDER_PATH


def lat(p50, p99, p999):
    return {"p50": p50, "p99": p99, "p99.9": p999}


def result() -> dict:
    per_node = {"null": dict.fromkeys(ORDER_PATH, 1.5), "cluster": dict.fromkeys(ORDER_PATH, 2.5)}
    hop = {h: {"p50": 100.0 + i, "p99": 300.0} for i, h in enumerate(hops.HOPS)}
    loaded = {h: {"p50": 200.0 + i, "p99": 600.0} for i, h in enumerate(hops.HOPS)}
    return {
        "p99_bound_us": 50_000.0, "step_seconds": 3.0,
        "logic_us_per_order": {**per_node, "added_by_cluster_total": 4.07},
        "hop_latency_us": {"idle": {"pings": 9, **hop}, "at_half_cluster_max": {"pings": 9, **loaded}},
        "null": {"max_orders_per_s": 322_289, "latency_us": {
            k: lat(1_000, 2_000, 4_000) for k in ("25%_of_null_max", "50%_of_null_max",
                                                  "75%_of_null_max")}},
        "cluster": {"max_orders_per_s": 159_209, "latency_us": {
            "25%_of_null_max": lat(2_000, 4_000, 7_000), "50%_of_null_max": lat(9_000, 19_000, 25_000),
            "75%_of_null_max": {}}},
        "half_cluster_max_rate": 79_605,
        "p99_at_half_cluster_max_runs_us": {"null": [2_000.0] * 5, "cluster": [4_000.0] * 5},
        "p99_at_half_cluster_max_us": {"null": 2_234.4, "cluster": 4_184.1},
        "cpu_us_per_order_at_half_cluster_max": per_node,
        "p99_misses_while_keeping_up": {"null": 7, "cluster": 5},
        "ratio_throughput": 0.494, "ratio_ceiling_from_logic": 0.604, "ratio_p99_at_half_load": 1.873,
        "journal": {"fsync": "every_batch", "disk": "/dev/vda (ext4, rw) at /",
                    "max_orders_per_s": {"journal_on": 159_209, "journal_off": 171_000},
                    "throughput_ratio_on_off": 0.931,
                    "p99_at_half_cluster_max_us": {"journal_on": 4_184.1, "journal_off": 3_900.0},
                    "p99_ratio_on_off": 1.073},
        "curve": {"max_orders_per_s": {"curve_on": 159_209, "curve_off": 170_000},
                  "throughput_ratio_on_off": 0.937,
                  "p99_at_half_cluster_max_us": {"curve_on": 4_184.1, "curve_off": 4_000.0},
                  "p99_ratio_on_off": 1.046},
        "standby": {"max_orders_per_s": {"with_standbys": 130_000, "journal_only": 159_209},
                    "throughput_ratio": 0.817,
                    "p99_at_half_cluster_max_us": {"with_standbys": 5_000.0, "journal_only": 4_184.1},
                    "p99_ratio": 1.195},
        "mixed": {"null": {"max_orders_per_s": 200_000}, "cluster": {"max_orders_per_s": 60_000},
                  "cluster_with_standbys": {"max_orders_per_s": 50_000},
                  "ratio_cluster_to_null": 0.3, "ratio_standbys_to_cluster": 0.833},
    }


def test_the_markdown_carries_the_table_the_ratios_the_costs_and_the_hops():
    md = bench.markdown(result())
    assert "| null | 322,289 | 1,000 / 2,000 / 4,000 |" in md
    assert "| cluster | 159,209 | 2,000 / 4,000 / 7,000 | 9,000 / 19,000 / 25,000 | - |" in md
    assert "throughput ratio cluster / null: **0.494**" in md
    assert "ratio **1.873**" in md and "(79,605/s)" in md
    assert "caps the throughput ratio at 0.604" in md and "add 4.07 us" in md
    assert "client->gateway 200 (100)" in md and "gateway->client 205 (105)" in md
    assert "159,209 orders/s journaled vs 171,000 not: ratio **0.931**" in md
    assert "4,184 us vs 3,900 us: ratio **1.073**" in md and "/dev/vda (ext4, rw)" in md
    assert "159,209 orders/s with it vs 170,000 without: ratio **0.937**" in md
    assert "4,184 us vs 4,000 us: ratio **1.046**" in md
    assert "130,000 orders/s with standbys vs 159,209 journal only: ratio **0.817**" in md
    assert "5,000 us vs 4,184 us: ratio **1.195**" in md
    assert "null 200,000, cluster 60,000 (ratio to null **0.3**)" in md
    assert "cluster with standbys 50,000 (ratio to the cluster **0.833**)" in md
