"""The README is executed: every shell block of README.md, and the command in the quickstart's
docstring, run in order against a real cluster, each command's exit code checked; where the README
shows a command's output (a block of `$ command` lines followed by output), the output's shape is
checked too: the same words, any numbers. A block is skipped only when the README says so, in its
source, with `<!-- readme-test: skip (why) -->` just above it; that list is checked to stay short.

The cluster is the README's own `cluster up --detach`, pointed at a temporary run directory and a
topology on free ports through PERPX_RUN_DIR and PERPX_CONFIG, so the commands run verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from cluster import config
from tests.conftest import ROOT, perpx_processes

BLOCK = re.compile(r"(?P<skip><!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?"
                   r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?%?")
MAX_SKIPPED = 3


@dataclass
class Step:
    command: str
    where: str  # README line, for the failure message
    shown: list[str] = field(default_factory=list)  # the output the README shows, if any


def shell_lines(body: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comment lines dropped."""
    out, pending = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            pending += (line.rstrip()[:-1].strip() if pending else line.rstrip()[:-1].rstrip()) + " "
            continue
        line = pending + (line.strip() if pending else line)
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    return out


def readme_steps(text: str) -> tuple[list[Step], list[str]]:
    """(the commands to run, in order; the reasons of the blocks skipped)."""
    steps, skipped = [], []
    for block in BLOCK.finditer(text):
        where = f"README.md:{text.count(chr(10), 0, block.start('body')) + 1}"
        body, lang = block.group("body"), block.group("lang")
        if block.group("skip"):
            skipped.append(block.group("why"))
            continue
        if lang == "sh":
            steps += [Step(line, where) for line in shell_lines(body)]
        elif not lang and body.startswith("$ "):  # a command and the output it prints
            for line in body.splitlines():
                if line.startswith("$ "):
                    steps.append(Step(line[2:], where))
                else:
                    steps[-1].shown.append(line)
    return steps, skipped


def quickstart_steps() -> list[Step]:
    """The commands the quickstart's docstring tells a newcomer to run."""
    doc = (ROOT / "examples" / "quickstart.py").read_text().split('"""')[1]
    return [Step(line.strip(), "examples/quickstart.py") for line in doc.splitlines()
            if line.strip().startswith(".venv/bin/")]


def shape(line: str) -> re.Pattern:
    """A shown output line as a pattern: the same words, any number where it shows one, any run
    of spaces where it shows one (columns move with the numbers' widths)."""
    parts, at = [], 0
    for found in NUMBER.finditer(line):
        parts.append(re.escape(line[at:found.start()]))
        parts.append(NUMBER.pattern)
        at = found.end()
    parts.append(re.escape(line[at:]))
    return re.compile(re.sub(r"(\\ )+", " +", "".join(parts)))


def test_shape_matches_numbers_and_words_only():
    pattern = shape("ACCEPTED   order 9  buy 0.02 BTC-PERP @ 29000.1  new")
    assert pattern.fullmatch("ACCEPTED   order 123  buy 0.02 BTC-PERP @ 31422  new")
    assert not pattern.fullmatch("REJECTED   order 123  buy 0.02 BTC-PERP @ 31422  new")
    assert shape("band 5%, max 1,234 us").fullmatch("band 0.5%, max 12 us")


def test_readme_parsing_finds_commands_continuations_outputs_and_skips():
    text = ("intro\n\n```sh\n# a comment\n.venv/bin/perpx a --x 1 \\\n    --y 2   # why\n```\n\n"
            "<!-- readme-test: skip (long) -->\n```sh\nmake forever\n```\n\n"
            "```\n$ .venv/bin/perpx b\nOUT 1\n```\n\n```python\nprint()\n```\n")
    steps, skipped = readme_steps(text)
    assert [s.command for s in steps] == [".venv/bin/perpx a --x 1 --y 2   # why",
                                          ".venv/bin/perpx b"]
    assert steps[1].shown == ["OUT 1"] and skipped == ["long"]


@pytest.mark.e2e
def test_readme_runs_verbatim_against_a_real_cluster(tmp_path):
    steps, skipped = readme_steps((ROOT / "README.md").read_text())
    down = next(i for i, s in enumerate(steps) if "cluster down" in s.command)
    steps[down:down] = quickstart_steps()  # while the cluster runs
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert steps[0].command.startswith(".venv/bin/perpx cluster up --detach"), steps[0]
    assert (ROOT / ".venv" / "bin" / "perpx").exists(), "run the suite with `make test`"
    run_dir = tmp_path / "var"
    topology = config.write_tcp_topology(config.DEFAULT_CONFIG, tmp_path / "topology.toml",
                                         config.free_tcp_ports(20), run_dir)
    env = {**os.environ, "PERPX_RUN_DIR": str(run_dir), "PERPX_CONFIG": str(topology)}
    env.pop("PERPX_API_KEY", None)
    ran = []
    try:
        for step in steps:
            started = time.monotonic()
            proc = subprocess.run(["bash", "-c", step.command], cwd=ROOT, env=env, text=True,
                                  capture_output=True, timeout=90)
            ran.append(f"{time.monotonic() - started:5.1f}s  {step.command[:90]}")
            said = f"{step.where}: {step.command}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            refused = bool(step.shown) and step.shown[0].startswith(("REJECTED", "REFUSED"))
            assert proc.returncode == (1 if refused else 0), said
            if step.shown:
                got = proc.stdout.splitlines()
                assert len(got) == len(step.shown), said
                for want, line in zip(step.shown, got):
                    assert shape(want).fullmatch(line), f"{line!r} is not shaped like {want!r}\n{said}"
    finally:
        subprocess.run([str(ROOT / ".venv" / "bin" / "perpx"), "cluster", "down"], cwd=ROOT,
                       env=env, capture_output=True, timeout=60)
        deadline = time.monotonic() + 5
        while perpx_processes(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        print("\n".join(ran))
    assert perpx_processes(run_dir) == []
