"""#19: the supervisor is not a single point of failure. kill -9 of the supervisor leaves every node
serving; `perpx cluster status` says the supervisor is dead and the nodes alive; `perpx cluster up`
adopts the running nodes (the same processes, no second set) and supervises them again: a node
killed afterwards is restarted."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from cluster.client import Client
from tests.conftest import ClusterHandle
from tests.e2e.helpers import poll

pytestmark = pytest.mark.e2e
SYMBOL = "BTC-PERP"


async def place_and_see(handle) -> int:
    async with Client(handle.endpoint(), api_key=handle.api_key("mm1"),
                      market_data=handle.md_endpoint()) as maker:
        mark = (await maker.next_mark(SYMBOL, 10.0)).mark
        answer = await maker.place(SYMBOL, 1, 1, mark - 500)
        return answer.event.order_id


def test_nodes_outlive_a_killed_supervisor_and_a_new_one_adopts_them(tmp_path):
    handle = ClusterHandle(tmp_path)
    handle.up()
    try:
        before = handle.node_pids()
        supervisor = handle.status()["supervisor_pid"]
        os.kill(supervisor, signal.SIGKILL)
        poll(lambda: handle.cli_json("cluster", "status", ok=False)["state"] == "supervisor_dead", 10)
        status = handle.cli_json("cluster", "status", ok=False)
        assert all(node["alive"] for node in status["nodes"].values()), status["nodes"]
        # The venue serves on without its supervisor.
        assert asyncio.run(place_and_see(handle)) > 0

        up = handle.cli_json("cluster", "up", "--detach")
        assert up["supervisor_pid"] != supervisor and up["state"] == "running"
        assert handle.node_pids() == before, "the running nodes were adopted, not started again"
        events = [e["event"] for e in handle.status()["events"]]
        assert "nodes_adopted" in events
        # Supervised again: a node killed now is restarted by the new supervisor.
        risk = before["risk"]
        handle.cli("netsim", "fault", "risk", "kill", check=True)
        poll(lambda: handle.status()["nodes"]["risk"]["pid"] != risk
             and handle.status()["nodes"]["risk"]["state"] == "running", 20)
        assert asyncio.run(place_and_see(handle)) > 0
    finally:
        handle.down()
