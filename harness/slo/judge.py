"""Judge a finished run: every SLO of the scenario in each phase it covers, and the run.

The runner only orchestrates; once the phases are over it hands the journal and the request
samples here::

    journal.slos.extend(judge_slos(scenario.slos, journal, samples))
    journal.problems.extend(fault_problems(journal))
    journal.verdict, exit_code = verdict_of(journal)

Each SLO kind has one evaluator that takes its typed model; :func:`judge_slo` picks it with
``match`` (a new kind that is not handled fails the type check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import assert_never

import numpy as np
import numpy.typing as npt

from harness.errors import ExitCode
from harness.journal import Journal, PhaseWindow, RunVerdict, SloResult, Verdict
from harness.load.driver import Sample, SampleColumns, as_columns
from harness.scenario.models import (
    ConfigPropagationSlo,
    DeniedSlo,
    EjectionSlo,
    ErrorRateSlo,
    LatencyShiftSlo,
    LatencySlo,
    PlaintextRejectedSlo,
    RecoverySlo,
    RetryAmplificationSlo,
    SheddingSlo,
    Slo,
    SubsetErrorRateSlo,
    SubsetLatencySlo,
    TrafficShareSlo,
)
from harness.slo.family import adjust_family
from harness.slo.mesh import (
    evaluate_ejections,
    evaluate_recovery,
    evaluate_retry_amplification,
    evaluate_sheds,
    recovery_phases,
)
from harness.slo.propagation import evaluate_propagation
from harness.slo.security import evaluate_denied, evaluate_plaintext_rejected
from harness.slo.share import (
    SubsetTimings,
    evaluate_subset_error_rate,
    evaluate_subset_latency,
    evaluate_traffic_share,
)
from harness.slo.shift import evaluate_latency_shift
from harness.slo.verdict import evaluate_error_rate, evaluate_latency, per_second_counts

__all__ = [
    "RunEvidence",
    "fault_problems",
    "judge_slo",
    "judge_slos",
    "verdict_of",
]


@dataclass
class RunEvidence:
    """What the SLOs are judged on: the journal (phases, counters, timelines) and the
    samples as columns sorted by start, cut by phase on demand (views, no copies), and by
    Locust request name for an SLO with ``request`` (copies)."""

    journal: Journal
    samples: SampleColumns
    subset_timings: Mapping[tuple[str, str], SubsetTimings] = field(default_factory=dict)
    _by_phase: dict[tuple[str, str | None], SampleColumns] = field(default_factory=dict, init=False)

    @property
    def windows(self) -> dict[str, PhaseWindow]:
        return {window.name: window for window in self.journal.phases}

    def in_phase(self, phase: str, request: str | None = None) -> SampleColumns:
        """The requests that started in ``phase`` (none for a phase that did not run),
        only those named ``request`` when it is given."""
        key = (phase, request)
        if key not in self._by_phase:
            window = self.windows.get(phase)
            rows = (
                self.samples.rows(slice(0, 0))
                if window is None
                else self.samples.window(window.start, window.end)
            )
            self._by_phase[key] = rows if request is None else rows.rows(rows.named(request))
        return self._by_phase[key]

    def successful_latencies_s(
        self, phase: str, request: str | None = None
    ) -> npt.NDArray[np.float64]:
        in_phase = self.in_phase(phase, request)
        latencies: npt.NDArray[np.float64] = in_phase.latency_ms[in_phase.ok] / 1000.0
        return latencies  # corrected, from the intended starts


def judged_phases(slo: Slo, journal: Journal) -> list[str]:
    """The phases an SLO is judged in: its own list, else every phase (a shift: every one
    but its baseline; a recovery time: those in which a fault was reverted)."""
    names = [window.name for window in journal.phases]
    if slo.phases:
        return [phase for phase in slo.phases if phase in names]
    if isinstance(slo, LatencyShiftSlo):
        return [phase for phase in names if phase != slo.baseline]
    if isinstance(slo, RecoverySlo):
        return recovery_phases(journal)
    if isinstance(slo, ConfigPropagationSlo):  # one change, judged once, in its phase
        return [slo.change.phase] if slo.change.phase in names else []
    return names


def _error_rate(slo: ErrorRateSlo, phase: str, run: RunEvidence) -> SloResult:
    in_phase = run.in_phase(phase, slo.request)
    failed = ~in_phase.ok
    window = run.windows[phase]
    # Per-second counts let the verdict widen its bounds when errors come in bursts.
    per_second = per_second_counts(in_phase.t, failed, window.start, window.end)
    failures = int(np.count_nonzero(failed))
    return evaluate_error_rate(
        slo.name, phase, failures, len(in_phase), slo.max, slo.confidence, per_second=per_second
    )


def _latency(slo: LatencySlo, phase: str, run: RunEvidence) -> SloResult:
    latencies = run.successful_latencies_s(phase, slo.request)
    start = run.windows[phase].start
    in_phase = run.in_phase(phase, slo.request)
    seconds = (in_phase.t[in_phase.ok] - start).astype(np.int64)  # bursts of slow ones
    return evaluate_latency(
        slo.name, phase, latencies, slo.quantile, slo.max, slo.confidence, seconds=seconds
    )


def _latency_shift(slo: LatencyShiftSlo, phase: str, run: RunEvidence) -> SloResult:
    return evaluate_latency_shift(
        slo.name,
        phase,
        slo.baseline,
        run.successful_latencies_s(slo.baseline, slo.request),
        run.successful_latencies_s(phase, slo.request),
        slo.max,
        slo.confidence,
    )


def _retry_amplification(slo: RetryAmplificationSlo, phase: str, run: RunEvidence) -> SloResult:
    edge = slo.edge
    return evaluate_retry_amplification(
        slo.name, phase, run.journal, edge.from_, edge.to, slo.max, slo.confidence
    )


def _ejections(slo: EjectionSlo, phase: str, run: RunEvidence) -> SloResult:
    edge = slo.edge
    return evaluate_ejections(
        slo.name, phase, run.journal, edge.from_, edge.to, slo.min, slo.within, slo.confidence
    )


def _sheds(slo: SheddingSlo, phase: str, run: RunEvidence) -> SloResult:
    edge = slo.edge
    return evaluate_sheds(
        slo.name, phase, run.journal, edge.from_, edge.to, slo.min, slo.confidence
    )


def _recovery(slo: RecoverySlo, phase: str, run: RunEvidence) -> SloResult:
    return evaluate_recovery(slo.name, phase, run.journal, slo.max, slo.error_rate, slo.confidence)


def _unknown_request(
    slo: ErrorRateSlo | LatencySlo | LatencyShiftSlo, phase: str, run: RunEvidence
) -> SloResult | None:
    """INCONCLUSIVE when the SLO selects a request name the run never sent (a typo, or a
    task that never ran): names are known only once requests are made."""
    if slo.request is None or slo.request in run.samples.names:
        return None
    seen = ", ".join(repr(name) for name in run.samples.names) or "none"
    return SloResult.judged(
        slo.name,
        slo.kind,
        phase,
        Verdict.INCONCLUSIVE,
        measured=None,
        lower=None,
        upper=None,
        objective=float(slo.max),
        confidence=slo.confidence,
        n=0,
        unit="ratio" if isinstance(slo, ErrorRateSlo) else "s",
        detail=f"no request named {slo.request!r} in this run (names seen: {seen}); "
        "request must match the name= of the locustfile's requests (else their URL path)",
    )


def judge_slo(slo: Slo, phase: str, run: RunEvidence) -> SloResult:
    """One SLO in one phase."""
    if isinstance(slo, ErrorRateSlo | LatencySlo | LatencyShiftSlo):
        unknown = _unknown_request(slo, phase, run)
        if unknown is not None:
            return unknown
    match slo:
        case ErrorRateSlo():
            return _error_rate(slo, phase, run)
        case LatencySlo():
            return _latency(slo, phase, run)
        case LatencyShiftSlo():
            return _latency_shift(slo, phase, run)
        case RetryAmplificationSlo():
            return _retry_amplification(slo, phase, run)
        case EjectionSlo():
            return _ejections(slo, phase, run)
        case SheddingSlo():
            return _sheds(slo, phase, run)
        case SubsetErrorRateSlo():
            edge = (slo.edge.from_, slo.edge.to)
            return evaluate_subset_error_rate(
                slo.name, phase, run.journal, edge, slo.subset, slo.max, slo.confidence
            )
        case SubsetLatencySlo():
            return evaluate_subset_latency(
                slo.name,
                run.windows[phase],
                run.subset_timings,
                (slo.edge.from_, slo.edge.to),
                slo.subset,
                slo.quantile,
                slo.max,
                slo.confidence,
            )
        case TrafficShareSlo():
            edge = (slo.edge.from_, slo.edge.to)
            return evaluate_traffic_share(
                slo.name,
                phase,
                run.journal,
                edge,
                slo.subset,
                slo.share,
                slo.tolerance,
                slo.confidence,
            )
        case RecoverySlo():
            return _recovery(slo, phase, run)
        case ConfigPropagationSlo():
            return evaluate_propagation(slo, phase, run.journal)
        case DeniedSlo():
            return evaluate_denied(slo.name, phase, slo.probe, run.journal)
        case PlaintextRejectedSlo():
            return evaluate_plaintext_rejected(slo.name, phase, slo.probe, run.journal)
        case _:
            assert_never(slo)


def judge_slos(
    slos: Sequence[Slo],
    journal: Journal,
    samples: SampleColumns | Iterable[Sample],
    subset_timings: Mapping[tuple[str, str], SubsetTimings] | None = None,
) -> list[SloResult]:
    """Every SLO in each phase it covers, in the scenario's order, with family-wise FAIL
    control (Holm) over all the SLO × phase pairs (each keeps its own verdict beside).
    ``samples``: columns (what a run reads) or sample objects (small data, tests);
    ``subset_timings``: the access logs' per-subset requests (``subsetLatency``)."""
    run = RunEvidence(journal, as_columns(samples), dict(subset_timings or {}))
    results = [judge_slo(slo, phase, run) for slo in slos for phase in judged_phases(slo, journal)]
    return adjust_family(results)


def fault_problems(journal: Journal) -> list[str]:
    """What makes a run fail besides its SLOs: an abort, a fault without effect, a revert
    that could not be verified."""
    problems = []
    if journal.aborted:
        problems.append(f"run aborted: {journal.aborted}")
    for fault in journal.faults:
        if fault.took_effect is False:
            problems.append(fault.effect_message)
        if not fault.revert_verified:
            problems.append(f"fault {fault.name}: the revert could not be verified")
    return problems


def verdict_of(journal: Journal) -> tuple[RunVerdict, ExitCode]:
    """The run's verdict and exit code, from the journal alone."""
    if journal.status == "interrupted":
        return "INTERRUPTED", ExitCode.INTERRUPTED
    if journal.status != "completed":
        return "ERROR", ExitCode.ERROR
    verdicts = {entry.verdict for entry in journal.slos}
    if journal.problems or Verdict.FAIL in verdicts:
        return "FAIL", ExitCode.FAILED
    if Verdict.INCONCLUSIVE in verdicts:
        return "INCONCLUSIVE", ExitCode.INCONCLUSIVE
    return "PASS", ExitCode.PASSED
