"""`make load`: locust headless against a running cluster for LOAD_SECONDS (default 60), starting
one when none is up (and stopping what it started). Extra locust flags, e.g. --processes 2 or
--master/--worker, come through LOCUST_ARGS. Writes perf/results/locust_stats.csv (+ the other
CSVs) and perf/results/locust.html.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"


def running(run_dir: Path) -> bool:
    try:
        status = json.loads((run_dir / "status.json").read_text())
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
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "perf" / "locustfile.py"), "--headless",
           "-u", users, "-r", rate, "-t", f"{seconds}s", "--stop-timeout", "5",
           "--csv", str(RESULTS / "locust"), "--html", str(RESULTS / "locust.html"),
           "--only-summary", *shlex.split(os.environ.get("LOCUST_ARGS", ""))]
    env = {**os.environ, "PERPX_RUN_DIR": str(run_dir)}
    try:
        code = subprocess.run(cmd, cwd=ROOT, env=env, timeout=seconds + 120).returncode
    finally:
        if started:
            perpx("cluster", "down", "--run-dir", str(run_dir))
            print("make load: stopped the cluster it started", flush=True)
    print(f"make load: {RESULTS / 'locust_stats.csv'}, {RESULTS / 'locust.html'}")
    if code == 1:  # locust's "some requests failed": refusals are answers too, and are reported
        print("make load: some requests were refused or timed out; see locust_failures.csv")
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
