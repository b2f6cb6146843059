"""The chaos report: one self-contained HTML page (and its JSON) from a run, with or without
matplotlib; opened in headless Chromium when one is installed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from cluster import chaos, chaos_report
from tests.unit.test_chaos import hyp, series


def a_run() -> dict:
    samples = series(answered=lambda t, v: 1 if 3 <= t < 6 else v,
                     **{"oracle_mode.BTC-PERP": lambda t, v: "carry" if 3 <= t < 6.5 else v})
    exp = {"hypotheses": [hyp(metric="answered_ratio", op=">=", value=0.99, phase="during"),
                          hyp(metric="oracle_mode.BTC-PERP", check="recovers", within="1s",
                              value="normal")]}
    run = {"samples": samples, "fault_s": 3.0, "heal_s": 6.0, "end_s": 10.0,
           "finals": {"acked_orders_lost": 0}, "positions": [], "makers": {},
           "timeline": [{"t": 3.0, "action": "partition", "command": "netsim_partition",
                         "args": {"links": ["gateway->risk"]}, "ok": True, "error": ""},
                        {"t": 6.0, "action": "heal_at_end", "command": "netsim_clear",
                         "args": {}, "ok": True, "error": ""}],
           "explanations": [{"t": 3.2, "node": "oracle", "rule": "oracle.carry",
                             "subject": "BTC-PERP", "decision": "carry",
                             "numbers": {"stale": "alpha"}}], "explanations_total": 1}
    run["verdicts"] = chaos.evaluate_all(exp, run)
    run["passed"] = chaos.passed(run["verdicts"])
    run["experiment"] = {"id": "demo", "name": "a <partition>", "description": "d"}
    return run


def test_the_page_carries_verdicts_evidence_timeline_and_explanations(tmp_path):
    run = a_run()
    assert not run["passed"]
    js, page = chaos_report.write(run, tmp_path)
    text = page.read_text()
    assert "a &lt;partition&gt;" in text  # escaped
    assert text.count("class='FAIL'") >= 1 and "answered_ratio = 0.25" in text
    assert "netsim_partition" in text and "oracle.carry" in text
    assert ("data:image/png;base64," in text) or ("matplotlib is not installed" in text)
    assert json.loads(js.read_text())["verdicts"] == run["verdicts"]
    index = chaos_report.index([{"id": "demo", "name": "demo", "status": "FAIL", "why": "x"},
                                {"id": "w", "name": "waits", "status": "SKIPPED",
                                 "why": "waiting for failover"}], tmp_path)
    assert "waiting for failover" in index.read_text() and "demo.html" in index.read_text()


CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this host")
def test_the_page_renders_in_headless_chromium(tmp_path):
    _, page = chaos_report.write(a_run(), tmp_path)
    dom = subprocess.run([CHROMIUM, "--no-sandbox", "--disable-gpu", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert "<h1>a &lt;partition&gt;" in dom and "answered_ratio = 0.25" in dom


def test_a_run_with_an_exit_bot_plots_its_exits_on_the_timeline():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = a_run()
    run["exits"] = [{"t": 1.0, "missed": False, "delay_ms": 6.0, "slippage_ppm": 200},
                    {"t": 3.2, "missed": False, "delay_ms": 1_100.0, "slippage_ppm": 56_000},
                    {"t": 3.6, "missed": True}, {"t": 9.9, "attempts": 1}]  # last: unfinished
    made = []
    real = plt.subplots
    plt.subplots = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
    try:
        assert chaos_report.plots(run)
    finally:
        plt.subplots = real
    axes = made[0][1]
    assert len(axes) == 6 and axes[5].get_ylabel() == "exit delay ms"
    assert len(axes[5].collections) == 2  # the filled exits and the missed one
    assert len(a_run().get("exits", [])) == 0 and chaos_report.plots(a_run())


def test_a_run_through_a_client_link_shows_the_delay_netsim_applied_as_measured(tmp_path):
    run = a_run()
    run["client_links"] = {"mm1": {"links": {"gateway->client:mm1": {"measured_ms": {
        "unshaped": {"chunks": 40, "p50": 0.15, "p99": 0.9, "min": 0.05, "max": 1.2},
        '{"latency": "200ms"}': {"chunks": 31, "p50": 200.84, "p99": 203.1, "min": 200.1,
                                 "max": 204.0}}}}}}
    _js, page = chaos_report.write(run, tmp_path)
    text = page.read_text()
    assert "netsim client links" in text and "gateway-&gt;client:mm1" in text
    assert "<td>31</td><td>200.84</td><td>203.1</td><td>204.0</td>" in text
    assert "netsim client links" not in chaos_report.render(a_run() | {"passed": False})
