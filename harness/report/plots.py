"""The report's charts: matplotlib figures embedded as base64 SVG data URIs.

SVG keeps a 60 s run's charts small (tens of kB each) and sharp at any zoom; text stays
text (``svg.fonttype = none``). Figures are built with :class:`matplotlib.figure.Figure`
directly, never through ``pyplot``, so no GUI backend or global figure state is involved
and rendering can be repeated safely. Every time chart shares one axis, seconds since the
load started, with fault windows shaded and phase boundaries marked.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import matplotlib
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from harness.journal import LoadTimeline, MeshTimeline
from harness.mesh import stats

__all__ = [
    "MESH_SIGNALS",
    "Marks",
    "Plot",
    "Span",
    "endpoint_health_plot",
    "latency_spectrum_plot",
    "load_timeline_plot",
    "mesh_signal_plot",
]

# Envoy counter → label, for the per-edge mesh signal chart (in drawing order).
MESH_SIGNALS: dict[str, str] = {
    stats.RETRIES: "retries",
    stats.RETRY_OVERFLOW: "retry overflow",
    stats.PENDING_OVERFLOW: "pending overflow",
    stats.ROUTE_TIMEOUTS: "timeouts",
    stats.PER_TRY_TIMEOUTS: "per-try timeouts",
    stats.EJECTIONS: "ejections",
}
_SIGNAL_COLORS = ("#1f77b4", "#9467bd", "#ff7f0e", "#d62728", "#e377c2", "#2ca02c")
_STATE_COLORS = {
    "healthy": "#4caf50",
    "ejected": "#d32f2f",
    "unhealthy": "#7b1fa2",
    "degraded": "#ffa000",
    "unknown": "#bdbdbd",  # the caller's sidecar did not answer
}
_OTHER_STATE = "#9e9e9e"
_FAULT_COLOR = "#d62728"
_ACTION_COLOR = "#7b3fa0"
# Fixed margins (inches) instead of a tight layout, so that every time chart puts its
# time axis at the same horizontal position: the charts line up one under the other.
_WIDTH_IN = 11.0
_LEFT_IN, _RIGHT_IN = 1.35, 1.9  # y labels; legends outside the axes on the right
_TOP_IN, _BOTTOM_IN, _GAP_IN = 0.3, 0.48, 0.14
_SVG_SIZE = re.compile(rb'<svg[^>]*?width="([\d.]+)pt"[^>]*?height="([\d.]+)pt"', re.DOTALL)


@dataclass(frozen=True)
class Span:
    """A named time window, in seconds since the load started."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Moment:
    """An instant worth a line across every time chart: a game day's note or action."""

    label: str  # short: the action's number in the report's table
    at: float  # seconds since the load started


@dataclass(frozen=True)
class Marks:
    """What every time chart marks: the phases, the windows when faults were active, and
    the operator's notes and actions of a game day."""

    phases: Sequence[Span]
    faults: Sequence[Span]
    end: float  # the right end of every time axis, so that all charts line up
    actions: Sequence[Moment] = ()


@dataclass(frozen=True)
class Plot:
    """A rendered chart: an ``<img>`` source (data URI), its size in CSS pixels, alt text."""

    title: str
    alt: str
    uri: str
    width: int
    height: int


def _style() -> AbstractContextManager[None]:
    """The charts' matplotlib settings, applied only while a chart is built or saved."""
    return matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text as <text>, not paths: smaller and selectable
            "svg.hashsalt": "harness-report",  # stable ids: the same journal gives the same file
            "text.parse_math": False,  # a "$" in a fault or phase name is text, not TeX
            "font.size": 8.5,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e6e6e6",
            "grid.linewidth": 0.6,
            "legend.frameon": False,
        }
    )


def _encode(figure: Figure, title: str, alt: str) -> Plot:
    buffer = io.BytesIO()
    with _style():
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    data = buffer.getvalue()
    match = _SVG_SIZE.search(data)
    # SVG sizes are in points; CSS pixels are 4/3 of a point.
    width, height = (
        (round(float(match.group(1)) * 4 / 3), round(float(match.group(2)) * 4 / 3))
        if match
        else (960, 480)
    )
    uri = "data:image/svg+xml;base64," + base64.b64encode(data).decode("ascii")
    return Plot(title=title, alt=alt, uri=uri, width=width, height=height)


def _new_figure(rows: int, row_height: float, left: float = _LEFT_IN) -> tuple[Figure, list[Axes]]:
    """``rows`` axes of ``row_height`` inches each, sharing the time axis."""
    height = _TOP_IN + _BOTTOM_IN + rows * row_height + (rows - 1) * _GAP_IN
    with _style():
        figure = Figure(figsize=(_WIDTH_IN, height))
        figure.subplots_adjust(
            left=left / _WIDTH_IN,
            right=1 - _RIGHT_IN / _WIDTH_IN,
            top=1 - _TOP_IN / height,
            bottom=_BOTTOM_IN / height,
            hspace=_GAP_IN / row_height,
        )
        grid = figure.subplots(rows, 1, sharex=True, squeeze=False)
    return figure, [ax for row in grid for ax in row]


def _mark(axes: list[Axes], marks: Marks) -> None:
    """Shade fault windows, draw phase boundaries, name the phases above the first axes."""
    x_max = marks.end
    for ax in axes:
        for fault in marks.faults:
            ax.axvspan(fault.start, fault.end, color=_FAULT_COLOR, alpha=0.10, lw=0, zorder=0)
        edges = sorted({p.start for p in marks.phases} | {p.end for p in marks.phases})
        for x in edges:
            ax.axvline(x, color="#777777", ls="--", lw=0.7, zorder=1)
        ax.set_xlim(0.0, x_max)
        for action in marks.actions:
            ax.axvline(action.at, color=_ACTION_COLOR, ls=":", lw=1.1, zorder=2)
    top = axes[0]
    label_at = blended_transform_factory(top.transData, top.transAxes)
    for phase in marks.phases:
        middle = (max(phase.start, 0.0) + min(phase.end, x_max)) / 2
        top.text(middle, 1.02, phase.label, transform=label_at, ha="center", va="bottom")
    for action in marks.actions:
        top.text(
            action.at,
            0.97,
            action.label,
            transform=label_at,
            ha="center",
            va="top",
            color=_ACTION_COLOR,
            fontsize=7.5,
            fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": _ACTION_COLOR, "pad": 1.0, "lw": 0.6},
        )
    axes[-1].set_xlabel("seconds since load start")


def _legend(ax: Axes, handles: Sequence[Artist] | None = None) -> None:
    """A legend outside the axes, in the right margin."""
    if handles is None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)


def _fault_legend(ax: Axes, marks: Marks, handles: list[Artist]) -> None:
    # The caption under each chart names the faults; the legend stays narrow.
    if marks.faults:
        handles.append(Patch(color=_FAULT_COLOR, alpha=0.15, label="fault active"))
    if marks.actions:
        handles.append(Line2D([], [], color=_ACTION_COLOR, ls=":", label="operator action"))
    _legend(ax, handles)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def load_timeline_plot(timeline: LoadTimeline, marks: Marks) -> Plot:
    """Offered vs achieved load, errors per second, and p50/p95/p99 latency per second."""
    t = list(timeline.t)
    edges = [*t, (t[-1] + 1.0) if t else 1.0]
    figure, (load, errors, latency) = _new_figure(3, 1.5)
    with _style():
        if t:
            if timeline.offered:  # empty in concurrency mode: no offered rate
                load.stairs(
                    timeline.offered, edges, color="#555555", lw=1.4, ls="--", baseline=None
                )
            load.stairs(timeline.achieved, edges, color="#1f77b4", lw=1.4, baseline=None)
            errors.stairs(timeline.errors, edges, color=_FAULT_COLOR, fill=True, alpha=0.8)
            middles = [x + 0.5 for x in t]
            for values, label, color in (
                (timeline.p50_ms, "p50", "#2ca02c"),
                (timeline.p95_ms, "p95", "#ff7f0e"),
                (timeline.p99_ms, "p99", "#d62728"),
            ):
                latency.plot(middles, _nan(values), color=color, lw=1.2, label=label)
            finite = [v for v in (*timeline.p50_ms, *timeline.p99_ms) if v is not None and v > 0]
            if finite and max(finite) / min(finite) > 30:
                latency.set_yscale("log")
        load.set_ylabel("req/s")
        load.set_ylim(bottom=0)
        errors.set_ylabel("errors/s")
        errors.set_ylim(bottom=0, top=max(1.0, errors.get_ylim()[1]))
        latency.set_ylabel("latency (ms)")
        if latency.get_yscale() == "linear":
            latency.set_ylim(bottom=0)
        _mark([load, errors, latency], marks)
        _fault_legend(
            load,
            marks,
            [
                Line2D([], [], color="#555555", ls="--", label="offered"),
                Line2D([], [], color="#1f77b4", label="achieved"),
            ],
        )
        _legend(errors, [Patch(color=_FAULT_COLOR, alpha=0.8, label="failed requests")])
        _legend(latency)
    return _encode(
        figure,
        "Load, errors and latency per second",
        "Offered and achieved requests per second, failed requests per second, and "
        "p50/p95/p99 latency per second, with fault windows shaded.",
    )


def mesh_signal_plot(mesh: MeshTimeline, marks: Marks) -> tuple[Plot | None, list[str]]:
    """Retries, overflows, timeouts and ejections per second, one row per edge with signal.

    Returns the chart (``None`` when no edge and no fault filter showed anything) and the
    edges left out because every signal stayed at zero.
    """
    t = list(mesh.t)
    # Value i is the increase over (t[i-1], t[i]]; the first one counts from the baseline
    # scrape, about one step before t[0].
    edges_x = [max(0.0, t[0] - _median_step(t)), *t] if t else []
    active: list[tuple[str, dict[str, list[int]]]] = []
    quiet: list[str] = []
    for series in mesh.edges:
        name = f"{series.caller} → {series.callee}"
        signals = {k: v for k, v in series.counters.items() if k in MESH_SIGNALS and any(v)}
        if signals:
            active.append((name, signals))
        else:
            quiet.append(name)
    injected = {
        instance: counters
        for instance, counters in sorted(mesh.injected.items())
        if any(any(values) for values in counters.values())
    }
    rows = len(active) + (1 if injected else 0)
    if rows == 0 or not t:
        return None, quiet
    figure, axes = _new_figure(rows, 1.15)
    with _style():
        index = 0
        if injected:
            ax = axes[0]
            for number, (instance, counters) in enumerate(injected.items()):
                for kind, values in sorted(counters.items()):
                    color = _SIGNAL_COLORS[number % len(_SIGNAL_COLORS)]
                    style = "-" if kind.startswith("abort") else ":"
                    ax.stairs(
                        _fit(values, len(t)),
                        edges_x,
                        color=color,
                        ls=style,
                        lw=1.3,
                        baseline=None,
                        label=f"{instance}: {kind}",
                    )
            _name(ax, "faults injected by the sidecars")
            ax.set_ylabel("per s")
            ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1] * 1.25))
            _legend(ax)
            index = 1
        for (name, signals), ax in zip(active, axes[index:], strict=True):
            for color, (counter, label) in zip(_SIGNAL_COLORS, MESH_SIGNALS.items(), strict=True):
                if counter in signals:
                    values = _fit(signals[counter], len(t))
                    ax.stairs(values, edges_x, color=color, lw=1.3, baseline=None, label=label)
            _name(ax, name)
            ax.set_ylabel("per s")
            ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1] * 1.25))  # room for the name
            _legend(ax)
        _mark(axes, marks)
    return (
        _encode(
            figure,
            "Mesh signals per second",
            "Per-second Envoy counters on each mesh edge (retries, overflows, timeouts, "
            "ejections) and faults injected per instance, with fault windows shaded.",
        ),
        quiet,
    )


def _name(ax: Axes, text: str) -> None:
    """Name a row of a stacked chart inside its axes, top left."""
    ax.text(
        0.005,
        0.96,
        text,
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8,
        fontweight="bold",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )


def endpoint_health_plot(mesh: MeshTimeline, marks: Marks) -> Plot | None:
    """A state strip per endpoint (as each caller sees it): healthy, ejected, ..."""
    if not mesh.endpoints or not mesh.t:
        return None
    t = list(mesh.t)
    step = _median_step(t)
    names = sorted(mesh.endpoints)
    # Row labels need room: widen the left margin only when a name is long.
    left = max(_LEFT_IN, 0.25 + 0.062 * max(len(n) for n in names))
    figure, (ax,) = _new_figure(1, 0.26 * len(names) + 0.1, left=left)
    seen: dict[str, str] = {}
    with _style():
        for row, name in enumerate(names):
            for state, start, end in _runs(mesh.endpoints[name], t, step):
                color = _STATE_COLORS.get(state, _OTHER_STATE)
                seen.setdefault(state, color)
                ax.broken_barh([(start, end - start)], (row - 0.38, 0.76), color=color, lw=0)
        ax.set_yticks(range(len(names)), names, fontsize=7.5)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.grid(False)
        _mark([ax], marks)
        handles: list[Artist] = [Patch(color=c, label=s) for s, c in sorted(seen.items())]
        _fault_legend(ax, marks, handles)
    return _encode(
        figure,
        "Endpoint health",
        "Health of each endpoint as its caller's sidecar saw it, sample by sample.",
    )


def latency_spectrum_plot(spectra: dict[str, list[tuple[float, float]]]) -> Plot | None:
    """Latency by percentile per phase (the HdrHistogram view: a log axis of nines).

    ``spectra`` maps a phase to ``(percentile, milliseconds)`` points.
    """
    if not spectra:
        return None
    figure, (ax,) = _new_figure(1, 2.4)
    with _style():
        for index, (phase, points) in enumerate(spectra.items()):
            xs = [1.0 / (1.0 - p / 100.0) for p, _ in points]
            ax.plot(
                xs,
                [ms for _, ms in points],
                lw=1.4,
                label=phase,
                color=_SIGNAL_COLORS[index % len(_SIGNAL_COLORS)],
            )
        ax.set_xscale("log")
        ax.minorticks_off()
        ticks = [1 / (1 - q) for q in (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999)]
        ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlim(1.0, ticks[-1])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_ylim(bottom=0)
        _legend(ax)
    return _encode(
        figure,
        "Latency by percentile",
        "Latency of successful requests by percentile, one line per phase.",
    )


def _median_step(t: Sequence[float]) -> float:
    gaps = sorted(b - a for a, b in itertools.pairwise(t) if b > a)
    return gaps[len(gaps) // 2] if gaps else 1.0


def _fit(values: Sequence[int], length: int) -> list[int]:
    """Pad or cut a series to the sample count (a late sidecar may miss a sample)."""
    return [*values[:length], *([0] * (length - len(values)))]


def _runs(states: Sequence[str], t: Sequence[float], step: float) -> list[tuple[str, float, float]]:
    """Run-length encode a state series into ``(state, start, end)`` spans."""
    runs: list[tuple[str, float, float]] = []
    for index, state in enumerate(states[: len(t)]):
        start = t[index]
        end = t[index + 1] if index + 1 < len(t) else start + step
        if runs and runs[-1][0] == state and runs[-1][2] == start:
            runs[-1] = (state, runs[-1][1], end)
        else:
            runs.append((state, start, end))
    return runs
