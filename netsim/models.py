"""Latency models for simulated links. Pure: each model samples from a `random.Random` it is given
(one per link, seeded), and returns nanoseconds.

Specs are plain dicts (TOML tables, CLI flags), durations as strings with units:
    {"model": "constant", "latency": "1ms", "jitter": "200us"}
    {"model": "uniform", "min": "100us", "max": "2ms"}
    {"model": "normal", "mean": "1ms", "stddev": "200us"}
    {"model": "lognormal", "median": "1ms", "sigma": 0.5}
    {"model": "pareto", "min": "500us", "alpha": 3}                  # heavy tail: min / U^(1/alpha)
    {"model": "mixture", "parts": [[0.99, {...}], [0.01, {...}]]}     # e.g. lognormal + pareto tail
    {"model": "empirical", "csv": "samples.csv"}                     # one delay per line (units ok)
Jitter (any model): uniform +-jitter added to each sample. Samples never go below zero, nor above
MAX_DELAY_NS: a heavy tail's extreme draw (or a sigma of 50) is an hour, never an overflow, and a
link meant to carry nothing is `down`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s)?\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000}


MAX_DELAY_NS = 3_600 * 1_000_000_000
_LOG_MAX_DELAY = math.log(MAX_DELAY_NS)


class ModelError(ValueError):
    pass


def _capped(ns: float) -> int:
    return 0 if ns <= 0 else MAX_DELAY_NS if ns >= MAX_DELAY_NS else int(ns)


def _grown(base: int, exponent: float) -> int:
    """base x e^exponent, capped, without overflowing on an extreme exponent."""
    if base <= 0:
        return 0
    if exponent >= _LOG_MAX_DELAY - math.log(base):
        return MAX_DELAY_NS
    return _capped(base * math.exp(exponent))


def duration_ns(text) -> int:
    """'2ms', '150us', '1.5s', '800ns'; a bare number means milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        ns = text * 1_000_000
        if not (math.isfinite(ns) and ns >= 0):
            raise ModelError(f"not a duration: {text!r} (a number of ms, at least 0)")
        return int(ns)
    m = _DURATION.match(str(text))
    if not m:
        raise ModelError(f"not a duration: {text!r} (use e.g. 2ms, 150us)")
    return int(float(m.group(1)) * _UNIT_NS[m.group(2)])


def signed_duration_ns(text) -> int:
    """duration_ns, with a leading '-' allowed (a clock skew can go back)."""
    stripped = str(text).strip()
    if stripped.startswith("-"):
        return -duration_ns(stripped[1:])
    return duration_ns(text)


def rate_bps(text) -> int:
    """'10mbit', '1gbit', '500kbit', '2MB' (bytes) -> bits per second."""
    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*(k|m|g)?(bit|bps|b|B)?\s*$", str(text), re.I)
    if not m:
        raise ModelError(f"not a rate: {text!r} (use e.g. 10mbit)")
    value = float(m.group(1)) * {None: 1, "k": 1e3, "m": 1e6, "g": 1e9}[(m.group(2) or "").lower() or None]
    if m.group(3) == "B":
        value *= 8
    return int(value)


class Model:
    def sample(self, rng) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class Constant(Model):
    def __init__(self, latency: int) -> None:
        self.latency = latency

    def sample(self, rng) -> int:
        return self.latency

    def describe(self) -> dict:
        return {"model": "constant", "latency_ns": self.latency}


class Uniform(Model):
    def __init__(self, low: int, high: int) -> None:
        if high < low:
            raise ModelError("uniform: max < min")
        self.low, self.high = low, high

    def sample(self, rng) -> int:
        return rng.randint(self.low, self.high)

    def describe(self) -> dict:
        return {"model": "uniform", "min_ns": self.low, "max_ns": self.high}


class Normal(Model):
    def __init__(self, mean: int, stddev: int) -> None:
        self.mean, self.stddev = mean, stddev

    def sample(self, rng) -> int:
        return _capped(rng.gauss(self.mean, self.stddev))

    def describe(self) -> dict:
        return {"model": "normal", "mean_ns": self.mean, "stddev_ns": self.stddev}


class LogNormal(Model):
    def __init__(self, median: int, sigma: float) -> None:
        if median <= 0 or sigma < 0:
            raise ModelError("lognormal: need median > 0 and sigma >= 0")
        self.median, self.sigma = median, sigma

    def sample(self, rng) -> int:
        return _grown(self.median, rng.gauss(0.0, self.sigma))

    def quantile(self, q: float) -> int:
        from statistics import NormalDist

        return int(self.median * math.exp(self.sigma * NormalDist().inv_cdf(q)))

    def describe(self) -> dict:
        return {"model": "lognormal", "median_ns": self.median, "sigma": self.sigma}


class Pareto(Model):
    """ABIDES' heavy tail: min / U^(1/alpha), U ~ (0, 1]."""

    def __init__(self, minimum: int, alpha: float) -> None:
        if minimum <= 0 or alpha <= 0:
            raise ModelError("pareto: need min > 0 and alpha > 0")
        self.minimum, self.alpha = minimum, alpha

    def sample(self, rng) -> int:
        u = 1.0 - rng.random()  # (0, 1]
        return _grown(self.minimum, -math.log(u) / self.alpha)  # min / u^(1/alpha)

    def describe(self) -> dict:
        return {"model": "pareto", "min_ns": self.minimum, "alpha": self.alpha}


class Mixture(Model):
    def __init__(self, parts: list[tuple[float, Model]]) -> None:
        total = sum(w for w, _ in parts)
        if not parts or total <= 0:
            raise ModelError("mixture: needs parts with positive weights")
        self.parts = [(w / total, m) for w, m in parts]

    def sample(self, rng) -> int:
        x = rng.random()
        for weight, model in self.parts:
            x -= weight
            if x < 0:
                return model.sample(rng)
        return self.parts[-1][1].sample(rng)

    def describe(self) -> dict:
        return {"model": "mixture", "parts": [[w, m.describe()] for w, m in self.parts]}


class Empirical(Model):
    def __init__(self, samples: list[int], source: str = "") -> None:
        if not samples:
            raise ModelError("empirical: no samples")
        self.samples, self.source = sorted(samples), source

    def sample(self, rng) -> int:
        return self.samples[rng.randrange(len(self.samples))]

    def describe(self) -> dict:
        return {"model": "empirical", "samples": len(self.samples), "source": self.source}


class Jittered(Model):
    def __init__(self, inner: Model, jitter: int) -> None:
        self.inner, self.jitter = inner, jitter

    def sample(self, rng) -> int:
        return _capped(self.inner.sample(rng) + rng.randint(-self.jitter, self.jitter))

    def describe(self) -> dict:
        return {**self.inner.describe(), "jitter_ns": self.jitter}


def build(spec: dict) -> Model:
    """The model a spec describes; ModelError naming what is missing or wrong."""
    if not isinstance(spec, dict):
        raise ModelError(f"a latency model is a table, not {spec!r}")
    kind = spec.get("model", "constant")

    def duration(key: str, default=None) -> int:
        if key not in spec and default is None:
            raise ModelError(f"{kind} needs {key!r} (a duration, e.g. 500us)")
        ns = duration_ns(spec.get(key, default))
        if ns > MAX_DELAY_NS:
            raise ModelError(f"{kind}: {key} above an hour (a link that carries nothing is down)")
        return ns

    def number(key: str, default: float) -> float:
        return number_of(spec.get(key, default), f"{kind}: {key}")

    if kind == "constant":
        model: Model = Constant(duration("latency", 0))
    elif kind == "uniform":
        model = Uniform(duration("min"), duration("max"))
    elif kind == "normal":
        model = Normal(duration("mean"), duration("stddev"))
    elif kind == "lognormal":
        model = LogNormal(duration("median"), number("sigma", 0.5))
    elif kind == "pareto":
        model = Pareto(duration("min"), number("alpha", 3))
    elif kind == "mixture":
        parts = spec.get("parts")
        if not isinstance(parts, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in parts):
            raise ModelError("mixture needs 'parts': [[weight, model], ...]")
        weights = [number_of(w, "mixture: a weight") for w, _ in parts]
        model = Mixture([(w, build(part)) for w, (_, part) in zip(weights, parts)])
    elif kind == "empirical":
        if "csv" not in spec:
            raise ModelError("empirical needs 'csv' (a file of delays, one per line)")
        path = Path(str(spec["csv"]))
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"empirical: cannot read {path}: {exc}") from None
        values = [duration_ns(line.split(",")[0]) for line in lines
                  if line.strip() and not line.lstrip().startswith("#")]
        model = Empirical([min(v, MAX_DELAY_NS) for v in values], str(path))
    else:
        raise ModelError(f"unknown latency model {kind!r}")
    jitter = duration("jitter") if spec.get("jitter") else 0
    return Jittered(model, jitter) if jitter else model


def number_of(value, what: str) -> float:
    """A finite, non-negative number, or ModelError saying which one is not."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ModelError(f"{what} must be finite and >= 0, not {value}")
    return number
