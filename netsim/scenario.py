"""Scenario timelines: a TOML file of steps, each applied at its time through the supervisor.

    name = "gateway tail and a feed freeze"
    [[step]]
    at = "5s"
    action = "set"                      # set | clear | profile | partition | heal | fault | feed | skew
    link = "gateway->risk"
    latency = { model = "lognormal", median = "2ms", sigma = 0.5 }   # or latency = "2ms" (constant)
    [[step]]
    at = "10s"
    action = "feed"
    venue = "bravo"
    op = "freeze"
    duration = "8s"
    [[step]]
    at = "20s"
    action = "fault"
    node = "matching"
    op = "kill"

Every step is checked when the file loads, the netsim ones by rehearsing them on a scratch
controller, so a step the supervisor would refuse is refused before the first is applied.
A scenario ends by healing everything (links cleared, paused nodes resumed, feeds healed), so that
recovery is checked, not only survival; `heal_at_end = false` keeps the faults.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

from netsim.control import NODES, ControlError, NetsimState
from netsim.models import duration_ns, signed_duration_ns

LINK_KEYS = ("latency", "loss", "rto", "bandwidth", "queue_limit", "on_full", "down", "reorder",
             "seed")


class ScenarioError(ValueError):
    pass


def load(path: str | Path) -> dict:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    steps = raw.get("step", [])
    if not isinstance(steps, list):
        raise ScenarioError(f"{path}: `step` must be an array of tables ([[step]])")
    # Every step is checked before the first is applied: a typo found at minute five would leave
    # the first four minutes' faults in place.
    for i, step in enumerate(steps):
        if "at" not in step or "action" not in step:
            raise ScenarioError(f"step {i + 1}: needs `at` and `action`")
        try:
            step["at_ns"] = duration_ns(step["at"])
            step["command"] = to_command(step)
        except KeyError as exc:
            raise ScenarioError(f"step {i + 1} ({step['action']}): needs `{exc.args[0]}`") from None
        except (ValueError, TypeError) as exc:
            raise ScenarioError(f"step {i + 1} ({step['action']}): {exc}") from None
    _rehearse(steps)
    end = raw.get("end")
    if end is not None:
        try:
            duration_ns(end)
        except ValueError as exc:
            raise ScenarioError(f"end: {exc}") from None
    steps.sort(key=lambda s: s["at_ns"])
    return {"name": raw.get("name", Path(path).stem), "steps": steps,
            "heal_at_end": raw.get("heal_at_end", True), "end": end}


FAULT_OPS = ("kill", "pause", "resume")


def _rehearse(steps: list[dict]) -> None:
    """Run the netsim commands, in time order, on a scratch controller, and check the faults'
    nodes and operations: a step the supervisor would refuse (an unknown link, a model without
    its parameters, an unknown profile) is refused now, before anything is applied."""
    scratch = NetsimState()
    for i, step in sorted(enumerate(steps), key=lambda item: item[1]["at_ns"]):
        cmd, args = step["command"]
        try:
            if cmd == "fault":
                if args["node"] not in NODES or args["op"] not in FAULT_OPS:
                    raise ControlError(f"fault needs a node ({', '.join(NODES)}) and an op "
                                       f"({', '.join(FAULT_OPS)}), not {args['node']!r} "
                                       f"{args['op']!r}")
            elif cmd != "feed":  # feed venues are the topology's: the supervisor checks them
                scratch.handle(cmd, args)
        except ControlError as exc:
            raise ScenarioError(f"step {i + 1} ({step['action']}): {exc}") from None


def to_command(step: dict) -> tuple[str, dict]:
    """A scenario step as a supervisor admin command."""
    action = step["action"]
    if action == "set":
        return "netsim_set", {"link": step["link"],
                              "settings": {k: step[k] for k in LINK_KEYS if k in step}}
    if action == "clear":
        return "netsim_clear", {"link": step.get("link")}
    if action == "profile":
        return "netsim_profile", {"name": step["name"]}
    if action in ("partition", "heal"):
        return "netsim_partition", {"links": step.get("links", []), "down": action == "partition"}
    if action == "fault":
        return "fault", {"node": step["node"], "op": step["op"]}
    if action == "failover":  # #19: a core's primary (or standby) killed or paused
        kind, _, which = step["op"].partition("-")
        if kind not in ("kill", "pause") or which not in ("primary", "standby"):
            raise ScenarioError(f"failover op {step['op']!r}: kill-primary, pause-primary, "
                                "kill-standby or pause-standby")
        args = {"node": step["node"], "op": kind, which: True}
        if kind == "pause":  # resumed by the supervisor after this long (the same process)
            args["seconds"] = duration_ns(step.get("duration", "3s")) / 1e9
        return "fault", args
    if action == "skew":
        return "skew", {"node": step["node"], "ns": signed_duration_ns(step.get("by", 0))}
    if action == "feed":
        args = {"action": step["op"], "venue": step.get("venue", ""),
                "symbol": step.get("symbol", ""), "ppm": int(step.get("ppm", 0))}
        if "duration" in step:
            args["duration_ms"] = duration_ns(step["duration"]) // 1_000_000
        return "feed", args
    raise ScenarioError(f"unknown action {action!r}")


def healing_commands(applied: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    out = [("netsim_clear", {})]
    for cmd, args in applied:
        if cmd == "fault" and args.get("op") == "pause":
            out.append(("fault", {"node": args["node"], "op": "resume"}))
    out.append(("feed", {"action": "heal"}))
    return out


def run(scenario: dict, send, echo) -> list[dict]:
    """Apply each step at its time. `send(cmd, args) -> reply dict`; `echo(record)` per step."""
    start = time.monotonic_ns()
    applied: list[tuple[str, dict]] = []
    log: list[dict] = []

    def apply(at_ns: int, cmd: str, args: dict, label: str) -> None:
        reply = send(cmd, args)
        record = {"at_s": at_ns / 1e9, "wall_ns": time.time_ns(), "mono_ns": time.monotonic_ns(),
                  "action": label, "command": cmd, "args": args, "ok": reply.get("ok", False),
                  "error": reply.get("error", "")}
        log.append(record)
        echo(record)

    try:
        for step in scenario["steps"]:
            delay = start + step["at_ns"] - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            cmd, args = step["command"]  # built and checked by load()
            applied.append((cmd, args))
            apply(step["at_ns"], cmd, args, step["action"])
        if scenario.get("end"):
            delay = start + duration_ns(scenario["end"]) - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
    finally:  # also when stopped early (Ctrl-C, a lost supervisor): heal what was applied
        if scenario["heal_at_end"]:
            for cmd, args in healing_commands(applied):
                try:
                    apply(time.monotonic_ns() - start, cmd, args, "heal_at_end")
                except Exception as exc:  # keep healing the rest; the first error is raised
                    echo({"action": "heal_at_end", "command": cmd, "args": args, "ok": False,
                          "error": f"{type(exc).__name__}: {exc}"})
    return log
