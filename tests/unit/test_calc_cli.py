"""`perpx calc` answers as specified (run in-process: it needs no cluster)."""

from __future__ import annotations

import json

import pytest

from cluster.cli import main


def calc(capsys, *args: str) -> tuple[int, dict]:
    code = main(["calc", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_mmr(capsys):
    code, out = calc(capsys, "mmr", "--symbol", "BTC-PERP", "--notional", "60000")
    assert code == 0
    assert {k: out[k] for k in ("tier", "mmr", "maintenance_amount", "maintenance_margin",
                                "max_leverage")} == {
        "tier": 2, "mmr": "0.005", "maintenance_amount": "50", "maintenance_margin": "250",
        "max_leverage": 100}


def test_liq_price_long_rounds_up_with_exact_beside(capsys):
    code, out = calc(capsys, "liq-price", "--symbol", "BTC-PERP", "--side", "long", "--qty", "1",
                     "--entry", "30000", "--wallet", "3000", "--fee-rate", "0.005", "--json")
    # (3,000 - 30,000) / (0.004 + 0.005 - 1) = 27,245.2068...; a long's price rounds up to 0.1
    assert code == 0
    assert out["liquidation_price"] == "27245.3"
    assert out["liquidation_price_exact"].startswith("~27245.2068")
    assert out["bankruptcy_price"] == "27000" and out["tier"] == 1


def test_liq_price_short_rounds_down(capsys):
    code, out = calc(capsys, "liq-price", "--symbol", "BTC-PERP", "--side", "short", "--qty", "1",
                     "--entry", "30000", "--wallet", "3000", "--fee-rate", "0")
    # (3,000 + 30,000) / (0.004 + 1) = 32,868.5258...
    assert out["liquidation_price"] == "32868.5" and out["bankruptcy_price"] == "33000"


def test_funding_periods_move_the_liquidation_price_and_stop_warnings(capsys):
    fee = ("--fee-rate", "0.005")
    _, base = calc(capsys, "liq-price", "--symbol", "BTC-PERP", "--side", "long", "--qty", "1",
                   "--entry", "30000", "--wallet", "3000", *fee)
    _, paid = calc(capsys, "liq-price", "--symbol", "BTC-PERP", "--side", "long", "--qty", "1",
                   "--entry", "30000", "--wallet", "3000", *fee, "--funding-rate", "0.0001",
                   "--funding-periods", "3", "--stop", "27000")
    assert paid["funding_paid"] == "9" and paid["wallet_after_funding"] == "2991"
    assert float(paid["liquidation_price"]) > float(base["liquidation_price"])
    assert paid["stop"]["warning"] == "stop_beyond_liquidation"
    _, close = calc(capsys, "liq-price", "--symbol", "BTC-PERP", "--side", "long", "--qty", "1",
                    "--entry", "30000", "--wallet", "3000", *fee, "--stop", "27300")
    assert close["stop"]["warning"] == "stop_too_close_to_liquidation"


def test_funding(capsys):
    code, out = calc(capsys, "funding", "--premium-index", "0.001", "--interest-rate", "0.0001",
                     "--cap", "0.0075", "--notional", "30000", "--side", "short")
    assert code == 0 and out["funding_rate"] == "0.0005" and out["payment"] == "15"


@pytest.mark.parametrize("args, reason", [
    (["liq-price", "--symbol", "BTC-PERP", "--side", "long", "--qty", "0.0005", "--entry", "1",
      "--wallet", "1"], "qty_off_lot"),
    (["mmr", "--symbol", "NOPE", "--notional", "1"], "unknown_symbol"),
    (["funding", "--premium-index", "abc", "--notional", "1", "--side", "long"], "not_a_number"),
    (["funding", "--premium-index", "0.0003", "--cap", "-0.0075", "--notional", "1", "--side",
      "long"], "negative_cap"),
])
def test_bad_input_has_a_reason(capsys, args, reason):
    code, out = calc(capsys, *args)
    assert code == 2 and out["error"] == reason


def test_a_reader_that_goes_away_ends_the_cli_quietly():
    """`perpx ... | head`: the pipe closes before the answer is written; exit 141, no traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "calc", "mmr", "--symbol",
                             "BTC-PERP", "--notional", "60000", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even started
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 141 and b"Traceback" not in err, err


def test_cluster_up_starts_from_the_given_or_built_in_topology_not_the_last_runs(tmp_path):
    """A stopped run leaves status.json naming its --config; the next `cluster up` without one
    must not silently start that again, while the other commands still read it (they talk to,
    or read the journals of, the cluster that ran there)."""
    import argparse

    from cluster import cli, config

    custom = tmp_path / "custom.toml"
    custom.write_text(config.DEFAULT_CONFIG.read_text().replace(
        'name = "perpx-local"', 'name = "custom-run"'))
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "stopped", "config": str(custom)}))
    args = argparse.Namespace(config=None, run_dir=str(run))
    assert cli.load_topology(args).name == "custom-run"
    assert cli.load_topology(args, starting=True).name == "perpx-local"
