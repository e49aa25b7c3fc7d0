"""PASS / FAIL / INCONCLUSIVE for one SLO in one phase, with the uncertainty behind it.

The decision rule (design §7): PASS only when the whole interval lies inside the
objective, FAIL only when it lies wholly outside, INCONCLUSIVE otherwise, together with
the sample size that would likely decide it.

Each end of the interval is a **one-sided** bound at ``confidence``:

* PASS iff the upper bound is below the objective, so a system that truly violates the
  SLO passes with probability at most ``1 - confidence``;
* FAIL iff the lower bound is above the objective, so a system that truly meets the SLO
  (true value at or below the objective) fails with probability at most
  ``1 - confidence``.

Together the two bounds form a two-sided interval at ``2 * confidence - 1`` (90% for
the default 0.95); messages therefore say "one-sided 95% bounds". Error rates use exact
Clopper-Pearson bounds and latency quantiles exact order-statistic bounds, so both
guarantees hold for any sample size, not just asymptotically.

>>> result = evaluate_error_rate("e2e-error-rate", "fault", 67, 812, 0.01, 0.95)
>>> result.verdict
<Verdict.FAIL: 'FAIL'>
>>> round(result.measured, 4), round(result.lower, 4), round(result.upper, 4)
(0.0825, 0.0672, 0.1002)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from harness.formats import bounds_sentence, percent_short, seconds
from harness.journal import SloResult, Verdict
from harness.slo.stats import (
    empirical_quantile,
    quantile_lower_bound,
    quantile_upper_bound,
    rate_lower_bound,
    rate_upper_bound,
    samples_needed_for_quantile,
    samples_needed_for_rate,
)

__all__ = ["SloResult", "Verdict", "evaluate_error_rate", "evaluate_latency"]


def _check_confidence(confidence: float) -> None:
    # Below 0.5 a one-sided lower bound can exceed the upper one; the scenario model
    # enforces the same range.
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0.5 and 1 (got {confidence!r})")


def _undecided(needed: int | None, objective: str, confidence: float, noun: str) -> str:
    head = f"cannot be told apart from {objective} at {confidence * 100:g}% confidence"
    if needed is None:
        return f"{head}; it sits on the objective, so more {noun} alone may not decide it"
    return f"{head}; about {needed} {noun} would decide it"


def evaluate_error_rate(
    name: str, phase: str, failures: int, n: int, max_rate: float, confidence: float
) -> SloResult:
    """Judge an error-rate SLO: ``failures`` out of ``n`` requests against ``max_rate``.

    PASS iff the one-sided upper bound is below ``max_rate``, FAIL iff the one-sided
    lower bound is above it (exact Clopper-Pearson bounds at ``confidence``).

    >>> evaluate_error_rate("errors", "baseline", 0, 400, 0.01, 0.95).verdict
    <Verdict.PASS: 'PASS'>
    >>> evaluate_error_rate("errors", "baseline", 2, 400, 0.01, 0.95).samples_needed
    1146
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= failures <= n:
        raise ValueError(f"need 0 <= failures <= n (got failures={failures}, n={n})")
    if not 0.0 <= max_rate <= 1.0:
        raise ValueError(f"max_rate must lie in [0, 1] (got {max_rate!r}; 1% is 0.01)")
    objective = f"the objective {percent_short(max_rate)}"
    if n == 0:
        minimum = samples_needed_for_rate(0.0, max_rate, confidence)
        hint = (
            f"at least {minimum} requests are needed to show it is below {percent_short(max_rate)}"
            if minimum is not None
            else f"no sample size can show it is below {percent_short(max_rate)}"
        )
        return SloResult.judged(
            name,
            "errorRate",
            phase,
            Verdict.INCONCLUSIVE,
            measured=None,
            lower=None,
            upper=None,
            objective=max_rate,
            confidence=confidence,
            n=0,
            unit="ratio",
            detail=f"no requests were recorded in this phase; {hint}",
            samples_needed=minimum,
        )
    rate = failures / n
    lower = rate_lower_bound(failures, n, confidence)
    upper = rate_upper_bound(failures, n, confidence)
    needed: int | None = None
    if upper < max_rate:
        verdict, outcome = Verdict.PASS, f"is below {objective}"
    elif lower > max_rate:
        verdict, outcome = Verdict.FAIL, f"exceeds {objective}"
    else:
        verdict = Verdict.INCONCLUSIVE
        estimate = samples_needed_for_rate(rate, max_rate, confidence)
        needed = None if estimate is None else max(n + 1, estimate)
        outcome = _undecided(needed, objective, confidence, "requests")
    bounds = bounds_sentence(percent_short(lower), percent_short(upper), confidence, n)
    return SloResult.judged(
        name,
        "errorRate",
        phase,
        verdict,
        measured=rate,
        lower=lower,
        upper=upper,
        objective=max_rate,
        confidence=confidence,
        n=n,
        unit="ratio",
        detail=f"error rate {percent_short(rate)} ({bounds}) {outcome}",
        samples_needed=needed,
    )


def evaluate_latency(
    name: str,
    phase: str,
    latencies_s: Sequence[float],
    q: float,
    max_s: float,
    confidence: float,
) -> SloResult:
    """Judge a latency SLO: the ``q``-quantile of ``latencies_s`` against ``max_s`` seconds.

    PASS iff the one-sided upper bound of the quantile is below ``max_s``, FAIL iff the
    one-sided lower bound is above it (exact order-statistic bounds at ``confidence``).
    With too few samples for an upper bound the SLO cannot pass, but a lower bound
    above ``max_s`` still fails it. ``measured`` is the empirical quantile.

    >>> evaluate_latency("p50", "baseline", [0.01 * i for i in range(1, 101)], 0.5, 1.0, 0.95)
    ... # doctest: +ELLIPSIS
    SloResult(slo='p50', kind='latency', phase='baseline', verdict=<Verdict.PASS: 'PASS'>, ...)
    """
    _check_confidence(confidence)
    if not 0.0 < q < 1.0:
        raise ValueError(f"the quantile must lie strictly between 0 and 1 (got {q!r}; p99 is 0.99)")
    if not max_s >= 0.0:
        raise ValueError(f"max_s must be a duration in seconds >= 0 (got {max_s!r})")
    values = np.sort(np.asarray(latencies_s, dtype=np.float64))
    if values.size and not (np.all(np.isfinite(values)) and values[0] >= 0.0):
        raise ValueError("latencies must be finite and non-negative seconds")
    n = int(values.size)
    label = f"p{q * 100:g}"
    if n == 0:
        return _no_latency_samples(name, phase, q, max_s, confidence, label)
    measured = empirical_quantile(values, q)
    lower = quantile_lower_bound(values, q, confidence)
    upper = quantile_upper_bound(values, q, confidence)
    needed: int | None = None
    if upper is not None and upper < max_s:
        verdict, outcome = Verdict.PASS, f"is within {seconds(max_s)}"
    elif lower is not None and lower > max_s:
        verdict, outcome = Verdict.FAIL, f"exceeds {seconds(max_s)}"
    else:
        verdict = Verdict.INCONCLUSIVE
        needed = _latency_samples_needed(values, q, max_s, measured, confidence)
        outcome = _undecided(needed, seconds(max_s), confidence, "samples")
    bounds = bounds_sentence(
        None if lower is None else seconds(lower),
        None if upper is None else seconds(upper),
        confidence,
        n,
    )
    return SloResult.judged(
        name,
        "latency",
        phase,
        verdict,
        measured=measured,
        lower=lower,
        upper=upper,
        objective=max_s,
        confidence=confidence,
        n=n,
        unit="s",
        detail=f"{label} {seconds(measured)} ({bounds}) {outcome}",
        samples_needed=needed,
    )


def _no_latency_samples(
    name: str, phase: str, q: float, max_s: float, confidence: float, label: str
) -> SloResult:
    minimum = samples_needed_for_quantile(q, confidence)
    return SloResult.judged(
        name,
        "latency",
        phase,
        Verdict.INCONCLUSIVE,
        measured=None,
        lower=None,
        upper=None,
        objective=max_s,
        confidence=confidence,
        n=0,
        unit="s",
        detail=(
            f"no latency samples were recorded in this phase; at least {minimum} "
            f"are needed for one-sided {confidence * 100:g}% bounds on {label}"
        ),
        samples_needed=minimum,
    )


def _latency_samples_needed(
    values: npt.NDArray[np.float64],
    q: float,
    max_s: float,
    measured: float,
    confidence: float,
) -> int | None:
    # "The q-quantile is below max_s" is the same statement as "fewer than a share 1 - q
    # of requests are slower than max_s", and the order-statistic bounds are the exact
    # binomial bounds on that share; so the rate estimate carries over.
    if measured == max_s:
        return None
    slow = values >= max_s if measured < max_s else values > max_s
    estimate = samples_needed_for_rate(float(np.mean(slow)), 1.0 - q, confidence)
    if estimate is None:
        return None
    return max(values.size + 1, estimate, samples_needed_for_quantile(q, confidence))
