"""`perpx chaos run|list|report` (#22). Registered by cluster/cli.py in one call."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cluster import chaos, chaos_report

DEFAULT_OUT = Path("perf/results/chaos")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _say(text: str) -> None:
    print(text, flush=True)


def curve_y(run: dict, names: list[str]) -> dict:
    """A curve point's y values: each name from the run's end figures or its last sample."""
    last = run["samples"][-1] if run["samples"] else {}
    return {y: run["finals"].get(y, last.get(y)) for y in names}


def run_one(exp: dict, run_root: Path) -> dict:
    """An experiment's report: one run, or one run per point of its curve."""
    from cluster.chaos_run import run_experiment, with_curve_point

    if not exp["curve"]:
        return run_experiment(exp, run_root, echo=_say)
    points = []
    for latency in exp["curve"]["latencies"]:
        _say(f"--- {exp['id']}: {exp['curve']['x_label']} = {latency}")
        run = run_experiment(with_curve_point(exp, latency), run_root, echo=_say)
        _print_verdicts(run["verdicts"])
        points.append({"x": latency, "x_ms": chaos._seconds(latency, "x") * 1000,
                       "y": curve_y(run, exp["curve"]["y"]), "run": run})
    return {"experiment": points[0]["run"]["experiment"], "curve": exp["curve"],
            "points": points, "passed": all(p["run"]["passed"] for p in points),
            "verdicts": [v | {"name": f"[{p['x']}] {v['name']}"}
                         for p in points for v in p["run"]["verdicts"]]}


def _print_verdicts(verdicts: list[dict]) -> None:
    for v in verdicts:
        _say(f"{v['verdict']:8} {v['name']}\n         {v['evidence']}")


def cmd_run(args) -> int:
    out = Path(args.out)
    entries, ok = [], True
    for path in args.files:
        try:
            exp = chaos.load(path)
        except chaos.ExperimentError as exc:
            print(f"perpx: bad_experiment: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if exp["waiting_for"]:
            why = "waiting for " + "; ".join(f"{f}: {chaos.FEATURES[f]}"
                                             for f in exp["waiting_for"])
            _say(f"SKIPPED  {exp['id']}: {why}")
            entries.append({"id": exp["id"], "name": exp["name"], "status": "SKIPPED",
                            "why": why})
            continue
        _say(f"=== {exp['id']}: {exp['name']}")
        started = time.monotonic()
        report = run_one(exp, Path(args.run_root))
        js, page = chaos_report.write(report, out)
        if not exp["curve"]:
            _print_verdicts(report["verdicts"])
        else:
            for p in report["points"]:
                _say(f"curve {p['x']:>8}: " + ", ".join(f"{k} {v}" for k, v in p["y"].items()))
        _say(f"{'PASS' if report['passed'] else 'FAIL'} {exp['id']}  ({page}, {js})")
        ok &= report["passed"]
        entries.append({"id": exp["id"], "name": exp["name"],
                        "status": "PASS" if report["passed"] else "FAIL",
                        "why": "; ".join(v["name"] for v in report["verdicts"]
                                         if v["verdict"] != chaos.PASS),
                        "seconds": round(time.monotonic() - started)})
    if args.index:
        _say(f"index: {chaos_report.index(entries, out)}")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_list(args) -> int:
    rows = []
    for path in sorted(Path(args.dir).glob("*.toml")):
        try:
            exp = chaos.load(path)
        except chaos.ExperimentError as exc:
            rows.append({"id": path.stem, "status": "invalid", "why": str(exc)})
            continue
        waiting = exp["waiting_for"]
        rows.append({"id": exp["id"], "name": exp["name"],
                     "status": "waiting" if waiting else "runnable",
                     "why": "; ".join(f"waiting for {f}: {chaos.FEATURES[f]}" for f in waiting),
                     "hypotheses": len(exp["hypotheses"]),
                     "points": len(exp["curve"]["latencies"]) if exp["curve"] else 1})
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['status']:9} {r['id']:28} {r.get('name', '')}"
                  + (f"\n          {r['why']}" if r["why"] else ""))
    return EXIT_OK


def cmd_report(args) -> int:
    path = Path(args.run)
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.json"))), path)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"perpx: bad_run: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    js, page = chaos_report.write(report, Path(args.out) if args.out else path.parent)
    _print_verdicts(report["verdicts"])
    _say(f"{page}")
    return EXIT_OK


def _command(group, name: str, text: str, example: str):
    """A subcommand as the CLI's own are made: a description, and an example in the epilog."""
    return group.add_parser(name, help=text, description=text, epilog="example:\n  " + example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def add_parser(sub) -> None:
    text = "chaos experiments: load, faults, steady-state hypotheses, verdicts with evidence"
    chaos_p = sub.add_parser("chaos", help=text, description=text).add_subparsers(
        dest="action", required=True, metavar="ACTION")
    run = _command(chaos_p, "run", "run experiments on fresh clusters, print each hypothesis' "
                   "verdict with its evidence, write the reports; exit 0 only if all held",
                   "perpx chaos run experiments/02-four-feeds-stale.toml")
    run.add_argument("files", nargs="+", metavar="FILE", help="experiment TOML files")
    run.add_argument("--out", default=str(DEFAULT_OUT),
                     help=f"where the HTML and JSON reports go (default: {DEFAULT_OUT})")
    run.add_argument("--index", action="store_true", help="also write OUT/index.html")
    run.add_argument("--run-root", default="var/chaos",
                     help="where each experiment's cluster keeps its run directory (audit, logs; "
                          "default: var/chaos)")
    run.set_defaults(fn=cmd_run)
    lst = _command(chaos_p, "list", "the experiments: runnable, or waiting for a fault the venue "
                   "does not have yet", "perpx chaos list")
    lst.add_argument("--dir", default="experiments", help="default: experiments")
    lst.add_argument("--json", action="store_true", help="one JSON array on stdout")
    lst.set_defaults(fn=cmd_list)
    rep = _command(chaos_p, "report", "re-render a run's HTML report from its JSON",
                   "perpx chaos report perf/results/chaos/02-four-feeds-stale.json")
    rep.add_argument("run", metavar="RUN", help="a run's JSON (OUT/NAME.json)")
    rep.add_argument("--out", help="where the HTML goes (default: beside the JSON)")
    rep.set_defaults(fn=cmd_report)
