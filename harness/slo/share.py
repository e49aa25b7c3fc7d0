"""Per-subset SLOs: ``trafficShare`` (the share of an edge's requests that went to one
DestinationRule subset) and ``subsetErrorRate`` (that subset's error rate).

Counted on the caller's sidecars (:attr:`harness.journal.EdgeStats.subsets`): requests on
a cluster are its attempts minus its retries (a retry stays on the cluster its request was
routed to: Envoy picks a weighted cluster once per request), so a failing subset's
retries do not inflate its share. Envoy picks each request's weighted cluster at random,
independently, so the count of one subset is binomial and its share gets an exact
two-sided Clopper-Pearson interval at the SLO's confidence (each side at ``(1 + c) / 2``).

Verdict: PASS when the interval lies within ``share ± tolerance``; FAIL when it lies wholly
outside that band (evidence the route splits off by more than the tolerance); else
INCONCLUSIVE (too few requests to tell). FAIL is not "the interval excludes ``share``": that
point test fails a correct split in 1 run of 20 at 95% (seen in CI: 8.06% of 1203, interval
6.59–9.75%, on a 90/10 route) and ignores the tolerance the scenario states.

Mirrored copies are counted on the mirror's cluster: a mirror to a
subset of the same service adds to that subset's count.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harness.formats import percent_short
from harness.journal import SloResult, Verdict
from harness.mesh.stats import ANSWERED_5XX, ATTEMPTS, RETRIES
from harness.slo.stats import rate_lower_bound, rate_upper_bound
from harness.slo.verdict import evaluate_error_rate, evaluate_latency

if TYPE_CHECKING:
    from collections.abc import Mapping

    from harness.journal import Journal, PhaseWindow


@dataclass(frozen=True)
class SubsetTimings:
    """The requests a caller's sidecar routed to one subset (its outbound access log): each
    one's start (epoch seconds), duration (whole milliseconds, Envoy's %DURATION%: retries
    included) and status (0: no response)."""

    start: npt.NDArray[np.float64]
    ms: npt.NDArray[np.float64]
    status: npt.NDArray[np.int64]

    @classmethod
    def of(cls, rows: list[tuple[float, float, int]]) -> SubsetTimings:
        table = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return cls(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(np.int64))


def subset_requests(
    journal: Journal, phase: str, caller: str, callee: str
) -> tuple[dict[str, int], int] | None:
    """Per subset, its requests in ``phase`` on ``caller → callee``, and the edge's total
    (every cluster of the callee); None when the journal has no counters of the edge."""
    for edge in journal.edges:
        if edge.caller != caller or edge.callee != callee or phase not in edge.phases:
            continue
        total = edge.phases[phase].get(ATTEMPTS, 0) - edge.phases[phase].get(RETRIES, 0)
        per_subset = {
            name: phases.get(phase, {}).get(ATTEMPTS, 0) - phases.get(phase, {}).get(RETRIES, 0)
            for name, phases in edge.subsets.items()
        }
        return per_subset, total
    return None


def evaluate_traffic_share(
    name: str,
    phase: str,
    journal: Journal,
    edge: tuple[str, str],
    subset: str,
    share: float,
    tolerance: float,
    confidence: float = 0.95,
) -> SloResult:
    caller, callee = edge
    found = subset_requests(journal, phase, caller, callee)
    hits, n = (found[0].get(subset, 0), found[1]) if found else (0, 0)

    def result(
        verdict: Verdict, detail: str, lower: float | None, upper: float | None
    ) -> SloResult:
        return SloResult.judged(
            name,
            "trafficShare",
            phase,
            verdict,
            measured=hits / n if n else None,
            lower=lower,
            upper=upper,
            objective=share,
            confidence=confidence,
            n=n,
            unit="ratio",
            detail=detail,
        )

    if n <= 0:
        return result(
            Verdict.INCONCLUSIVE, f"no requests on {caller} → {callee} in this phase", None, None
        )
    side = (1.0 + confidence) / 2.0
    lower, upper = rate_lower_bound(hits, n, side), rate_upper_bound(hits, n, side)
    detail = (
        f"subset {subset} took {hits} of {n} requests on {caller} → {callee} "
        f"({percent_short(hits / n)}, {percent_short(confidence)} interval "
        f"{percent_short(lower)}–{percent_short(upper)})"
    )
    band = f"{percent_short(share)} ± {percent_short(tolerance)}"
    if upper < share - tolerance or lower > share + tolerance:
        return result(Verdict.FAIL, f"{detail}: outside {band}", lower, upper)
    if share - tolerance <= lower and upper <= share + tolerance:
        return result(Verdict.PASS, f"{detail}: within {band}", lower, upper)
    return result(Verdict.INCONCLUSIVE, f"{detail}: not wholly within {band}", lower, upper)


def evaluate_subset_error_rate(
    name: str,
    phase: str,
    journal: Journal,
    edge: tuple[str, str],
    subset: str,
    max_rate: float,
    confidence: float = 0.95,
) -> SloResult:
    """``subsetErrorRate``: the 5xx answers the caller's sidecars passed on from one subset,
    per request routed to it (the version's error rate as its callers see it), judged like
    ``errorRate`` (exact Clopper-Pearson bounds; no per-second data, so no burst widening:
    the journal keeps per-phase counters)."""
    caller, callee = edge
    counters: dict[str, int] = {}
    for record in journal.edges:
        if (record.caller, record.callee) == (caller, callee):
            counters = record.subsets.get(subset, {}).get(phase, {})
    requests = counters.get(ATTEMPTS, 0) - counters.get(RETRIES, 0)
    errors = min(counters.get(ANSWERED_5XX, 0), max(requests, 0))
    result = evaluate_error_rate(name, phase, errors, max(requests, 0), max_rate, confidence)
    detail = f"subset {subset} of {caller} → {callee}: "
    return dataclasses.replace(
        result,
        kind="subsetErrorRate",
        message=result.message.replace(f"{name} [{phase}]: ", f"{name} [{phase}]: {detail}", 1),
    )


def evaluate_subset_latency(
    name: str,
    window: PhaseWindow,
    timings: Mapping[tuple[str, str], SubsetTimings],
    edge: tuple[str, str],
    subset: str,
    quantile: float,
    max_s: float,
    confidence: float = 0.95,
) -> SloResult:
    """``subsetLatency``: the ``quantile`` of the durations the caller's sidecars logged for
    the successful (2xx) requests they routed to ``subset`` and started in the phase,
    judged like ``latency`` (exact order-statistic bounds, widened by the design effect
    when slow ones come in bursts). No request on the subset: INCONCLUSIVE, as for any
    latency SLO without samples."""
    caller, callee = edge
    found = timings.get((f"{caller}→{callee}", subset))
    if found is None:
        latencies_s = np.zeros(0)
        seconds = np.zeros(0, dtype=np.int64)
    else:
        chosen = (found.start >= window.start) & (found.start < window.end)
        chosen &= (found.status >= 200) & (found.status < 300)
        latencies_s = found.ms[chosen] / 1000.0
        seconds = (found.start[chosen] - window.start).astype(np.int64)
    result = evaluate_latency(
        name, window.name, latencies_s, quantile, max_s, confidence, seconds=seconds
    )
    detail = f"subset {subset} of {caller} → {callee}: "
    return dataclasses.replace(
        result,
        kind="subsetLatency",
        message=result.message.replace(
            f"{name} [{window.name}]: ", f"{name} [{window.name}]: {detail}", 1
        ),
    )
