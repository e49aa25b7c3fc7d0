"""Confidence bounds for error rates and latency quantiles.

Pure functions, no state. Two families:

* **Rates** (a count of failures out of ``n`` requests). :func:`wilson_interval` is the
  usual two-sided score interval, good for showing a rate with its uncertainty.
  :func:`rate_lower_bound` / :func:`rate_upper_bound` are exact one-sided Clopper-Pearson
  bounds: they never undercover, which is what a verdict needs. (Wilson's one-sided lower
  bound does undercover for small counts: at a true rate of 1% and n=100 it lies above
  the truth 7.9% of the time at a nominal 5%.)
* **Quantiles** (a sorted list of samples). Distribution-free bounds from order
  statistics: the number of samples below the true q-quantile is Binomial(n, q), so the
  k-th smallest sample is an upper bound with confidence ``P(Binom(n, q) < k)`` whatever
  the latency distribution is (ties only make the bounds more conservative).

Ranks of order statistics are 1-based: rank 1 is the smallest sample, rank n the largest.

>>> wilson_interval(0, 100, 0.95)
(0.0, 0.03699...)
>>> quantile_upper_rank(300, 0.99, 0.95)  # p99 from 300 samples: only the maximum
300
>>> samples_needed_for_quantile(0.99, 0.95)
299
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta, binom

Samples = Sequence[float] | npt.NDArray[np.floating[Any]]
"""Latency samples in seconds; the quantile functions want them sorted ascending."""

# Beyond this a rate cannot be told from its objective by any practical run.
_MAX_SAMPLES = 2**50

__all__ = [
    "Samples",
    "empirical_quantile",
    "quantile_interval",
    "quantile_lower_bound",
    "quantile_lower_rank",
    "quantile_upper_bound",
    "quantile_upper_rank",
    "rate_lower_bound",
    "rate_upper_bound",
    "samples_needed_for_quantile",
    "samples_needed_for_rate",
    "wilson_interval",
]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (got {confidence!r})")


def _check_counts(failures: int, n: int) -> None:
    if n < 0 or not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n (got failures={failures}, n={n})")


def _check_quantile(q: float) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"the quantile must lie strictly between 0 and 1 (got {q!r}; p99 is 0.99)")


# --------------------------------------------------------------------------- rates


def wilson_interval(failures: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval for a failure rate.

    Contains the observed rate ``failures / n``; with no samples it is ``(0.0, 1.0)``.

    >>> lo, hi = wilson_interval(5, 100, 0.95)
    >>> round(lo, 4), round(hi, 4)
    (0.0215, 0.1118)
    """
    _check_counts(failures, n)
    _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    p = failures / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    # The exact ends at 0 and n, and min/max guard the observed rate against rounding.
    lower = 0.0 if failures == 0 else max(0.0, min(p, centre - half))
    upper = 1.0 if failures == n else min(1.0, max(p, centre + half))
    return (lower, upper)


def rate_upper_bound(failures: int, n: int, confidence: float) -> float:
    """Exact one-sided (Clopper-Pearson) upper bound on a failure rate.

    For any true rate ``p``, ``P(rate_upper_bound(X, n, c) < p) <= 1 - c``.
    With no samples the bound is 1.

    >>> round(rate_upper_bound(0, 299, 0.95), 4)  # the "rule of three": about 3/n
    0.01
    """
    _check_counts(failures, n)
    _check_confidence(confidence)
    if failures == n:
        return 1.0
    return max(failures / n, float(beta.ppf(confidence, failures + 1, n - failures)))


def rate_lower_bound(failures: int, n: int, confidence: float) -> float:
    """Exact one-sided (Clopper-Pearson) lower bound on a failure rate.

    For any true rate ``p``, ``P(rate_lower_bound(X, n, c) > p) <= 1 - c``.
    With no samples (or no failures) the bound is 0.
    """
    _check_counts(failures, n)
    _check_confidence(confidence)
    if failures == 0:
        return 0.0
    return min(failures / n, float(beta.ppf(1.0 - confidence, failures, n - failures + 1)))


def _rate_decided(n: int, observed_rate: float, objective: float, confidence: float) -> bool:
    """Would ``n`` samples at ``observed_rate`` put the one-sided bound past the objective?"""
    x = observed_rate * n  # a fractional count: Clopper-Pearson extends smoothly
    if observed_rate < objective:
        return bool(beta.ppf(confidence, x + 1.0, n - x) < objective)
    return bool(beta.ppf(1.0 - confidence, x, n - x + 1.0) > objective)


@lru_cache(maxsize=4096)
def samples_needed_for_rate(
    observed_rate: float, objective: float, confidence: float
) -> int | None:
    """Roughly how many samples would separate ``observed_rate`` from ``objective``.

    The smallest ``n`` at which a rate held at ``observed_rate`` puts the one-sided
    Clopper-Pearson bound at ``confidence`` on the far side of the objective (the upper
    bound below it when the observed rate is lower, the lower bound above it otherwise);
    that is the decision rule of :mod:`harness.slo.verdict`. It is rough because the
    real rate wanders as samples accrue. ``None`` when the rates are equal, or so close
    that no practical run could tell them apart.

    >>> samples_needed_for_rate(0.0, 0.01, 0.95)  # no failures at all: 299 requests
    299
    >>> samples_needed_for_rate(0.01, 0.01, 0.95) is None
    True
    """
    _check_confidence(confidence)
    for label, value in (("observed_rate", observed_rate), ("objective", objective)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{label} must lie in [0, 1] (got {value!r})")
    if observed_rate == objective:
        return None
    # Exponential search for a deciding n, then bisection; the bound moves monotonically
    # towards the observed rate as n grows.
    high = 1
    while not _rate_decided(high, observed_rate, objective, confidence):
        if high >= _MAX_SAMPLES:
            return None
        high *= 2
    low = high // 2  # undecided (or 0)
    while high - low > 1:
        middle = (low + high) // 2
        if _rate_decided(middle, observed_rate, objective, confidence):
            high = middle
        else:
            low = middle
    return high


# --------------------------------------------------------------------------- quantiles


def _sorted_array(sorted_values: Samples) -> npt.NDArray[np.float64]:
    values = np.asarray(sorted_values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"expected a flat sequence of samples (got shape {values.shape})")
    if not np.all(np.isfinite(values)):
        raise ValueError("samples must be finite numbers (found NaN or infinity)")
    if values.size > 1 and np.any(np.diff(values) < 0):
        raise ValueError("samples must be sorted ascending: pass sorted(values)")
    return values


@lru_cache(maxsize=1024)
def quantile_upper_rank(n: int, q: float, confidence: float) -> int | None:
    """Rank of the one-sided upper confidence bound of the q-quantile among ``n`` samples.

    The smallest ``k`` with ``P(Binom(n, q) < k) >= confidence``; ``None`` when even the
    largest sample is not enough (``n`` too small for this ``q`` and confidence).
    """
    _check_quantile(q)
    _check_confidence(confidence)
    if n < 1:
        return None
    # binom.ppf gives the smallest m with cdf(m) >= confidence; nudge it against rounding.
    m = int(binom.ppf(confidence, n, q))
    while m > 0 and binom.cdf(m - 1, n, q) >= confidence:
        m -= 1
    while m <= n and binom.cdf(m, n, q) < confidence:
        m += 1
    rank = m + 1
    return rank if rank <= n else None


@lru_cache(maxsize=1024)
def quantile_lower_rank(n: int, q: float, confidence: float) -> int | None:
    """Rank of the one-sided lower confidence bound of the q-quantile among ``n`` samples.

    The largest ``j`` with ``P(Binom(n, q) >= j) >= confidence``; ``None`` when even the
    smallest sample is not enough.
    """
    _check_quantile(q)
    _check_confidence(confidence)
    if n < 1:
        return None
    j = int(binom.ppf(1.0 - confidence, n, q)) + 1
    while j > 0 and binom.sf(j - 1, n, q) < confidence:  # sf(j - 1) = P(B >= j)
        j -= 1
    while j < n and binom.sf(j, n, q) >= confidence:
        j += 1
    return j if j >= 1 else None


def empirical_quantile(sorted_values: Samples, q: float) -> float:
    """The q-quantile of the samples: the smallest sample with at least ``q`` of them at or
    below it (rank ``ceil(n * q)``, the definition HdrHistogram uses for percentiles).

    >>> empirical_quantile([0.1, 0.2, 0.3, 0.4], 0.5)
    0.2
    """
    _check_quantile(q)
    values = _sorted_array(sorted_values)
    if values.size == 0:
        raise ValueError("the quantile of no samples is undefined")
    rank = min(values.size, max(1, math.ceil(values.size * q)))
    return float(values[rank - 1])


def quantile_upper_bound(sorted_values: Samples, q: float, confidence: float) -> float | None:
    """One-sided upper confidence bound of the q-quantile: a sample value, or ``None`` if
    there are too few samples (see :func:`samples_needed_for_quantile`).

    >>> quantile_upper_bound(list(range(1, 301)), 0.99, 0.95)
    300.0
    >>> quantile_upper_bound(list(range(1, 298)), 0.99, 0.95) is None
    True
    """
    values = _sorted_array(sorted_values)
    rank = quantile_upper_rank(values.size, q, confidence)
    return None if rank is None else float(values[rank - 1])


def quantile_lower_bound(sorted_values: Samples, q: float, confidence: float) -> float | None:
    """One-sided lower confidence bound of the q-quantile: a sample value, or ``None`` if
    there are too few samples."""
    values = _sorted_array(sorted_values)
    rank = quantile_lower_rank(values.size, q, confidence)
    return None if rank is None else float(values[rank - 1])


def quantile_interval(
    sorted_values: Samples, q: float, confidence: float
) -> tuple[float, float] | None:
    """Exact distribution-free two-sided confidence interval of the q-quantile.

    Equal tails: each end is a one-sided bound at ``(1 + confidence) / 2``, so the
    interval covers the true quantile with probability at least ``confidence``.
    ``None`` when there are too few samples for either end.

    >>> lo, hi = quantile_interval([i / 10_000 for i in range(1, 10_001)], 0.99, 0.95)
    >>> round(lo, 3), round(hi, 3)  # 10k samples pin p99 down to about p98.8-p99.2
    (0.988, 0.992)
    """
    _check_confidence(confidence)
    one_sided = (1.0 + confidence) / 2.0
    lower = quantile_lower_bound(sorted_values, q, one_sided)
    upper = quantile_upper_bound(sorted_values, q, one_sided)
    if lower is None or upper is None:
        return None
    return (lower, upper)


def samples_needed_for_quantile(q: float, confidence: float) -> int:
    """The fewest samples for which both one-sided bounds of the q-quantile exist.

    The upper bound needs ``1 - q**n >= confidence`` (the maximum must lie above the
    quantile often enough), the lower bound ``1 - (1 - q)**n >= confidence``.

    >>> samples_needed_for_quantile(0.99, 0.95)
    299
    >>> samples_needed_for_quantile(0.999, 0.95)
    2995
    """
    _check_quantile(q)
    _check_confidence(confidence)
    needed = 1
    for p in (q, 1.0 - q):
        # Smallest n with p**n <= 1 - confidence; logs first, then correct the rounding.
        n = max(1, math.ceil(math.log1p(-confidence) / math.log(p)))
        while n > 1 and p ** (n - 1) <= 1.0 - confidence:
            n -= 1
        while p**n > 1.0 - confidence:
            n += 1
        needed = max(needed, n)
    return needed
