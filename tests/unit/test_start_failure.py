"""A process that fails to start is reported with the last line of its output: for a traceback,
the exception that stopped it."""

from __future__ import annotations

from cluster.supervisor import last_line


def test_last_line_is_the_exception_and_is_bounded(tmp_path):
    out = tmp_path / "gateway.out"
    out.write_text("Traceback (most recent call last):\n  File \"x\", line 1\n"
                   "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:7710')\n\n")
    assert last_line(out) == "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:7710')"
    out.write_text("x" * 1000)
    assert len(last_line(out)) == 300
    assert last_line(tmp_path / "missing.out") == ""
