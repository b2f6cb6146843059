"""Chaos experiments (#22): the experiment file and the pure checker of its hypotheses.

An experiment (TOML in experiments/) is a netsim scenario (its `[[step]]` timeline, `end`, checked
by netsim.scenario.load) plus what makes it an experiment:

    name = "two of five feeds stale"
    requires = []                      # features the timeline needs (see FEATURES)
    before = "5s"                      # steady state measured before the first step
    observe = "10s"                    # observed after the heal (the scenario's `end`)
    [topology]                         # optional: overrides of the built-in topology
    symbols = { BTC-PERP = { max_leverage = 50 } }
    [load]                             # open-loop probe orders, plus optional actors
    rate = 40                          # orders/s, sent at their intended times
    symbol = "BTC-PERP"
    timeout = "1s"                     # an answer later than this is outcome_unknown: resent
    makers = ["mm1"]                   # quote both sides around the mark (see cluster.chaos_run)
    [[hypothesis]]
    name = "the venue answers"
    metric = "answered_ratio"          # see METRICS, or a sampled series (oracle_mode.BTC-PERP)
    check = "aggregate"                # aggregate | always | ever | recovers | delta | final
    phase = "outside"                  # before | during | after | outside | all
    op = ">="
    value = 0.99

The checker is pure: a run's samples (one per 100 ms: counts of the probe orders sent, answered,
refused and unknown in that interval with their latencies, and the sampled series) and its phase
times in, one verdict per hypothesis with the evidence that decided it out. No data is not a pass.
"""

from __future__ import annotations

import math
import operator
import tomllib
from pathlib import Path

from netsim import scenario
from netsim.models import ModelError, duration_ns

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
       "==": operator.eq, "!=": operator.ne, "in": lambda a, b: a in b,
       "not in": lambda a, b: a not in b}
CHECKS = ("aggregate", "always", "ever", "recovers", "delta", "final")
PHASES = ("before", "during", "after", "outside", "all")
# Window aggregates over the probe orders whose intended send time falls in the phase.
METRICS = ("answered_ratio", "p50_ms", "p99_ms", "throughput_per_s", "unknown", "rejected_ratio",
           "sent")
# The same over the exit bot's exits decided in the phase ([load] exits; cluster.chaos_run.ExitBot).
EXIT_METRICS = ("exits", "exits_missed", "exits_delayed", "exits_throttled", "exit_delay_p50_ms",
                "exit_delay_max_ms", "exit_slippage_p50_ppm", "exit_slippage_max_ppm")
# End-of-run scalars the runner measures (check = "final").
FINALS = ("acked_orders_lost", "money_conserved", "orders_doubled", "fills_doubled")
# Faults a timeline may need that the venue does not have yet; an experiment requiring one is
# listed as waiting for it and skipped with that reason, never run with a stand-in.
FEATURES = {
    "failover": "a hot standby that takes over a matching or risk primary (#18's standby)",
}
PASS, FAIL, NO_DATA = "PASS", "FAIL", "NO DATA"


class ExperimentError(ValueError):
    pass


def feature_available(name: str) -> bool:
    """Whether the scenario timeline can express the fault `name` today: it can when
    netsim.scenario knows an action of that name (the landing branch adds it there)."""
    try:
        scenario.to_command({"action": name})
    except scenario.ScenarioError:
        return False
    except (KeyError, TypeError, ValueError):
        return True  # known action, our probe step lacks its arguments
    return True


def missing_features(exp: dict) -> list[str]:
    return [f for f in exp["requires"] if not feature_available(f)]


def _seconds(value, what: str) -> float:
    try:
        return duration_ns(value) / 1e9
    except (ModelError, TypeError) as exc:
        raise ExperimentError(f"{what}: {exc}") from None


def load(path: str | Path) -> dict:
    """The experiment at `path`, checked: every hypothesis, the load and (unless it waits for a
    feature) the timeline, by netsim.scenario.load. ExperimentError names what is wrong."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExperimentError(f"{path}: {exc}") from None
    requires = raw.get("requires", [])
    unknown = [f for f in requires if f not in FEATURES]
    if unknown:
        raise ExperimentError(f"{path}: unknown requirement {unknown} (known: {sorted(FEATURES)})")
    exp = {"path": str(path), "name": raw.get("name", path.stem), "id": path.stem,
           "description": raw.get("description", ""), "requires": list(requires),
           "before_s": _seconds(raw.get("before", "5s"), "before"),
           "observe_s": _seconds(raw.get("observe", "10s"), "observe"),
           "topology": raw.get("topology", {}), "load": _load_section(raw.get("load", {})),
           "hypotheses": [check_hypothesis(h, i) for i, h in enumerate(raw.get("hypothesis", []))],
           "scenario": None, "curve": raw.get("curve")}
    if not exp["hypotheses"]:
        raise ExperimentError(f"{path}: an experiment needs at least one [[hypothesis]]")
    if exp["curve"] is not None:
        exp["curve"] = _curve(exp["curve"])
    exp["waiting_for"] = missing_features(exp)
    if not exp["waiting_for"]:
        try:
            exp["scenario"] = scenario.load(path)
        except (scenario.ScenarioError, ValueError) as exc:
            raise ExperimentError(f"{path}: {exc}") from None
        if not exp["scenario"]["end"]:
            raise ExperimentError(f"{path}: needs `end` (when the faults are healed)")
    return exp


def _load_section(raw: dict) -> dict:
    known = {"rate", "symbol", "timeout", "makers", "quote_qty", "quote_offset_ppm", "quote_every",
             "positions", "post_only_share", "withdraw", "exits", "quote_around"}
    extra = set(raw) - known
    if extra:
        raise ExperimentError(f"load: unknown keys {sorted(extra)} (known: {sorted(known)})")
    rate = raw.get("rate", 20)
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 2000:
        raise ExperimentError(f"load.rate: {rate!r} is not an order rate from 0 to 2000 /s")
    return {"rate": float(rate), "symbol": raw.get("symbol", "BTC-PERP"),
            "timeout_s": _seconds(raw.get("timeout", "1s"), "load.timeout"),
            "makers": list(raw.get("makers", [])), "quote_qty": int(raw.get("quote_qty", 10)),
            "quote_offset_ppm": int(raw.get("quote_offset_ppm", 200)),
            "quote_every_s": _seconds(raw.get("quote_every", "200ms"), "load.quote_every"),
            "positions": list(raw.get("positions", [])),
            "withdraw": dict(raw.get("withdraw", {})),  # account -> amount, before positions
            "post_only_share": float(raw.get("post_only_share", 0.1)),
            "exits": _exits(raw["exits"]) if "exits" in raw else None,
            "quote_around": _quote_around(raw.get("quote_around", "mark"))}


def _quote_around(value) -> str:
    """What the makers quote around: the venue's mark (default), or the index (the external
    venues' price, as a maker hedging elsewhere would; its quotes then do not feed the mark's
    basis back into the mark)."""
    if value not in ("mark", "index"):
        raise ExperimentError(f"load.quote_around: {value!r} is not mark or index")
    return value


def _exits(raw: dict) -> dict:
    """[load] exits = { account = "taker1", every = "250ms", qty = 1, slippage_ppm = 20000,
    deadline = "2s" }: a bot selling its long in reduce-only IOC slices (chaos_run.ExitBot)."""
    known = {"account", "every", "qty", "slippage_ppm", "deadline"}
    if not isinstance(raw, dict) or set(raw) - known or "account" not in raw:
        raise ExperimentError(f"load.exits: needs `account`, knows {sorted(known)}; got {raw!r}")
    out = {"account": raw["account"], "every_s": _seconds(raw.get("every", "250ms"), "exits.every"),
           "qty": raw.get("qty", 1), "slippage_ppm": raw.get("slippage_ppm", 20_000),
           "deadline_s": _seconds(raw.get("deadline", "2s"), "exits.deadline")}
    if not (isinstance(out["qty"], int) and out["qty"] > 0 and out["every_s"] > 0
            and isinstance(out["slippage_ppm"], int) and 0 < out["slippage_ppm"] < 1_000_000
            and out["deadline_s"] > 0):
        raise ExperimentError(f"load.exits: qty (lots) and slippage_ppm are positive integers "
                              f"(slippage under 1,000,000), every and deadline positive; got {raw!r}")
    return out


def _curve(raw: dict) -> dict:
    """A latency-as-risk sweep: the same experiment once per value of one link setting."""
    if raw.get("target", "links") != "links":
        raise ExperimentError(f"curve: target {raw['target']!r} is not links (a client's own "
                              "link is client:NAME->gateway / gateway->client:NAME)")
    for key in ("latencies", "x_label", "y", "links"):
        if key not in raw:
            raise ExperimentError(f"curve: needs `{key}`")
    if len(raw["latencies"]) < 4:
        raise ExperimentError(f"curve: needs at least 4 points, has {len(raw['latencies'])}")
    for lat in raw["latencies"]:
        _seconds(lat, "curve.latencies")
    return raw


def check_hypothesis(h: dict, i: int) -> dict:
    where = f"hypothesis {i + 1} ({h.get('name', '?')})"
    for key in ("name", "metric"):
        if key not in h:
            raise ExperimentError(f"{where}: needs `{key}`")
    metric = h["metric"]
    check = h.get("check", "aggregate" if metric in METRICS + EXIT_METRICS else
                  "final" if metric in FINALS else "always")
    if check not in CHECKS:
        raise ExperimentError(f"{where}: check {check!r} is not one of {', '.join(CHECKS)}")
    if check == "aggregate" and metric not in METRICS + EXIT_METRICS:
        raise ExperimentError(f"{where}: {metric!r} is not a window aggregate "
                              f"({', '.join(METRICS + EXIT_METRICS)})")
    if check == "final" and metric not in FINALS:
        raise ExperimentError(f"{where}: {metric!r} is not an end-of-run figure "
                              f"({', '.join(FINALS)})")
    phase = h.get("phase", "all")
    if phase not in PHASES:
        raise ExperimentError(f"{where}: phase {phase!r} is not one of {', '.join(PHASES)}")
    op = h.get("op", "==")
    if op not in OPS:
        raise ExperimentError(f"{where}: op {op!r} is not one of {', '.join(OPS)}")
    if "value" not in h:
        raise ExperimentError(f"{where}: needs `value`")
    if op in ("in", "not in") and not isinstance(h["value"], list):
        raise ExperimentError(f"{where}: `{op}` needs a list value")
    out = {"name": h["name"], "metric": metric, "check": check, "phase": phase, "op": op,
           "value": h["value"], "within_s": None}
    if check == "recovers":
        if "within" not in h:
            raise ExperimentError(f"{where}: recovers needs `within` (seconds after the heal)")
        out["within_s"] = _seconds(h["within"], f"{where}: within")
        out["after"] = h.get("after", "heal")  # counted from the heal, or the first fault step
        if out["after"] not in ("heal", "fault"):
            raise ExperimentError(f"{where}: after {out['after']!r} is not heal or fault")
    return out


# ------------------------------------------------------------------ the checker (pure)


def in_phase(t: float, phase: str, fault_s: float, heal_s: float, width: float = 0.1) -> bool:
    """Whether the sample covering [t, t + width) is in `phase`: a sample that overlaps the
    fault window at all is part of it, so no order sent after the fault counts as before it."""
    before, after = t + width <= fault_s + 1e-9, t >= heal_s
    return {"before": before, "during": not before and not after, "after": after,
            "outside": before or after, "all": True}[phase]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value q% of the samples are at or under)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def exit_aggregate(samples: list[dict], metric: str) -> tuple[float | None, dict]:
    """An aggregate over the exits decided in the samples given (their counts, and the delays
    and slippages of the filled ones); None when no exit was decided there."""
    exits = sum(s.get("exits", 0) for s in samples)
    counts = {k: sum(s.get(k, 0) for s in samples)
              for k in ("exits_missed", "exits_delayed", "exits_throttled")}
    delays = [x for s in samples for x in s.get("exit_delay_ms", ())]
    slips = [x for s in samples for x in s.get("exit_slippage_ppm", ())]
    basis = {"exits": exits, **{k.removeprefix("exits_"): v for k, v in counts.items()}}
    if delays:
        basis |= {"delay_ms_p50": percentile(delays, 50), "delay_ms_max": max(delays)}
    if slips:
        basis |= {"slippage_ppm_p50": percentile(slips, 50), "slippage_ppm_max": max(slips)}
    if not exits:
        return None, basis
    if metric == "exits":
        return exits, basis
    if metric in counts:
        return counts[metric], basis
    values = delays if metric.startswith("exit_delay") else slips
    if not values:
        return None, basis
    return (percentile(values, 50) if "_p50_" in metric else max(values)), basis


def aggregate(samples: list[dict], metric: str) -> tuple[float | None, dict]:
    """A window aggregate over the samples given; (None, evidence) when there is nothing to
    compute it from."""
    if metric in EXIT_METRICS:
        return exit_aggregate(samples, metric)
    sent = sum(s.get("sent", 0) for s in samples)
    answered = sum(s.get("answered", 0) for s in samples)
    latencies = [ms for s in samples for ms in s.get("lat_ms", ())]
    span = len(samples) * 0.1  # samples are 100 ms apart; a phase may be two stretches
    basis = {"sent": sent, "answered": answered, "seconds": round(span, 1)}
    if metric == "sent":
        return sent, basis
    if metric in ("answered_ratio", "rejected_ratio", "unknown") and not sent:
        return None, basis
    if metric == "answered_ratio":
        return answered / sent, basis
    if metric == "rejected_ratio":
        rejected = sum(s.get("rejected", 0) for s in samples)
        return rejected / sent, basis | {"rejected": rejected}
    if metric == "unknown":
        return sum(s.get("unknown", 0) for s in samples), basis
    if metric == "throughput_per_s":
        return (answered / span if span else None), basis
    if not latencies:
        return None, basis
    q = 50 if metric == "p50_ms" else 99
    worst = sorted(latencies)[-3:]
    return round(percentile(latencies, q), 3), basis | {"latencies": len(latencies),
                                                        "worst_ms": [round(x, 1) for x in worst]}


def _holds(op: str, seen, want) -> bool:
    try:
        return bool(OPS[op](seen, want))
    except TypeError:
        return False


def evaluate(h: dict, samples: list[dict], fault_s: float, heal_s: float,
             finals: dict | None = None) -> dict:
    """One hypothesis over a run: {verdict, observed, evidence}. `samples` are in time order,
    each {"t": seconds since the run's start, ...}."""
    verdict = {"name": h["name"], "metric": h["metric"], "check": h["check"],
               "phase": h["phase"], "expected": f"{h['op']} {h['value']}"}
    op, want, metric = h["op"], h["value"], h["metric"]
    if h["check"] == "final":
        seen = (finals or {}).get(metric)
        if seen is None:
            return verdict | {"verdict": NO_DATA, "observed": None,
                              "evidence": f"the run measured no {metric}"}
        ok = _holds(op, seen, want)
        return verdict | {"verdict": PASS if ok else FAIL, "observed": seen,
                          "evidence": f"{metric} = {seen} at the end of the run"}
    window = [s for s in samples if in_phase(s["t"], h["phase"], fault_s, heal_s)]
    if h["check"] == "aggregate":
        seen, basis = aggregate(window, metric)
        if seen is None:
            return verdict | {"verdict": NO_DATA, "observed": None,
                              "evidence": f"nothing to compute {metric} from in phase "
                                          f"{h['phase']} ({basis})"}
        ok = _holds(op, seen, want)
        shown = round(seen, 4) if isinstance(seen, float) else seen
        return verdict | {"verdict": PASS if ok else FAIL, "observed": shown,
                          "evidence": f"{metric} = {shown} over {h['phase']} "
                                      + ", ".join(f"{k} {v}" for k, v in basis.items())}
    if h["check"] == "recovers":
        origin_name = h.get("after", "heal")
        origin = fault_s if origin_name == "fault" else heal_s
        window = [s for s in samples if s["t"] >= origin]
    series = [(s["t"], s[metric]) for s in window if metric in s]
    if not series:
        return verdict | {"verdict": NO_DATA, "observed": None,
                          "evidence": f"no sample of {metric} in phase {h['phase']}"}
    if h["check"] == "always":
        bad = [(t, v) for t, v in series if not _holds(op, v, want)]
        if not bad:
            return verdict | {"verdict": PASS, "observed": _range(series),
                              "evidence": f"all {len(series)} samples {op} {want}: "
                                          f"{_range(series)}"}
        return verdict | {"verdict": FAIL, "observed": bad[0][1],
                          "evidence": f"{len(bad)} of {len(series)} samples not {op} {want}; "
                                      f"first at t={bad[0][0]:.1f}s: {bad[0][1]!r}, last at "
                                      f"t={bad[-1][0]:.1f}s: {bad[-1][1]!r}"}
    if h["check"] == "ever":
        good = [(t, v) for t, v in series if _holds(op, v, want)]
        if good:
            return verdict | {"verdict": PASS, "observed": good[0][1],
                              "evidence": f"first {op} {want} at t={good[0][0]:.1f}s "
                                          f"({good[0][1]!r}; {len(good)} samples)"}
        return verdict | {"verdict": FAIL, "observed": _range(series),
                          "evidence": f"none of {len(series)} samples {op} {want}: "
                                      f"{_range(series)}"}
    if h["check"] == "delta":
        before = [s[metric] for s in samples if s["t"] < window[0]["t"] and metric in s]
        start = before[-1] if before else series[0][1]
        seen = series[-1][1] - start
        ok = _holds(op, seen, want)
        return verdict | {"verdict": PASS if ok else FAIL, "observed": seen,
                          "evidence": f"{metric} went from {start} to {series[-1][1]} over "
                                      f"{h['phase']} (t={series[0][0]:.1f}..{series[-1][0]:.1f}s)"}
    # recovers: from some time within `within_s` of the heal, the condition holds to the end.
    bad = [(t, v) for t, v in series if not _holds(op, v, want)]
    if not bad:
        return verdict | {"verdict": PASS, "observed": 0.0,
                          "evidence": f"{metric} {op} {want} at every sample from the "
                                      f"{origin_name} (t={origin:.1f}s) on"}
    last_t, last_v = bad[-1]
    later = [t for t, _ in series if t > last_t]
    if not later:
        return verdict | {"verdict": FAIL, "observed": None,
                          "evidence": f"{metric} still {last_v!r} at the last sample "
                                      f"(t={last_t:.1f}s, {last_t - origin:.1f}s after the "
                                      f"{origin_name})"}
    took = later[0] - origin
    ok = took <= h["within_s"]
    return verdict | {"verdict": PASS if ok else FAIL, "observed": round(took, 1),
                      "evidence": f"{metric} {op} {want} from t={later[0]:.1f}s, {took:.1f}s "
                                  f"after the {origin_name} (allowed {h['within_s']:g}s); "
                                  f"before that {last_v!r} at t={last_t:.1f}s"}


def _range(series: list[tuple[float, object]]):
    values = [v for _, v in series]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return f"min {min(values)}, max {max(values)}"
    seen: list = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return "values " + ", ".join(repr(v) for v in seen[:8])


def evaluate_all(exp: dict, run: dict) -> list[dict]:
    return [evaluate(h, run["samples"], run["fault_s"], run["heal_s"], run.get("finals"))
            for h in exp["hypotheses"]]


def passed(verdicts: list[dict]) -> bool:
    return bool(verdicts) and all(v["verdict"] == PASS for v in verdicts)
