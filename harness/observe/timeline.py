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

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from harness.journal import LatencySummary, LoadTimeline, PhaseLoad, PhaseWindow
from harness.load.driver import Sample, SampleColumns, as_columns, summarize

Samples = SampleColumns | Iterable[Sample]
"""Columns (what a run reads), or sample objects (small data, tests)."""

HISTOGRAM_LOWEST_US = 1
HISTOGRAM_HIGHEST_US = 60_000_000
HISTOGRAM_DIGITS = 3
ALL_PHASES = "all"
"""The key of the histogram merged over every phase."""


def nearest_rank(ordered: Sequence[float] | npt.NDArray[np.float64], q: float) -> float | None:
    """The ``q`` quantile of already sorted values by the nearest-rank rule (None if empty)."""
    if not len(ordered):
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return float(ordered[index])


def load_timeline(
    samples: Samples, t0: float, t_end: float, offered_rate: float | None
) -> LoadTimeline:
    """Whole one-second buckets from ``t0``; a sample falls in the bucket of its start.

    Bucket ``i`` covers ``[t0 + i, t0 + i + 1)``, up to ``t_end``: a trailing part shorter
    than a second gets no bucket (its few requests would read as a sudden drop in load).
    Latency quantiles are of the bucket's successful requests (None when it has none),
    measured from their intended starts. Without an offered rate (concurrency mode)
    ``offered`` is empty.
    """
    buckets = max(0, math.floor(t_end - t0 + 1e-6))
    window = as_columns(samples).window(t0, t0 + buckets)
    # Rows are in start order, so each bucket is a slice; bucket i holds the rows with
    # int(t - t0) == i (the last one also any rounded up to ``buckets``).
    offsets = window.t - t0
    bounds = np.searchsorted(offsets, np.arange(1, buckets), side="left").tolist()
    del offsets
    latencies, ok = window.latency_ms, window.ok
    achieved, errors = [], []
    quantiles: dict[float, list[float | None]] = {0.5: [], 0.95: [], 0.99: []}
    for lo, hi in zip([0, *bounds], [*bounds, len(window)], strict=True):
        if buckets == 0:
            break
        good = latencies[lo:hi][ok[lo:hi]]
        good.sort()
        achieved.append(hi - lo)
        errors.append(hi - lo - int(good.size))
        for q, series in quantiles.items():
            series.append(nearest_rank(good, q))
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


def record_all_ms(histogram: HdrHistogram, ms: npt.NDArray[np.float64]) -> None:
    """Record many latencies (milliseconds) at once: one call per distinct microsecond
    value, each rounded and clamped as :func:`record_ms` does."""
    us = np.clip(np.rint(ms * 1000.0), HISTOGRAM_LOWEST_US, HISTOGRAM_HIGHEST_US).astype(np.int64)
    values, counts = np.unique(us, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        histogram.record_value(value, count)


def latency_histograms(samples: Samples, phases: Sequence[PhaseWindow]) -> dict[str, str]:
    """Phase name → encoded histogram of its successful latencies, plus ``"all"`` merged.

    A phase without successful requests still gets an (empty) histogram, so every phase
    has a key. (A phase that is itself named ``"all"`` keeps its own histogram there.)
    """
    columns = as_columns(samples)
    merged = new_histogram()
    result: dict[str, str] = {}
    for window in phases:
        histogram = new_histogram()
        in_phase = columns.window(window.start, window.end)
        record_all_ms(histogram, in_phase.latency_ms[in_phase.ok])
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
    "record_all_ms",
    "record_ms",
]


def _latency_summary(ordered: Sequence[float] | npt.NDArray[np.float64]) -> LatencySummary:
    return LatencySummary(
        p50_ms=nearest_rank(ordered, 0.5),
        p95_ms=nearest_rank(ordered, 0.95),
        p99_ms=nearest_rank(ordered, 0.99),
        max_ms=float(ordered[-1]) if len(ordered) else None,
    )


def phase_loads(
    samples: Samples, phases: Sequence[PhaseWindow], target_rate: float | None
) -> list[PhaseLoad]:
    """The load of each phase: counts, rates, latency quantiles of the successful requests
    (nearest rank; corrected latency from the intended start, and the raw service time beside
    it), status codes, late starts, and the load generator's own warning if it fell behind."""
    columns = as_columns(samples)
    loads = []
    for window in phases:
        in_phase = columns.window(window.start, window.end)
        latencies = np.sort(in_phase.latency_ms[in_phase.ok])  # from intended starts
        raw = np.sort(in_phase.ms[in_phase.ok])
        summary = summarize(in_phase, window.start, window.end, target_rate)
        codes, counts = np.unique(in_phase.status, return_counts=True)
        first_seen = np.argsort([int(np.argmax(in_phase.status == c)) for c in codes])
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
                status_counts={str(codes[i]): int(counts[i]) for i in first_seen},
                message=summary.message,
            )
        )
    return loads
