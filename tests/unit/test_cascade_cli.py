"""`perpx cascade` and `perpx cascade sweep` over snapshot files: output, refusals, the sweep's
critical points, the R(p) map and the HTML twin."""

from __future__ import annotations

import json
from fractions import Fraction

import msgspec
import pytest

from cluster import cascade as cz
from cluster import cascade_report
from cluster.cli import main
from cluster.rules.stress import load_params

K = 1000


@pytest.fixture
def band(tmp_path):
    path = tmp_path / "band.json"
    path.write_bytes(msgspec.json.encode(cz.linear_band(s_lots=5 * K, d_lots=10 * K, accounts=100)))
    return path


def test_cascade_json_is_the_simulator_output_and_repeatable(band, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["cascade", "--snapshot", str(band), "--shock", "-0.005", "--json", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # byte-identical
    result = json.loads(first)
    assert result["summary"]["amplification"]["BTC-PERP"]["amplification"] == "1.983333"
    assert out.read_text().strip() == first.strip()
    assert main(["cascade", "--snapshot", str(band), "--shock", "-0.005"]) == 0
    text = capsys.readouterr().out
    assert "amplification 1.983333" in text and "branching per round: 0:0.500000" in text


@pytest.mark.parametrize("args, reason", [
    (["--shock", "-0.00001"], "too_precise"),
    (["--symbol", "XRP"], "unknown_symbol"),
    (["--regime", "panic"], "unknown_regime"),
    (["--recovery", "2"], "out_of_range"),  # (argparse, before any work)
    (["--latency", "-1"], "out_of_range"),
    (["--max-rounds", "0"], "out_of_range"),
    (["--depth-scale", "0"], "out_of_range"),
    (["--shock", "-1"], "out_of_range"),
    (["--shock-rounds", "1.5"], "not_a_whole_number"),
])
def test_cascade_refuses_bad_input_with_a_reason(band, capsys, args, reason):
    assert main(["cascade", "--snapshot", str(band), "--json", *args]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == reason


def test_cascade_needs_exactly_one_source(band, tmp_path, capsys):
    assert main(["cascade", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "no_snapshot"
    bad = tmp_path / "bad.json"
    bad.write_text('{"symbols": {}, "accounts": {"insurance": {"balance": 1}}, "insurance_fund": 0}')
    assert main(["cascade", "--snapshot", str(bad), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "bad_snapshot"


def test_sweep_writes_json_and_html_with_critical_points(band, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["cascade", "sweep", "--snapshot", str(band), "--shocks=-0.005,-0.01",
                 "--regimes", "calm", "--latencies", "0", "--depth-scales", "1,0.5",
                 "--out-dir", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "sweep.json").read_text())
    html = (out / "sweep.html").read_text()
    assert [c["depth_scale_ppm"] for c in result["curves"]] == [1_000_000, 500_000]
    half = result["curves"][1]["points"]
    assert [p["amplification"] for p in half] == ["21.000000", "11.000000"] or \
        all(Fraction(p["amplification"]) > 2 for p in half)
    # critical depth: the bisection's answer is where A crosses a_max = 2 (within its step)
    crit = printed["critical_depth"][0]["depth_scale_ppm"]
    snap = cz.decode_snapshot(band.read_bytes())

    def amp(depth):
        r = cz.simulate(snap, cz.CascadeParams(shock_symbol="BTC-PERP", shock_bps=-100,
                                               depth_scale_ppm=depth), load_params())
        return Fraction(r["summary"]["amplification"]["BTC-PERP"]["amplification"])

    assert amp(crit) <= 2 < amp(crit - 2_000)
    assert "critical depth" in html and "R(p) BTC-PERP" in html
    rows = result["r_map"]["BTC-PERP"]["rows"]
    inner = [r["R"] for r in rows if r["liquidation_notional"]][1:]  # the band's edge bucket aside
    assert set(inner) == {"0.500000"}  # R = g * lambda = s / d


def test_r_map_flags_the_self_sustaining_band():
    thin = cz.r_map(cz.linear_band(s_lots=5 * K, d_lots=5 * K, accounts=50))["BTC-PERP"]
    thick = cz.r_map(cz.linear_band(s_lots=5 * K, d_lots=20 * K, accounts=50))["BTC-PERP"]
    # $10 apart at $60,000: six thresholds per 10 bps bucket against six $10 levels of the same
    # size (R = 1); the band's last bucket holds two thresholds against six levels
    assert thin["self_sustaining"] == list(range(-80, 0, 10))
    assert thick["self_sustaining"] == []


def test_report_without_matplotlib_still_has_the_tables(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    sp = cz.SweepParams(shock_symbol="BTC-PERP", shocks_bps=[-50], regimes=["calm"],
                        bisect_steps=1)
    result = cz.sweep(cz.linear_band(s_lots=5 * K, d_lots=10 * K, accounts=60), sp, load_params())
    html = cascade_report.render(result)
    assert "plots need matplotlib" in html and "<table>" in html


def test_report_plots_when_matplotlib_is_installed():
    pytest.importorskip("matplotlib")
    sp = cz.SweepParams(shock_symbol="BTC-PERP", shocks_bps=[-50, -100], regimes=["calm"],
                        bisect_steps=1)
    result = cz.sweep(cz.linear_band(s_lots=5 * K, d_lots=10 * K, accounts=60), sp, load_params())
    assert cascade_report.render(result).count("data:image/png;base64,") == 2


def test_offline_stress_and_band(tmp_path, capsys):
    """The README's two demonstrations, offline: the hedge binds at decorrelation; the band
    file is the simulator's toy market."""
    assert main(["stress", "--notional", "BTC-PERP=600000", "--notional", "ETH-PERP=-450000",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stress"]["binding"] == "decor50"
    assert data["human"]["regimes"]["calm"] == "38605.699062"
    assert data["human"]["stress_requirement"] == "69247.382623"
    assert main(["stress", "--notional", "BTC-PERP=1.0000001", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "amount_not_whole_atoms"
    assert main(["stress", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "no_account"
    out = tmp_path / "b.json"
    assert main(["cascade", "band", "--size", "4", "--depth", "5", "--accounts", "50",
                 "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert cz.decode_snapshot(out.read_bytes()) == cz.linear_band(s_lots=4 * K, d_lots=5 * K,
                                                                   accounts=50)


def test_readme_thin_book_demonstration(tmp_path, capsys):
    """The README's numbers: the thin band cascades with A 4.95 (296 accounts); with twice the
    depth A drops to 1.66 (99 accounts)."""
    band = tmp_path / "thin.json"
    assert main(["cascade", "band", "--size", "4", "--depth", "5", "--out", str(band)]) == 0
    capsys.readouterr()
    found = []
    for scale in ("1", "2"):
        assert main(["cascade", "--snapshot", str(band), "--shock", "-0.01",
                     "--depth-scale", scale, "--json"]) == 0
        s = json.loads(capsys.readouterr().out)["summary"]
        found.append((s["amplification"]["BTC-PERP"]["amplification"], s["accounts_liquidated"]))
    assert found == [("4.946667", 296), ("1.660000", 99)]
