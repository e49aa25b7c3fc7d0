"""``configPropagation``: did a policy change made during a control-plane outage reach every
proxy within ``max`` once the outage ended?

Istio's promise is eventual: istiod pushes the configuration the API server holds to every
connected proxy, and a proxy that reconnects (to a restarted istiod, or after a partition)
gets it whole. So the clock starts at the moment the change *could* propagate: when the
scenario asked for it (``change.phase`` + ``change.at``), or, if a ``controlPlane`` fault
of the run was acting then, when that fault's revert began (istiod or the API server
started again, the cut lifted). It stops when istiod's ``/debug/syncz`` shows every
affected proxy SYNCED with a newer configuration whose routes hold the change (read back
from each Envoy's config dump; :mod:`harness.faults.config_change` watches).

One change, one measurement: the verdict is exact (no interval). A change not SYNCED
everywhere by the end of the run's last phase FAILs (the outage lasted to the end, or the
change never arrived); one that could not be written at all (the API server never came
back) FAILs too, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.formats import seconds
from harness.journal import ConfigChangeRecord, FaultEntry, Journal, SloResult, Verdict
from harness.scenario.models import ConfigPropagationSlo

__all__ = ["evaluate_propagation", "propagation_start", "record_of"]


def _outages(faults: Sequence[FaultEntry]) -> list[tuple[float, float]]:
    """(start, end) of every control-plane fault that was injected; the end is when its
    revert began (restart, resume or the cut lifted), or never when it was not reverted."""
    windows = []
    for fault in faults:
        if fault.kind != "controlPlane" or fault.injected_at is None:
            continue
        end = fault.detail.get("revert_started_at", fault.reverted_at)
        windows.append((fault.injected_at, float("inf") if end is None else float(end)))
    return sorted(windows)


def propagation_start(due_at: float, faults: Sequence[FaultEntry]) -> float:
    """When the change could first propagate: ``due_at``, moved to the end of each
    control-plane outage acting at that moment (outages may follow one another)."""
    start = due_at
    for begin, end in _outages(faults):
        if begin <= start < end:
            start = end
    return start


def evaluate_propagation(slo: ConfigPropagationSlo, phase: str, journal: Journal) -> SloResult:
    """The verdict of one ``configPropagation`` SLO from the journal alone."""
    record = record_of(journal, slo.name)

    def result(verdict: Verdict, measured: float | None, detail: str) -> SloResult:
        return SloResult.judged(
            slo.name,
            slo.kind,
            phase,
            verdict,
            measured=measured,
            lower=measured,
            upper=None if verdict is not Verdict.PASS else measured,
            objective=float(slo.max),
            confidence=slo.confidence,
            n=0 if record is None else len(record.proxies),
            unit="s",
            detail=detail,
        )

    if record is None or not journal.phases:
        return result(Verdict.INCONCLUSIVE, None, "the change was never due: the run ended first")
    run_end = max(window.end for window in journal.phases)
    start = propagation_start(record.due_at, journal.faults)
    delayed = start - record.due_at
    after = f"{seconds(delayed)} after it was due, once the outage ended" if delayed else ""
    if record.written_at is None:
        return result(
            Verdict.FAIL,
            None,
            f"the change to {record.service}'s VirtualService was never written "
            f"({record.write_errors} attempts; last: {record.error})",
        )
    if record.synced_at is None or record.synced_at > run_end:
        pending = ", ".join(record.pending or record.proxies)
        waited = max(0.0, run_end - start)
        if start >= run_end:
            why = "the control plane was down from the change to the end of the run"
        else:
            why = f"{seconds(waited)} of waiting did not get it there"
        return result(
            Verdict.FAIL,
            waited if waited > 0 else None,
            f"the change to {record.service}'s routes was not SYNCED on {pending} by the end "
            f"of the run ({why}; objective {seconds(slo.max)})",
        )
    took = max(0.0, record.synced_at - start)
    verdict = Verdict.PASS if took <= slo.max else Verdict.FAIL
    return result(
        verdict,
        took,
        f"{_proxies(len(record.proxies))} SYNCED with the change to {record.service}'s routes "
        f"{seconds(took)} after it could propagate{' (' + after + ')' if after else ''}; "
        f"objective {seconds(slo.max)} "
        f"(written {seconds(record.written_at - record.due_at)} after due)",
    )


def record_of(journal: Journal, slo: str) -> ConfigChangeRecord | None:
    """The change a ``configPropagation`` SLO made, if it was made."""
    return next((c for c in journal.config_changes if c.slo == slo), None)


def _proxies(count: int) -> str:
    return f"{count} prox{'y' if count == 1 else 'ies'}"
