"""`make load`'s own report: every locust process's HDR histograms merged into microsecond
percentiles, the venue's refusals counted by reason apart from failures, the table added to
locust's HTML page."""

from __future__ import annotations

import json

import pytest

hdrh = pytest.importorskip("hdrh.histogram")

from perf import run_load  # noqa: E402


def histogram(*micros: int) -> str:
    hist = hdrh.HdrHistogram(1, 60_000_000, 3)
    for us in micros:
        hist.record_value(us)
    return hist.encode().decode()


def test_processes_merge_into_microsecond_percentiles_and_refusals_by_reason(tmp_path):
    (tmp_path / "load_latency.101.json").write_text(json.dumps({
        "histograms": {"quote": histogram(*[180] * 90), "refused: post_only_would_take":
                       histogram(95, 97)},
        "refusals": [["quote", "post_only_would_take", 2]]}))
    (tmp_path / "load_latency.102.json").write_text(json.dumps({
        "histograms": {"quote": histogram(*[240] * 9, 2_500)},
        "refusals": [["quote", "post_only_would_take", 5], ["cancel", "order_not_open", 4]]}))
    (tmp_path / "load_latency.json").write_text("{}")  # the merged report of a previous run
    report = run_load.merge_latency(tmp_path)
    quote = report["requests"]["quote"]
    assert quote["count"] == 100
    # sub-millisecond values stay apart (locust's whole milliseconds showed 0 or 1 for all)
    assert quote["p50"] == 180 and quote["p90"] == 180 and 239 <= quote["p99"] <= 241
    assert 2_498 <= quote["max"] <= 2_502
    assert report["refusals"] == [
        {"request": "quote", "reason": "post_only_would_take", "count": 7},
        {"request": "cancel", "reason": "order_not_open", "count": 4}]
    table = run_load.latency_markdown(report)
    assert "| quote | 100 | 180 us | 180 us |" in table
    assert "| quote | post_only_would_take | 7 |" in table and "not failures" in table


def test_the_table_goes_into_locusts_page_before_its_end(tmp_path):
    page = tmp_path / "locust.html"
    page.write_text("<html><body><p>locust</p></body></html>")
    report = {"unit": "us", "requests": {"quote": {"count": 1, "p50": 180, "p90": 180,
                                                    "p99": 180, "p99.9": 180, "max": 1500}},
              "refusals": [{"request": "cancel", "reason": "order_not_open", "count": 4}]}
    run_load.add_to_html(page, report)
    text = page.read_text()
    assert text.index("perpx-latency") < text.index("</body>")
    assert "<td>180 us</td>" in text and "<td>1.5 ms</td>" in text and "order_not_open" in text


def test_no_histograms_no_report(tmp_path):
    assert run_load.merge_latency(tmp_path) is None
