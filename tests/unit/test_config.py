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
