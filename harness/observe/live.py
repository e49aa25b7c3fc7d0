"""Live numbers of a running scenario, from the samples Locust writes as it goes.

A game day's console and its OpenMetrics endpoint show the same :class:`LiveSnapshot`,
which :class:`LiveLoad` rebuilds about once a second::

    live = LiveLoad(scenario)
    live.update(controls.view)        # tails samples.jsonl, judges the SLOs so far
    snapshot = live.snapshot          # immutable; any thread may read it

Per second: *offered* counts the requests whose scheduled (intended) start fell in that
second, *achieved* those that completed in it, *errors* the failed ones among those, and
the latency quantiles are of its successful requests, from their intended starts (what
verdicts judge). A second is shown once it is :data:`SETTLE_S` seconds old, so requests
still in flight rarely change it afterwards. The provisional SLO verdicts are the judge's
own evaluators on the samples so far (the phase that runs is cut at "now"), for the SLO
kinds computed from samples (error rate, latency, latency shift); counter-based mesh SLOs
are judged only when the run ends. They are per SLO × phase, before the family-wise
adjustment the final verdict makes.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.control import RunView
from harness.journal import Journal, PhaseWindow, SloResult
from harness.load.samples import Sample, SampleTail, as_columns
from harness.observe.timeline import nearest_rank
from harness.scenario.models import ErrorRateSlo, LatencyShiftSlo, LatencySlo, Scenario
from harness.slo.judge import RunEvidence, judge_slo, judged_phases

__all__ = ["LiveLoad", "LiveSnapshot", "Second"]

SETTLE_S = 2
"""How old (in whole seconds) a second must be before it is shown."""
KEEP_SECONDS = 120
"""How many recent seconds a snapshot carries."""
SAMPLE_KINDS = (ErrorRateSlo, LatencySlo, LatencyShiftSlo)


@dataclass(frozen=True)
class Second:
    """One second of load at the ingress (``t``: its start, epoch seconds)."""

    t: int
    offered: int
    achieved: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class LiveSnapshot:
    """Everything the console and the metrics endpoint show, at ``updated_at``."""

    updated_at: float = 0.0
    seconds: tuple[Second, ...] = ()  # oldest first, the last KEEP_SECONDS settled ones
    requests_total: int = 0  # completed
    errors_total: int = 0
    slos: tuple[SloResult, ...] = ()  # provisional
    pending_slos: tuple[str, ...] = ()  # SLOs judged only at the end (mesh counters)
    slo_compute_s: float = 0.0  # how long the last provisional judgement took

    @property
    def last(self) -> Second | None:
        return self.seconds[-1] if self.seconds else None


@dataclass
class _Bucket:
    offered: int = 0
    achieved: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    row: Second | None = None  # cached until the bucket changes


class LiveLoad:
    """Accumulates the samples of one run and keeps an up-to-date :class:`LiveSnapshot`."""

    def __init__(self, scenario: Scenario, slo_every_s: float = 2.0) -> None:
        self.scenario = scenario
        self.slo_every_s = slo_every_s
        self.samples: list[Sample] = []
        self._tails: list[SampleTail] = []
        self._buckets: defaultdict[int, _Bucket] = defaultdict(_Bucket)
        self._next_slos = 0.0
        self._errors = 0
        self._lock = threading.Lock()
        self._snapshot = LiveSnapshot(
            pending_slos=tuple(s.name for s in scenario.slos if not isinstance(s, SAMPLE_KINDS))
        )

    @property
    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            return self._snapshot

    def update(self, view: RunView, now: float | None = None) -> LiveSnapshot:
        """Read the new samples, settle the seconds that are old enough, maybe re-judge."""
        now = time.time() if now is None else now
        if not self._tails:
            self._tails = [SampleTail(path) for path in view.live_samples]
        for tail in self._tails:
            self.add(tail.poll())
        settled = self._settle(int(now) - SETTLE_S + 1)
        before = self.snapshot
        slos, spent = before.slos, before.slo_compute_s
        if now >= self._next_slos and view.phase_start is not None:
            started = time.monotonic()
            slos = tuple(self.judge(view, now))
            spent = time.monotonic() - started
            # Never more than a quarter of the time on judging, however many samples.
            self._next_slos = now + max(self.slo_every_s, 4 * spent)
        snapshot = LiveSnapshot(
            updated_at=now,
            seconds=tuple(settled),
            requests_total=len(self.samples),
            errors_total=self._errors,
            slos=slos,
            pending_slos=before.pending_slos,
            slo_compute_s=spent,
        )
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def add(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            self.samples.append(sample)
            self._errors += 0 if sample.ok else 1
            self._bucket(int(sample.intended_start)).offered += 1
            done = self._bucket(int(sample.t + sample.ms / 1000.0))
            done.achieved += 1
            if sample.ok:
                done.latencies.append(sample.latency_ms)
                done.row = None
            else:
                done.errors += 1

    def _bucket(self, t: int) -> _Bucket:
        bucket = self._buckets[t]
        bucket.row = None  # changed: its row is rebuilt
        return bucket

    def _settle(self, until: int) -> list[Second]:
        """The rows of the last :data:`KEEP_SECONDS` seconds before ``until``.

        A request that completes late (a stalled dependency) still counts as offered in
        the second it was scheduled in, so a row can change while it is kept."""
        if not self._buckets:
            return []
        first = max(min(self._buckets), until - KEEP_SECONDS)
        for t in [t for t in self._buckets if t < first]:
            del self._buckets[t]
        rows = []
        for t in range(first, until):
            bucket = self._buckets.get(t)
            if bucket is None:
                rows.append(Second(t, 0, 0, 0, None, None))
                continue
            if bucket.row is None:
                ordered = sorted(bucket.latencies)
                bucket.row = Second(
                    t,
                    bucket.offered,
                    bucket.achieved,
                    bucket.errors,
                    nearest_rank(ordered, 0.5),
                    nearest_rank(ordered, 0.99),
                )
            rows.append(bucket.row)
        return rows

    def judge(self, view: RunView, now: float) -> list[SloResult]:
        """Each sample-based SLO in each phase so far, the running one cut at ``now``."""
        windows = [PhaseWindow(name=n, start=s, end=e) for n, s, e in view.phases_done]
        if view.phase is not None and view.phase_start is not None:
            end = min(now, view.phase_end or now)
            if all(w.name != view.phase for w in windows) and end > view.phase_start:
                windows.append(PhaseWindow(name=view.phase, start=view.phase_start, end=end))
        # Only the phases matter to these evaluators: a journal that holds nothing else.
        journal = Journal(
            run_id=view.run_id,
            scenario_name=self.scenario.metadata.name,
            scenario_file=None,
            scenario={},
            platform="live",
            isolation="",
            isolation_note="",
            environment={},
            started_at=now,
            phases=windows,
        )
        evidence = RunEvidence(journal, as_columns(self.samples))
        return [
            judge_slo(slo, phase, evidence)
            for slo in self.scenario.slos
            if isinstance(slo, SAMPLE_KINDS)
            for phase in judged_phases(slo, journal)
        ]

    def close(self) -> None:
        for tail in self._tails:
            tail.close()
