"""The service graph: ingress and services as boxes, mesh edges as arrows coloured by health.

Laid out here (layers by call depth, left to right) and drawn as inline SVG by the report
template, so every name goes through jinja's escaping like the rest of the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.journal import EdgeStats, FaultEntry
from harness.mesh.stats import ANSWERED_5XX, ATTEMPTS, RETRIES

__all__ = ["HEALTH_SCALE", "GraphEdge", "GraphNode", "ServiceGraph", "service_graph"]

# Upper limit of the share of failed attempts → colour and legend label, checked in order.
HEALTH_SCALE: tuple[tuple[float, str, str], ...] = (
    (0.0, "#2e7d32", "none failed"),
    (0.01, "#9ccc65", "< 1%"),
    (0.05, "#f9a825", "1–5%"),
    (0.20, "#ef6c00", "5–20%"),
    (1.0, "#c62828", "> 20%"),
)
NO_TRAFFIC = "#9e9e9e"
_NODE_W, _NODE_H = 120.0, 40.0
_COLUMN_GAP, _ROW_GAP, _MARGIN = 320.0, 96.0, 24.0
_INSTANCE = re.compile(r"-\d+$")


@dataclass(frozen=True)
class GraphNode:
    name: str
    x: float
    y: float
    width: float
    height: float
    faults: tuple[str, ...]  # names of faults targeting one of its instances
    title: str  # tooltip


@dataclass(frozen=True)
class GraphEdge:
    caller: str
    callee: str
    path: str  # SVG path data
    label_x: float
    label_y: float
    label: tuple[str, ...]  # lines
    color: str
    marker: int  # index into HEALTH_SCALE (len(HEALTH_SCALE) for no traffic)
    stroke: float
    title: str  # tooltip


@dataclass(frozen=True)
class ServiceGraph:
    width: float
    height: float
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    basis: str  # which phases the colours and labels count


def _health(share: float | None) -> tuple[int, str]:
    if share is None:
        return len(HEALTH_SCALE), NO_TRAFFIC
    for index, (limit, color, _) in enumerate(HEALTH_SCALE):
        if share <= limit:
            return index, color
    return len(HEALTH_SCALE) - 1, HEALTH_SCALE[-1][1]


def _depths(names: list[str], pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Longest call depth from a root (a node nobody calls); cycles are cut off."""
    depth = dict.fromkeys(names, 0)
    for _ in names:  # Bellman-Ford style relaxation: at most len(names) rounds
        changed = False
        for caller, callee in pairs:
            if caller != callee and depth[callee] < depth[caller] + 1 <= len(names):
                depth[callee] = depth[caller] + 1
                changed = True
        if not changed:
            break
    return depth


def _sum(edge: EdgeStats, phases: Iterable[str]) -> dict[str, int]:
    total: dict[str, int] = {}
    for phase in phases:
        for key, value in edge.phases.get(phase, {}).items():
            total[key] = total.get(key, 0) + value
    return total


def _layout(
    edges: list[EdgeStats],
) -> tuple[list[str], dict[str, tuple[float, float]], float, float]:
    """Service names, their positions (columns by call depth), the width and the height."""
    pairs = [(e.caller, e.callee) for e in edges]
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    depth = _depths(names, pairs)
    columns: dict[int, list[str]] = {}
    for name in sorted(names, key=lambda n: (depth[n], n != "ingress")):
        columns.setdefault(depth[name], []).append(name)
    tallest = max(len(column) for column in columns.values())
    height = 2 * _MARGIN + tallest * _ROW_GAP - (_ROW_GAP - _NODE_H)
    width = 2 * _MARGIN + max(columns) * _COLUMN_GAP + _NODE_W
    position: dict[str, tuple[float, float]] = {}
    for level, column in columns.items():
        offset = (tallest - len(column)) * _ROW_GAP / 2
        for row, name in enumerate(column):
            position[name] = (_MARGIN + level * _COLUMN_GAP, _MARGIN + offset + row * _ROW_GAP)
    return names, position, width, height


def _nodes(
    names: list[str], position: dict[str, tuple[float, float]], faults: list[FaultEntry]
) -> list[GraphNode]:
    faulted: dict[str, list[str]] = {}
    for fault in faults:
        for target in fault.targets:
            service = _INSTANCE.sub("", target)
            faulted.setdefault(service, [])
            if fault.name not in faulted[service]:
                faulted[service].append(fault.name)
    nodes = []
    for name in names:
        x, y = position[name]
        hits = tuple(faulted.get(name, []))
        title = name + (f" — fault: {', '.join(hits)}" if hits else "")
        nodes.append(GraphNode(name, x, y, _NODE_W, _NODE_H, hits, title))
    return nodes


def _edge(
    edge: EdgeStats,
    position: dict[str, tuple[float, float]],
    fault_phases: list[str],
    basis: str,
) -> GraphEdge:
    counted = _sum(edge, fault_phases) if fault_phases else dict(edge.total)
    attempts = counted.get(ATTEMPTS, 0)
    retries = counted.get(RETRIES, 0)
    answered_5xx = counted.get(ANSWERED_5XX, 0)
    # Envoy counts a 5xx only when it passes the answer on; every retry follows an attempt
    # that failed. Together they are the attempts the callee failed.
    failed = retries + answered_5xx
    share = min(1.0, failed / attempts) if attempts else None
    marker, color = _health(share)
    (x1, y1), (x2, y2) = position[edge.caller], position[edge.callee]
    start = (x1 + _NODE_W, y1 + _NODE_H / 2)
    end = (x2 - 6, y2 + _NODE_H / 2)  # leave room for the arrow head
    bend = max(40.0, (end[0] - start[0]) / 2)
    path = (
        f"M{start[0]:.1f},{start[1]:.1f} C{start[0] + bend:.1f},{start[1]:.1f} "
        f"{end[0] - bend:.1f},{end[1]:.1f} {end[0]:.1f},{end[1]:.1f}"
    )
    share_text = "no traffic" if share is None else f"{share:.1%} of attempts failed"
    label = (f"{attempts - retries:,} req · {retries:,} retries", share_text)
    title = (
        f"{edge.caller} → {edge.callee} during {basis}: {attempts - retries:,} requests, "
        f"{attempts:,} attempts, {retries:,} retries, {answered_5xx:,} 5xx answers passed on"
    )
    return GraphEdge(
        caller=edge.caller,
        callee=edge.callee,
        path=path,
        # Beside the arrow's straight tail: above it, or below when the edge comes
        # down from above (the curve then occupies the space above the tail).
        label_x=end[0] - 12,
        label_y=end[1] + 15 if end[1] > start[1] else end[1] - 19,
        label=label,
        color=color,
        marker=marker,
        stroke=1.5 + min(4.0, len(str(max(attempts, 1))) * 0.6),
        title=title,
    )


def service_graph(edges: list[EdgeStats], faults: list[FaultEntry]) -> ServiceGraph | None:
    """Lay out the graph of ``edges``, counting the phases that had faults (else the run).

    >>> service_graph([], []) is None
    True
    """
    if not edges:
        return None
    fault_phases = sorted({f.phase for f in faults if any(f.phase in e.phases for e in edges)})
    basis = (
        "phase" + ("s " if len(fault_phases) > 1 else " ") + ", ".join(fault_phases)
        if fault_phases
        else "the whole run (no fault phase)"
    )
    names, position, width, height = _layout(edges)
    nodes = _nodes(names, position, faults)
    drawn = [_edge(edge, position, fault_phases, basis) for edge in edges]
    return ServiceGraph(width, height, tuple(nodes), tuple(drawn), basis)
