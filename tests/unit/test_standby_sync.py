"""A standby applies a drain's inputs while their fsync runs on the fsync thread (#19): its time
per drain is the longer of the two, not their sum, and it returns only once both are done."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from cluster.journal import Journal
from cluster.runner import CoreRunner


def runner(tmp_path, threaded: bool = True):
    journal = Journal(tmp_path / "j", deferred=True)
    return SimpleNamespace(journal=journal,
                           _fsyncs=ThreadPoolExecutor(1) if threaded else None)


def test_the_apply_runs_while_the_fsync_is_in_flight_and_both_end_before_it_returns(
        tmp_path, monkeypatch):
    fake = runner(tmp_path)
    fake.journal.append_batch([(1, b"a"), (2, b"b")])
    started, release = threading.Event(), threading.Event()
    real_fsync = __import__("os").fsync

    def slow_fsync(fd):  # the disk, held until the apply has run
        started.set()
        assert release.wait(5)
        real_fsync(fd)

    monkeypatch.setattr("os.fsync", slow_fsync)
    seen = []

    def apply():
        assert started.wait(5)  # the fsync is on its thread already
        seen.append((fake.journal.sync_in_flight, fake.journal.durable_seq))
        release.set()

    CoreRunner.sync_while(fake, apply)
    assert seen == [(True, 0)]  # applied before the disk had them ...
    assert not fake.journal.sync_in_flight and fake.journal.durable_seq == 2  # ... returned after


def test_without_the_thread_it_applies_then_fsyncs(tmp_path):
    fake = runner(tmp_path, threaded=False)
    fake.journal.append_batch([(1, b"a")])
    order = []
    CoreRunner.sync_while(fake, lambda: order.append(fake.journal.durable_seq))
    assert order == [0] and fake.journal.durable_seq == 1


def test_a_failed_fsync_is_raised_after_the_apply(tmp_path, monkeypatch):
    fake = runner(tmp_path)
    fake.journal.append_batch([(1, b"a")])

    def broken(fd):
        time.sleep(0.01)
        raise OSError(5, "EIO")

    monkeypatch.setattr("os.fsync", broken)
    applied = []
    with pytest.raises(OSError):
        CoreRunner.sync_while(fake, lambda: applied.append(1))
    assert applied == [1] and fake.journal.durable_seq == 0
