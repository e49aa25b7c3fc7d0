"""The ``latencyShift`` verdict: how much slower a phase is than its baseline.

The shift is the Hodges-Lehmann estimate (the median of all differences ``phase -
baseline`` of successful latencies) with the distribution-free one-sided bounds that come
from the Mann-Whitney U distribution (:func:`harness.slo.stats.hodges_lehmann_shift`).
The decision rule is that of :mod:`harness.slo.verdict`: PASS iff the upper bound is
below ``max``, FAIL iff the lower bound is above it, INCONCLUSIVE otherwise with roughly
how many latencies per phase would decide it.

The bounds assume the phase's latencies are the baseline's moved by a constant (the
usual location-shift model). When a fault changes the shape instead (a slow tail on 5% of
requests), the shift measures the typical request, not the tail: use a ``latency`` SLO on
the quantile for tails.

>>> base = [0.010 + 0.001 * i for i in range(50)]
>>> result = evaluate_latency_shift("slower", "fault", "baseline", base,
...                                 [v + 0.100 for v in base], 0.050, 0.95)
>>> result.verdict, round(result.measured, 3)
(<Verdict.FAIL: 'FAIL'>, 0.1)
"""

from __future__ import annotations

import numpy as np

from harness.formats import seconds
from harness.journal import SloResult, Verdict
from harness.slo.stats import (
    Samples,
    ShiftInterval,
    fewest_samples_for_shift,
    hodges_lehmann_shift,
    samples_needed_for_shift,
    shift_fail_p_value,
)
from harness.slo.verdict import _check_confidence, _undecided

__all__ = ["evaluate_latency_shift"]


def _signed_seconds(value: float) -> str:
    return ("+" if value > 0 else "-" if value < 0 else "") + seconds(abs(value))


def _shift_bounds(shift: ShiftInterval, level: str, sizes: str) -> str:
    if shift.lower is None or shift.upper is None:
        return f"too few samples for {level} bounds, {sizes}"
    method = "exact" if shift.exact else "normal-approximation"
    return (
        f"{level} {method} Mann\u2013Whitney bounds {_signed_seconds(shift.lower)}"
        f"\u2013{_signed_seconds(shift.upper)}, {sizes}"
    )


def evaluate_latency_shift(
    name: str,
    phase: str,
    baseline: str,
    baseline_latencies_s: Samples,
    phase_latencies_s: Samples,
    max_s: float,
    confidence: float,
) -> SloResult:
    """Judge a ``latencyShift`` SLO: the shift of ``phase_latencies_s`` over
    ``baseline_latencies_s`` (phase ``baseline``) against ``max_s`` seconds.

    ``measured`` is the Hodges-Lehmann estimate (negative when the phase is faster),
    ``lower`` / ``upper`` its one-sided bounds at ``confidence``, ``n`` the number of
    latencies in the phase (the baseline's count is in the message) and
    ``samples_needed`` the latencies per phase that would likely decide it.
    """
    _check_confidence(confidence)
    if not np.isfinite(max_s):
        raise ValueError(f"max_s must be a finite duration in seconds (got {max_s!r})")
    x = np.asarray(baseline_latencies_s, dtype=np.float64)
    y = np.asarray(phase_latencies_s, dtype=np.float64)
    level = f"one-sided {confidence * 100:g}%"

    def result(
        verdict: Verdict,
        measured: float | None,
        lower: float | None,
        upper: float | None,
        message: str,
        needed: int | None,
    ) -> SloResult:
        return SloResult.judged(
            name,
            "latencyShift",
            phase,
            verdict,
            measured=measured,
            lower=lower,
            upper=upper,
            objective=max_s,
            confidence=confidence,
            n=int(y.size),
            unit="s",
            detail=message,
            samples_needed=needed,
            p_value=1.0 if measured is None else shift_fail_p_value(x, y, max_s),
        )

    if x.size == 0 or y.size == 0:
        empty = [label for label, v in ((baseline, x), (phase, y)) if v.size == 0]
        fewest = fewest_samples_for_shift(confidence)
        return result(
            Verdict.INCONCLUSIVE,
            None,
            None,
            None,
            f"no successful latencies in {' and '.join(empty)} to compare; at least "
            f"{fewest} per phase are needed for {level} bounds on the shift",
            fewest,
        )
    shift = hodges_lehmann_shift(x, y, confidence)
    objective = seconds(max_s)
    needed: int | None = None
    if shift.upper is not None and shift.upper < max_s:
        verdict, outcome = Verdict.PASS, f"is within {objective}"
    elif shift.lower is not None and shift.lower > max_s:
        verdict, outcome = Verdict.FAIL, f"exceeds {objective}"
    else:
        verdict = Verdict.INCONCLUSIVE
        needed = samples_needed_for_shift(shift, max_s)
        outcome = _undecided(needed, objective, confidence, "latencies per phase")
    bounds = _shift_bounds(shift, level, f"n={y.size} vs {x.size} in {baseline}")
    message = (
        f"latency shift vs {baseline} {_signed_seconds(shift.estimate)} "
        f"(Hodges\u2013Lehmann; {bounds}) {outcome}"
    )
    return result(verdict, shift.estimate, shift.lower, shift.upper, message, needed)
