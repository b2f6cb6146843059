"""The chaos runner's shell helpers: which clients an experiment shapes through a netsim proxy,
the figures a report shows from what the proxy measured, and a start that lost a port race."""

from __future__ import annotations

import pytest

from cluster import chaos
from cluster.chaos_run import client_link_figures, shaped_clients, with_curve_point


def test_experiment_9_shapes_mm1s_own_link_through_netsim():
    exp = chaos.load("experiments/09-maker-taker-flip.toml")
    assert shaped_clients(exp) == ["mm1"]
    point = with_curve_point(exp, "200ms")
    first = [s["command"] for s in point["scenario"]["steps"][:2]]
    assert first == [("netsim_set", {"link": "client:mm1->gateway",
                                     "settings": {"latency": "200ms"}}),
                     ("netsim_set", {"link": "gateway->client:mm1",
                                     "settings": {"latency": "200ms"}})]
    assert "maker_latency_s" not in point  # no latency applied in the maker's own client


def test_no_client_link_no_proxy():
    assert shaped_clients(chaos.load("experiments/08-latency-as-risk-liquidator.toml")) == []


def test_a_curve_target_other_than_links_is_refused(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('end = "1s"\n[curve]\ntarget = "maker"\nlatencies = ["0ms","1ms","2ms","3ms"]\n'
                    'x_label = "x"\ny = ["a"]\n[[hypothesis]]\nname = "n"\nmetric = "sent"\n'
                    'value = 1\n')
    with pytest.raises(chaos.ExperimentError, match="is not links"):
        chaos.load(path)


def test_the_figures_are_the_shaped_settings_measurement_not_the_unshaped_one():
    stats = {"mm1": {"links": {"client:mm1->gateway": {"measured_ms": {
        "unshaped": {"chunks": 900, "p50": 0.1, "p99": 0.4, "min": 0.0, "max": 2.0},
        '{"latency": "50ms"}': {"chunks": 12, "p50": 51.2, "p99": 53.0, "min": 50.1,
                                "max": 55.0}}}}}}
    figures = client_link_figures(stats)
    assert figures == {"client_link.client:mm1->gateway.set": '{"latency": "50ms"}',
                       "client_link.client:mm1->gateway.chunks": 12,
                       "client_link.client:mm1->gateway.delay_ms_p50": 51.2,
                       "client_link.client:mm1->gateway.delay_ms_p99": 53.0,
                       "client_link.client:mm1->gateway.delay_ms_max": 55.0}
    assert client_link_figures({"mm1": {"links": {"x": {"measured_ms": {"unshaped": {
        "chunks": 1, "p50": 0, "p99": 0, "min": 0, "max": 0}}}}}}) == {}


def test_a_start_that_lost_a_port_race_is_tried_again_on_new_ports(tmp_path, monkeypatch):
    import subprocess

    from cluster import chaos_run

    answers = [(1, '{"error": "start_failed", "message": "... Address already in use ..."}'),
               (0, '{"ok": true}')]
    seen = []

    def fake_cli(*args, **_):
        seen.append(args)
        code, out = answers.pop(0)
        return subprocess.CompletedProcess(args, code, out, "")

    monkeypatch.setattr(chaos_run, "_cli", fake_cli)
    exp = chaos.load("experiments/01-two-feeds-stale.toml")
    said = []
    cfg, topo = chaos_run.start_cluster(exp, tmp_path, said.append)
    assert len(seen) == 2 and "again on new ports (1/3)" in said[0]
    assert cfg.exists() and topo.run_dir.startswith(str(tmp_path))

    answers[:] = [(1, "the supervisor exited with 1: ValueError: bad topology")]
    with pytest.raises(RuntimeError, match="bad topology"):
        chaos_run.start_cluster(exp, tmp_path, said.append)
    answers[:] = [(1, PORT := "Address already in use")] * 3
    with pytest.raises(RuntimeError, match=PORT):
        chaos_run.start_cluster(exp, tmp_path, said.append)
