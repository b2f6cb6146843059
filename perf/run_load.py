"""`make load`: locust headless against a running cluster for LOAD_SECONDS (default 60), starting
one when none is up (and stopping what it started). Extra locust flags, e.g. --processes 2 or
--master/--worker, come through LOCUST_ARGS. Writes perf/results/locust_stats.csv (+ the other
CSVs), perf/results/locust.html and, merged from every locust process's HDR histograms,
perf/results/load_latency.{json,md}: microsecond percentiles per request name and the venue's
refusals by reason (also appended to locust.html).

The exit code is locust's: 1 when a request failed for a system reason (no answer, a socket
error, internal_error: perf/locustfile.py SYSTEM_REASONS), 0 when every request was answered,
however many the venue refused by its rules (those are successes named `refused: <reason>`).
"""

from __future__ import annotations

import html
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cluster.render import duration_us as duration
from cluster.runstate import read_status

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"


def running(run_dir: Path) -> bool:
    try:
        status = read_status(run_dir) or {}
        os.kill(int(status["supervisor_pid"]), 0)
        return status.get("state") == "running"
    except (OSError, ValueError, KeyError):
        return False


def perpx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


def main() -> int:
    run_dir = Path(os.environ.get("PERPX_RUN_DIR", ROOT / "var")).resolve()
    seconds = int(os.environ.get("LOAD_SECONDS", "60"))
    users = os.environ.get("LOAD_USERS", "20")
    rate = os.environ.get("LOAD_SPAWN_RATE", "5")
    started = False
    if not running(run_dir):
        # --same-session: locust and the venue in one scheduling group (see perf/cluster_load.py)
        proc = perpx("cluster", "up", "--detach", "--same-session", "--run-dir", str(run_dir))
        if proc.returncode:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        started = True
        print(f"make load: started a cluster in {run_dir}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in RESULTS.glob("load_latency.*.json"):  # one per locust process of this run only
        old.unlink()
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "perf" / "locustfile.py"), "--headless",
           "-u", users, "-r", rate, "-t", f"{seconds}s", "--stop-timeout", "5",
           "--csv", str(RESULTS / "locust"), "--html", str(RESULTS / "locust.html"),
           "--only-summary", *shlex.split(os.environ.get("LOCUST_ARGS", ""))]
    env = {**os.environ, "PERPX_RUN_DIR": str(run_dir)}
    metrics_url = facade_metrics_url(run_dir)
    before = scrape(metrics_url)
    try:
        code = subprocess.run(cmd, cwd=ROOT, env=env, timeout=seconds + 120).returncode
        report = merge_latency(RESULTS)  # (locust's processes have written their histograms)
        after = scrape(metrics_url)
        if before is not None and after is not None:
            moved = metrics_moved(before[1], after[1])
            table = metrics_markdown(metrics_url, moved, report)
            (RESULTS / "load_metrics.prom").write_text(after[0])
            (RESULTS / "load_metrics.md").write_text(table)
            print(table, end="")
        elif metrics_url:
            print(f"make load: {metrics_url} did not answer; no metrics table", flush=True)
    finally:
        if started:
            perpx("cluster", "down", "--run-dir", str(run_dir))
            print("make load: stopped the cluster it started", flush=True)
    if report is not None:
        (RESULTS / "load_latency.json").write_text(json.dumps(report, indent=1))
        table = latency_markdown(report)
        (RESULTS / "load_latency.md").write_text(table)
        add_to_html(RESULTS / "locust.html", report)
        print(table, end="")
    print(f"make load: {RESULTS / 'locust_stats.csv'}, {RESULTS / 'locust.html'}, "
          f"{RESULTS / 'load_latency.md'}")
    if code == 1:
        print("make load: requests failed for system reasons (no answer, internal_error, ...); "
              "see locust_failures.csv. The venue's refusals are not among them.")
    return code


PERCENTILES = (50, 90, 99, 99.9)


def facade_metrics_url(run_dir: Path) -> str | None:
    """The REST facade's /metrics of the running cluster (None: the topology has no facade)."""
    from cluster import config
    try:
        topo = config.load(Path(read_status(run_dir)["config"]), run_dir=str(run_dir))
    except (OSError, ValueError, KeyError, TypeError, config.ConfigError):
        return None
    rest = topo.nodes.get("rest")
    return f"http://{rest.http}/metrics" if rest is not None and rest.http else None


def scrape(url: str | None) -> tuple[str, dict[tuple, float]] | None:
    """(the exposition text, {(sample name, labels): value}) of one /metrics read, or None."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def metrics_moved(before: dict, after: dict) -> list[tuple[str, str, float]]:
    """What the load moved: every counter (`_total`) and histogram count (`_count`) that grew,
    as (name, labels, increase), largest first within each name."""
    moved = []
    for (name, labels), value in after.items():
        if name.endswith(("_total", "_count")):
            grown = value - before.get((name, labels), 0.0)
            if grown > 0:
                moved.append((name, ",".join(f"{k}={v}" for k, v in labels), grown))
    return sorted(moved, key=lambda m: (m[0], -m[2]))


def metrics_markdown(url: str, moved: list[tuple[str, str, float]],
                     sent: dict | None = None) -> str:
    """The table, and whether the venue counted what locust says it sent: every request after
    logon goes through the gateway to a core, which answers it once (the gateway's latency count;
    a logon is the gateway's own). Other clients of the venue during the load count too."""
    lines = [f"What the venue's own metrics ({url}) counted during the load (increase):", ""]
    if sent is not None:
        by_locust = sum(row["count"] for name, row in sent["requests"].items() if name != "logon")
        by_venue = sum(grown for name, _, grown in moved
                       if name == "perpx_gateway_request_seconds_count")
        verdict = "agree" if by_locust == by_venue else "DIFFER (other clients, or a request lost)"
        lines += [f"Requests after logon: locust counted {by_locust:,}, the gateway answered "
                  f"{by_venue:,.0f}: {verdict}.", ""]
    lines += ["| metric | labels | increase |", "|---|---|---:|"]
    lines += [f"| {name} | {labels} | {grown:,.0f} |" for name, labels, grown in moved]
    return "\n".join(lines) + "\n\n"


def merge_latency(results: Path) -> dict | None:
    """Every locust process's histograms merged: per request name the count and the p50..max in
    microseconds; the refusals by request and reason."""
    from hdrh.histogram import HdrHistogram

    merged: dict[str, HdrHistogram] = {}
    refusals: Counter[tuple[str, str]] = Counter()
    files = sorted(results.glob("load_latency.*.json"))
    for path in files:
        if path.name.count(".") != 2:  # load_latency.<pid>.json only
            continue
        data = json.loads(path.read_text())
        for name, encoded in data["histograms"].items():
            hist = HdrHistogram.decode(encoded.encode())
            if name in merged:
                merged[name].add(hist)
            else:
                merged[name] = hist
        for name, reason, n in data["refusals"]:
            refusals[(name, reason)] += n
    if not merged and not refusals:
        return None
    return {
        "unit": "us",
        "requests": {name: {"count": h.get_total_count(),
                            **{f"p{p:g}": h.get_value_at_percentile(p) for p in PERCENTILES},
                            "max": h.get_max_value()} for name, h in sorted(merged.items())},
        "refusals": [{"request": name, "reason": reason, "count": n}
                     for (name, reason), n in sorted(refusals.items(), key=lambda x: -x[1])],
    }


def latency_markdown(report: dict) -> str:
    lines = ["| request | count | " + " | ".join(f"p{p:g}" for p in PERCENTILES) + " | max |",
             "|---|---:|" + "---:|" * (len(PERCENTILES) + 1)]
    for name, row in report["requests"].items():
        lines.append(f"| {name} | {row['count']} | " + " | ".join(
            duration(row[f"p{p:g}"]) for p in PERCENTILES) + f" | {duration(row['max'])} |")
    if report["refusals"]:
        lines += ["", "The venue's refusals (rules working, not failures):", "",
                  "| request | reason | count |", "|---|---|---:|"]
        lines += [f"| {r['request']} | {r['reason']} | {r['count']} |" for r in report["refusals"]]
    return "\n".join(lines) + "\n"


def add_to_html(page: Path, report: dict) -> None:
    """The microsecond table appended to locust's report, before </body>."""
    if not page.exists():
        return
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{row['count']}</td>" + "".join(
        f"<td>{duration(row[f'p{p:g}'])}</td>" for p in PERCENTILES) +
        f"<td>{duration(row['max'])}</td></tr>" for name, row in report["requests"].items())
    refused = "".join(f"<tr><td>{html.escape(r['request'])}</td><td>{html.escape(r['reason'])}"
                      f"</td><td>{r['count']}</td></tr>" for r in report["refusals"])
    section = ("<section id='perpx-latency'><h2>Latency, microsecond resolution (HDR histogram)"
               "</h2><table><tr><th>request</th><th>count</th>" + "".join(
                   f"<th>p{p:g}</th>" for p in PERCENTILES) + "<th>max</th></tr>" + rows +
               "</table><h2>The venue's refusals by reason (not failures)</h2><table><tr>"
               "<th>request</th><th>reason</th><th>count</th></tr>" + refused +
               "</table></section>")
    text = page.read_text()
    at = text.rfind("</body>")
    page.write_text(text[:at] + section + text[at:] if at >= 0 else text + section)


if __name__ == "__main__":
    raise SystemExit(main())
