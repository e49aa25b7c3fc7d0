"""Verdicts on mesh security, from the scenario's probes (``journal.probes``).

Each probe request is an exact observation, not a sample of a population: a request that
got through when it had to be refused is a breach, whatever the others did. So:

* ``denied``: every request of the probe sent in the phase must come back as the callee's
  RBAC denial (403 ``RBAC: access denied``). FAIL as soon as one was answered otherwise,
  naming each such request (method, path, time into the phase, status, x-request-id: the
  callee's access log holds its path); PASS when at least one was denied and none got
  through; INCONCLUSIVE when none was answered at all (the callee was down, every request
  timed out): nothing showed the policy holding.
* ``plaintextRejected``: every request of a ``plaintext`` probe must get no HTTP answer
  (the STRICT sidecar refuses the connection or closes it). FAIL naming each request that
  was answered; PASS when at least one was sent and none answered.

``measured`` is the share of the phase's requests that got through (objective 0)::

    result = evaluate_denied("admin", "fault", "admin-as-frontend", journal)
    result.verdict, result.n        # (<Verdict.PASS: 'PASS'>, 30)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from harness.formats import seconds as _seconds
from harness.journal import SloKind, SloResult, Verdict

if TYPE_CHECKING:
    from harness.journal import Journal, PhaseWindow, ProbeRecord

__all__ = ["evaluate_denied", "evaluate_plaintext_rejected"]

NAMED: Final = 5  # requests named in a FAIL message (the count says how many in all)


def _in_phase(
    journal: Journal, probe: str, phase: str
) -> tuple[PhaseWindow | None, list[ProbeRecord]]:
    window = next((w for w in journal.phases if w.name == phase), None)
    if window is None:
        return None, []
    found = [r for r in journal.probes if r.probe == probe and window.start <= r.t < window.end]
    return window, found


def _named(records: list[ProbeRecord], window: PhaseWindow) -> str:
    def one(record: ProbeRecord) -> str:
        answer = f"HTTP {record.status}" if record.status else "no answer"
        return (
            f"{record.method} {record.path} as {record.identity} → {record.to} at "
            f"+{_seconds(record.t - window.start)}: {answer} (x-request-id {record.rid})"
        )

    shown = "; ".join(one(r) for r in records[:NAMED])
    more = f"; and {len(records) - NAMED} more" if len(records) > NAMED else ""
    return shown + more


def _result(
    slo: str, kind: SloKind, phase: str, verdict: Verdict, through: int, n: int, detail: str
) -> SloResult:
    return SloResult.judged(
        slo,
        kind,
        phase,
        verdict,
        # Exact counts, no sampling: the bounds are the measurement itself.
        measured=through / n if n else None,
        lower=through / n if n else None,
        upper=through / n if n else None,
        objective=0.0,
        confidence=1.0,
        n=n,
        unit="ratio",
        detail=detail,
    )


def evaluate_denied(slo: str, phase: str, probe: str, journal: Journal) -> SloResult:
    window, records = _in_phase(journal, probe, phase)
    kind: SloKind = "denied"
    denied = [r for r in records if r.rbac_denied]
    through = [r for r in records if r.status and not r.rbac_denied]
    silent = len(records) - len(denied) - len(through)
    unanswered = f", {silent} unanswered" if silent else ""
    if window is not None and through:
        detail = (
            f"{len(through)} of {len(records)} requests of probe {probe!r} got through "
            f"({len(denied)} denied{unanswered}): {_named(through, window)}"
        )
        return _result(slo, kind, phase, Verdict.FAIL, len(through), len(records), detail)
    if not denied:
        detail = (
            f"no request of probe {probe!r} was denied in this phase ({len(records)} sent"
            f"{unanswered}): nothing showed the policy holding"
        )
        return _result(slo, kind, phase, Verdict.INCONCLUSIVE, 0, len(records), detail)
    detail = (
        f"all {len(denied)} answered requests of probe {probe!r} were denied by the "
        f"callee's RBAC filter{unanswered}"
    )
    return _result(slo, kind, phase, Verdict.PASS, 0, len(records), detail)


def evaluate_plaintext_rejected(slo: str, phase: str, probe: str, journal: Journal) -> SloResult:
    window, records = _in_phase(journal, probe, phase)
    kind: SloKind = "plaintextRejected"
    answered = [r for r in records if r.status]
    if window is not None and answered:
        detail = (
            f"{len(answered)} of {len(records)} plaintext requests of probe {probe!r} got "
            f"an HTTP answer: {_named(answered, window)}"
        )
        return _result(slo, kind, phase, Verdict.FAIL, len(answered), len(records), detail)
    if not records:
        detail = f"probe {probe!r} sent nothing in this phase"
        return _result(slo, kind, phase, Verdict.INCONCLUSIVE, 0, 0, detail)
    detail = f"all {len(records)} plaintext requests of probe {probe!r} were refused"
    return _result(slo, kind, phase, Verdict.PASS, 0, len(records), detail)
