"""The CLI's one validation layer for typed numbers, its discovery commands and its help: all
refused or answered in process, before anything connects (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from cluster import cli
from cluster.cli import main

PLACE = ["order", "place", "--account", "alice", "--symbol", "BTC-PERP", "--side", "buy"]


def run(capsys, *args: str) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("flag, value, reason", [
    ("--qty", "３", "not_a_number"),  # fullwidth digits: Decimal takes them, the CLI does not
    ("--qty", "0.0１", "not_a_number"),
    ("--qty", "3_0", "not_a_number"),  # so do underscores
    ("--price", " 30000 ", "not_a_number"),  # and surrounding spaces
    ("--price", "1e3", "not_a_number"),
    ("--price", "nan", "not_a_number"),
    ("--price", "-inf", "not_a_number"),  # was taken for an option
    ("--price", "-30000", "out_of_range"),  # was a wire-level message with exit 1
    ("--price", "0", "out_of_range"),
    ("--price", "mark-1%%", "bad_price"),
    ("--qty", "0", "out_of_range"),
    ("--qty", "-1", "out_of_range"),
    ("--timeout", "0", "out_of_range"),  # was taken
    ("--timeout", "-1", "out_of_range"),
    ("--timeout", "nan", "not_a_number"),
    ("--timeout", "inf", "not_a_number"),  # hung for ever
    ("--wait", "61", "out_of_range"),
    ("--max-slippage", "2", "out_of_range"),
])
def test_a_bad_number_is_refused_before_connecting_naming_the_flag(capsys, flag, value, reason):
    args = PLACE + ["--qty", "0.01", "--price", "30000"]
    at = args.index(flag) if flag in args else None
    if at is not None:
        args[at + 1] = value
    else:
        args += [flag, value]
    code, out = run(capsys, *args)
    assert code == 2 and out["error"] == reason and flag in out["message"], out


@pytest.mark.parametrize("args, flag", [
    (["account", "leverage", "alice", "--symbol", "BTC-PERP", "--leverage", "0"], "--leverage"),
    (["account", "leverage", "alice", "--symbol", "BTC-PERP", "--leverage", "2.5"], "--leverage"),
    (["account", "deposit", "alice", "--amount", "-5"], "--amount"),
    (["account", "margin", "alice", "--symbol", "BTC-PERP", "--amount", "１"], "--amount"),
    (["book", "BTC-PERP", "--depth", "0"], "--depth"),
    (["watch", "BTC-PERP", "--seconds", "inf"], "--seconds"),
    (["order", "cancel", "--account", "a", "--symbol", "S", "--order-id", "-3"], "--order-id"),
    (["netsim", "set", "gateway->risk", "--loss", "nan"], "--loss"),
    (["netsim", "set", "gateway->risk", "--queue-limit", "1e3"], "--queue-limit"),
    (["explain", "account", "alice", "--limit", "-1"], "--limit"),
    (["calc", "mmr", "--symbol", "BTC-PERP", "--notional", "６0000"], "--notional"),
])
def test_every_command_takes_numbers_through_the_same_layer(capsys, args, flag):
    code, out = run(capsys, *args)
    assert code == 2 and flag in out["message"], out


def test_no_flag_of_any_command_reads_numbers_with_plain_int_or_float(capsys):
    """Commands other modules add (perpx stress, cascade) get the same layer: before it,
    `perpx stress --depth ３` ran with a depth of 3 (Python's int takes fullwidth digits)."""
    found = [(path, action) for path, p in commands(cli.parser()) for action in p._actions
             if action.type in (int, float)]
    assert found == []
    code, out = run(capsys, "stress", "--notional", "BTC-PERP=600000", "--depth", "３")
    assert code == 2 and out["error"] == "not_a_number" and "--depth" in out["message"], out
    code, out = run(capsys, "cascade", "band", "--accounts", "1_0", "--out", "x.json")
    assert code == 2 and "--accounts" in out["message"], out


def test_usage_errors_without_json_go_to_stderr_with_the_reason(capsys):
    assert main(PLACE + ["--qty", "3_0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not_a_number: argument --qty" in captured.err


def test_a_negative_value_is_joined_to_its_flag_only_where_the_flag_takes_one():
    assert cli.joined_negative_values(["--price", "-inf", "--post-only", "-h"]) == \
        ["--price=-inf", "--post-only", "-h"]
    assert cli.joined_negative_values(["--amount", "-50", "--by", "-1s"]) == \
        ["--amount=-50", "--by=-1s"]


class FakeClient:
    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.symbols = {"BTC-PERP": {"tick_size": "0.1", "lot_size": "0.001"}}

    async def next_mark(self, symbol, timeout):
        class Mark:
            mark = self.mark
        return Mark()

    def ticks(self, symbol, text):
        from cluster.client import Client

        return Client.ticks(self, symbol, text)

    def price_str(self, symbol, ticks):
        return str(Decimal(ticks) / 10)


@pytest.mark.parametrize("mark, text, ticks", [
    (300_000, "mark", 300_000),
    (300_000, "mark-1%", 297_000),
    (300_000, "mark+0.35%", 301_050),
    (300_001, "mark-1%", 297_000),  # 3000.01 ticks away: rounded away from the mark, to 3001
    (300_001, "mark+1%", 303_002),
    (300_000, "mark-25", 299_750),  # price units: 25.0 = 250 ticks
    (300_000, "30000.5", 300_005),
])
def test_a_price_relative_to_the_mark_is_rounded_away_from_it(mark, text, ticks):
    assert cli.price_type(text) == text
    assert asyncio.run(cli.price_ticks(FakeClient(mark), "BTC-PERP", text, "--price")) == ticks


def test_a_relative_price_off_the_grid_or_below_zero_is_refused():
    with pytest.raises(cli.CliError) as off:
        asyncio.run(cli.price_ticks(FakeClient(300_000), "BTC-PERP", "mark-0.05", "--price"))
    assert off.value.reason == "price_off_tick" and off.value.code == 2
    with pytest.raises(cli.CliError) as low:
        asyncio.run(cli.price_ticks(FakeClient(300_000), "BTC-PERP", "mark-40000", "--price"))
    assert low.value.reason == "bad_price" and low.value.code == 2


def test_symbols_give_every_rule_before_an_order(capsys):
    code, out = run(capsys, "symbols")
    assert code == 0 and out["collateral"] == "USDC"
    btc = next(s for s in out["symbols"] if s["symbol"] == "BTC-PERP")
    assert (btc["tick_size"], btc["lot_size"], btc["price_band"], btc["max_leverage"]) == \
        ("0.1", "0.001", "5%", 125)
    assert btc["ladder"][0] == {"tier": 1, "notional_from": "0", "notional_to": "50000",
                                "max_leverage": 125, "maintenance_rate": "0.4%",
                                "maintenance_amount": "0"}
    assert main(["symbols"]) == 0
    text = capsys.readouterr().out
    assert "price band 5% of mark" in text and "maint. amount (USDC)" in text


def test_accounts_list_names_and_scopes_never_keys(capsys):
    code, out = run(capsys, "accounts")
    names = {a["account"]: a for a in out["accounts"]}
    assert code == 0 and {"alice", "bob", "admin"} <= set(names)
    assert names["admin"]["scopes"] == ["admin"] and names["alice"]["initial_deposit"] == "100000"
    assert "demo-key" not in json.dumps(out)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("perpx 0.")


def commands(parser, path=()):
    """Every leaf command of the parser: (path, its parser)."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from commands(sub, (*path, name))


def test_every_command_has_a_description_an_example_and_described_flags():
    found = list(commands(cli.parser()))
    assert len(found) >= 30
    for path, p in found:
        text = p.format_help()
        assert p.description and "example:\n  perpx " + path[0] in text, path
        for action in p._actions:
            if action.option_strings and action.dest not in ("help",):
                assert action.help, (path, action.option_strings)
    place = dict(found)[("order", "place")].format_help()
    assert "mark-1%" in place and "(default: GTC)" in place and "in contracts" in place
    netsim_set = dict(found)[("netsim", "set")].format_help()
    assert "mixture" in netsim_set and "MESSAGES" in netsim_set


@pytest.mark.parametrize("text", ["３００００", "3_0000", " 30000 ", "30000\n", "٣٠٠٠٠"])
def test_every_exact_conversion_reads_ascii_digits_only(capsys, text):
    """units.to_units is where every typed number becomes units (the SDK's ticks/lots/atoms, calc,
    stress and cascade flags): before, Python's Decimal read these as 30000."""
    from cluster.rules.units import UnitError, to_units

    with pytest.raises(UnitError) as refused:
        to_units(text, Decimal("0.1"), "price", "off_grid")
    assert refused.value.reason == "not_a_number"
    assert to_units("30000", Decimal("0.1"), "price", "off_grid") == 300000
    assert to_units(Decimal("1000").normalize(), Decimal("1"), "x", "r") == 1000  # str: '1E+3'
    code, out = run(capsys, "cascade", "band", "--size", text, "--out", "never.json")
    assert code == 2 and out["error"] == "not_a_number" and "--size" in out["message"], out


@pytest.mark.parametrize("args", [
    ["cascade", "--from-cluster"],  # waited --timeout (5 s) before
    ["cascade", "snapshot", "--from-cluster", "--out", "never.json"],
    ["stress", "alice"], ["book", "BTC-PERP"], ["ping"], ["netsim", "show"],
    ["incident", "report"], ["explain", "account", "alice"],  # printed an empty report, exit 0
    ["explain", "liquidation", "liq-1"],
    ["audit", "verify"],  # was 'NOT CONSISTENT', exit 1, as if a journal were damaged
])
def test_a_command_on_a_directory_with_no_cluster_says_so_at_once(capsys, tmp_path, args):
    import time

    started = time.monotonic()
    code, out = run(capsys, *args, "--run-dir", str(tmp_path / "var"))
    assert code == 2 and out["error"] in ("no_cluster", "no_journals"), out
    assert "--run-dir" in out["message"] and time.monotonic() - started < 2, out
