"""The perpx CLI against a detached cluster: up, place, account, ping, down leaves nothing."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from cluster.client import Client
from tests.conftest import ClusterHandle, perpx_processes
from tests.e2e.helpers import wait_mark

pytestmark = pytest.mark.e2e


async def human_mark(handle: ClusterHandle, symbol: str) -> str:
    async with Client(handle.endpoint(), api_key=handle.api_key("alice"),
                      market_data=handle.md_endpoint()) as c:
        return c.price_str(symbol, (await wait_mark(c, symbol)).mark)


def test_cli_session_over_ipc_leaves_nothing_behind(tmp_path):
    handle = ClusterHandle(tmp_path, internal_ipc=True)
    status = handle.up()
    try:
        assert status["state"] == "running"
        assert all(n["ready"] for n in status["nodes"].values())
        assert list((handle.run_dir / "run").iterdir()), "ipc sockets expected while running"
        price = asyncio.run(human_mark(handle, "ETH-PERP"))

        sell = handle.cli_json("order", "place", "--account", "alice", "--symbol", "ETH-PERP",
                               "--side", "sell", "--qty", "0.5", "--price", price)
        assert sell["result"]["type"] == "OrderAccepted"
        buy = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                              "--side", "buy", "--qty", "0.5", "--price", price)
        assert buy["result"]["type"] == "OrderAccepted"
        assert any(e["type"] == "Fill" for e in buy["later_events"])

        bob = handle.cli_json("account", "show", "bob")
        alice = handle.cli_json("account", "show", "alice")
        assert [(p["symbol"], p["qty_human"]) for p in bob["positions"]] == [("ETH-PERP", "0.5")]
        assert [(p["symbol"], p["qty_human"]) for p in alice["positions"]] == [("ETH-PERP", "-0.5")]
        for view in (alice, bob):
            for key in ("entry_price", "mark", "unrealized_pnl", "initial_margin",
                        "maintenance_margin", "leverage"):
                assert key in view["positions"][0]

        text = handle.cli("account", "show", "bob", check=True).stdout  # the terminal form
        assert text.startswith("account bob") and "liq. price" in text and "ETH-PERP" in text
        # the account's own fills, kept by risk: the buy above, as the taker
        assert [(f["side"], f["liquidity"], f["human"]["qty"], f["human"]["price"])
                for f in bob["fills"]] == [(1, "taker", "0.5", price)]
        assert "fills (latest first):" in text
        assert "node" in handle.cli("cluster", "status", check=True).stdout.splitlines()[3]
        book = handle.cli_json("book", "ETH-PERP")  # levels, and the oracle's prices beside them
        assert book["prices"]["oracle_mode"] == "normal" and book["prices"]["sources"] >= 3
        assert float(book["prices"]["mark"]) > 0 and book["prices"]["last"] is not None

        ping = handle.cli_json("ping")
        assert [h["node"] for h in ping["hops"]] == ["gateway", "risk", "matching", "risk", "gateway"]
        stamps = [h["mono_ns"] for h in ping["hops"]]
        assert stamps == sorted(stamps) and ping["rtt_us"] > 0

        # the terminal form of a refusal: the rule's numbers in prices, not ticks
        far = f"{float(price) * 2:.2f}"
        band = handle.cli("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                          "--side", "sell", "--qty", "0.5", "--price", far)
        assert band.returncode == 1 and band.stdout.startswith("REJECTED   ETH-PERP  price_out_of_band")
        low_edge = float(re.search(r"min price ([0-9.]+)", band.stdout).group(1))
        assert 0.8 * float(price) < low_edge < float(price), band.stdout
        handle.cli_json("order", "place", "--account", "alice", "--symbol", "ETH-PERP",
                        "--side", "sell", "--qty", "0.1", "--price", price)
        taken = handle.cli("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                           "--side", "buy", "--qty", "0.1", "--price", price, "--tif", "IOC",
                           "--wait", "1", check=True)
        assert re.search(rf"^FILL +order \d+  buy 0.1 ETH-PERP @ {re.escape(price)}  taker  "
                         r"fee [0-9.]+  remaining 0$", taken.stdout, re.M), taken.stdout
        off_tick = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                   "--side", "buy", "--qty", "0.5", "--price", "2000.005", ok=False)
        assert off_tick["error"] == "price_off_tick"
        off_lot = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                  "--side", "buy", "--qty", "0.505", "--price", price, ok=False)
        assert off_lot["error"] == "qty_off_lot"
        # refused before sending, in the flag's own units, naming it: a quantity below the range,
        # a price the wire cannot carry, a number written in another notation
        negative = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                   "--side", "buy", "--qty", "-1", "--price", price, ok=False)
        assert negative["error"] == "out_of_range" and "--qty" in negative["message"]
        huge = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                               "--side", "buy", "--qty", "0.5", "--price", "1" + "0" * 30, ok=False)
        assert huge["error"] == "out_of_range"
        exponent = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                   "--side", "buy", "--qty", "0.5", "--price", "1e3", ok=False)
        assert exponent["error"] == "not_a_number" and "--price" in exponent["message"]
        # amend by client order id: a smaller quantity keeps priority, a new price does not
        low = f"{float(price) * 0.98:.2f}"
        rest = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                               "--side", "buy", "--qty", "0.5", "--price", low,
                               "--client-order-id", "cli-amend")
        assert rest["result"]["type"] == "OrderAccepted"
        smaller = handle.cli_json("order", "amend", "--account", "bob", "--symbol", "ETH-PERP",
                                  "--client-order-id", "cli-amend", "--qty", "0.2")
        assert (smaller["result"]["type"], smaller["result"]["priority_kept"]) == ("OrderAmended", True)
        moved = handle.cli_json("order", "amend", "--account", "bob", "--symbol", "ETH-PERP",
                                "--client-order-id", "cli-amend", "--price", f"{float(low) - 1:.2f}")
        assert moved["result"]["priority_kept"] is False
        # a waiting stop moves its trigger (a stop-loss trailed by hand)
        up, higher = f"{float(price) * 1.03:.2f}", f"{float(price) * 1.04:.2f}"
        waiting = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                  "--side", "buy", "--qty", "0.1", "--type", "stop_market",
                                  "--tif", "IOC", "--trigger-price", up)
        assert waiting["result"]["status"] == "untriggered", waiting
        trailed = handle.cli("order", "amend", "--account", "bob", "--symbol", "ETH-PERP",
                             "--order-id", str(waiting["result"]["order_id"]),
                             "--trigger-price", higher, check=True).stdout
        assert trailed.startswith("AMENDED") and f"trigger {higher.rstrip('0').rstrip('.')}" \
            in trailed, trailed
        # the open orders: the resting bid and the waiting stop, with what each reserves
        listed = handle.cli_json("order", "list", "--account", "bob", "--symbol", "ETH-PERP")
        by_id = {o["order_id"]: o for o in listed["orders"]}
        assert by_id[waiting["result"]["order_id"]]["status"] == "untriggered"
        assert by_id[rest["result"]["order_id"]]["human"]["remaining"] == "0.2"
        assert all(float(o["human"]["reserved"]) > 0 for o in listed["orders"])
        table = handle.cli("order", "list", "--account", "bob", check=True).stdout
        assert table.startswith(f"account bob: {len(listed['orders'])} open orders"), table
        wiped = handle.cli_json("order", "cancel-all", "--account", "bob", "--symbol", "ETH-PERP")
        assert sorted(oid for oid, _ in wiped["result"]["orders"]) == sorted(by_id)
        assert handle.cli_json("order", "list", "--account", "bob")["orders"] == []
        # self-trade prevention chosen on the command line; the answer shows what the order did
        # to the account's own maker (the same command's events), not only to itself
        above = f"{float(price) * 1.01:.2f}"
        maker = handle.cli_json("order", "place", "--account", "bob", "--symbol", "ETH-PERP",
                                "--side", "sell", "--qty", "0.1", "--price", above)
        stp = handle.cli("order", "place", "--account", "bob", "--symbol", "ETH-PERP", "--side",
                         "buy", "--qty", "0.1", "--price", above, "--stp", "cancel_maker",
                         "--wait", "1", check=True).stdout
        assert re.search(rf"^CANCELLED  order {maker['result']['order_id']}  self_trade_prevention"
                         r"  remaining 0.1\n +taker order id \d+, mode cancel_maker$", stp, re.M), stp
        assert "FILL" not in stp, stp
        handle.cli_json("order", "cancel-all", "--account", "bob")
        slip = handle.cli("order", "place", "--account", "bob", "--symbol", "ETH-PERP", "--side",
                          "buy", "--qty", "0.1", "--type", "market", "--max-slippage", "0.0000001")
        assert slip.returncode == 2 and "bad_fraction" in slip.stderr, slip
        # why: the journals' decisions about bob, in trader's units
        why = handle.cli("explain", "account", "bob", "--since", "10m", "--limit", "0",
                         check=True).stdout
        assert re.search(r"matching\.price_out_of_band +reject +ETH-PERP +order id \d+, seq \d+, "
                         r"price [0-9.]+, mark [0-9.]+", why), why
        assert re.search(r"matching\.self_trade_prevention +cancel +ETH-PERP", why), why
        # the market as it happens: the top of book first, and the mark within the second
        seen = handle.cli("watch", "ETH-PERP", "--seconds", "1.5", check=True).stdout.splitlines()
        clock = r"\d\d:\d\d:\d\d\.\d{3}  "  # each line led by its UTC time
        assert all(re.match(clock, line) for line in seen), seen
        seen = [line[14:] for line in seen]
        assert seen[0].startswith("TOP      bid") and any(l.startswith("MARK ") for l in seen), seen
        # the terminal forms of the tools around the venue
        assert handle.cli("ping", check=True).stdout.startswith("round trip ")
        assert handle.cli("netsim", "show", check=True).stdout.startswith("netsim table v")
        none = handle.cli_json("order", "amend", "--account", "bob", "--symbol", "ETH-PERP",
                               "--order-id", "1", ok=False)
        assert none["error"] == "nothing_to_amend"
        wide = handle.cli_json("order", "cancel", "--account", "bob", "--symbol", "ETH-PERP",
                               "--order-id", str(2**70), ok=False)
        assert wide["error"] == "out_of_range"
    finally:
        down = handle.down()
    assert down["supervisor_stopped"] and down["killed_leftovers"] == []
    deadline = time.monotonic() + 5
    while perpx_processes(handle.run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert perpx_processes(handle.run_dir) == []
    assert list((handle.run_dir / "run").iterdir()) == []
    assert handle.cli_json("cluster", "status", ok=False)["state"] == "stopped"
