"""Verdicts on what the mesh did: retry amplification, ejections, sheds, recovery time.

These read the run's journal, not samples: Envoy's counters are exact counts of the whole
population, so there is no sampling uncertainty to bound. What can still be uncertain is
*when* something happened (the mesh timeline is sampled about once a second, the load
timeline has one-second buckets) and whether the data is there at all; both give
INCONCLUSIVE with the reason, never a guess.

* ``retryAmplification``: attempts per first try on an edge in the phase,
  ``upstream_rq_total / (upstream_rq_total - upstream_rq_retry)``; PASS iff ``<= max``.
* ``ejections``: outlier ejections (``outlier_detection.ejections_enforced_total``) on the
  edge, at least ``min``; with ``within``, inside that many seconds of the phase's first
  fault injection (or of the phase start when it has no fault). When too few happened but
  Envoy refused ejections it had decided on because ``maxEjectionPercent`` was reached
  (``outlier_detection.ejections_overflow``), the message says so with the numbers: the
  detector tripped, the cap held it back.
* ``sheds``: requests the circuit breaker **rejected** on the edge, at least ``min``:
  ``upstream_rq_pending_overflow`` (the pending queue of an HTTP/1.1 pool was full, or an
  HTTP/2 pool reached ``max_requests``: Envoy counts both there, and answers 503 with the
  response flag ``UO``) plus ``upstream_rq_retry_overflow`` (a retry the breaker refused).
  ``upstream_cx_overflow`` is *not* a shed: for HTTP/1.1 a request that finds every
  connection taken waits in the pending queue and is usually served; it is reported as
  queueing beside the verdict.
* ``recoveryTime``: from the last fault revert until the per-second ingress error rate is
  at or below ``errorRate`` for :data:`RECOVERY_STREAK_S` consecutive seconds; PASS iff
  that takes at most ``max``.

Each evaluator takes the journal and returns a :class:`~harness.slo.verdict.SloResult`::

    result = evaluate_retry_amplification("amp", "fault", journal, "frontend", "catalog", 1.5)
    result.verdict, result.measured     # (<Verdict.PASS: 'PASS'>, 1.2): 1200 attempts, 200 retries
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.formats import percent_short as _percent
from harness.formats import seconds as _seconds
from harness.journal import SloResult, Verdict
from harness.mesh.stats import (
    ATTEMPTS,
    EJECTION_COUNTERS,
    EJECTION_OVERFLOW,
    EJECTIONS,
    EJECTIONS_DETECTED_5XX,
    EJECTIONS_DETECTED_GATEWAY,
    QUEUEING,
    RETRIES,
    SHED_COUNTERS,
    SHEDS,
)

if TYPE_CHECKING:
    from harness.journal import Journal, PhaseWindow

__all__ = [
    "EJECTIONS",
    "EJECTION_COUNTERS",
    "EJECTION_OVERFLOW",
    "QUEUEING",
    "RECOVERY_STREAK_S",
    "SHEDS",
    "SHED_COUNTERS",
    "blocked_ejections",
    "evaluate_ejections",
    "evaluate_recovery",
    "evaluate_retry_amplification",
    "evaluate_sheds",
    "recovery_phases",
]

EJECTIONS_DETECTED = {
    EJECTIONS_DETECTED_5XX: "consecutive 5xx",
    EJECTIONS_DETECTED_GATEWAY: "consecutive gateway errors",
}
"""Ejections the detector decided on (enforced or not), by reason."""
ENVOY_DEFAULT_MAX_EJECTION_PERCENT = 10
"""Envoy's default, which Istio keeps when ``maxEjectionPercent`` is unset."""
RECOVERY_STREAK_S = 3
"""Consecutive good seconds after which the error rate counts as recovered."""

_EPSILON_S = 1e-6  # clock rounding in the journal's times


def _window(journal: Journal, phase: str) -> PhaseWindow:
    for window in journal.phases:
        if window.name == phase:
            return window
    names = ", ".join(w.name for w in journal.phases) or "none"
    raise ValueError(f"phase {phase!r} is not in the journal (its phases: {names})")


def _edge_counters(
    journal: Journal, phase: str, caller: str, callee: str
) -> tuple[dict[str, int] | None, str]:
    """The edge's counter increases in the phase, or ``None`` and why they are missing."""
    for edge in journal.edges:
        if edge.caller == caller and edge.callee == callee:
            counters = edge.phases.get(phase)
            if counters is None:
                return None, f"the journal has no counters of {caller} → {callee} for this phase"
            return counters, ""
    seen = ", ".join(f"{e.caller} → {e.callee}" for e in journal.edges) or "none"
    return None, (
        f"no Envoy counters were recorded for the edge {caller} → {callee} (no traffic on it, "
        f"or it is not an edge of this app); edges with counters: {seen}"
    )


# --------------------------------------------------------------------------- amplification


def evaluate_retry_amplification(
    name: str,
    phase: str,
    journal: Journal,
    caller: str,
    callee: str,
    max_ratio: float,
    confidence: float = 0.95,
) -> SloResult:
    """Judge ``retryAmplification``: upstream attempts per first try on ``caller → callee``.

    A count ratio over every request of the phase, so there is no interval (``lower`` and
    ``upper`` equal ``measured``); ``n`` is the number of first tries. INCONCLUSIVE when
    the edge had no traffic or no counters.
    """
    _window(journal, phase)
    counters, missing = _edge_counters(journal, phase, caller, callee)

    def result(verdict: Verdict, ratio: float | None, n: int, message: str) -> SloResult:
        return SloResult.judged(
            name,
            "retryAmplification",
            phase,
            verdict,
            measured=ratio,
            lower=ratio,
            upper=ratio,
            objective=max_ratio,
            confidence=confidence,
            n=n,
            unit="factor",
            detail=message,
        )

    if counters is None:
        return result(Verdict.INCONCLUSIVE, None, 0, missing)
    attempts = counters.get(ATTEMPTS, 0)
    retries = counters.get(RETRIES, 0)
    requests = attempts - retries
    if requests <= 0:
        return result(
            Verdict.INCONCLUSIVE,
            None,
            0,
            f"no traffic on the edge {caller} → {callee} in this phase "
            f"({attempts} attempts, {retries} retries)",
        )
    ratio = attempts / requests
    detail = (
        f"retry amplification {caller} → {callee} {ratio:.3g}× "
        f"({attempts} attempts for {requests} requests, {retries} retries)"
    )
    if ratio <= max_ratio:
        return result(Verdict.PASS, ratio, requests, f"{detail} is within {max_ratio:g}×")
    return result(Verdict.FAIL, ratio, requests, f"{detail} exceeds {max_ratio:g}×")


# --------------------------------------------------------------------------- sheds


def evaluate_sheds(
    name: str,
    phase: str,
    journal: Journal,
    caller: str,
    callee: str,
    minimum: int,
    confidence: float = 0.95,
) -> SloResult:
    """Judge ``sheds``: at least ``minimum`` requests rejected by the circuit breaker on
    ``caller → callee`` in the phase (:data:`SHEDS`: pending overflows, which include
    HTTP/2 ``max_requests`` overflows, and retry overflows). Connection overflows
    (:data:`QUEUEING`) only queue a request; they are named in the message but not counted.
    INCONCLUSIVE when the edge had no counters, or no traffic and no sheds."""
    _window(journal, phase)
    counters, missing = _edge_counters(journal, phase, caller, callee)

    def result(verdict: Verdict, sheds: int | None, n: int, message: str) -> SloResult:
        return SloResult.judged(
            name,
            "sheds",
            phase,
            verdict,
            measured=sheds,
            lower=sheds,
            upper=sheds,
            objective=minimum,
            confidence=confidence,
            n=n,
            unit="count",
            detail=message,
        )

    if counters is None:
        return result(Verdict.INCONCLUSIVE, None, 0, missing)
    pending, retries = (counters.get(stat, 0) for stat in SHEDS)
    queued = counters.get(QUEUEING, 0)
    sheds = pending + retries
    attempts = counters.get(ATTEMPTS, 0)
    detail = (
        f"{sheds} request{'' if sheds == 1 else 's'} rejected by the circuit breaker on "
        f"{caller} → {callee} ({pending} upstream_rq_pending_overflow: pending queue or "
        f"max_requests full, answered 503 UO; {retries} upstream_rq_retry_overflow: retries "
        f"refused; {attempts} attempts)"
    )
    if queued:
        detail += (
            f"; {queued} upstream_cx_overflow: maxConnections reached, those requests queued "
            "for a connection (queueing, not shedding)"
        )
    if sheds >= minimum:
        return result(Verdict.PASS, sheds, attempts, f"{detail}; at least {minimum} expected")
    if attempts == 0:
        return result(
            Verdict.INCONCLUSIVE, sheds, 0, f"no traffic on the edge {caller} → {callee}: {detail}"
        )
    return result(Verdict.FAIL, sheds, attempts, f"{detail}; at least {minimum} expected")


# --------------------------------------------------------------------------- ejections


def _ejections(count: int) -> str:
    return f"{count} outlier ejection{'' if count == 1 else 's'}"


def _caller_proxy(caller: str, proxy: str) -> bool:
    return proxy == caller or re.fullmatch(rf"{re.escape(caller)}-\d+", proxy) is not None


def _ejection_intervals(
    journal: Journal, caller: str, callee: str
) -> list[tuple[float, float, int]] | None:
    """``(after, by, ejections)`` per mesh-timeline sample, in seconds since the load
    started: the ejections happened in ``(after, by]``. ``None`` without a timeline."""
    mesh = journal.mesh_timeline
    if mesh is None or journal.load_started_at is None or not mesh.t:
        return None
    values: Sequence[int] | None = None
    for series in mesh.edges:
        if series.caller == caller and series.callee == callee:
            values = series.counters.get(EJECTIONS)
            if values is None:
                return None  # the sampler did not read this counter
    if values is None:
        if not any(EJECTIONS in series.counters for series in mesh.edges):
            return None
        values = [0] * len(mesh.t)  # sampled, but this edge's counters never moved
    # A caller proxy that did not answer at a sample has its increase counted at its next
    # good sample: the interval then reaches back to the last sample it answered.
    missed = {
        t for proxy, times in mesh.gaps.items() if _caller_proxy(caller, proxy) for t in times
    }
    intervals = []
    after = 0.0
    for by, value in zip(mesh.t, values, strict=False):
        intervals.append((after, by, value))
        if by not in missed:
            after = by
    return intervals


def _ejection_anchor(journal: Journal, phase: str, window: PhaseWindow) -> tuple[float, str]:
    """Where a ``within`` window starts (seconds since the load started), and its name:
    the phase's first fault injection, or the phase start when it injected none."""
    injected = [
        fault.injected_at
        for fault in journal.faults
        if fault.phase == phase and fault.injected_at is not None
    ]
    t0 = journal.load_started_at or 0.0
    if injected:
        return min(injected) - t0, "the first fault injection"
    return window.start - t0, "the phase start"


def _count_in_window(
    intervals: Sequence[tuple[float, float, int]],
    phase: tuple[float, float],
    window: tuple[float, float],
) -> tuple[float | None, int, int]:
    """When ejections were first seen in the phase, and how many surely / possibly fell in
    ``window`` (a sample interval that straddles an edge counts only as possible)."""
    first = None
    sure = possible = 0
    (phase_start, phase_end), (start, deadline) = phase, window
    for after, by, value in intervals:
        in_phase = phase_start + _EPSILON_S < by <= phase_end + _EPSILON_S
        if value and first is None and in_phase:
            first = by
        if after >= start - _EPSILON_S and by <= deadline + _EPSILON_S:
            sure += value
        if by > start + _EPSILON_S and after < deadline - _EPSILON_S:
            possible += value
    return first, sure, possible


def _first_seen(first: float | None, timed: bool, anchor: float, anchor_label: str) -> str:
    if first is not None:
        return f"first seen by {first - anchor:+.1f}s after {anchor_label} (sampled about 1/s)"
    return "none seen in the mesh timeline" if timed else "no per-second mesh timeline to time them"


def _timed_verdict(
    sure: int, possible: int, minimum: int, where: str
) -> tuple[Verdict, int, int, str]:
    """The verdict on ejections timed by the mesh timeline: ``sure`` of them inside the
    window, ``possible`` counting samples that straddle its edges."""
    counted = (
        f"{_ejections(sure)} {where}"
        if sure == possible
        else f"{sure}–{possible} outlier ejections {where} "
        "(some fall in a sample that straddles the window's edge)"
    )
    if sure >= minimum:
        return Verdict.PASS, sure, possible, f"{counted}; at least {minimum} expected"
    if possible < minimum:
        return Verdict.FAIL, sure, possible, f"{counted}; at least {minimum} expected"
    return (
        Verdict.INCONCLUSIVE,
        sure,
        possible,
        f"{counted}; cannot tell whether at least {minimum} fell inside at the timeline's "
        "one-second resolution",
    )


def _max_ejection_percent(journal: Journal, callee: str) -> tuple[int, str]:
    """The callee's ``maxEjectionPercent`` from the scenario, and where it came from."""
    mesh = journal.scenario.get("mesh")
    destinations = mesh.get("destinations") if isinstance(mesh, dict) else None
    destination = destinations.get(callee) if isinstance(destinations, dict) else None
    outlier = destination.get("outlierDetection") if isinstance(destination, dict) else None
    value = outlier.get("maxEjectionPercent") if isinstance(outlier, dict) else None
    if isinstance(value, int) and value > 0:
        return value, "the scenario's outlierDetection"
    return (
        ENVOY_DEFAULT_MAX_EJECTION_PERCENT,
        "unset: Envoy's and Istio's default",
    )


def _endpoints_of(journal: Journal, callee: str) -> int | None:
    """How many instances of ``callee`` the mesh timeline saw (None without one)."""
    mesh = journal.mesh_timeline
    if mesh is None or not mesh.endpoints:
        return None
    names = {key.partition("→")[2] for key in mesh.endpoints}
    found = {n for n in names if re.fullmatch(rf"{re.escape(callee)}-\d+", n)}
    return len(found) or None


def blocked_ejections(journal: Journal, counters: dict[str, int] | None, callee: str) -> str | None:
    """Why ejections the detector wanted did not happen, with the numbers; ``None`` when
    ``maxEjectionPercent`` blocked none (``outlier_detection.ejections_overflow`` is 0).

    Envoy ejects a host only if the ejected share *after* ejecting it stays within
    ``maxEjectionPercent``; otherwise it counts ``ejections_overflow`` and ejects nothing.
    """
    if counters is None:
        return None
    overflow = counters.get(EJECTION_OVERFLOW, 0)
    if overflow <= 0:
        return None
    detected = [
        f"{counters[stat]} for {reason}"
        for stat, reason in EJECTIONS_DETECTED.items()
        if counters.get(stat, 0) > 0
    ]
    percent, source = _max_ejection_percent(journal, callee)
    endpoints = _endpoints_of(journal, callee)
    share = ""
    if endpoints:
        share = (
            f"; with {endpoints} endpoints one ejection is {100 / endpoints:.0f}% of the pool"
            + (", already above the cap" if 100 / endpoints > percent else "")
        )
    return (
        "ejections were due but blocked: Envoy's detector decided to eject"
        + (f" ({', '.join(detected)})" if detected else "")
        + f" and refused {overflow} ejection{'' if overflow == 1 else 's'} "
        f"(outlier_detection.ejections_overflow) because maxEjectionPercent {percent}% "
        f"({source}) was reached{share}; raise maxEjectionPercent to let it eject"
    )


def evaluate_ejections(
    name: str,
    phase: str,
    journal: Journal,
    caller: str,
    callee: str,
    minimum: int,
    within_s: float | None = None,
    confidence: float = 0.95,
) -> SloResult:
    """Judge ``ejections``: at least ``minimum`` outlier ejections on ``caller → callee``
    during the phase and, with ``within_s``, within that many seconds of the phase's first
    fault injection (of the phase start when the phase injected no fault).

    The phase total comes from the counter snapshots at the phase boundaries; the timing
    from the mesh timeline. A sample can straddle the deadline, so ``lower`` counts the
    ejections surely inside the window and ``upper`` those possibly inside: PASS iff
    ``lower >= minimum``, FAIL iff ``upper < minimum`` (or the whole phase had too few),
    INCONCLUSIVE otherwise, and when ``within`` is set but there is no mesh timeline.
    ``measured`` is ``lower``.
    """
    window = _window(journal, phase)
    counters, missing = _edge_counters(journal, phase, caller, callee)
    total = None if counters is None else counters.get(EJECTIONS, 0)
    intervals = _ejection_intervals(journal, caller, callee)
    t0 = journal.load_started_at or 0.0
    anchor, anchor_label = _ejection_anchor(journal, phase, window)
    phase_end = window.end - t0
    deadline = phase_end if within_s is None else min(anchor + within_s, phase_end)
    # Only ejections inside the phase count, also when the window starts at the fault.
    start = anchor if within_s is not None else window.start - t0
    first, sure, possible = _count_in_window(
        intervals or [], (window.start - t0, phase_end), (start, deadline)
    )
    when = _first_seen(first, intervals is not None, anchor, anchor_label)
    scope = "in the phase" if within_s is None else f"within {_seconds(within_s)} of {anchor_label}"
    attempts = None if counters is None else counters.get(ATTEMPTS, 0)

    def result(verdict: Verdict, low: int | None, high: int | None, message: str) -> SloResult:
        return SloResult.judged(
            name,
            "ejections",
            phase,
            verdict,
            measured=low,
            lower=low,
            upper=high,
            objective=minimum,
            confidence=confidence,
            n=attempts or 0,
            unit="count",
            detail=f"{message}; {when}",
        )

    edge = f"{caller} → {callee}"
    blocked = blocked_ejections(journal, counters, callee)
    expected = f"at least {minimum} expected {scope}" + ("" if blocked is None else f"; {blocked}")
    if total is not None and total < minimum:
        if attempts == 0:
            return result(
                Verdict.INCONCLUSIVE, total, total, f"no traffic on the edge {edge} in this phase"
            )
        return result(
            Verdict.FAIL,
            total,
            total,
            f"{_ejections(total)} on {edge} in the whole phase; {expected}",
        )
    if within_s is None and total is not None:
        return result(Verdict.PASS, total, total, f"{_ejections(total)} on {edge}; {expected}")
    if intervals is None:
        reason = missing if total is None else f"{_ejections(total)} on {edge} in the phase"
        untimed = f"{reason}, but no per-second mesh timeline to tell whether {expected}"
        return result(Verdict.INCONCLUSIVE, None, total, untimed)
    verdict, low, high, message = _timed_verdict(sure, possible, minimum, f"on {edge} {scope}")
    if verdict is Verdict.FAIL and blocked is not None:
        message += f"; {blocked}"
    return result(verdict, low, high, message)


# --------------------------------------------------------------------------- recovery


def recovery_phases(journal: Journal) -> list[str]:
    """The phases a ``recoveryTime`` SLO judges by default: those in which a fault was
    reverted (a revert at a phase's end belongs to the next phase); without any revert,
    the phase after the last fault's (the last phase when there is none)."""
    windows = journal.phases
    names = [w.name for w in windows]
    chosen: set[str] = set()
    for fault in journal.faults:
        if fault.reverted_at is None:
            continue
        later = [w.name for w in windows if fault.reverted_at < w.end - _EPSILON_S]
        chosen.add(later[0] if later else names[-1])
    if chosen:
        return [n for n in names if n in chosen]
    fault_phases = [names.index(f.phase) for f in journal.faults if f.phase in names]
    if not names:
        return []
    if not fault_phases:
        return [names[-1]]
    return [names[min(max(fault_phases) + 1, len(names) - 1)]]


def _nothing_to_recover(journal: Journal) -> str:
    """Why a phase without a fault revert before its end cannot judge a recovery."""
    if any(f.reverted_at is not None for f in journal.faults):
        return (
            "the faults were reverted only after this phase ended; judge recovery in a "
            "later phase, or add one after the fault"
        )
    return "no fault was reverted before this phase ended, so there is nothing to recover from"


def _first_good_streak(
    seconds: Sequence[tuple[float, int, int]], error_rate: float
) -> tuple[int, float] | None:
    """``(index of its last second, start)`` of the first :data:`RECOVERY_STREAK_S`
    seconds in a row with requests and an error rate at or below ``error_rate``."""
    streak = 0
    for index, (_, achieved, errors) in enumerate(seconds):
        good = achieved > 0 and errors <= error_rate * achieved
        streak = streak + 1 if good else 0
        if streak == RECOVERY_STREAK_S:
            return index, seconds[index - RECOVERY_STREAK_S + 1][0]
    return None


_NO_LOAD_TIMELINE = "the journal has no per-second load timeline to measure recovery with"


def _not_recovered(
    seconds: Sequence[tuple[float, int, int]], revert: float, max_s: float, target: str
) -> tuple[Verdict, float, str]:
    """No good streak in the phase: FAIL when the data covered ``max_s`` plus a streak,
    else INCONCLUSIVE; with how long it was observed and why."""
    observed = (seconds[-1][0] + 1.0 - revert) if seconds else 0.0
    still = ""
    if seconds:
        _, achieved, errors = seconds[-1]
        still = f" (last second: {errors}/{achieved} failed)"
    # A streak starting by revert + max_s ends RECOVERY_STREAK_S seconds later.
    if observed >= max_s + RECOVERY_STREAK_S:
        return (
            Verdict.FAIL,
            observed,
            f"not recovered {_seconds(observed)} after the last fault revert{still}: no "
            f"{target} started within {_seconds(max_s)}",
        )
    return (
        Verdict.INCONCLUSIVE,
        observed,
        f"not recovered yet when the phase ended {_seconds(observed)} after the last fault "
        f"revert{still}; a phase of at least {_seconds(max_s + RECOVERY_STREAK_S)} after "
        "the fault would decide it",
    )


def evaluate_recovery(
    name: str,
    phase: str,
    journal: Journal,
    max_s: float,
    error_rate: float,
    confidence: float = 0.95,
) -> SloResult:
    """Judge ``recoveryTime`` in ``phase``: the seconds from the last fault revert before
    the phase ended until the per-second ingress error rate is at or below ``error_rate``
    for :data:`RECOVERY_STREAK_S` consecutive seconds (a second without requests breaks
    the streak: no evidence of recovery).

    Seconds are the load timeline's one-second buckets: only whole buckets after the
    revert and before the phase end are read, and the recovery time is the start of the
    first good one minus the revert time. PASS iff it is at most ``max_s``; FAIL if it
    is later, or if no streak starts in time although the data covers ``max_s`` plus the
    streak (``lower`` is then how long it was observed not to recover); INCONCLUSIVE when
    the phase or run ended too soon to tell, or the data is missing.
    """
    window = _window(journal, phase)

    def result(
        verdict: Verdict, measured: float | None, lower: float | None, n: int, message: str
    ) -> SloResult:
        return SloResult.judged(
            name,
            "recoveryTime",
            phase,
            verdict,
            measured=measured,
            lower=lower,
            upper=measured,
            objective=max_s,
            confidence=confidence,
            n=n,
            unit="s",
            detail=message,
        )

    reverts = [
        fault.reverted_at
        for fault in journal.faults
        if fault.reverted_at is not None and fault.reverted_at < window.end - _EPSILON_S
    ]
    if not reverts:
        return result(Verdict.INCONCLUSIVE, None, None, 0, _nothing_to_recover(journal))
    timeline = journal.timeline
    if timeline is None or journal.load_started_at is None:
        return result(Verdict.INCONCLUSIVE, None, None, 0, _NO_LOAD_TIMELINE)
    t0 = journal.load_started_at
    revert = max(reverts) - t0
    phase_end = window.end - t0
    seconds = [
        (t, achieved, errors)
        for t, achieved, errors in zip(timeline.t, timeline.achieved, timeline.errors, strict=False)
        if t >= revert - _EPSILON_S and t + 1.0 <= phase_end + _EPSILON_S
    ]
    limit = f"{error_rate:.3g}" if error_rate == 0 else _percent(error_rate)
    target = f"the error rate back at or below {limit} for {RECOVERY_STREAK_S} s in a row"
    recovered = _first_good_streak(seconds, error_rate)
    if recovered is not None:
        index, start = recovered
        taken = max(0.0, start - revert)
        head = f"recovered {_seconds(taken)} after the last fault revert ({target})"
        if taken <= max_s:
            return result(
                Verdict.PASS, taken, taken, index + 1, f"{head}; within {_seconds(max_s)}"
            )
        return result(Verdict.FAIL, taken, taken, index + 1, f"{head}; exceeds {_seconds(max_s)}")
    verdict, observed, message = _not_recovered(seconds, revert, max_s, target)
    return result(verdict, None, observed, len(seconds), message)
