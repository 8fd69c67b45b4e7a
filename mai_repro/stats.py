"""Verdicts with intervals (DESIGN.md, "Verdicts and statistics").

A finding is "held", "not held" or "inconclusive", decided by a stated rule with an interval:

- two arms scored on the same items (the same passkey sequences, the same held-out problems):
  :func:`paired_bootstrap` resamples the items and gives the mean difference with a
  percentile interval;
- :func:`verdict`: "held" when the whole interval lies above the bar, "not held" when it lies
  below, otherwise "inconclusive" (an interval that includes the bar is never "held");
- :func:`decide`: both at once, recorded as a :class:`Decision` (the stated test in words, what
  was resampled, the interval, the bar and the verdict) that a manifest stores and the report
  card prints beside the verdict; :func:`all_of` combines the decisions of a rule that needs
  several conditions;
- :func:`wilson`: the Wilson score interval of a share ``k / n`` (exact counts over a few
  items, such as the agentic stage's scripted checks over its tasks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
SCALES = ("share", "log", "plain")  # how a Decision prints its numbers


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
        return HELD
    if iv.hi <= bar:
        return NOT_HELD
    return INCONCLUSIVE


@dataclass
class Decision:
    """A verdict with its stated test: ``mean`` and the 95% interval ``[lo, hi]`` of the
    compared quantity over ``n`` ``items`` (what the bootstrap resampled or what was counted),
    the ``bar`` the interval is held against and the verdict (:func:`verdict`). ``scale`` says
    how to print the numbers: "share" (percentage points), "log" (the numbers are logs of
    ratios: printed as the ratio, x1.5), "plain". Stored in manifests as a plain dict
    (``dataclasses.asdict``); ``str()`` is what the report card shows beside the verdict."""

    test: str  # the stated test, in words
    items: str  # what was resampled or counted: "held-out problems", "steps", "tasks"
    mean: float
    lo: float
    hi: float
    n: int
    bar: float
    scale: str
    verdict: str

    def fmt(self, x: float) -> str:
        if not math.isfinite(x):
            return str(x)
        if self.scale == "share":
            return f"{x:+.1%}"
        if self.scale == "log":
            return f"x{math.exp(x):.4g}"
        return f"{x:+.3g}"

    def span(self) -> str:
        """The mean and its interval, without n: "+4.7% [+1.2%, +8.1%]"."""
        if self.n == 0:
            return "none"
        if self.n < 2:  # one item gives no interval
            return f"{self.fmt(self.mean)} [no interval]"
        return f"{self.fmt(self.mean)} [{self.fmt(self.lo)}, {self.fmt(self.hi)}]"

    def __str__(self) -> str:
        if self.n == 0:
            return f"no {self.items} to compare"
        bar = f", bar {self.fmt(self.bar)}" if self.bar != 0 else ""
        return f"{self.span()} (n={self.n} {self.items}{bar})"


def decide(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, test: str,
           items: str, bar: float = 0.0, scale: str = "plain", seed: int = 0,
           n_boot: int = 2000) -> Decision:
    """:func:`paired_bootstrap` of ``a - b`` over the items where both are finite, held against
    ``bar`` (:func:`verdict`). Fewer than two such items give no interval: "inconclusive" (with
    ``n`` the count and the mean of what there is)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same number of items, got {a.size} and "
                         f"{b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        m = float((a - b).mean()) if a.size else math.nan
        return Decision(test, items, m, math.nan, math.nan, int(a.size), float(bar), scale,
                        INCONCLUSIVE)
    iv = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    return Decision(test, items, iv.mean, iv.lo, iv.hi, iv.n, float(bar), scale,
                    verdict(iv, bar))


def over_seeds(x: Sequence[float] | np.ndarray, *, test: str, bar: float = 0.0,
               scale: str = "share", level: float = 0.95) -> Decision:
    """One value per seed (a climb's gain, say): their mean with a Student-t interval over
    the seeds (``n - 1`` degrees of freedom; with 3 seeds the interval is mean +- 2.48 sd,
    where a bootstrap of 3 values would be too narrow), held against ``bar``. Fewer than two
    seeds give no interval: "inconclusive"."""
    from scipy.stats import t as student_t

    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return Decision(test, "seeds", float(x.mean()) if x.size else math.nan, math.nan,
                        math.nan, int(x.size), float(bar), scale, INCONCLUSIVE)
    m, half = float(x.mean()), float(student_t.ppf(0.5 + level / 2, x.size - 1)
                                     * x.std(ddof=1) / math.sqrt(x.size))
    iv = Interval(m, m - half, m + half, int(x.size), level)
    return Decision(test, "seeds", iv.mean, iv.lo, iv.hi, iv.n, float(bar), scale,
                    verdict(iv, bar))


def all_of(words: Sequence[str]) -> str:
    """The verdict of a rule that needs every condition: "held" when each is held, "not held"
    when one is not held, otherwise "inconclusive"."""
    if not words:
        return INCONCLUSIVE
    if any(w == NOT_HELD for w in words):
        return NOT_HELD
    return HELD if all(w == HELD for w in words) else INCONCLUSIVE


def wilson(k: int, n: int, *, level: float = 0.95) -> Interval:
    """The Wilson score interval of the share ``k / n`` (scipy's ``binomtest``): unlike the
    normal approximation it stays inside [0, 1] and is not zero-width at 0 or n of n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), n, level)
