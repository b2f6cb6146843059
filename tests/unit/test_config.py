"""Topology files: mistakes are refused at load, naming the key, before any process starts."""

from __future__ import annotations

import re

import pytest

from cluster import config

GOOD = config.DEFAULT_CONFIG.read_text()


def load_with(tmp_path, old: str, new: str):
    assert old in GOOD
    path = tmp_path / "topology.toml"
    path.write_text(GOOD.replace(old, new, 1))
    return config.load(path, run_dir=str(tmp_path / "run"))


def test_the_shipped_topology_loads(tmp_path):
    topo = load_with(tmp_path, "", "")
    assert set(topo.nodes) >= {"gateway", "risk", "matching", "oracle", "liquidator", "feeds"}


@pytest.mark.parametrize("old, new, message", [
    ('inbox = "ipc://{run}/run/feeds.inbox"', 'inbox = "bogus://{run}/feeds"',
     "nodes.feeds.inbox = 'bogus://"),
    ('control = "ipc://{run}/run/supervisor.ctl"', 'control = "tcp://127.0.0.1"',
     "supervisor.control = 'tcp://127.0.0.1' is not a ZeroMQ endpoint"),
    ("[nodes.gateway]", "[nodes.gatewy]", "nodes missing: gateway"),
    ('price_band = "0.05"', 'price_band = "-0.05"\nfunding_cap = "-0.0075"',
     "BTC-PERP: out of range: price_band, funding_cap"),
    ('initial_price = "30000"', 'initial_price = "0"', "BTC-PERP: out of range: initial_price"),
    # 125x holds 0.8% of notional, not above 0.4% maintenance + 0.5%: liquidated at once
    ('forced_fee = "0.002"', 'forced_fee = "0.005"',
     "BTC-PERP: tier 1 allows 125x, an initial margin of 0.8000% of notional, which is not above "
     "its maintenance rate 0.40% + the forced fee 0.50%"),
])
def test_a_mistake_is_named(tmp_path, old, new, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        load_with(tmp_path, old, new)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:7710", "tcp://*:7710", "tcp://[::1]:7710",
                                      "ipc:///tmp/perpx/x.sock"])
def test_endpoints_zeromq_accepts_are_accepted(endpoint):
    assert config.ENDPOINT.match(endpoint)


# ---------------------------------------------------------------- issue 17, defect 15: every
# setting its range and every cross-field rule, refused at load with the path and what is allowed

ORACLE_MIN = "min_sources = 3 "
ALICE = '''name = "alice"
api_key = "demo-key-alice"
deposit = "100000"'''


@pytest.mark.parametrize("old, new, message", [
    # the oracle's publish raised on every tick
    (ORACLE_MIN, "min_sources = 0", "nodes.oracle.min_sources = 0 is out of range (allowed: >= 1)"),
    # the book then showed no mark, yet orders were accepted
    (ORACLE_MIN, "min_sources = 6",
     "nodes.oracle.min_sources = 6 is out of range (allowed: 1..5, the number of nodes.feeds.venues)"),
    ('deposit = "100000"', 'deposit = "-100000"',
     "accounts[4].deposit = '-100000' is out of range (allowed: >= 0)"),
    ("max_open_orders = 200", "max_open_orders = 0",
     "nodes.risk.max_open_orders = 0 is out of range (allowed: >= 1)"),
    ("weights = { alpha = 3,", "weights = { zulu = 4, alpha = 3,",
     "nodes.oracle.weights.zulu = 4 is out of range (allowed: weights only for the venues of "
     "nodes.feeds.venues ['alpha', 'bravo', 'charlie', 'delta', 'echo'])"),
    ("weights = { alpha = 3,", "weights = { alpha = 0,",
     "nodes.oracle.weights.alpha = 0 is out of range (allowed: >= 1)"),
    ('venues = ["alpha", "bravo", "charlie", "delta", "echo"]', 'venues = ["alpha", "alpha"]',
     "nodes.feeds.venues = ['alpha', 'alpha'] is out of range (allowed: at least one venue, "
     "names non-empty and distinct)"),
    ('insurance_fund = "100000"', 'insurance_fund = "-1"',
     "nodes.risk.insurance_fund = '-1' is out of range (allowed: >= 0)"),
    ('insurance_floor = "20000"', 'insurance_floor = "-5"',
     "nodes.liquidator.insurance_floor = '-5' is out of range (allowed: >= 0)"),
    ('chunk_position_share = "0.25"', 'chunk_position_share = "0"',
     "nodes.liquidator.chunk_position_share = '0' is out of range (allowed: (0, 1])"),
    ('chunk_depth_share = "0.5"', 'chunk_depth_share = "1.5"',
     "nodes.liquidator.chunk_depth_share = '1.5' is out of range (allowed: (0, 1])"),
    ('outlier_band = "0.03"', 'outlier_band = "zero"',
     "nodes.oracle.outlier_band = 'zero' is out of range (allowed: a decimal number (0, 1))"),
    ('book_band = "0.02"', 'book_band = "1"',
     "nodes.oracle.book_band = '1' is out of range (allowed: (0, 1))"),
    ("stale_after_ms = 2000", "stale_after_ms = 0",
     "nodes.oracle.stale_after_ms = 0 is out of range (allowed: >= 1)"),
    ("recovery_ms = 2000", "recovery_ms = -1",
     "nodes.oracle.recovery_ms = -1 is out of range (allowed: >= 0)"),
    ("max_carry_ms = 3000", "max_carry_ms = -3000",
     "nodes.oracle.max_carry_ms = -3000 is out of range (allowed: >= 0)"),
    ("book_max_ms = 10000", "book_max_ms = -1",
     "nodes.oracle.book_max_ms = -1 is out of range (allowed: >= 0)"),
    ("interval_ms = 100", "interval_ms = 0",
     "nodes.feeds.interval_ms = 0 is out of range (allowed: >= 1)"),
    ("check_interval_ms = 250", "check_interval_ms = 0",
     "nodes.liquidator.check_interval_ms = 0 is out of range (allowed: >= 1)"),
    ("max_mark_age_ms = 3000         # never", "max_mark_age_ms = 0 # never",
     "nodes.liquidator.max_mark_age_ms = 0 is out of range (allowed: >= 1)"),
    ("max_mark_age_ms = 3000         # a symbol", "max_mark_age_ms = -1 # a symbol",
     "nodes.risk.max_mark_age_ms = -1 is out of range (allowed: >= 1)"),
    ('backstop_accounts = ["backstop"]', 'backstop_accounts = ["nobody"]',
     "nodes.liquidator.backstop_accounts = 'nobody' is out of range (allowed: names of [[accounts]])"),
    ("heartbeat_timeout_ms = 1000", "heartbeat_timeout_ms = 200",
     "supervisor.heartbeat_timeout_ms = 200 is out of range (allowed: > supervisor.heartbeat_ms = 200)"),
    ("heartbeat_ms = 200", "heartbeat_ms = 0",
     "supervisor.heartbeat_ms = 0 is out of range (allowed: >= 1)"),
    ("max_restarts = 3", "max_restarts = -1",
     "supervisor.max_restarts = -1 is out of range (allowed: >= 0)"),
    ("restart_window_s = 60", "restart_window_s = 0",
     "supervisor.restart_window_s = 0 is out of range (allowed: >= 1)"),
    ("ready_timeout_ms = 20000", "ready_timeout_ms = 0",
     "supervisor.ready_timeout_ms = 0 is out of range (allowed: >= 1)"),
    # a second [[accounts]] table with the same name silently replaced the first
    (ALICE, ALICE + '\n\n[[accounts]]\nname = "alice"\napi_key = "other-key"',
     "accounts[5].name = 'alice' is out of range (allowed: a name no other account has "
     "(accounts[4] has it))"),
    ('name = "alice"', 'name = "insurance"',
     "accounts[4].name = 'insurance' is out of range (allowed: a non-empty name other than "
     "'insurance')"),
    ('api_key = "demo-key-alice"', 'api_key = ""',
     "accounts[4].api_key = '' is out of range (allowed: a non-empty key)"),
])
def test_defect_15_a_setting_out_of_range_is_refused_naming_its_path_and_range(
        tmp_path, old, new, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        load_with(tmp_path, old, new)


def test_defect_15_two_sockets_on_one_endpoint_are_refused(tmp_path):
    # risk's inbox on matching's path: every node reported running, every order ended
    # outcome_unknown and its reserved margin was never released
    with pytest.raises(config.ConfigError, match=re.escape(
            "nodes.risk.inbox = 'ipc://" + str(tmp_path / "run") + "/run/matching.inbox' is already "
            "nodes.matching.inbox's endpoint")):
        load_with(tmp_path, 'inbox = "ipc://{run}/run/risk.inbox"',
                  'inbox = "ipc://{run}/run/matching.inbox"')
    with pytest.raises(config.ConfigError, match=re.escape(
            "nodes.gateway.pub = 'tcp://127.0.0.1:7710' is already nodes.gateway.client's")):
        load_with(tmp_path, 'pub = "tcp://127.0.0.1:7711"', 'pub = "tcp://127.0.0.1:7710"')
    with pytest.raises(config.ConfigError, match=re.escape(  # a wildcard bind takes every host
            "nodes.gateway.pub = 'tcp://*:7710' is already nodes.gateway.client's endpoint "
            "('tcp://127.0.0.1:7710') (allowed: an endpoint no other socket uses)")):
        load_with(tmp_path, 'pub = "tcp://127.0.0.1:7711"', 'pub = "tcp://*:7710"')


def test_defect_15_a_toml_key_or_table_given_twice_is_refused_by_the_parser(tmp_path):
    # keys and [tables] cannot repeat in TOML (tomllib refuses them); only [[accounts]] entries,
    # an array, can name the same account twice: that rule is the loader's (above)
    with pytest.raises(config.ConfigError, match="Cannot overwrite a value"):
        load_with(tmp_path, "max_open_orders = 200", "max_open_orders = 200\nmax_open_orders = 5")
    with pytest.raises(config.ConfigError, match="Cannot declare"):
        load_with(tmp_path, "[nodes.gateway]", '[nodes.risk]\nmax_open_orders = 5\n\n[nodes.gateway]')


def test_defect_15_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(config.ConfigError) as raised:
        load_with(tmp_path, "max_open_orders = 200", "max_open_orders = 0\nmin_sources = 0")
    assert "nodes.risk.max_open_orders = 0" in str(raised.value)
    assert "nodes.risk.min_sources = 0" in str(raised.value)
