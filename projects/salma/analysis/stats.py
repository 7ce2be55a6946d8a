"""Confidence intervals over seeds: Student t, and paired differences between configs.

An ablation row is a handful of seeds, so the interval uses the t distribution with n - 1 degrees
of freedom, not the normal one. Two configs trained with the same seeds share the seed's effect
(data order, initialisation); their per-seed differences cancel it, so the difference gets its own
(paired) interval, usually much tighter than the two rows' intervals suggest.

No scipy: the t quantile inverts the CDF, written with the regularised incomplete beta function
(continued fraction, as in Numerical Recipes §6.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

CONFIDENCE = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise RuntimeError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (bisection on the CDF)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass
class Interval:
    """Mean of n values with its two-sided ``confidence`` interval (half-width NaN when n < 2)."""

    mean: float
    half_width: float
    n: int
    std: float
    confidence: float = CONFIDENCE
    seeds: list = field(default_factory=list)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def as_dict(self) -> dict:
        nan = math.isnan(self.half_width)
        return {"mean": self.mean, "ci": None if nan else self.half_width, "low": None if nan else self.low,
                "high": None if nan else self.high, "n": self.n, "std": None if math.isnan(self.std) else self.std,
                "confidence": self.confidence, "seeds": list(self.seeds)}


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, seeds: Sequence = ()) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s / sqrt(n), with s the sample standard deviation (ddof 1)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci: no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan, confidence, list(seeds))
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, half, n, std, confidence, list(seeds))


def paired_difference(values: Mapping, reference: Mapping, confidence: float = CONFIDENCE) -> Interval:
    """``values - reference`` paired by key (seed): the interval of the mean per-seed difference.

    Only seeds present in both enter (a failed run has no partner)."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ValueError("paired_difference: no seed in common")
    return mean_ci([values[s] - reference[s] for s in seeds], confidence, seeds)
