"""`make load`'s reading of the venue's /metrics: what moved, and whether it agrees with locust."""

from perf.run_load import metrics_markdown, metrics_moved


def test_only_counters_and_histogram_counts_that_grew_are_listed_largest_first():
    before = {("perpx_rejects_total", (("reason", "a"),)): 2.0,
              ("perpx_mark_age_seconds", ()): 1.0}
    after = {("perpx_rejects_total", (("reason", "a"),)): 5.0,
             ("perpx_rejects_total", (("reason", "b"),)): 9.0,
             ("perpx_trades_total", ()): 0.0,
             ("perpx_mark_age_seconds", ()): 7.0,  # a gauge: not a count of what the load did
             ("perpx_gateway_request_seconds_count", (("type", "PlaceOrder"),)): 4.0}
    assert metrics_moved(before, after) == [
        ("perpx_gateway_request_seconds_count", "type=PlaceOrder", 4.0),
        ("perpx_rejects_total", "reason=b", 9.0), ("perpx_rejects_total", "reason=a", 3.0)]


def test_the_table_says_whether_the_gateway_answered_what_locust_sent():
    moved = [("perpx_gateway_request_seconds_count", "type=PlaceOrder", 6.0),
             ("perpx_gateway_request_seconds_count", "type=CancelOrder", 2.0)]
    sent = {"requests": {"logon": {"count": 3}, "quote": {"count": 5}, "cancel": {"count": 3}}}
    assert "locust counted 8, the gateway answered 8: agree" in metrics_markdown("u", moved, sent)
    sent["requests"]["quote"]["count"] = 6
    assert "locust counted 9, the gateway answered 8: DIFFER" in metrics_markdown("u", moved, sent)
