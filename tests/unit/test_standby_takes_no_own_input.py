"""A standby's inputs are its primary's, streamed under the primary's numbers. One of its own (a
stray inbox frame, a timer, its shell reading the key file) would take a number the stream needs:
the primary's input at that number would then be skipped as held, acknowledged all the same, and
be missing after a promotion. The runner of a standby journals and applies nothing of its own."""

from types import SimpleNamespace

from cluster.config import JournalConf
from cluster.protocol import ClockTick
from cluster.runner import CoreRunner


class Shell:
    def __init__(self, tmp_path, role: str) -> None:
        self.role, self.stats, self.dir = role, {}, str(tmp_path / "journal")
        self.audit = SimpleNamespace(input_seq=0)

    def journal_dir(self) -> str:
        return self.dir

    def now_ns(self) -> int:
        return 1


def test_a_standby_journals_and_applies_none_of_its_own_inputs(tmp_path):
    shell = Shell(tmp_path, "standby")
    applied = []
    runner = CoreRunner(shell, core=None, process=lambda msg, now: applied.append(msg),
                        conf=JournalConf(fsync="off"))
    streamed = []
    runner.repl = SimpleNamespace(stream=lambda seq, items: streamed.append(seq))  # of a pair
    runner.on_messages([ClockTick(), ClockTick()])
    assert runner.journal.next_seq == 1 and applied == []
    assert shell.stats["standby_dropped"] == 2
    shell.role = "primary"  # promoted: its own inputs are the venue's now
    runner.on_messages([ClockTick()])
    assert runner.journal.next_seq == 2 and len(applied) == 1 and streamed == [1]


def test_a_standby_that_fails_to_apply_what_it_acknowledged_stops_instead_of_going_on():
    # Acknowledged (on its disk) but not in its state: going on, or being promoted, would serve a
    # state behind its own journal. It stops; its restart replays the journal, those inputs too.
    from cluster.failover import Replication

    def apply(seq, items):
        if seq == 2:
            raise ValueError("a core bug")
        applied.append(seq)

    applied, stopped = [], []
    logged = []
    standby = SimpleNamespace(
        unapplied=[(1, ["a"]), (2, ["b"]), (3, ["c"])], synced=True,
        runner=SimpleNamespace(apply_replicated=apply),
        log=SimpleNamespace(exception=lambda event, **kw: logged.append(event)),
        shell=SimpleNamespace(exit_code=0, stop=lambda: stopped.append(True)))
    Replication.apply_journaled(standby)
    assert applied == [1] and stopped == [True] and standby.shell.exit_code == 70
    assert standby.synced is False and logged == ["standby_apply_failed"]
    assert standby.unapplied == []  # (the rest wait for the restart's replay, not for this process)
