"""Per-second load timelines and latency histograms, from Locust's per-request samples.

Both are computed after the run from ``samples.jsonl`` and stored in the journal, so the
report can be rendered from the journal alone::

    timeline = load_timeline(samples, t0=journal.load_started_at, t_end=last_phase.end,
                             offered_rate=40.0)
    histograms = latency_histograms(samples, journal.phases)   # phase → base64 text
    p99_us = decode_histogram(histograms["all"]).get_value_at_percentile(99.0)

Histograms are HdrHistograms of *successful* latencies (from each request's intended start,
as verdicts measure them) in microseconds (1 µs to 60 s, three
significant digits), in the standard compressed base64 form that every HdrHistogram library
(Java, Go, JavaScript, …) reads.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

from harness.journal import LatencySummary, LoadTimeline, PhaseLoad, PhaseWindow
from harness.load.driver import Sample, summarize

HISTOGRAM_LOWEST_US = 1
HISTOGRAM_HIGHEST_US = 60_000_000
HISTOGRAM_DIGITS = 3
ALL_PHASES = "all"
"""The key of the histogram merged over every phase."""


def nearest_rank(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of already sorted values by the nearest-rank rule (None if empty)."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def load_timeline(
    samples: Sequence[Sample], t0: float, t_end: float, offered_rate: float | None
) -> LoadTimeline:
    """Whole one-second buckets from ``t0``; a sample falls in the bucket of its start.

    Bucket ``i`` covers ``[t0 + i, t0 + i + 1)``, up to ``t_end``: a trailing part shorter
    than a second gets no bucket (its few requests would read as a sudden drop in load).
    Latency quantiles are of the bucket's successful requests (None when it has none),
    measured from their intended starts. Without an offered rate (concurrency mode)
    ``offered`` is empty.
    """
    buckets = max(0, math.floor(t_end - t0 + 1e-6))
    t_end = t0 + buckets
    achieved = [0] * buckets
    errors = [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for sample in samples:
        if not t0 <= sample.t < t_end:
            continue
        index = min(int(sample.t - t0), buckets - 1)
        achieved[index] += 1
        if sample.ok:
            latencies[index].append(sample.latency_ms)
        else:
            errors[index] += 1
    quantiles: dict[float, list[float | None]] = {0.5: [], 0.95: [], 0.99: []}
    for values in latencies:
        values.sort()
        for q, series in quantiles.items():
            series.append(nearest_rank(values, q))
    return LoadTimeline(
        t=[float(i) for i in range(buckets)],
        offered=[] if offered_rate is None else [float(offered_rate)] * buckets,
        achieved=achieved,
        errors=errors,
        p50_ms=quantiles[0.5],
        p95_ms=quantiles[0.95],
        p99_ms=quantiles[0.99],
    )


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: 1 µs .. 60 s, three significant digits."""
    return HdrHistogram(HISTOGRAM_LOWEST_US, HISTOGRAM_HIGHEST_US, HISTOGRAM_DIGITS)


def record_ms(histogram: HdrHistogram, ms: float) -> None:
    """Record a latency given in milliseconds (clamped into the trackable range)."""
    us = min(max(round(ms * 1000.0), HISTOGRAM_LOWEST_US), HISTOGRAM_HIGHEST_US)
    histogram.record_value(us)


def encode_histogram(histogram: HdrHistogram) -> str:
    """The compressed base64 text of ``histogram`` (HdrHistogram's V2 encoding)."""
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode_histogram(text: str) -> HdrHistogram:
    """The histogram back from :func:`encode_histogram`'s text (values in microseconds)."""
    return HdrHistogram.decode(text)


def latency_histograms(samples: Sequence[Sample], phases: Sequence[PhaseWindow]) -> dict[str, str]:
    """Phase name → encoded histogram of its successful latencies, plus ``"all"`` merged.

    A phase without successful requests still gets an (empty) histogram, so every phase
    has a key. (A phase that is itself named ``"all"`` keeps its own histogram there.)
    """
    ordered = sorted(samples, key=lambda s: s.t)
    starts = [s.t for s in ordered]
    merged = new_histogram()
    result: dict[str, str] = {}
    for window in phases:
        histogram = new_histogram()
        lo = bisect.bisect_left(starts, window.start)
        hi = bisect.bisect_left(starts, window.end)
        for sample in ordered[lo:hi]:
            if sample.ok:
                record_ms(histogram, sample.latency_ms)
        result[window.name] = encode_histogram(histogram)
        merged.add(histogram)
    result.setdefault(ALL_PHASES, encode_histogram(merged))
    return result


__all__ = [
    "ALL_PHASES",
    "decode_histogram",
    "encode_histogram",
    "latency_histograms",
    "load_timeline",
    "nearest_rank",
    "new_histogram",
    "record_ms",
]


def _latency_summary(ordered: Sequence[float]) -> LatencySummary:
    return LatencySummary(
        p50_ms=nearest_rank(ordered, 0.5),
        p95_ms=nearest_rank(ordered, 0.95),
        p99_ms=nearest_rank(ordered, 0.99),
        max_ms=ordered[-1] if ordered else None,
    )


def phase_loads(
    samples: Sequence[Sample], phases: Sequence[PhaseWindow], target_rate: float | None
) -> list[PhaseLoad]:
    """The load of each phase: counts, rates, latency quantiles of the successful requests
    (nearest rank; corrected latency from the intended start, and the raw service time beside
    it), status codes, late starts, and the load generator's own warning if it fell behind."""
    loads = []
    for window in phases:
        in_phase = [s for s in samples if window.start <= s.t < window.end]
        latencies = sorted(s.latency_ms for s in in_phase if s.ok)  # from intended starts
        raw = sorted(s.ms for s in in_phase if s.ok)
        summary = summarize(in_phase, window.start, window.end, target_rate)
        loads.append(
            PhaseLoad(
                phase=window.name,
                count=summary.count,
                ok=summary.ok_count,
                errors=summary.error_count,
                offered_rate=summary.offered_rate,
                achieved_rate=summary.achieved_rate,
                coordinated_omission=summary.coordinated_omission,
                latency=_latency_summary(latencies),
                raw_latency=_latency_summary(raw),
                late=summary.late,
                max_lag_ms=summary.max_lag_ms,
                status_counts=dict(Counter(str(s.status) for s in in_phase)),
                message=summary.message,
            )
        )
    return loads
