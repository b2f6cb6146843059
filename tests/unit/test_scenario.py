"""Scenario files: every step checked before the first is applied, and a run that stops early
still heals what it applied."""

from __future__ import annotations

import pytest

from netsim import scenario


def write(tmp_path, body: str):
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("body, message", [
    ('[[step]]\nat = "1s"\naction = "set"\n', "needs `link`"),
    ('[[step]]\nat = "1s"\naction = "fault"\nnode = "risk"\n', "needs `op`"),
    ('[[step]]\nat = "1s"\naction = "explode"\n', "unknown action"),
    ('[[step]]\nat = "soon"\naction = "clear"\n', "not a duration"),
    ('[[step]]\nat = "1s"\naction = "skew"\nnode = "risk"\nby = "later"\n', "not a duration"),
    ('[[step]]\nat = "1s"\naction = "feed"\nop = "freeze"\nduration = "x"\n', "not a duration"),
    ('end = "forever"\n[[step]]\nat = "1s"\naction = "clear"\n', "end:"),
    ('step = 3\n', "array of tables"),
    # what the supervisor would refuse, refused at load: the controller's own checks, rehearsed
    ('[[step]]\nat = "2s"\naction = "set"\nlink = "risk->matching"\nlatency = { model = "pareto" }\n'
     '[[step]]\nat = "1s"\naction = "set"\nlink = "gateway->risk"\nloss = 0.1\n',
     r"step 1 \(set\): bad link settings: pareto needs 'min'"),
    ('[[step]]\nat = "1s"\naction = "set"\nlink = "risk->nowhere"\nloss = 0.1\n', "unknown link"),
    ('[[step]]\nat = "1s"\naction = "profile"\nname = "moon"\n', "unknown profile"),
    ('[[step]]\nat = "1s"\naction = "partition"\nlinks = ["a->b"]\n', "unknown link"),
    ('[[step]]\nat = "1s"\naction = "fault"\nnode = "risk"\nop = "explode"\n', "fault needs"),
    ('[[step]]\nat = "1s"\naction = "skew"\nnode = "moon"\nby = "1s"\n', "unknown node"),
])
def test_a_bad_step_is_refused_at_load_naming_it(tmp_path, body, message):
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.load(write(tmp_path, body))


def test_skew_back_and_forward(tmp_path):
    s = scenario.load(write(tmp_path, '[[step]]\nat = "0s"\naction = "skew"\nnode = "risk"\n'
                                      'by = "-250ms"\n[[step]]\nat = "0s"\naction = "skew"\n'
                                      'node = "oracle"\nby = "1s"\n'))
    assert [scenario.to_command(step)[1]["ns"] for step in s["steps"]] == [-250_000_000,
                                                                          1_000_000_000]


def test_a_run_that_fails_midway_still_heals_what_it_applied(tmp_path):
    s = scenario.load(write(tmp_path, '[[step]]\nat = "0s"\naction = "fault"\nnode = "matching"\n'
                                      'op = "pause"\n[[step]]\nat = "0s"\naction = "set"\n'
                                      'link = "gateway->risk"\nlatency = "2ms"\n'))
    sent = []

    def send(cmd, args):
        sent.append((cmd, args))
        if cmd == "netsim_set":
            raise ConnectionError("supervisor gone")
        return {"ok": True}

    with pytest.raises(ConnectionError):
        scenario.run(s, send, lambda record: None)
    assert sent[-3:] == [("netsim_clear", {}), ("fault", {"node": "matching", "op": "resume"}),
                         ("feed", {"action": "heal"})]


def test_the_example_scenarios_load_and_rehearse():
    """examples/scenarios/*.toml, which the README points a newcomer to, pass the same checks a
    run does before its first step (the netsim steps rehearsed on a scratch controller)."""
    from pathlib import Path

    from netsim import scenario

    files = sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        plan = scenario.load(path)
        assert plan["steps"] and plan.get("end"), path
