"""Exact (Clopper-Pearson) binomial confidence intervals for accuracies.

Clopper-Pearson inverts the binomial test: with k successes out of n,

* ``lower`` is the p with ``P(X ≥ k | n, p) = α/2`` (0 when k = 0),
* ``upper`` is the p with ``P(X ≤ k | n, p) = α/2`` (1 when k = n).

It never undercovers (coverage ≥ 1 − α for every p), which suits a number that gates
builds. It is computed here by bisection on the binomial CDF in log space, with no SciPy.
"""

from __future__ import annotations

import math

import numpy as np


def _log_binom_coeffs(n: int) -> np.ndarray:
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])
    i = np.arange(n + 1)
    return logfact[n] - logfact[i] - logfact[n - i]


def _cdf(k: int, n: int, p: float, logc: np.ndarray) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    logs = logc[: k + 1] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def _solve(fn, target: float, increasing: bool, iters: int = 80) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (fn(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided ``confidence`` interval for a binomial proportion k/n.

    ``n = 0`` gives ``(nan, nan)``.
    """
    k, n = int(k), int(n)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    alpha = 1.0 - confidence
    logc = _log_binom_coeffs(n)
    # P(X >= k | p) = 1 - cdf(k-1) increases with p; P(X <= k | p) decreases with p
    lower = 0.0 if k == 0 else _solve(lambda p: 1.0 - _cdf(k - 1, n, p, logc), alpha / 2, increasing=True)
    upper = 1.0 if k == n else _solve(lambda p: _cdf(k, n, p, logc), alpha / 2, increasing=False)
    return lower, upper
