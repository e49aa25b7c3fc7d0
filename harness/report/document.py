"""Render a run's journal as one self-contained HTML page, and a suite index of reports.

Everything on the page comes from the journal alone (design §8), so ``harness report
JOURNAL`` can re-render a report at any time. The page has no script and loads nothing:
CSS is inline, charts are SVG data URIs, the service graph is inline SVG, and a
Content-Security-Policy forbids any other source. Scenario-derived text is escaped by
jinja's autoescape.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml

from harness import formats
from harness.files import write_atomic
from harness.journal import EdgeStats, Journal, RequestPath, SloResult
from harness.mesh import stats
from harness.report.actions import ActionRow, action_moments, action_rows
from harness.report.flags import RESPONSE_FLAGS, FlagInfo, split_flags
from harness.report.graph import HEALTH_SCALE, NO_TRAFFIC, ServiceGraph, service_graph
from harness.report.plots import (
    MESH_SIGNALS,
    Marks,
    Plot,
    Span,
    endpoint_health_plot,
    latency_spectrum_plot,
    load_timeline_plot,
    mesh_signal_plot,
)

__all__ = ["render_report", "write_index", "write_report"]

MAX_REQUEST_PATHS = 6
SPECTRUM_PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)

# Edge counters in table order: Envoy stat → (column header, tooltip).
EDGE_COLUMNS: dict[str, tuple[str, str]] = {
    "upstream_rq_total": ("attempts", "upstream_rq_total: every attempt, retries included"),
    "upstream_rq_retry": ("retries", "upstream_rq_retry"),
    "upstream_rq_retry_success": ("retry ok", "upstream_rq_retry_success"),
    "upstream_rq_retry_overflow": ("retry overflow", "upstream_rq_retry_overflow: retry budget"),
    "upstream_rq_retry_limit_exceeded": ("retry limit", "upstream_rq_retry_limit_exceeded"),
    "upstream_rq_pending_overflow": (
        "pending overflow (shed)",
        "upstream_rq_pending_overflow: rejected by the circuit breaker (503 UO)",
    ),
    "upstream_cx_overflow": (
        "cx overflow (queued)",
        "upstream_cx_overflow: maxConnections reached; an HTTP/1.1 request then waits in the "
        "pending queue (not a shed)",
    ),
    "upstream_rq_timeout": ("timeouts", "upstream_rq_timeout: route timeout"),
    "upstream_rq_per_try_timeout": ("per-try timeouts", "upstream_rq_per_try_timeout"),
    "upstream_cx_connect_fail": ("connect fail", "upstream_cx_connect_fail"),
    "upstream_rq_5xx": ("5xx", "upstream_rq_5xx: 5xx answers passed on (not retried ones)"),
    "outlier_detection.ejections_enforced_total": (
        "ejections",
        "outlier_detection.ejections_enforced_total",
    ),
    "outlier_detection.ejections_overflow": (
        "ejections blocked",
        "outlier_detection.ejections_overflow: ejections the detector decided on but "
        "maxEjectionPercent refused",
    ),
    "outlier_detection.ejections_detected_consecutive_5xx": (
        "5xx ejections due",
        "outlier_detection.ejections_detected_consecutive_5xx (enforced or not)",
    ),
    "outlier_detection.ejections_detected_consecutive_gateway_failure": (
        "gateway ejections due",
        "outlier_detection.ejections_detected_consecutive_gateway_failure (enforced or not)",
    ),
    "outlier_detection.ejections_enforced_consecutive_5xx": (
        "5xx ejections",
        "outlier_detection.ejections_enforced_consecutive_5xx",
    ),
    "outlier_detection.ejections_enforced_consecutive_gateway_failure": (
        "gateway ejections",
        "outlier_detection.ejections_enforced_consecutive_gateway_failure",
    ),
}
AMPLIFICATION_NOTE = (
    "Retry amplification = attempts ÷ requests = upstream_rq_total ÷ (upstream_rq_total - "
    "upstream_rq_retry): how many times the callee was called per request the caller sent. "
    "1.00× means no retries; 2.00× means the callee saw twice the caller's load."
)
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "ERROR", "INTERRUPTED")
AT_LEAST_KINDS = frozenset({"ejections", "sheds"})  # SLOs whose objective is a minimum


# --------------------------------------------------------------------------- view rows


@dataclass(frozen=True)
class SloRow:
    slo: str
    kind: str
    phase: str
    verdict: str
    measured: str
    lower: str
    upper: str
    objective: str
    confidence: str
    n: int
    message: str
    pair_verdict: str = ""  # the pair's own verdict when Holm's adjustment changed it


@dataclass(frozen=True)
class FaultRow:
    name: str
    kind: str
    phase: str
    targets: str
    injected: str
    reverted: str
    active_for: str
    revert_verified: bool
    evidence: list[tuple[str, int]]
    took_effect: bool | None
    message: str
    detail: str
    manual: bool = False  # injected by a game day's operator


@dataclass(frozen=True)
class EdgeRow:
    phase: str
    requests: int
    values: list[int]
    amplification: str
    is_total: bool = False


@dataclass(frozen=True)
class EdgeTable:
    caller: str
    callee: str
    rows: list[EdgeRow]


@dataclass(frozen=True)
class FlagRow:
    edge: str
    entries: int  # access-log lines counted, flagged or not
    flagged: int
    counts: list[int]  # one per column code
    shares: list[float]  # share of this edge's flagged lines, for the inline bars


@dataclass(frozen=True)
class FlagTable:
    codes: list[str]
    titles: list[str]  # one tooltip per code
    counts_all_lines: bool  # unflagged lines ("-") are counted too, so shares are known
    rows: list[FlagRow]
    legend: list[FlagInfo]  # the codes seen, explained
    unknown: list[str]
    reference: list[FlagInfo] = field(default_factory=lambda: list(RESPONSE_FLAGS.values()))


@dataclass(frozen=True)
class CodeTable:
    """Answers per edge by status code (by class in older journals), as the caller's
    sidecar passed them on."""

    classes: list[str]
    rows: list[tuple[str, list[int], str]]  # edge, count per class, share not 2xx/3xx


@dataclass(frozen=True)
class HopRow:
    proxy: str
    direction: str
    authority: str
    path: str
    status: int
    flags: str
    flags_meaning: str
    upstream: str
    attempts: int
    ms: int
    offset: str  # since the request's first hop


@dataclass(frozen=True)
class PathView:
    rid: str
    status: int
    phase: str
    at: str  # since the load started
    why: str
    hops: list[HopRow]
    reached: str = ""  # the instances whose inbound sidecar saw it, first arrival first


@dataclass(frozen=True)
class LoadRow:
    phase: str
    count: int
    ok: int
    errors: int
    error_share: str
    offered: str
    achieved: str
    p50: str
    p95: str
    p99: str
    max: str
    statuses: str
    coordinated_omission: bool
    message: str | None
    raw_p99: str = "—"  # service time from the actual start, beside the corrected p99


@dataclass(frozen=True)
class SpectrumRow:
    phase: str
    count: int
    p50: str
    p90: str
    p99: str
    p999: str
    max: str


@dataclass
class Sections:
    """Everything the template shows beyond the journal's own fields."""

    origin: float
    description: str
    duration: str
    started: str
    ended: str
    slos: list[SloRow]
    slo_counts: dict[str, int]
    faults: list[FaultRow]
    marks: Marks
    load_plot: Plot | None
    mesh_plot: Plot | None
    quiet_edges: list[str]
    health_plot: Plot | None
    edge_columns: list[tuple[str, str]]
    edge_zero_columns: list[str]  # Envoy counters that stayed at zero on every edge
    edges: list[EdgeTable]
    flags: FlagTable | None
    codes: CodeTable | None
    aborted_at: str
    rolled_back_at: str
    mesh_gaps: list[str]
    mesh_scrapes: str
    graph: ServiceGraph | None
    graph_legend: list[tuple[str, str]]
    paths: list[PathView]
    load: list[LoadRow]
    spectrum_plot: Plot | None
    spectrum: list[SpectrumRow]
    spectrum_notes: list[str]
    environment: list[tuple[str, str]]
    scenario_yaml: str
    ejection_notes: list[str] = field(default_factory=list)  # ejections maxEjectionPercent refused
    actions: list[ActionRow] = field(default_factory=list)  # a game day's notes and actions
    amplification_note: str = AMPLIFICATION_NOTE
    signals: dict[str, str] = field(default_factory=lambda: dict(MESH_SIGNALS))


# --------------------------------------------------------------------------- formatting


def _slo_value(value: float | None, unit: str, kind: str) -> str:
    if kind == "retryAmplification":  # a ratio of counts: "times", whatever the unit says
        unit = "factor"
    return formats.slo_value(value, unit)


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _relative(epoch: float | None, origin: float) -> str:
    return "—" if epoch is None else f"{epoch - origin:+.1f} s"


# --------------------------------------------------------------------------- sections


def _origin(journal: Journal) -> float:
    """Time zero of every chart: the load start, else the first phase, else the run start."""
    if journal.load_started_at is not None:
        return journal.load_started_at
    if journal.phases:
        return journal.phases[0].start
    return journal.started_at


def _marks(journal: Journal, origin: float) -> Marks:
    phases = [Span(p.name, p.start - origin, p.end - origin) for p in journal.phases]
    windows = {p.name: p for p in journal.phases}
    faults = []
    for fault in journal.faults:
        if fault.injected_at is None:
            continue
        window = windows.get(fault.phase)
        end = fault.reverted_at or (window.end if window else None) or journal.ended_at
        faults.append(
            Span(fault.name, fault.injected_at - origin, (end or fault.injected_at) - origin)
        )
    ends = [1.0, *(p.end for p in phases), *(f.end for f in faults)]
    if journal.timeline is not None and journal.timeline.t:
        ends.append(journal.timeline.t[-1] + 1.0)
    if journal.mesh_timeline is not None and journal.mesh_timeline.t:
        ends.append(journal.mesh_timeline.t[-1])
    moments = action_moments(journal, origin)
    ends.extend(m.at for m in moments)
    return Marks(phases=phases, faults=faults, end=max(ends), actions=moments)


def _slo_rows(results: list[SloResult]) -> list[SloRow]:
    return [
        SloRow(
            slo=r.slo,
            kind=r.kind,
            phase=r.phase,
            verdict=str(r.verdict),
            measured=_slo_value(r.measured, r.unit, r.kind),
            lower=_slo_value(r.lower, r.unit, r.kind),
            upper=_slo_value(r.upper, r.unit, r.kind),
            objective=(
                "≥ " if r.kind in AT_LEAST_KINDS else "= " if r.kind == "trafficShare" else "≤ "
            )
            + _slo_value(r.objective, r.unit, r.kind),
            confidence=f"{r.confidence * 100:g}%",
            n=r.n,
            message=r.message,
            pair_verdict=(
                str(r.pair_verdict)
                if r.pair_verdict is not None and r.pair_verdict != r.verdict
                else ""
            ),
        )
        for r in results
    ]


def _fault_rows(journal: Journal, origin: float) -> list[FaultRow]:
    rows = []
    for fault in journal.faults:
        active = (
            fault.reverted_at - fault.injected_at
            if fault.injected_at is not None and fault.reverted_at is not None
            else None
        )
        rows.append(
            FaultRow(
                name=fault.name,
                kind=fault.kind,
                phase=fault.phase,
                targets=", ".join(fault.targets),
                injected=_relative(fault.injected_at, origin),
                reverted=_relative(fault.reverted_at, origin),
                active_for=formats.elapsed(active),
                revert_verified=fault.revert_verified,
                evidence=sorted(fault.evidence.items()),
                took_effect=fault.took_effect,
                message=fault.effect_message,
                detail=json.dumps(fault.detail, indent=1, sort_keys=True) if fault.detail else "",
                manual=fault.trigger == "operator",
            )
        )
    return rows


def _amplification(attempts: int, retries: int) -> str:
    requests = attempts - retries
    return "—" if requests <= 0 else f"{attempts / requests:.2f}×"


def _edge_tables(
    edges: list[EdgeStats], phase_order: list[str]
) -> tuple[list[str], list[str], list[EdgeTable]]:
    """Counter columns to show, counters zero everywhere (named in a footnote), the rows."""
    present: dict[str, int] = {}
    for edge in edges:
        for values in (edge.total, *edge.phases.values()):
            for key, value in values.items():
                present[key] = present.get(key, 0) + abs(value)
    ordered = [k for k in EDGE_COLUMNS if k in present] + sorted(set(present) - set(EDGE_COLUMNS))
    always = (stats.ATTEMPTS, stats.RETRIES)
    keys = [k for k in ordered if present[k] or k in always]
    zero = [k for k in ordered if k not in keys]
    tables = []
    for edge in edges:
        phases = [p for p in phase_order if p in edge.phases] + sorted(
            set(edge.phases) - set(phase_order)
        )
        rows = []
        for name, values, is_total in [
            *((p, edge.phases[p], False) for p in phases),
            ("total", edge.total, True),
        ]:
            attempts = values.get(stats.ATTEMPTS, 0)
            retries = values.get(stats.RETRIES, 0)
            rows.append(
                EdgeRow(
                    phase=name,
                    requests=attempts - retries,
                    values=[values.get(k, 0) for k in keys],
                    amplification=_amplification(attempts, retries),
                    is_total=is_total,
                )
            )
        tables.append(EdgeTable(edge.caller, edge.callee, rows))
    return keys, zero, tables


def _ejection_notes(edges: list[EdgeStats]) -> list[str]:
    """Edges where the outlier detector wanted to eject but ``maxEjectionPercent`` refused."""
    notes = []
    for edge in edges:
        blocked = edge.total.get("outlier_detection.ejections_overflow", 0)
        if blocked > 0:
            done = edge.total.get("outlier_detection.ejections_enforced_total", 0)
            notes.append(
                f"{edge.caller} → {edge.callee}: {blocked} ejection"
                f"{'' if blocked == 1 else 's'} the outlier detector decided on were refused "
                f"because maxEjectionPercent was reached (outlier_detection.ejections_overflow); "
                f"{done} enforced. The detector tripped; the cap held it back."
            )
    return notes


def _flag_table(flags: dict[str, dict[str, int]]) -> FlagTable | None:
    if not flags:
        return None
    per_edge: dict[str, dict[str, int]] = {}
    entries: dict[str, int] = {}
    for edge, counts in sorted(flags.items()):
        tally = per_edge.setdefault(edge, {})
        for value, count in counts.items():
            entries[edge] = entries.get(edge, 0) + count
            for code in split_flags(value):
                tally[code] = tally.get(code, 0) + count
    totals: dict[str, int] = {}
    for tally in per_edge.values():
        for code, count in tally.items():
            totals[code] = totals.get(code, 0) + count
    codes = sorted(totals, key=lambda c: (-totals[c], c))
    rows = []
    for edge, tally in per_edge.items():
        flagged = sum(
            count for value, count in flags[edge].items() if split_flags(value)
        )  # lines with at least one flag (a line may carry several)
        top = max(tally.values(), default=0)
        rows.append(
            FlagRow(
                edge=edge,
                entries=entries.get(edge, 0),
                flagged=flagged,
                counts=[tally.get(code, 0) for code in codes],
                shares=[tally.get(code, 0) / top if top else 0.0 for code in codes],
            )
        )
    return FlagTable(
        codes=codes,
        titles=[_flags_meaning(code) for code in codes],
        counts_all_lines=any("-" in counts for counts in flags.values()),
        rows=rows,
        legend=[RESPONSE_FLAGS[c] for c in codes if c in RESPONSE_FLAGS],
        unknown=[c for c in codes if c not in RESPONSE_FLAGS],
    )


def _code_order(code: str) -> tuple[int, str]:
    """Statuses ("503") and classes ("5xx", older journals) by number; "0" (no answer) last."""
    if code == "0" or not code[:1].isdigit():
        return (1000, code)
    rest = code[1:]
    return (int(code[0]) * 100 + (int(rest) if rest.isdigit() else 99), code)


def _is_good(code: str) -> bool:
    return code[:1] in ("1", "2", "3") and code != "0"


def _sided_flags(journal: Journal) -> dict[str, dict[str, int]]:
    """The flag table's rows: each edge's caller side and callee side apart (older journals
    have one merged map per edge, shown as it is)."""
    if not journal.response_flags_callee:
        return journal.response_flags
    rows: dict[str, dict[str, int]] = {}
    for edge in sorted(set(journal.response_flags) | set(journal.response_flags_callee)):
        for side, table in (
            ("caller", journal.response_flags),
            ("callee", journal.response_flags_callee),
        ):
            if edge in table and (table[edge] or side == "caller"):
                rows[f"{edge} ({side})"] = table[edge]
    return rows


def _code_table(codes: dict[str, dict[str, int]]) -> CodeTable | None:
    if not codes:
        return None
    classes = sorted({c for counts in codes.values() for c in counts}, key=_code_order)
    rows = []
    for edge, counts in sorted(codes.items()):
        total = sum(counts.values())
        bad = sum(v for c, v in counts.items() if not _is_good(c))
        rows.append(
            (
                edge,
                [counts.get(c, 0) for c in classes],
                formats.percent(bad / total if total else None),
            )
        )
    return CodeTable(classes, rows)


def _gaps(times: list[float], step: float) -> str:
    """``[12.0, 13.0, 14.0, 20.0]`` → ``"12.0–14.0 s, 20.0 s"``: runs of missed samples."""
    runs: list[list[float]] = []
    for t in sorted(times):
        if runs and t - runs[-1][-1] <= step * 1.5:
            runs[-1].append(t)
        else:
            runs.append([t])
    return ", ".join(
        f"{run[0]:.1f} s" if len(run) == 1 else f"{run[0]:.1f}–{run[-1]:.1f} s" for run in runs
    )


def _mesh_notes(journal: Journal) -> tuple[list[str], str]:
    mesh = journal.mesh_timeline
    if mesh is None:
        return [], ""
    gaps = sorted(b - a for a, b in itertools.pairwise(mesh.t) if b > a)
    step = gaps[len(gaps) // 2] if gaps else 1.0
    notes = [
        f"{proxy} did not answer at {_gaps(times, step)} ({len(times)} of {len(mesh.t)} samples)"
        + (f"; last error: {mesh.scrape_errors[proxy]}" if proxy in mesh.scrape_errors else "")
        for proxy, times in sorted(mesh.gaps.items())
    ]
    notes += [
        f"{proxy}: {error}"
        for proxy, error in sorted(mesh.scrape_errors.items())
        if proxy not in mesh.gaps
    ]
    scrapes = ""
    if mesh.scrape_ms:
        ordered = sorted(mesh.scrape_ms)
        scrapes = (
            f"{len(mesh.t)} samples about every {step:.1f} s; a scrape of every sidecar took "
            f"{ordered[len(ordered) // 2]:.0f} ms (median), {ordered[-1]:.0f} ms at most."
        )
    return notes, scrapes


def _flags_meaning(value: str) -> str:
    codes = split_flags(value)
    return "; ".join(
        f"{c}: {RESPONSE_FLAGS[c].meaning}" if c in RESPONSE_FLAGS else f"{c}: unknown flag"
        for c in codes
    )


def _why(path: RequestPath) -> str:
    reasons = []
    if path.status == 0:
        reasons.append("transport error")
    elif path.status >= 400:
        reasons.append(f"failed ({path.status})")
    if any(h.attempts > 1 for h in path.hops):
        reasons.append("retried")
    if any(split_flags(h.flags) for h in path.hops):
        reasons.append("flagged")
    return ", ".join(reasons) or "ok"


def _reached(path: RequestPath, versions: dict[str, str]) -> str:
    """``gateway-0, catalog-1, reviews-v2-0 (v2), ...``: where a request went through a
    fan-out, from the inbound hops; versions where the journal names them."""
    names = dict.fromkeys(
        h.proxy for h in sorted(path.hops, key=lambda h: h.start) if h.direction == "inbound"
    )
    return ", ".join(
        f"{name} ({versions[name]})" if versions.get(name, "v1") != "v1" else name for name in names
    )


def _paths(
    paths: list[RequestPath], origin: float, versions: dict[str, str] | None = None
) -> list[PathView]:
    # The interesting ones first (failed, retried, flagged), then the plain ones, as recorded.
    ranked = sorted(enumerate(paths), key=lambda item: (_why(item[1]) == "ok", item[0]))
    views = []
    for _, path in ranked[:MAX_REQUEST_PATHS]:
        first = min((h.start for h in path.hops), default=origin)
        hops = [
            HopRow(
                proxy=h.proxy,
                direction=h.direction,
                authority=h.authority,
                path=h.path,
                status=h.status,
                flags=h.flags,
                flags_meaning=_flags_meaning(h.flags),
                upstream=h.upstream,
                attempts=h.attempts,
                ms=h.ms,
                offset=f"+{(h.start - first) * 1000:.0f} ms",
            )
            for h in sorted(path.hops, key=lambda h: h.start)
        ]
        at = _relative(first, origin) if path.hops else "—"
        reached = _reached(path, versions or {})
        views.append(PathView(path.rid, path.status, path.phase, at, _why(path), hops, reached))
    return views


def _load_rows(journal: Journal) -> list[LoadRow]:
    if journal.load is None:
        return []
    return [
        LoadRow(
            phase=p.phase,
            count=p.count,
            ok=p.ok,
            errors=p.errors,
            error_share=formats.percent(p.errors / p.count if p.count else None),
            offered="—" if p.offered_rate is None else f"{p.offered_rate:.1f}",
            achieved=f"{p.achieved_rate:.1f}",
            p50=formats.milliseconds(p.latency.p50_ms),
            p95=formats.milliseconds(p.latency.p95_ms),
            p99=formats.milliseconds(p.latency.p99_ms),
            max=formats.milliseconds(p.latency.max_ms),
            statuses=", ".join(f"{k}: {v:,}" for k, v in sorted(p.status_counts.items())),
            coordinated_omission=p.coordinated_omission,
            message=p.message,
            raw_p99=formats.milliseconds(p.raw_latency.p99_ms)
            if p.raw_latency is not None
            else "—",
        )
        for p in journal.load.phases
    ]


def _nearest_rank_us(histogram: Any, percentile: float, count: int) -> float:
    """The histogram's value at the nearest rank ``ceil(q * n)`` (at least 1), the rule of
    the load table and the verdicts (``harness.observe.timeline.nearest_rank``).

    HdrHistogram's own ``get_value_at_percentile`` takes rank ``round(q * n)`` instead
    (``int(q * n + 0.5)``): at n = 1060, p99 it is rank 1049 against 1050. Asking it for
    rank ``k - 0.25`` rounds to exactly ``k``; the value is the bucket's highest equivalent
    value (3 significant digits).
    """
    rank = max(1, math.ceil(percentile / 100.0 * count - 1e-9))
    return float(histogram.get_value_at_percentile(100.0 * (rank - 0.25) / count))


def _spectra(
    histograms: dict[str, str], phase_order: list[str]
) -> tuple[dict[str, list[tuple[float, float]]], list[SpectrumRow], list[str]]:
    from hdrh.histogram import HdrHistogram

    spectra: dict[str, list[tuple[float, float]]] = {}
    rows: list[SpectrumRow] = []
    notes: list[str] = []
    ordered = [p for p in phase_order if p in histograms] + sorted(
        set(histograms) - set(phase_order)
    )
    for phase in ordered:
        try:
            histogram = HdrHistogram.decode(histograms[phase])
        except Exception as exc:  # a foreign or torn encoding: say so, render the rest
            notes.append(f"phase {phase}: the latency histogram could not be decoded ({exc})")
            continue
        count = int(histogram.get_total_count())
        if count == 0:
            notes.append(f"phase {phase}: no successful request")
            continue

        def at(p: float, h: Any = histogram, n: int = count) -> float:
            return _nearest_rank_us(h, p, n) / 1000.0  # µs → ms

        spectra[phase] = [(p, at(p)) for p in SPECTRUM_PERCENTILES]
        rows.append(
            SpectrumRow(
                phase=phase,
                count=count,
                p50=formats.milliseconds(at(50.0)),
                p90=formats.milliseconds(at(90.0)),
                p99=formats.milliseconds(at(99.0)),
                p999=formats.milliseconds(at(99.9)),
                max=formats.milliseconds(float(histogram.get_max_value()) / 1000.0),
            )
        )
    return spectra, rows, notes


def _environment_rows(journal: Journal) -> list[tuple[str, str]]:
    rows = [
        ("platform", journal.platform),
        ("isolation", f"{journal.isolation} — {journal.isolation_note}".rstrip(" —")),
        ("mesh", journal.mesh),
        *((f"namespace {k}", v) for k, v in sorted(journal.namespaces.items())),
        ("scenario file", journal.scenario_file or "—"),
        ("journal schema", str(journal.schema_version)),
    ]
    plane = journal.control_plane
    if plane is not None:
        rows.append(("Istio", plane.istio_version))
        rows.append(("Kubernetes API", plane.kubernetes_version))
        rows.extend(
            (f"control plane: {name.removesuffix('_s').replace('_', ' ')}", f"{value:.1f} s")
            for name, value in plane.timings.steps()
        )
        rows.extend(
            (
                f"policy push: {push.change}",
                f"{push.seconds:.2f} s to {len(push.proxies)} proxies (API write → all SYNCED)",
            )
            for push in plane.pushes
        )
    rows.extend(_control_plane_fault_rows(journal))
    rows.extend(sorted(journal.environment.items()))
    return rows


def _control_plane_fault_rows(journal: Journal) -> list[tuple[str, str]]:
    """Each control-plane fault's resync time and each configPropagation change's path."""
    rows = [
        (
            f"control-plane fault: {fault.name}",
            f"{fault.detail.get('action')} {fault.detail.get('component')}; every proxy SYNCED "
            + (
                f"again {fault.detail['resynced_s']:.1f} s after the revert began"
                if "resynced_s" in fault.detail
                else "again: not seen"
            ),
        )
        for fault in journal.faults
        if fault.kind == "controlPlane"
    ]
    for change in journal.config_changes:
        if change.written_at is None:
            how = f"never written ({change.write_errors} attempts: {change.error})"
        elif change.synced_at is None:
            how = f"not SYNCED on {', '.join(change.pending)} when the run ended"
        else:
            count = len(change.proxies)
            how = (
                f"written {change.written_at - change.due_at:.2f} s after due, SYNCED on "
                f"{count} prox{'y' if count == 1 else 'ies'} "
                f"{change.synced_at - change.written_at:.2f} s later"
            )
            if journal.phases and change.synced_at > max(w.end for w in journal.phases):
                how += ", after the run ended"
        rows.append((f"config change: {change.header} on {change.service}'s routes", how))
    return rows


def _sections(journal: Journal) -> Sections:
    origin = _origin(journal)
    marks = _marks(journal, origin)
    phase_order = [p.name for p in journal.phases]
    load_plot = (
        load_timeline_plot(journal.timeline, marks) if journal.timeline is not None else None
    )
    mesh_plot, quiet = (
        mesh_signal_plot(journal.mesh_timeline, marks)
        if journal.mesh_timeline is not None
        else (None, [])
    )
    health_plot = (
        endpoint_health_plot(journal.mesh_timeline, marks)
        if journal.mesh_timeline is not None
        else None
    )
    mesh_gaps, mesh_scrapes = _mesh_notes(journal)
    spectra, spectrum_rows, notes = _spectra(journal.latency_histograms, phase_order)
    keys, zero_keys, edge_tables = _edge_tables(journal.edges, phase_order)
    slo_counts = {v: 0 for v in ("PASS", "FAIL", "INCONCLUSIVE")}
    for result in journal.slos:
        slo_counts[str(result.verdict)] = slo_counts.get(str(result.verdict), 0) + 1
    end = journal.ended_at
    metadata = journal.scenario.get("metadata")
    return Sections(
        origin=origin,
        description=str(metadata.get("description", "")) if isinstance(metadata, dict) else "",
        duration=formats.elapsed(end - journal.started_at if end is not None else None),
        started=_clock(journal.started_at),
        ended=_clock(end),
        slos=_slo_rows(journal.slos),
        slo_counts=slo_counts,
        faults=_fault_rows(journal, origin),
        actions=action_rows(journal, origin),
        marks=marks,
        load_plot=load_plot,
        mesh_plot=mesh_plot,
        quiet_edges=quiet,
        health_plot=health_plot,
        edge_columns=[EDGE_COLUMNS.get(k, (k, k)) for k in keys],
        edge_zero_columns=zero_keys,
        edges=edge_tables,
        ejection_notes=_ejection_notes(journal.edges),
        flags=_flag_table(_sided_flags(journal)),
        codes=_code_table(journal.response_codes),
        aborted_at=_relative(journal.aborted_at, origin),
        rolled_back_at=_relative(journal.rolled_back_at, origin),
        mesh_gaps=mesh_gaps,
        mesh_scrapes=mesh_scrapes,
        graph=service_graph(journal.edges, journal.faults),
        graph_legend=[(color, label) for _, color, label in HEALTH_SCALE]
        + [(NO_TRAFFIC, "no traffic")],
        paths=_paths(
            journal.request_paths,
            origin,
            {inst.name: inst.version for inst in journal.instances},
        ),
        load=_load_rows(journal),
        spectrum_plot=latency_spectrum_plot(spectra),
        spectrum=spectrum_rows,
        spectrum_notes=notes,
        environment=_environment_rows(journal),
        scenario_yaml=(
            yaml.safe_dump(journal.scenario, sort_keys=False, allow_unicode=True, width=100)
            if journal.scenario
            else ""
        ),
    )


# --------------------------------------------------------------------------- rendering


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,  # every value is escaped, whatever the template's file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["count"] = formats.count
    return environment


def render_report(journal: Journal) -> str:
    """The HTML report of one run, from its journal alone.

    >>> html = render_report(Journal.read(Path("reports/…/journal.json")))
    """
    return _templates().get_template("report.html.j2").render(j=journal, s=_sections(journal))


def write_report(journal_path: Path, out: Path | None = None) -> Path:
    """Read ``journal_path`` and write its report (default: ``report.html`` beside it).

    ``out`` may name a directory (the report goes to ``<out>/report.html``). Raises
    ``OSError`` or ``ValueError`` for a missing or unreadable journal, and
    :class:`~harness.errors.OutputError` when the target cannot be written safely (it is
    the journal itself, say).

    >>> write_report(Path("reports/retries-mask-transient-errors/<run id>/journal.json"))
    PosixPath('reports/retries-mask-transient-errors/<run id>/report.html')
    """
    journal = Journal.read(journal_path)
    target = out if out is not None else journal_path.with_name("report.html")
    if target.is_dir() and not target.is_symlink():
        target = target / "report.html"
    write_atomic(target, render_report(journal), inputs=[journal_path])
    return target


@dataclass(frozen=True)
class IndexRow:
    href: str
    scenario: str
    run_id: str
    verdict: str
    status: str
    duration: str
    started: str
    slo_counts: dict[str, int]
    faults: str
    problems: list[str]


def _index_row(report: Path, base: Path) -> IndexRow:
    href = urllib.parse.quote(Path(os.path.relpath(report.resolve(), base.resolve())).as_posix())
    try:
        journal = Journal.read(report.with_name("journal.json"))
    except (OSError, ValueError) as exc:
        return IndexRow(
            href,
            report.parent.parent.name,
            report.parent.name,
            "ERROR",
            "unreadable",
            "—",
            "—",
            {},
            "—",
            [f"journal unreadable: {exc}"],
        )
    counts: dict[str, int] = {}
    for result in journal.slos:
        counts[str(result.verdict)] = counts.get(str(result.verdict), 0) + 1
    effective = sum(1 for f in journal.faults if f.took_effect)
    end = journal.ended_at
    return IndexRow(
        href=href,
        scenario=journal.scenario_name,
        run_id=journal.run_id,
        verdict=journal.verdict,
        status=journal.status,
        duration=formats.elapsed(end - journal.started_at if end is not None else None),
        started=_clock(journal.started_at),
        slo_counts=counts,
        faults=f"{effective}/{len(journal.faults)} took effect" if journal.faults else "none",
        problems=[*journal.problems, *([journal.error] if journal.error else [])],
    )


def write_index(report_paths: list[Path], out: Path) -> Path:
    """Write a suite index page linking every report, with each run's verdict.

    Each report's ``journal.json`` beside it supplies the verdict; links are relative, so
    the directory can be moved or archived as a whole.
    """
    rows = [_index_row(path, out.parent) for path in report_paths]
    totals = {v: sum(1 for r in rows if r.verdict == v) for v in VERDICTS}
    html = (
        _templates()
        .get_template("index.html.j2")
        .render(rows=rows, totals={k: v for k, v in totals.items() if v})
    )
    write_atomic(out, html, inputs=[path.with_name("journal.json") for path in report_paths])
    return out
