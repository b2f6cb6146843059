"""The cluster fixtures themselves: a start that loses a port race is retried on fresh ports."""

from __future__ import annotations

import socket

import pytest

from cluster import config
from tests.conftest import ClusterHandle, perpx_processes

pytestmark = pytest.mark.e2e


def test_up_retries_on_fresh_ports_when_one_was_taken_meanwhile(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    free = config.free_tcp_ports
    calls = []

    def first_one_taken(n: int) -> list[int]:  # another cluster bound it after we chose it
        calls.append(n)
        ports = free(n)
        return ports[:-1] + [port] if len(calls) == 1 else ports  # the first one used

    monkeypatch.setattr(config, "free_tcp_ports", first_one_taken)
    try:
        handle = ClusterHandle(tmp_path)
        assert str(port) in handle.config_path.read_text()
        status = handle.up()
        assert status["state"] == "running" and len(calls) == 2
        assert str(port) not in handle.config_path.read_text()
        handle.down()
        assert not perpx_processes(handle.run_dir)
    finally:
        taken.close()
