"""Scaling-ladder arithmetic: loss-vs-compute fits, Efficiency Gain, rank agreement.

- Fit the baseline ladder ``L(C) = A * C**-alpha + E`` (scipy's curve_fit in log-compute
  space, with standard errors from the covariance).
- Efficiency Gain of a candidate reaching loss L' at compute C': ``EG = f^-1(L') / C'``, the
  compute the baseline would need for the same loss over the compute the candidate used
  (EG 1.3: the baseline needs 30% more). Undefined when L' <= E (the baseline never gets
  there): returned as +inf.
- Rank agreement between two scales: Kendall's tau and Spearman's rho with bootstrap
  intervals, top-1 agreement, and the share of pairs whose order flips.
- A RegMix-style regression: predict a mixture's loss from its weights (linear in the weights
  and their logs), fitted at the small scale and judged on the large scale's ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class PowerLawFit:
    A: float
    alpha: float
    E: float
    stderr: tuple[float, float, float]  # of (A, alpha, E)
    c0: float  # compute scale used for conditioning: L = A * (C / c0)**-alpha + E

    def loss(self, compute: np.ndarray | float) -> np.ndarray | float:
        return self.A * (np.asarray(compute, dtype=float) / self.c0) ** -self.alpha + self.E

    def compute_for(self, loss: float) -> float:
        """f^-1: the compute at which the fitted curve reaches ``loss`` (inf if never)."""
        if loss <= self.E:
            return float("inf")
        return float(self.c0 * ((loss - self.E) / self.A) ** (-1.0 / self.alpha))


def fit_power_law(compute: np.ndarray, loss: np.ndarray) -> PowerLawFit:
    """Least-squares fit of L(C) = A C^-alpha + E; needs at least 3 rungs."""
    c = np.asarray(compute, dtype=float)
    y = np.asarray(loss, dtype=float)
    if len(c) < 3 or len(c) != len(y):
        raise ValueError(f"need >= 3 (compute, loss) points of equal length, got {len(c)}, "
                         f"{len(y)}")
    if np.any(c <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("compute must be positive and losses finite")
    c0 = float(np.exp(np.mean(np.log(c))))  # geometric mean: keeps A near the losses' scale
    x = c / c0

    def f(x: np.ndarray, A: float, alpha: float, E: float) -> np.ndarray:
        return A * x ** -alpha + E

    span = max(float(y.max() - y.min()), 1e-6)
    p0 = (span, 0.3, max(float(y.min()) - span, 0.0))
    bounds = ([0.0, 0.0, 0.0], [np.inf, 5.0, float(y.min())])
    params, cov = optimize.curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else \
        np.full(3, np.nan)
    return PowerLawFit(float(params[0]), float(params[1]), float(params[2]),
                       (float(err[0]), float(err[1]), float(err[2])), c0)


def efficiency_gain(baseline: PowerLawFit, loss: float, compute: float) -> float:
    """EG = f^-1(L') / C' for a candidate reaching ``loss`` with ``compute``."""
    if compute <= 0:
        raise ValueError(f"compute must be positive, got {compute}")
    return baseline.compute_for(loss) / compute


@dataclass(frozen=True)
class RankAgreement:
    kendall_tau: float
    kendall_ci: tuple[float, float]
    spearman_rho: float
    spearman_ci: tuple[float, float]
    top1_agree: bool
    pairwise_flips: float  # share of pairs ordered differently at the two scales
    n: int


def rank_agreement(small: np.ndarray, large: np.ndarray, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> RankAgreement:
    """How well the small scale's ordering (lower is better) predicts the large scale's."""
    a, b = np.asarray(small, dtype=float), np.asarray(large, dtype=float)
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"need >= 3 paired scores, got {len(a)} and {len(b)}")
    tau = stats.kendalltau(a, b).statistic
    rho = stats.spearmanr(a, b).statistic
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(a), len(a))
        if len(np.unique(idx)) < 3:
            continue
        taus.append(stats.kendalltau(a[idx], b[idx]).statistic)
        rhos.append(stats.spearmanr(a[idx], b[idx]).statistic)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    i, j = np.triu_indices(len(a), k=1)
    flips = np.mean(np.sign(a[i] - a[j]) != np.sign(b[i] - b[j]))
    return RankAgreement(float(tau), tuple(np.nanpercentile(taus, q)), float(rho),
                         tuple(np.nanpercentile(rhos, q)), bool(a.argmin() == b.argmin()),
                         float(flips), len(a))


@dataclass(frozen=True)
class MixtureRegression:
    coef: np.ndarray
    families: tuple[str, ...]

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return _features(np.atleast_2d(weights)) @ self.coef


def _features(w: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(w), 1)), w, np.log(np.clip(w, 1e-4, None))])


def fit_mixture_regression(weights: np.ndarray, loss: np.ndarray, families: tuple[str, ...],
                           ridge: float = 1e-3) -> MixtureRegression:
    """Ridge regression of loss on mixture weights and their logs (RegMix-style)."""
    w = np.asarray(weights, dtype=float)
    X = _features(w)
    y = np.asarray(loss, dtype=float)
    coef = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ y)
    return MixtureRegression(coef, tuple(families))


# -- Allocation: how big a model for a compute budget (Chinchilla's approach 3) ---------------

@dataclass(frozen=True)
class LossND:
    """L(N, D) = E + A (N / n0)^-alpha + B (D / d0)^-beta, fitted on runs of several sizes N
    (non-embedding active parameters), each trained on several token counts D."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    n0: float
    d0: float

    @property
    def loose(self) -> bool:
        """The fit sits at a bound (no irreducible loss, or an exponent below 0.1): its runs
        do not pin the law down, and an allocation read from it is not to be trusted."""
        return self.E <= 1e-6 or min(self.alpha, self.beta) < 0.1

    def loss(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray | float:
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A * (n / self.n0) ** -self.alpha + self.B * (d / self.d0) ** -self.beta

    def optimal(self, compute: float) -> tuple[float, float]:
        """(N, D) minimising L under the budget ``compute = 6 N D`` (FLOPs): setting dL/dN = 0
        along D = C / 6N gives alpha A (N/n0)^-alpha = beta B (D/d0)^-beta, solved here by a
        bounded search over log N (robust where an exponent is near 0)."""
        if compute <= 0:
            raise ValueError(f"compute must be positive, got {compute}")

        def along(log_n: float) -> float:
            n = math.exp(log_n)
            return float(self.loss(n, compute / (6 * n)))

        lo, hi = math.log(1e2), math.log(compute / 6 / 1e2)  # at least 100 params and tokens
        if hi <= lo:
            raise ValueError(f"compute {compute:g} is too small to allocate")
        best = optimize.minimize_scalar(along, bounds=(lo, hi), method="bounded")
        n = math.exp(float(best.x))
        return n, compute / (6 * n)


def fit_loss_nd(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray) -> LossND:
    """Least-squares fit of :class:`LossND` (Hoffmann et al. 2022, approach 3; plain least
    squares in loss instead of their Huber loss on log-loss, enough for a dozen points);
    needs at least 6 runs spanning at least 2 sizes and 2 token counts per size."""
    n, d, y = (np.asarray(a, dtype=float) for a in (params, tokens, loss))
    if not len(n) == len(d) == len(y) or len(n) < 6:
        raise ValueError(f"need >= 6 (N, D, loss) runs of equal length, got {len(n)}")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 3:
        raise ValueError("need at least 2 model sizes and 3 token counts")
    if np.any(n <= 0) or np.any(d <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("sizes and token counts must be positive and losses finite")
    n0, d0 = float(np.exp(np.log(n).mean())), float(np.exp(np.log(d).mean()))

    def f(x: np.ndarray, E: float, A: float, alpha: float, B: float, beta: float) -> np.ndarray:
        return E + A * (x[0] / n0) ** -alpha + B * (x[1] / d0) ** -beta

    span = max(float(y.max() - y.min()), 1e-3)
    p0 = (max(float(y.min()) - span, 0.0), span / 2, 0.3, span / 2, 0.3)
    bounds = ([0.0, 0.0, 0.0, 0.0, 0.0], [float(y.min()), np.inf, 3.0, np.inf, 3.0])
    p, _ = optimize.curve_fit(f, np.stack([n, d]), y, p0=p0, bounds=bounds, maxfev=50000)
    return LossND(*(float(v) for v in p), n0, d0)
