"""What a person meets at the terminal against a real cluster: liveness told truly at start,
refusals in trader units on stdout, an unknown symbol and another account's key refused as bad
input, a stopped cluster said at once."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import ClusterHandle

pytestmark = pytest.mark.e2e


def test_the_terminal_against_a_cluster_up_and_then_down(tmp_path):
    handle = ClusterHandle(tmp_path)
    up = handle.cli("cluster", "up", "--detach", timeout=90)
    try:
        assert up.returncode == 0, up.stderr
        rows = [line.split() for line in up.stdout.splitlines()
                if line.split()[:1] and line.split()[0] in handle.topo.nodes]
        # was "alive no" for every node: status printed before liveness was worked out
        assert len(rows) == len(handle.topo.nodes) and all(r[3] == "yes" for r in rows), up.stdout

        book = handle.cli("book", "NOPE-PERP")  # was exit 1, while order place said 2
        assert book.returncode == 2 and "unknown_symbol" in book.stderr, book
        other = handle.cli("account", "show", "alice", "--api-key", handle.api_key("bob"))
        assert other.returncode == 2 and "logs on as 'bob', not 'alice'" in other.stderr, other
        assert "account bob" not in other.stdout  # was bob's account, silently

        # a venue refusal of a setting: stdout, exit 1, with the rule's numbers (was stderr)
        lev = handle.cli("account", "leverage", "alice", "--symbol", "BTC-PERP", "--leverage",
                         "1000")
        assert lev.returncode == 1 and lev.stdout.startswith("REFUSED    "), lev
        assert lev.stderr == "", lev.stderr
        # an order refusal: rates in percent, prices in price units
        band = handle.cli("order", "place", "--account", "alice", "--symbol", "BTC-PERP",
                          "--side", "sell", "--qty", "0.01", "--price", "99999999")
        assert band.returncode == 1 and re.search(r"band 5%, min price [0-9.]+", band.stdout), band
        # a relative price, and an order named by the client id it was given
        bid = handle.cli_json("order", "place", "--account", "alice", "--symbol", "BTC-PERP",
                              "--side", "buy", "--qty", "0.01", "--price", "mark-2%",
                              "--client-order-id", "exp-1")
        assert bid["result"]["type"] == "OrderAccepted"
        gone = handle.cli_json("order", "cancel", "--account", "alice", "--symbol", "BTC-PERP",
                               "--client-order-id", "exp-1")
        assert gone["result"]["type"] == "OrderCancelled"
        ping = handle.cli("ping", check=True).stdout
        assert re.match(r"round trip [0-9.,]+ (us|ms)\n", ping), ping
    finally:
        handle.cli("cluster", "down")
    started = time.monotonic()
    late = handle.cli("ping")  # status.json says stopped: said at once, not after --timeout
    assert late.returncode == 2 and "cluster_not_running" in late.stderr, late
    assert "is stopped" in late.stderr and time.monotonic() - started < 4, late


def test_a_start_on_a_port_someone_holds_says_what_to_do(tmp_path):
    """Two checkouts on one host both start on the built-in ports: the second start failed with
    'Address already in use' and nothing more; it now names the ways out."""
    import socket

    handle = ClusterHandle(tmp_path)
    gateway = handle.topo.nodes["gateway"].client  # tcp://127.0.0.1:PORT
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", int(gateway.rsplit(":", 1)[1])))
    holder.listen()
    try:
        detached = handle.cli("cluster", "up", "--detach", timeout=90)
        assert detached.returncode == 1 and "Address already in use" in detached.stdout, detached
        assert "--config FILE or PERPX_CONFIG" in detached.stdout, detached
        foreground = handle.cli("cluster", "up", "--seconds", "1", timeout=90)
        assert foreground.returncode == 1, foreground
        assert "--config FILE or PERPX_CONFIG" in foreground.stderr, foreground
    finally:
        holder.close()
        handle.cli("cluster", "down")
