"""Verdicts with intervals (DESIGN.md, "Verdicts and statistics").

A finding is "held", "not held" or "inconclusive", decided by a stated rule with an interval:

- two arms scored on the same items (the same passkey sequences, the same held-out problems):
  :func:`paired_bootstrap` resamples the items and gives the mean difference with a
  percentile interval;
- :func:`verdict`: "held" when the whole interval lies above the bar, "not held" when it lies
  below, otherwise "inconclusive" (an interval that includes the bar is never "held").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERDICTS = ("held", "not held", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """A mean (or mean difference) with its percentile bootstrap interval."""

    mean: float
    lo: float
    hi: float
    n: int  # items resampled
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] (n={self.n})"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """mean(a - b) over paired items, with a percentile interval from ``n_boot`` resamples of
    the items (their own generator: no global random state moves)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired arms need the same non-zero number of items, got {a.size} "
                         f"and {b.size}")
    diff = a - b
    rng = np.random.default_rng([seed, 31])
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return Interval(float(diff.mean()), float(lo), float(hi), int(diff.size), level)


def mean_interval(x: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> Interval:
    """mean(x) with its percentile bootstrap interval (one arm: the difference to zero)."""
    x = np.asarray(x, dtype=float).ravel()
    return paired_bootstrap(x, np.zeros_like(x), n_boot=n_boot, seed=seed, level=level)


def verdict(iv: Interval, bar: float = 0.0) -> str:
    """"held" when the interval lies wholly above ``bar``, "not held" when wholly below (or on
    it), "inconclusive" when it straddles the bar."""
    if iv.lo > bar:
        return "held"
    if iv.hi <= bar:
        return "not held"
    return "inconclusive"
