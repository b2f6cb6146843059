"""The README is executed: every shell block of README.md, and the command in the quickstart's
docstring, run in order against a real cluster, each command's exit code checked; where the README
shows a command's output (a block of `$ command` lines followed by output), the output's shape is
checked too: the same words, any numbers. An indented example (`    $ command` and what it prints,
as in a list item) is run too; its output may be an excerpt: the lines it shows appear in that
order, and one ending in `...` is the start of a line. A block is skipped only when the README says
so, in its source, with `<!-- readme-test: skip (why) -->` just above it; that list is checked to
stay short. Files the commands write into the checkout (`--out thin.json`) are removed after.

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
INDENTED = re.compile(r"^\n(?P<indent> {4,})\$ (?P<first>.*)\n(?P<rest>(?:(?P=indent).*\n)*)", re.M)
NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?%?")
MAX_SKIPPED = 3


@dataclass
class Step:
    command: str
    where: str  # README line, for the failure message
    shown: list[str] = field(default_factory=list)  # the output the README shows, if any
    excerpt: bool = False  # shown lines are some of the output's, in order (an indented example)


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
    found, skipped = [], []  # (where in the text, its steps)
    fenced = []  # spans of fenced blocks: an indented line inside one is no example
    for block in BLOCK.finditer(text):
        fenced.append(block.span())
        where = f"README.md:{text.count(chr(10), 0, block.start('body')) + 1}"
        body, lang = block.group("body"), block.group("lang")
        if block.group("skip"):
            skipped.append(block.group("why"))
            continue
        if lang == "sh":
            found.append((block.start(), [Step(line, where) for line in shell_lines(body)]))
        elif not lang and body.startswith("$ "):  # a command and the output it prints
            found.append((block.start(), command_and_output(body.splitlines(), where)))
    for block in INDENTED.finditer(text):
        if any(start <= block.start() < end for start, end in fenced):
            continue
        where = f"README.md:{text.count(chr(10), 0, block.start('first')) + 1}"
        indent = len(block.group("indent"))
        lines = ["$ " + block.group("first")] + [line[indent:] for line in
                                                 block.group("rest").splitlines()]
        found.append((block.start(), command_and_output(lines, where, excerpt=True)))
    return [step for _, steps in sorted(found, key=lambda f: f[0]) for step in steps], skipped


def command_and_output(lines: list[str], where: str, excerpt: bool = False) -> list[Step]:
    steps = []
    for line in lines:
        if line.startswith("$ "):
            steps.append(Step(line[2:], where, excerpt=excerpt))
        else:
            steps[-1].shown.append(line)
    return steps


def quickstart_steps() -> list[Step]:
    """The commands the quickstart's docstring tells a newcomer to run."""
    doc = (ROOT / "examples" / "quickstart.py").read_text().split('"""')[1]
    return [Step(line.strip(), "examples/quickstart.py") for line in doc.splitlines()
            if line.strip().startswith(".venv/bin/")]


def shape(line: str, excerpt: bool = False) -> re.Pattern:
    """A shown output line as a pattern: the same words, any number where it shows one, any run
    of spaces where it shows one (columns move with the numbers' widths). In an excerpt, a line
    ending in '...' is the start of a line."""
    rest = ""
    if excerpt and line.endswith("..."):
        line, rest = line[:-3].rstrip(), ".*"
    parts, at = [], 0
    for found in NUMBER.finditer(line):
        parts.append(re.escape(line[at:found.start()]))
        parts.append(NUMBER.pattern)
        at = found.end()
    parts.append(re.escape(line[at:]))
    return re.compile(re.sub(r"(\\ )+", " +", "".join(parts)) + rest)


def output_matches(step: Step, got: list[str]) -> str | None:
    """None when `got` is shaped as the README shows it, else what differs."""
    if not step.excerpt:
        if len(got) != len(step.shown):
            return f"{len(got)} lines, the README shows {len(step.shown)}"
        for want, line in zip(step.shown, got):
            if not shape(want).fullmatch(line):
                return f"{line!r} is not shaped like {want!r}"
        return None
    lines = iter(got)
    for want in step.shown:
        pattern = shape(want, excerpt=True)
        if not any(pattern.fullmatch(line) for line in lines):
            return f"no line shaped like {want!r} (after the ones before it)"
    return None


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


def test_indented_examples_are_run_and_their_excerpts_checked_in_order():
    text = ("- **A list item.** It shows:\n\n      $ .venv/bin/perpx c --out x.json\n"
            "      $ .venv/bin/perpx d   # why\n        total 5 of 7 ...\n        last 1\n\n"
            "  more text\n\n```sh\n.venv/bin/perpx e\n```\n\n```\n    $ not an example\n```\n")
    steps, _ = readme_steps(text)
    assert [s.command for s in steps] == [".venv/bin/perpx c --out x.json",
                                          ".venv/bin/perpx d   # why", ".venv/bin/perpx e"]
    d = steps[1]
    assert d.excerpt and d.shown == ["  total 5 of 7 ...", "  last 1"] and not steps[2].excerpt
    assert output_matches(d, ["heading", "  total 12 of 70 (and more)", "x", "  last 3"]) is None
    assert output_matches(d, ["  last 3", "  total 12 of 70"]) is not None  # order kept
    assert output_matches(d, ["  total 12 of 70", "  lost 3"]) is not None  # the words kept
    strict = Step("x", "here", shown=["OUT 1"])
    assert output_matches(strict, ["OUT 2", "more"]) is not None  # a full output has no extra lines


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
    checkout = set(ROOT.iterdir())
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
                differs = output_matches(step, proc.stdout.splitlines())
                assert differs is None, f"{differs}\n{said}"
    finally:
        for path in set(ROOT.iterdir()) - checkout:  # e.g. --out thin.json
            if path.is_file():
                path.unlink()
        subprocess.run([str(ROOT / ".venv" / "bin" / "perpx"), "cluster", "down"], cwd=ROOT,
                       env=env, capture_output=True, timeout=60)
        deadline = time.monotonic() + 5
        while perpx_processes(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        print("\n".join(ran))
    assert perpx_processes(run_dir) == []
