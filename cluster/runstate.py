"""The run directory's status file: written by the supervisor, read by everything that looks for a
running cluster (the CLI, the load and bench tools). One place knows its name and how to read it."""

from __future__ import annotations

import json
from pathlib import Path

STATUS_FILE = "status.json"


def status_path(run: Path | str) -> Path:
    return Path(run) / STATUS_FILE


def read_status(run: Path | str) -> dict | None:
    """The last status the supervisor wrote, or None when there is none (or it cannot be read)."""
    try:
        return json.loads(status_path(run).read_text())
    except (OSError, ValueError):
        return None
