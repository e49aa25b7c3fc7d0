"""Family-wise FAIL control across a scenario's SLO × phase pairs (Holm's step-down).

Each statistical verdict (``errorRate``, ``latency``, ``latencyShift``) FAILs a healthy
pair with probability at most ``1 - confidence``, but a scenario judges many pairs: with
``m`` of them at 95% a healthy system would fail *somewhere* with probability up to
``1 - 0.95**m`` (18.5% at m = 4, 46% at 12). :func:`adjust_family` keeps a FAIL only if it
survives Holm's step-down adjustment of the pairs' p-values, which bounds the chance of
*any* false FAIL in the scenario by ``1 - confidence`` whatever the dependence between the
pairs (Holm 1979; uniformly more powerful than Bonferroni).

* A FAIL that does not survive becomes INCONCLUSIVE, and its message says why, with the
  per-pair and the adjusted p-value; ``pair_verdict`` keeps the per-pair verdict, so the
  journal and the report still show it.
* PASS needs no adjustment: the run passes only when *every* pair passes, an
  intersection-union test, so the run's false-PASS rate is already at most that of one
  pair (``1 - confidence``).
* Counter-based verdicts (retry amplification, ejections, sheds, recovery time) are exact
  counts, not tests (``p_value`` is ``None``): they are outside the family and unchanged.

>>> from harness.slo.verdict import evaluate_error_rate
>>> pairs = [evaluate_error_rate("e", phase, 7, 300, 0.01, 0.95) for phase in "abcd"]
>>> [r.verdict.value for r in pairs], [r.verdict.value for r in adjust_family(pairs)]
(['FAIL', 'FAIL', 'FAIL', 'FAIL'], ['INCONCLUSIVE', 'INCONCLUSIVE', 'INCONCLUSIVE', 'INCONCLUSIVE'])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from harness.slo.verdict import SloResult, Verdict

__all__ = ["TOLERANCE", "adjust_family", "holm_adjusted"]

TOLERANCE = 1e-9
"""Relative slack when comparing a p-value with ``1 - confidence``: exact tail
probabilities such as 1/20 must still meet alpha = 0.05 after floating-point sums."""


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the input order: the ``i``-th smallest (0-based) is
    multiplied by ``m - i``, then made non-decreasing along that order and capped at 1.

    >>> holm_adjusted([0.01, 0.04, 0.03, 0.5])
    [0.04, 0.09, 0.09, 0.5]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def adjust_family(results: Sequence[SloResult]) -> list[SloResult]:
    """The results with Holm's family-wise FAIL control applied across every pair that has
    a p-value; the others are returned unchanged. Pure: returns new results, in order.

    Members get ``pair_verdict`` (their own verdict) and ``family_size``; a FAIL whose
    adjusted p-value exceeds its ``1 - confidence`` becomes INCONCLUSIVE.
    """
    members = [i for i, r in enumerate(results) if r.p_value is not None]
    m = len(members)
    if m == 0:
        return list(results)
    adjusted = holm_adjusted([results[i].p_value or 0.0 for i in members])
    out = list(results)
    for index, p_adjusted in zip(members, adjusted, strict=True):
        result = results[index]
        p_value = result.p_value or 0.0
        alpha = 1.0 - result.confidence
        verdict = result.verdict
        message = result.message
        needed = result.samples_needed
        if verdict is Verdict.FAIL and m > 1:
            family = f"Holm's family-wise adjustment over {m} SLO × phase pairs"
            if p_adjusted <= alpha * (1.0 + TOLERANCE):
                message += f"; still FAIL after {family} (adjusted p={p_adjusted:.2g})"
            else:
                verdict = Verdict.INCONCLUSIVE
                message += (
                    f"; FAIL on its own (p={p_value:.2g}) but not after {family} (adjusted "
                    f"p={p_adjusted:.2g} > {alpha:g}), so INCONCLUSIVE: more samples, or "
                    "fewer SLO × phase pairs, would decide it"
                )
        out[index] = dataclasses.replace(
            result,
            verdict=verdict,
            message=message,
            samples_needed=needed,
            pair_verdict=result.verdict,
            family_size=m,
        )
    return out
