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

With per-second counts, bursty failures or slow requests widen both bounds by their design
effect (:func:`harness.slo.stats.rate_dispersion`); each result also carries the p-value of
its FAIL side, and :func:`harness.slo.family.adjust_family` turns the per-pair FAIL control
into a family-wise one across a scenario's SLO × phase pairs.

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

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from harness.formats import bounds_sentence as _bounds
from harness.formats import percent_short as _percent
from harness.formats import seconds as _seconds
from harness.journal import SloResult, Verdict
from harness.slo.stats import (
    Dispersion,
    Samples,
    dispersed_quantile_bounds,
    dispersed_rate_bounds,
    empirical_quantile,
    quantile_dispersion,
    quantile_fail_p_value,
    rate_dispersion,
    rate_fail_p_value,
    rate_upper_bound,
    samples_needed_for_quantile,
    samples_needed_for_rate,
)

__all__ = [
    "SloResult",
    "Verdict",
    "evaluate_error_rate",
    "evaluate_latency",
    "per_second_counts",
]


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


def per_second_counts(
    starts: Sequence[float] | npt.NDArray[np.float64],
    failed: Sequence[bool] | npt.NDArray[np.bool_],
    start: float,
    end: float,
) -> tuple[list[int], list[int]]:
    """``(requests, failures)`` per second of the phase ``[start, end)`` (epoch seconds),
    each request in the second it started: the ``per_second`` argument of
    :func:`evaluate_error_rate`.

    >>> per_second_counts([0.2, 0.7, 1.5, 2.9], [False, True, False, True], 0.0, 3.0)
    ([2, 1, 1], [1, 0, 1])
    """
    seconds = max(1, math.ceil(end - start - 1e-9))
    times = np.asarray(starts, dtype=np.float64)
    bad = np.asarray(failed, dtype=bool)
    if times.shape != bad.shape:
        raise ValueError(f"one failed flag per start: {bad.size} flags for {times.size} starts")
    index = np.clip((times - start).astype(np.int64), 0, seconds - 1)
    requests = np.bincount(index, minlength=seconds)
    failures = np.bincount(index[bad], minlength=seconds)
    return requests.tolist(), failures.tolist()


def _zero_objective_message(n: int, confidence: float) -> str:
    upper = rate_upper_bound(0, n, confidence) if n else 1.0
    example = samples_needed_for_rate(0.0, 0.001, confidence)
    return (
        f"a max of 0% can never PASS with any finite sample: no number of clean requests "
        f"shows a rate of exactly 0 ({n} clean requests only show it is below "
        f"{_percent(upper)}); it can only FAIL, on the first failure. To require "
        f"'practically no errors', give a small positive max, e.g. 0.1% ({example} clean "
        "requests PASS it)"
    )


def evaluate_error_rate(
    name: str,
    phase: str,
    failures: int,
    n: int,
    max_rate: float,
    confidence: float,
    *,
    per_second: tuple[Sequence[int], Sequence[int]] | None = None,
) -> SloResult:
    """Judge an error-rate SLO: ``failures`` out of ``n`` requests against ``max_rate``.

    PASS iff the one-sided upper bound is below ``max_rate``, FAIL iff the one-sided
    lower bound is above it (exact Clopper-Pearson bounds at ``confidence``).

    ``per_second`` is ``(requests, failures)``, one count per second of the phase. With
    it, bursty failures (over-dispersed per-second counts) widen the bounds by their
    design effect (:func:`harness.slo.stats.rate_dispersion`); when the counts look
    independent the exact bounds stand.

    ``max_rate == 0`` can never PASS (no finite sample shows a rate of exactly 0): it
    FAILs on the first failure and is INCONCLUSIVE otherwise, with a message that says so.

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
    dispersion = _rate_burstiness(per_second, failures, n, confidence)
    objective = f"the objective {_percent(max_rate)}"
    if n == 0:
        return _no_requests(name, phase, max_rate, confidence)
    rate = failures / n
    lower, upper = dispersed_rate_bounds(failures, n, confidence, dispersion)
    p_value = rate_fail_p_value(failures, n, max_rate, dispersion)
    inflation = 1.0 if dispersion is None else n / dispersion.effective_n
    needed: int | None = None
    if upper < max_rate:
        verdict, outcome = Verdict.PASS, f"is below {objective}"
    elif lower > max_rate:
        verdict, outcome = Verdict.FAIL, f"exceeds {objective}"
    elif max_rate == 0.0:
        verdict, outcome = Verdict.INCONCLUSIVE, _zero_objective_message(n, confidence)
    else:
        verdict = Verdict.INCONCLUSIVE
        estimate = samples_needed_for_rate(rate, max_rate, confidence)
        needed = None if estimate is None else max(n + 1, math.ceil(estimate * inflation))
        outcome = _undecided(needed, objective, confidence, "requests")
    bounds = _bounds(_percent(lower), _percent(upper), confidence, n)
    burst = "" if dispersion is None else dispersion.describe(n)
    if burst:
        bounds += f"; {burst}"
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
        detail=f"error rate {_percent(rate)} ({bounds}) {outcome}",
        samples_needed=needed,
        p_value=p_value,
        design_effect=None if dispersion is None else dispersion.factor,
    )


def _rate_burstiness(
    per_second: tuple[Sequence[int], Sequence[int]] | None,
    failures: int,
    n: int,
    confidence: float,
) -> Dispersion | None:
    """How bursty the failures were, from per-second ``(requests, failures)`` counts."""
    if per_second is None:
        return None
    requests, failed = per_second
    if sum(requests) != n or sum(failed) != failures:
        raise ValueError(
            f"per_second counts must add up to the phase's totals: {sum(failed)} of "
            f"{sum(requests)} per second vs failures={failures} of n={n}"
        )
    return rate_dispersion(requests, failed, confidence)


def _no_requests(name: str, phase: str, max_rate: float, confidence: float) -> SloResult:
    """INCONCLUSIVE: no request in the phase, and how many would decide it."""
    minimum = samples_needed_for_rate(0.0, max_rate, confidence)
    hint = (
        f"at least {minimum} requests are needed to show it is below {_percent(max_rate)}"
        if minimum is not None
        else _zero_objective_message(0, confidence)
        if max_rate == 0.0
        else f"no sample size can show it is below {_percent(max_rate)}"
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
        p_value=1.0,
    )


def evaluate_latency(
    name: str,
    phase: str,
    latencies_s: Samples,
    q: float,
    max_s: float,
    confidence: float,
    *,
    seconds: Sequence[int] | npt.NDArray[np.int64] | None = None,
) -> SloResult:
    """Judge a latency SLO: the ``q``-quantile of ``latencies_s`` against ``max_s`` seconds.

    PASS iff the one-sided upper bound of the quantile is below ``max_s``, FAIL iff the
    one-sided lower bound is above it (exact order-statistic bounds at ``confidence``).
    With too few samples for an upper bound the SLO cannot pass, but a lower bound
    above ``max_s`` still fails it. ``measured`` is the empirical quantile.

    ``seconds`` (the second of the phase in which each latency's request started) lets
    bursts of requests slower than ``max_s`` widen the bounds by their design effect
    (:func:`harness.slo.stats.quantile_dispersion` at the objective: the verdict is about
    the share of requests slower than it); the exact bounds stand when that share per
    second looks independent, or when no request is slower (nothing to see bursts in).

    >>> evaluate_latency("p50", "baseline", [0.01 * i for i in range(1, 101)], 0.5, 1.0, 0.95)
    ... # doctest: +ELLIPSIS
    SloResult(slo='p50', kind='latency', phase='baseline', verdict=<Verdict.PASS: 'PASS'>, ...)
    """
    values = _checked_latencies(latencies_s, q, max_s, confidence)
    n = int(values.size)
    dispersion: Dispersion | None = None
    if seconds is not None and n:
        dispersion = quantile_dispersion(latencies_s, seconds, q, confidence, threshold=max_s)
    label = f"p{q * 100:g}"
    if n == 0:
        return _no_latencies(name, phase, q, max_s, confidence)
    measured = empirical_quantile(values, q)
    lower, upper = dispersed_quantile_bounds(values, q, confidence, dispersion)
    needed: int | None = None
    if upper is not None and upper < max_s:
        verdict, outcome = Verdict.PASS, f"is within {_seconds(max_s)}"
    elif lower is not None and lower > max_s:
        verdict, outcome = Verdict.FAIL, f"exceeds {_seconds(max_s)}"
    else:
        verdict = Verdict.INCONCLUSIVE
        needed = _latency_samples_needed(values, q, max_s, measured, confidence)
        if needed is not None and dispersion is not None and dispersion.detected:
            needed = math.ceil(needed * n / dispersion.effective_n)
        outcome = _undecided(needed, _seconds(max_s), confidence, "samples")
    bounds = _bounds(
        None if lower is None else _seconds(lower),
        None if upper is None else _seconds(upper),
        confidence,
        n,
    )
    burst = "" if dispersion is None else dispersion.describe(n).replace("errors", "slow requests")
    if burst:
        bounds += f"; {burst}"
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
        detail=f"{label} {_seconds(measured)} ({bounds}) {outcome}",
        samples_needed=needed,
        p_value=quantile_fail_p_value(values, q, max_s, dispersion),
        design_effect=None if dispersion is None else dispersion.factor,
    )


def _checked_latencies(
    latencies_s: Samples, q: float, max_s: float, confidence: float
) -> npt.NDArray[np.float64]:
    """The latencies sorted, after checking the arguments of :func:`evaluate_latency`."""
    _check_confidence(confidence)
    if not 0.0 < q < 1.0:
        raise ValueError(f"the quantile must lie strictly between 0 and 1 (got {q!r}; p99 is 0.99)")
    if not max_s >= 0.0:
        raise ValueError(f"max_s must be a duration in seconds >= 0 (got {max_s!r})")
    values = np.sort(np.asarray(latencies_s, dtype=np.float64))
    if values.size and not (np.all(np.isfinite(values)) and values[0] >= 0.0):
        raise ValueError("latencies must be finite and non-negative seconds")
    return values


def _no_latencies(name: str, phase: str, q: float, max_s: float, confidence: float) -> SloResult:
    """INCONCLUSIVE: no successful request in the phase, and how many would decide it."""
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
            f"are needed for one-sided {confidence * 100:g}% bounds on p{q * 100:g}"
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
