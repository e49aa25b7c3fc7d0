"""Samples as columns: read back exactly, and judged exactly as the object code judged them.

The references below are the straightforward per-object computations the harness used
before the columns (one :class:`Sample` per request, list comprehensions per phase); each
columnar result must equal them on the same small data: timelines, histograms, phase
loads, load summaries, SLO verdicts and the request paths chosen for the report.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from journals import T0, new_journal, phase_windows

import harness.load.samples
from harness.errors import LoadError
from harness.journal import Journal, LatencySummary, LoadTimeline, PhaseWindow
from harness.load.driver import (
    Sample,
    SampleColumns,
    read_sample_columns,
    read_samples,
    summarize,
)
from harness.observe.access_logs import _paths
from harness.observe.timeline import (
    encode_histogram,
    latency_histograms,
    load_timeline,
    nearest_rank,
    new_histogram,
    phase_loads,
    record_ms,
)
from harness.scenario import load_scenario_text
from harness.slo import evaluate_latency_shift
from harness.slo.family import adjust_family
from harness.slo.judge import judge_slos
from harness.slo.verdict import evaluate_error_rate, evaluate_latency, per_second_counts

ERRORS = ["HTTP 503", "TimeoutError", "ConnectionRefusedError: [Errno 111] " + "x" * 30]


def synthetic(seed: int, n: int = 900) -> list[Sample]:
    """Three 10 s phases and a little outside them; lags, ties, errors in bursts, in
    an order that is not the start order (several Locust processes, merged)."""
    rng = np.random.default_rng(seed)
    intended = np.round(rng.uniform(-1.0, 31.0, n), 2)  # rounded: equal starts happen
    samples = []
    for i in range(n):
        late = rng.random() < 0.2
        t = float(intended[i] + (rng.exponential(0.03) if late else 0.0))
        slow = 10.0 <= t < 20.0
        failed = rng.random() < (0.15 if slow and int(t) % 3 == 0 else 0.02)
        err = str(rng.choice(ERRORS)) if failed else None
        status = 0 if err and not err.startswith("HTTP") else (503 if err else 200)
        samples.append(
            Sample(
                t=T0 + t,
                ms=float(rng.lognormal(3.0 + (0.4 if slow else 0.0), 0.5)),
                status=status,
                ok=err is None,
                err=err,
                rid=f"rid-{seed}-{i}",
                intended=None if i % 7 == 0 else T0 + float(intended[i]),
            )
        )
    return samples


def phases() -> list[PhaseWindow]:
    return phase_windows(T0, baseline=10, fault=10, recovery=10)


# --------------------------------------------------------------------------- references


def reference_timeline(samples: list[Sample], t0: float, t_end: float) -> LoadTimeline:
    buckets = max(0, math.floor(t_end - t0 + 1e-6))
    achieved, errors = [0] * buckets, [0] * buckets
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for s in samples:
        if t0 <= s.t < t0 + buckets:
            index = min(int(s.t - t0), buckets - 1)
            achieved[index] += 1
            if s.ok:
                latencies[index].append(s.latency_ms)
            else:
                errors[index] += 1
    q = {p: [nearest_rank(sorted(v), p) for v in latencies] for p in (0.5, 0.95, 0.99)}
    return LoadTimeline(
        t=[float(i) for i in range(buckets)],
        offered=[40.0] * buckets,
        achieved=achieved,
        errors=errors,
        p50_ms=q[0.5],
        p95_ms=q[0.95],
        p99_ms=q[0.99],
    )


def reference_histograms(samples: list[Sample], windows: list[PhaseWindow]) -> dict[str, str]:
    merged, result = new_histogram(), {}
    for window in windows:
        histogram = new_histogram()
        for s in samples:
            if window.start <= s.t < window.end and s.ok:
                record_ms(histogram, s.latency_ms)
        result[window.name] = encode_histogram(histogram)
        merged.add(histogram)
    result["all"] = encode_histogram(merged)
    return result


def reference_summary(ordered: list[float]) -> LatencySummary:
    return LatencySummary(
        p50_ms=nearest_rank(ordered, 0.5),
        p95_ms=nearest_rank(ordered, 0.95),
        p99_ms=nearest_rank(ordered, 0.99),
        max_ms=ordered[-1] if ordered else None,
    )


def reference_judge(samples: list[Sample], journal: Journal) -> list[object]:
    """errorRate, p99 and the latency shift, each in the phases it covers (as SCENARIO)."""
    windows = {w.name: w for w in journal.phases}

    def in_phase(name: str) -> list[Sample]:
        w = windows[name]
        return [s for s in samples if w.start <= s.t < w.end]

    def ok_s(name: str) -> list[float]:
        return [s.latency_ms / 1000.0 for s in in_phase(name) if s.ok]

    results = []
    for name, w in windows.items():
        p = in_phase(name)
        counts = per_second_counts([s.t for s in p], [not s.ok for s in p], w.start, w.end)
        failures = sum(1 for s in p if not s.ok)
        results.append(
            evaluate_error_rate("errors", name, failures, len(p), 0.05, 0.95, per_second=counts)
        )
    for name, w in windows.items():
        seconds = [int(s.t - w.start) for s in in_phase(name) if s.ok]
        results.append(evaluate_latency("p99", name, ok_s(name), 0.99, 0.1, 0.95, seconds=seconds))
    for name in ("fault", "recovery"):
        base, mine = ok_s("baseline"), ok_s(name)
        results.append(evaluate_latency_shift("slower", name, "baseline", base, mine, 0.005, 0.95))
    return list(adjust_family(results))


def reference_choose(samples: list[Sample], marked: set[str], n: int) -> list[Sample]:
    if n <= 0:
        return []
    by_kind: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        by_kind.setdefault((s.status, (s.err or "")[:40]), []).append(s)
    chosen: list[Sample] = []
    for members in by_kind.values():
        if len(chosen) >= n:
            break
        chosen.append(next((s for s in members if s.rid in marked), members[0]))
    for wanted in (True, False):
        picked = {s.rid for s in chosen}
        rest = [s for s in samples if s.rid not in picked and (s.rid in marked) == wanted]
        k = n - len(chosen)
        if k > 0:
            step = len(rest) / k
            chosen += rest if len(rest) <= k else [rest[int(i * step + step / 2)] for i in range(k)]
    return sorted(chosen, key=lambda s: s.t)


def reference_paths(samples: list[Sample], marked: set[str]) -> list[tuple[str, int, str]]:
    windows = sorted(phases(), key=lambda w: w.start)
    starts = [w.start for w in windows]

    def phase_of(t: float) -> str | None:
        i = bisect.bisect_right(starts, t) - 1
        return windows[i].name if i >= 0 and t < windows[i].end else None

    phase = {s.rid: name for s in samples if s.rid and (name := phase_of(s.t)) is not None}
    in_run = sorted((s for s in samples if s.rid in phase), key=lambda s: s.t)
    chosen = reference_choose([s for s in in_run if not s.ok], marked, 5)
    chosen += reference_choose([s for s in in_run if s.ok], marked, 2)
    return [(s.rid, s.status, phase[s.rid]) for s in sorted(chosen, key=lambda s: s.t)]


# --------------------------------------------------------------------------- reading


def write(path: Path, samples: list[Sample]) -> None:
    """As the locustfile writes them (its key order; it cannot be imported outside Locust)."""
    keys = ("t", "ms", "status", "ok", "err", "rid", "intended")
    path.write_text("".join(json.dumps({k: getattr(s, k) for k in keys}) + "\n" for s in samples))


def test_columns_of_several_files_are_the_samples_merged_by_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.load.samples, "BLOCK_BYTES", 700)  # lines across blocks
    samples = synthetic(1)
    write(tmp_path / "a.jsonl", samples[::2])
    write(tmp_path / "b.jsonl", samples[1::2])
    with (tmp_path / "b.jsonl").open("a") as file:
        file.write('{"t":1.0,"ms":2.0,"st')  # a last line cut short by a kill: skipped
    columns = read_sample_columns([tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "x"])
    expected = sorted(read_samples(tmp_path / "a.jsonl") + read_samples(tmp_path / "b.jsonl"),
                      key=lambda s: s.t)  # fmt: skip
    assert list(columns) == expected
    assert len(expected) == len(samples)
    assert columns.latency_ms.tolist() == [s.latency_ms for s in expected]
    assert columns.errors and set(columns.errors) <= set(ERRORS)


def test_columns_name_file_and_line_of_a_bad_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.load.samples, "BLOCK_BYTES", 300)
    path = tmp_path / "samples.jsonl"
    write(path, synthetic(2, n=20))
    lines = path.read_text().splitlines()
    lines[13] = lines[13].replace('"status":', '"status":true,"x":')  # bool, then a bad key
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LoadError, match=rf"{path}:14: "):
        read_sample_columns(path)
    fields = json.loads(lines[4]) | {"ms": True}  # a bool is not a number
    lines[13] = json.dumps(json.loads(lines[12]))
    lines[4] = json.dumps(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LoadError, match=rf"{path}:5: a sample field has the wrong type"):
        read_sample_columns(path)


def test_no_samples_give_empty_columns(tmp_path: Path) -> None:
    columns = read_sample_columns([tmp_path / "never-written.jsonl"])
    assert len(columns) == 0
    assert load_timeline(columns, T0, T0 + 3, 40.0).achieved == [0, 0, 0]
    assert summarize(columns, T0, T0 + 1, 10.0).count == 0


# --------------------------------------------------------------------------- same results


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_columns_give_the_references_results(seed: int) -> None:
    samples = synthetic(seed)
    columns = SampleColumns.from_samples(samples)
    windows = phases()
    assert load_timeline(columns, T0, T0 + 30.5, 40.0) == reference_timeline(samples, T0, T0 + 30.5)
    assert latency_histograms(columns, windows) == reference_histograms(samples, windows)
    for load, window in zip(phase_loads(columns, windows, 40.0), windows, strict=True):
        mine = [s for s in samples if window.start <= s.t < window.end]
        assert load.latency == reference_summary(sorted(s.latency_ms for s in mine if s.ok))
        assert load.raw_latency == reference_summary(sorted(s.ms for s in mine if s.ok))
        assert load.status_counts == dict(Counter(str(s.status) for s in mine))
        by_start = sorted(mine, key=lambda s: s.t)  # codes in order of first appearance
        assert list(load.status_counts) == list(Counter(str(s.status) for s in by_start))
        assert (load.count, load.ok, load.late) == (
            len(mine),
            sum(s.ok for s in mine),
            sum(s.lag_ms > 20.0 for s in mine),
        )
        assert load.max_lag_ms == max((s.lag_ms for s in mine), default=0.0)
    assert summarize(columns, T0 + 3, T0 + 17, 40.0) == summarize(samples, T0 + 3, T0 + 17, 40.0)


SCENARIO = """
apiVersion: harness/v1
metadata: {name: columns}
load: {rate: 40}
phases:
  - {name: baseline, duration: 10s}
  - {name: fault, duration: 10s}
  - {name: recovery, duration: 10s}
faults:
  - {kind: http, phase: fault, target: {service: catalog}, delay: {fixedDelay: 20ms}}
slos:
  - {name: errors, kind: errorRate, max: 5%}
  - {name: p99, kind: latency, quantile: 0.99, max: 100ms}
  - {name: slower, kind: latencyShift, baseline: baseline, max: 5ms}
"""


@pytest.mark.parametrize("seed", [6, 7])
def test_verdicts_on_columns_are_the_references(seed: int) -> None:
    samples = synthetic(seed, n=1500)
    journal = new_journal(load_started_at=T0, phases=phases())
    judged = judge_slos(
        load_scenario_text(SCENARIO).slos, journal, SampleColumns.from_samples(samples)
    )
    expected = reference_judge(samples, journal)
    key = {(r.slo, r.phase): r for r in judged}  # type: ignore[attr-defined]
    assert [key[(r.slo, r.phase)] for r in expected] == expected  # type: ignore[attr-defined]
    assert len(judged) == 8
    assert {r.verdict.value for r in judged} >= {"PASS", "FAIL"}  # both sides compared


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_request_paths_chosen_from_columns_are_the_references(seed: int) -> None:
    samples = synthetic(seed)
    rng = np.random.default_rng(seed)
    marked = {s.rid for s in samples if rng.random() < 0.05}
    found = _paths([], marked, SampleColumns.from_samples(samples), phases(), 5, 2)
    assert [(p.rid, p.status, p.phase) for p in found] == reference_paths(samples, marked)
    assert len(found) == 7


def test_request_ids_round_trip_in_every_form(tmp_path: Path) -> None:
    """Lowercase UUIDs (what the locustfile sends) are packed to 16 bytes, anything else is
    kept as text: both come back unchanged, in one block or mixed, and rid_in finds them."""
    uuids = [f"5f0c2a1e-9b3d-4c6e-8f00-{i:012x}" for i in range(50)]
    others = ["", "rid-7", "5F0C2A1E-9B3D-4C6E-8F00-000000000001", "ünïcode", "x" * 80]
    for rids in (uuids, uuids[:10] + others + uuids[10:]):
        samples = [
            Sample(t=T0 + i, ms=1.0, status=200, ok=True, err=None, rid=rid)
            for i, rid in enumerate(rids)
        ]
        write(tmp_path / "samples.jsonl", samples)
        columns = read_sample_columns(tmp_path / "samples.jsonl")
        assert [s.rid for s in columns] == rids
        wanted = {rids[3], rids[-1], "not-there"}
        assert [rids[i] for i in np.flatnonzero(columns.rid_in(wanted))] == [rids[3], rids[-1]]
        assert columns.has_rid().tolist() == [bool(rid) for rid in rids]
        if rids is uuids:
            assert columns.rid.dtype.itemsize == 17  # packed
    assert read_sample_columns(tmp_path / "samples.jsonl").rid.dtype.itemsize > 17  # text kept
