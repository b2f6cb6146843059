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
Jitter (any model): uniform +-jitter added to each sample. Samples never go below zero.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s)?\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000}


class ModelError(ValueError):
    pass


def duration_ns(text) -> int:
    """'2ms', '150us', '1.5s', '800ns'; a bare number means milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text * 1_000_000)
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
        return int(rng.gauss(self.mean, self.stddev))

    def describe(self) -> dict:
        return {"model": "normal", "mean_ns": self.mean, "stddev_ns": self.stddev}


class LogNormal(Model):
    def __init__(self, median: int, sigma: float) -> None:
        if median <= 0 or sigma < 0:
            raise ModelError("lognormal: need median > 0 and sigma >= 0")
        self.median, self.sigma = median, sigma

    def sample(self, rng) -> int:
        return int(self.median * math.exp(rng.gauss(0.0, self.sigma)))

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
        return int(self.minimum / u ** (1.0 / self.alpha))

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
        return self.inner.sample(rng) + rng.randint(-self.jitter, self.jitter)

    def describe(self) -> dict:
        return {**self.inner.describe(), "jitter_ns": self.jitter}


def build(spec: dict) -> Model:
    kind = spec.get("model", "constant")
    if kind == "constant":
        model: Model = Constant(duration_ns(spec.get("latency", 0)))
    elif kind == "uniform":
        model = Uniform(duration_ns(spec["min"]), duration_ns(spec["max"]))
    elif kind == "normal":
        model = Normal(duration_ns(spec["mean"]), duration_ns(spec["stddev"]))
    elif kind == "lognormal":
        model = LogNormal(duration_ns(spec["median"]), float(spec.get("sigma", 0.5)))
    elif kind == "pareto":
        model = Pareto(duration_ns(spec["min"]), float(spec.get("alpha", 3)))
    elif kind == "mixture":
        model = Mixture([(float(w), build(part)) for w, part in spec["parts"]])
    elif kind == "empirical":
        path = Path(spec["csv"])
        values = [duration_ns(line.split(",")[0]) for line in path.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
        model = Empirical(values, str(path))
    else:
        raise ModelError(f"unknown latency model {kind!r}")
    jitter = duration_ns(spec["jitter"]) if spec.get("jitter") else 0
    return Jittered(model, jitter) if jitter else model
