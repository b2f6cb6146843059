"""`make mutate`: mutation testing of the money and matching cores with mutmut 3.

mutmut (a maintained mutation tester; 3.x works with this layout on Python 3.11) mutates
nodes/risk, nodes/matching, nodes/liquidator and the money helpers in cluster/ (ladder, prices,
units, funding), and runs the fast suite (`-m "not e2e"`, -x, pytest-timeout per test, the
derandomized hypothesis profile) against each mutant: only the tests that reach the mutated
function, as mutmut's stats pass found them. It works in a copy under var/mutate/ so that its
mutants/ tree never lands in the worktree.

Bounded: `--sample N` checks N mutants per package (a fixed, seeded sample; 0 = all of them), and
`--budget-s` stops mutmut past a time budget (what it checked by then is reported). MUTATE_ARGS passes these through
make. Results: perf/results/mutate/mutate.json (every mutant's status, per-package scores, the
survivors with their diffs) and mutate.md (the same for people).

Score = killed / (killed + survived + no tests), timeouts counted as killed (the suite noticed);
mutants listed in perf/mutate_equivalent.json (name -> why it cannot change behaviour) are left
out of the score and listed with their reason.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "mutate"
OUT = ROOT / "perf" / "results" / "mutate"
EQUIVALENT = ROOT / "perf" / "mutate_equivalent.json"
COPY = ["cluster", "nodes", "netsim", "perf", "tests", "examples", "experiments", "pyproject.toml", "README.md",
        "Makefile"]
PACKAGES = {  # name in the report -> source paths mutated
    "nodes/risk": ["nodes/risk"],
    "nodes/matching": ["nodes/matching"],
    "nodes/liquidator": ["nodes/liquidator"],
    "cluster money helpers": ["cluster/rules/ladder.py", "cluster/rules/prices.py",
                              "cluster/rules/units.py", "cluster/rules/funding.py",
                              "cluster/rules/adl.py"],  # adl.py was mutated under nodes/risk
}
# Service shells are IO (sockets, event loops): the fast suite does not drive them.
SKIP = ["nodes/*/service.py", "nodes/liquidator/monitor.py"]
PYTEST_ARGS = ["-m", "not e2e", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               "--timeout=120"]
TESTS = ["tests/unit", "tests/netsim"]
DETECTED = {"killed", "timeout"}


def mutmut() -> list[str]:
    exe = Path(sys.executable).parent / "mutmut"
    if not exe.exists():
        raise SystemExit("mutmut is not installed: `make mutate` installs it (.[mutate] extra)")
    return [str(exe)]


def prepare(paths: list[str]) -> Path:
    """A fresh copy of the tree with mutmut's configuration for these paths."""
    work = WORK / "src"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, work / name)
    config = "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(paths)}",
        f"do_not_mutate = {json.dumps(SKIP)}",
        f"also_copy = {json.dumps([c for c in COPY if c not in ('tests', 'pyproject.toml')])}",
        f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(TESTS)}",
        "use_git_change_detection = false",
    ]) + "\n"
    with open(work / "pyproject.toml", "a") as f:
        f.write(config)
    return work


def run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """(exit code, or None when the time ran out and its process group was stopped; stdout)."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutate", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # mutmut and the workers it forked, nothing else
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return None, out


def statuses(work: Path) -> dict[str, str]:
    _, out = run(mutmut() + ["results", "--all", "true"], work, 600)
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and "__mutmut_" in m.group(1):
            found[m.group(1)] = m.group(2).strip()
    return found


def package_of(mutant: str) -> str | None:
    path = mutant.split(".x")[0].replace(".", "/")  # nodes.risk.ledger.xǁ... -> nodes/risk/ledger
    for name, paths in PACKAGES.items():
        if any(path == p.removesuffix(".py") or path.startswith(p + "/") for p in paths):
            return name
    return None


def mutate(packages: list[str], sample: int, seed: int, max_children: int, budget_s: float):
    """(status of every mutant checked, diff of each one not detected, seconds, finished)."""
    start = time.monotonic()
    work = prepare([p for name in packages for p in PACKAGES[name]])
    # Generates every mutant and runs mutmut's clean and stats passes (which tests reach which
    # function), checking none: the pattern matches no mutant, which mutmut then says (and exits 1).
    code, out = run(mutmut() + ["run", "--max-children", str(max_children), "no-such-mutant-*"],
                    work, budget_s)
    if code is None or "failed to collect stats" in out or \
            "but nothing matches" not in out and code != 0:
        # the unmutated suite must pass in the copy first (mutmut's "clean tests" and stats)
        raise SystemExit(f"mutmut could not start (exit {code}, budget {budget_s:.0f} s):\n"
                         f"{out[-3000:]}")
    by_package: dict[str, list[str]] = {name: [] for name in packages}
    for name in sorted(statuses(work)):
        pkg = package_of(name)
        if pkg in by_package:
            by_package[pkg].append(name)
    rng = random.Random(seed)
    chosen = []
    for pkg, names in by_package.items():
        chosen += names if not sample or sample >= len(names) else sorted(rng.sample(names, sample))
    finished = True
    if chosen:
        left = budget_s - (time.monotonic() - start)
        code, out = run(mutmut() + ["run", "--max-children", str(max_children), *chosen], work,
                        max(60.0, left))
        finished = code is not None
        if code not in (0, 1, None):
            print(out[-3000:], file=sys.stderr)
    found = statuses(work)
    checked = {n: found.get(n, "not checked") for n in chosen}
    diffs = {}
    for name, status in checked.items():
        if status not in DETECTED and status != "not checked":
            diffs[name] = run(mutmut() + ["show", name], work, 120)[1]
    return checked, diffs, time.monotonic() - start, finished


def score(checked: dict[str, str], equivalent: dict[str, str]) -> dict:
    counted = {n: s for n, s in checked.items() if n not in equivalent}
    counts: dict[str, int] = {}
    for s in counted.values():
        counts[s] = counts.get(s, 0) + 1
    detected = sum(counts.get(s, 0) for s in DETECTED)
    judged = detected + counts.get("survived", 0) + counts.get("no tests", 0)
    return {"checked": len(checked), "equivalent": len(checked) - len(counted), "counts": counts,
            "score": round(detected / judged, 4) if judged else None}


def pct(score: float | None) -> str:
    return "-" if score is None else f"{score:.0%}"


def report(results: dict, args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mutate.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    lines = ["# Mutation testing (mutmut) against the fast suite", "",
             f"sample per package: {args.sample or 'all'}, seed {args.seed}", "",
             f"{results['seconds']:.0f} s" + ("" if results["finished"] else " (stopped at the budget)"), "",
             "| package | checked | killed+timeout | survived | no tests | not checked | equivalent | score |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["packages"].items():
        c = r["counts"]
        lines.append(f"| {name} | {r['checked']} | {c.get('killed', 0) + c.get('timeout', 0)} | "
                     f"{c.get('survived', 0)} | {c.get('no tests', 0)} | "
                     f"{c.get('not checked', 0)} | {r['equivalent']} | {pct(r['score'])} |")
    lines += ["", "## Not detected (survived, no tests, suspicious), with their diffs", ""]
    for name, r in results["packages"].items():
        for mutant, diff in sorted(r["undetected"].items()):
            why = results["equivalent"].get(mutant)
            lines += [f"### {mutant}: {r['mutants'][mutant]}" + (f" (equivalent: {why})" if why else ""),
                      "", "```diff", diff.strip(), "```", ""]
    (OUT / "mutate.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=40, help="mutants per package (0 = all)")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--packages", nargs="*", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=3600,
                        help="stop mutmut after this many seconds (what it checked is reported)")
    args = parser.parse_args(argv)
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    results = {"tool": "mutmut", "sample": args.sample, "seed": args.seed,
               "pytest_args": PYTEST_ARGS, "tests": TESTS, "equivalent": equivalent, "packages": {}}
    checked, diffs, seconds, finished = mutate(args.packages, args.sample, args.seed,
                                               args.max_children, args.budget_s)
    results["seconds"] = round(seconds, 1)
    results["finished"] = finished
    for name in args.packages:
        mine = {n: s for n, s in checked.items() if package_of(n) == name}
        r = score(mine, equivalent)
        r.update(mutants=mine, undetected={n: d for n, d in diffs.items() if n in mine})
        results["packages"][name] = r
        print(f"{name}: {r['checked']} checked, {r['counts']}, score {pct(r['score'])}")
    if not finished:
        print(f"stopped at the {args.budget_s:.0f} s budget: unchecked mutants are 'not checked'")
    report(results, args)
    print(f"wrote {OUT / 'mutate.json'} and {OUT / 'mutate.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
