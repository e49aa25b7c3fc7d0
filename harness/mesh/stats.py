"""Envoy's counters as the harness reads them: the names, the edge a stat belongs to, sums.

The one place that spells Envoy stat names and parses their keys. A caller's sidecar counts
its calls to a service on the outbound cluster ``outbound|<port>||<service>``, so the key
``cluster.outbound|8080||catalog.upstream_rq_retry`` on a frontend sidecar is the counter
``upstream_rq_retry`` of the edge frontend → catalog; a callee's sidecar counts the faults
it injected as ``http.inbound_<service>.fault.aborts_injected``.

Readers: the platform (which counters it scrapes), the sampler (per-second increases), the
runner (per-phase increases, :func:`edge_stats`) and the fault injectors (evidence).

>>> edge_stat("cluster.outbound|8080||catalog.upstream_rq_retry")
('catalog', 'upstream_rq_retry')
>>> fault_stat("http.inbound_catalog.fault.aborts_injected")
'aborts_injected'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.journal import EdgeStats, PhaseWindow

__all__ = [
    "ANSWERED_5XX",
    "ATTEMPTS",
    "CONNECTION_OVERFLOW",
    "CONNECT_FAILURES",
    "CONNECT_TIMEOUTS",
    "EDGE_COUNTERS",
    "EJECTED_NOW",
    "EJECTIONS",
    "EJECTIONS_DETECTED_5XX",
    "EJECTIONS_DETECTED_GATEWAY",
    "EJECTION_COUNTERS",
    "EJECTION_OVERFLOW",
    "FAULT_COUNTERS",
    "FAULT_LABELS",
    "HOST_COUNTERS",
    "PENDING_OVERFLOW",
    "PER_TRY_TIMEOUTS",
    "QUEUEING",
    "REMOTE_CLOSES",
    "RETRIES",
    "RETRY_LIMIT",
    "RETRY_OVERFLOW",
    "RETRY_SUCCESS",
    "ROUTE_TIMEOUTS",
    "SCRAPE_PATTERN",
    "SHEDS",
    "SHED_COUNTERS",
    "CounterSource",
    "Snapshot",
    "cluster_hosts",
    "cluster_pattern",
    "edge_stat",
    "edge_stats",
    "ejected_now",
    "fault_stat",
    "host_counters",
    "inbound_fault_counters",
    "injected_totals",
    "stat_pattern",
    "sum_cluster_counters",
]

# The outbound cluster counters the harness reads, by what they count.
ATTEMPTS = "upstream_rq_total"  # every attempt, retries included
RETRIES = "upstream_rq_retry"
RETRY_SUCCESS = "upstream_rq_retry_success"
RETRY_OVERFLOW = "upstream_rq_retry_overflow"  # retry budget / maxRetries reached
RETRY_LIMIT = "upstream_rq_retry_limit_exceeded"
PENDING_OVERFLOW = "upstream_rq_pending_overflow"  # circuit breaker: request rejected
CONNECTION_OVERFLOW = "upstream_cx_overflow"  # maxConnections reached
ROUTE_TIMEOUTS = "upstream_rq_timeout"
PER_TRY_TIMEOUTS = "upstream_rq_per_try_timeout"
CONNECT_FAILURES = "upstream_cx_connect_fail"
CONNECT_TIMEOUTS = "upstream_cx_connect_timeout"
REMOTE_CLOSES = "upstream_cx_destroy_remote"
ANSWERED_5XX = "upstream_rq_5xx"  # 5xx answers passed on (not the retried ones)
EJECTIONS = "outlier_detection.ejections_enforced_total"
EJECTION_OVERFLOW = "outlier_detection.ejections_overflow"
"""Ejections the detector decided on but ``maxEjectionPercent`` refused."""
EJECTED_NOW = "outlier_detection.ejections_active"  # a gauge: hosts ejected at this moment
EJECTIONS_DETECTED_5XX = "outlier_detection.ejections_detected_consecutive_5xx"
EJECTIONS_DETECTED_GATEWAY = "outlier_detection.ejections_detected_consecutive_gateway_failure"
EJECTION_COUNTERS = (
    EJECTIONS,
    EJECTION_OVERFLOW,
    EJECTIONS_DETECTED_5XX,
    EJECTIONS_DETECTED_GATEWAY,
    "outlier_detection.ejections_enforced_consecutive_5xx",
    "outlier_detection.ejections_enforced_consecutive_gateway_failure",
)
"""Every outlier-detection counter the ``ejections`` verdict reads."""
SHEDS = (PENDING_OVERFLOW, RETRY_OVERFLOW)
"""Circuit-breaker rejections, what the ``sheds`` SLO counts: the pending queue (HTTP/1.1) or
``max_requests`` (HTTP/2) overflowed, and retries refused by ``max_retries``."""
QUEUEING = CONNECTION_OVERFLOW
"""``maxConnections`` reached: an HTTP/1.1 request waits in the pending queue (not shed)."""
SHED_COUNTERS = (*SHEDS, QUEUEING)

EDGE_COUNTERS = (
    ATTEMPTS,
    RETRIES,
    RETRY_SUCCESS,
    RETRY_OVERFLOW,
    RETRY_LIMIT,
    PENDING_OVERFLOW,
    CONNECTION_OVERFLOW,
    ROUTE_TIMEOUTS,
    PER_TRY_TIMEOUTS,
    CONNECT_FAILURES,
    ANSWERED_5XX,
    *EJECTION_COUNTERS,
)
"""The counters of every edge the journal keeps per phase and the sampler per second."""
FAULT_COUNTERS = ("aborts_injected", "delays_injected")
"""What a callee's fault filter counts (``http.inbound_<service>.fault.<counter>``)."""
FAULT_LABELS = {"aborts": "aborts_injected", "delays": "delays_injected"}
"""The mesh timeline's short names of :data:`FAULT_COUNTERS`."""
SCRAPE_PATTERN = (
    r"^(cluster\.outbound\|.*|http\.inbound_.*\.fault\..*|http\.ingress\..*downstream_rq_.xx)$"
)
"""Everything a phase-boundary snapshot reads: outbound clusters, fault filters, ingress."""

HOST_COUNTERS = ("rq_total", "cx_total", "rq_error", "rq_timeout")
"""Per-endpoint counters of a cluster (``/clusters``): requests, connections, failures."""

_OUTBOUND = "cluster.outbound|"

Snapshot = Mapping[str, Mapping[str, int]]
"""Counters of every proxy at one moment: proxy name → stat key → value."""


class CounterSource(Protocol):
    """What reads a proxy's counters (:class:`harness.mesh.admin.EnvoyAdmin` does)."""

    def counters(self, pattern: str | None = None) -> dict[str, int]: ...


def cluster_hosts(
    clusters: Mapping[str, Any],
) -> Iterator[tuple[str, tuple[str, int], Mapping[str, Any]]]:
    """``(cluster name, (ip, port), host status)`` for every endpoint in a ``/clusters``
    JSON answer."""
    for cluster in clusters.get("cluster_statuses", []):
        for host in cluster.get("host_statuses", []):
            address = host.get("address", {}).get("socket_address", {})
            endpoint = (str(address.get("address")), int(address.get("port_value", 0)))
            yield str(cluster.get("name", "")), endpoint, host


def host_counters(
    clusters: Mapping[str, Any], cluster: str, endpoints: Container[tuple[str, int]]
) -> dict[str, int]:
    """:data:`HOST_COUNTERS` of some endpoints of one cluster, from a ``/clusters`` answer."""
    totals = dict.fromkeys(HOST_COUNTERS, 0)
    for name, endpoint, host in cluster_hosts(clusters):
        if name != cluster or endpoint not in endpoints:
            continue
        for stat in host.get("stats", []):
            if stat.get("name") in totals:
                totals[stat["name"]] += int(stat.get("value", 0))
    return totals


def edge_stat(key: str) -> tuple[str, str] | None:
    """``(callee service, stat)`` of an outbound-cluster key, else ``None``."""
    if not key.startswith(_OUTBOUND):
        return None
    cluster, _, stat = key[len("cluster.") :].partition(".")
    return cluster.rsplit("|", 1)[-1], stat


def ejected_now(snapshot: Snapshot) -> dict[str, int]:
    """Hosts that outlier detection holds ejected at the snapshot's moment (the
    ``ejections_active`` gauge), as ``"<proxy> → <callee>": hosts``; empty when none."""
    found: dict[str, int] = {}
    for proxy, values in snapshot.items():
        for key, value in values.items():
            parsed = edge_stat(key)
            if parsed is not None and parsed[1] == EJECTED_NOW and value > 0:
                edge = f"{proxy} → {parsed[0]}"
                found[edge] = found.get(edge, 0) + value
    return found


def subset_of_key(key: str) -> str | None:
    """The DestinationRule subset of an outbound-cluster key
    (``cluster.outbound|8080|v2|reviews.upstream_rq_total`` → ``v2``), else ``None``."""
    if not key.startswith(_OUTBOUND):
        return None
    parts = key[len("cluster.") :].partition(".")[0].split("|")
    return parts[2] or None if len(parts) == 4 else None


def fault_stat(key: str) -> str | None:
    """The fault-filter counter (one of :data:`FAULT_COUNTERS`) a key counts, else ``None``."""
    for stat in FAULT_COUNTERS:
        if key.endswith(f".fault.{stat}"):
            return stat
    return None


def inbound_fault_counters(sources: Iterable[CounterSource], service: str) -> dict[str, int]:
    """The faults ``service``'s inbound filters injected, summed over its sidecars (which
    must answer: a fault's evidence needs every one)."""
    prefix = f"http.inbound_{service}.fault."
    pattern = r"\.fault\.(" + "|".join(FAULT_COUNTERS) + ")$"
    totals = dict.fromkeys(FAULT_COUNTERS, 0)
    for source in sources:
        counters = source.counters(pattern)
        for stat in FAULT_COUNTERS:
            totals[stat] += counters.get(prefix + stat, 0)
    return totals


def stat_pattern(counters: Sequence[str]) -> str:
    """The ``/stats`` filter for the outbound ``counters`` and the inbound fault counters."""
    names = "|".join(re.escape(name) for name in counters)
    faults = "|".join(re.escape(stat) for stat in FAULT_COUNTERS)
    return rf"^(cluster\.outbound\|.*\.({names})|http\.inbound_.*\.fault\.({faults}))$"


def cluster_pattern(cluster: str, stats: Iterable[str]) -> str:
    """The ``/stats`` filter for some counters of one cluster (e.g. ``outbound|8080||catalog``)."""
    return "^cluster\\." + re.escape(cluster) + "\\.(" + "|".join(stats) + ")$"


def sum_cluster_counters(
    sources: Iterable[CounterSource], cluster: str, stats: Sequence[str]
) -> dict[str, int]:
    """``stats`` of ``cluster`` summed over several sidecars; one that cannot answer (killed,
    paused, gone) adds nothing."""
    pattern = cluster_pattern(cluster, stats)
    totals = dict.fromkeys(stats, 0)
    for source in sources:
        try:
            counters = source.counters(pattern)
        except HarnessError:
            continue
        for key, value in counters.items():
            stat = key.removeprefix(f"cluster.{cluster}.")
            if stat in totals:
                totals[stat] += value
    return totals


def _by_edge(
    snapshot: Snapshot, service_of: Callable[[str], str], counters: Sequence[str]
) -> dict[tuple[str, str, str | None], dict[str, int]]:
    """(caller, callee, None) → counters over every cluster of the callee, and
    (caller, callee, subset) → those of one subset cluster."""
    wanted = frozenset(counters)
    edges: dict[tuple[str, str, str | None], dict[str, int]] = {}
    for proxy, values in snapshot.items():
        caller = service_of(proxy)
        for key, value in values.items():
            parsed = edge_stat(key)
            if parsed is None or parsed[1] not in wanted:
                continue
            callee, stat = parsed
            for subset in {None, subset_of_key(key)}:
                bucket = edges.setdefault((caller, callee, subset), dict.fromkeys(counters, 0))
                bucket[stat] += value
    return edges


def edge_stats(
    snapshots: Sequence[Snapshot],
    phases: Sequence[PhaseWindow],
    service_of: Callable[[str], str],
    counters: Sequence[str] = EDGE_COUNTERS,
) -> list[EdgeStats]:
    """Per-phase increases of each edge's counters, from snapshots at the phase boundaries
    (``snapshots[i]`` at the start of ``phases[i]``, one more at the end)."""
    by_edge = [_by_edge(s, service_of, counters) for s in snapshots]
    keys = sorted(
        {edge for snap in by_edge for edge in snap}, key=lambda k: (k[0], k[1], k[2] or "")
    )
    zero = dict.fromkeys(counters, 0)

    def per_phase(key: tuple[str, str, str | None]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for index, window in enumerate(phases):
            before = by_edge[index].get(key, zero)
            after = by_edge[index + 1].get(key, zero)
            out[window.name] = {k: after[k] - before[k] for k in counters}
        return out

    result = []
    for caller, callee, subset in keys:
        if subset is not None:
            continue
        key = (caller, callee, None)
        first, last = by_edge[0].get(key, zero), by_edge[-1].get(key, zero)
        total = {k: last[k] - first[k] for k in counters}
        subsets = {
            s: per_phase((caller, callee, s))
            for c, d, s in keys
            if (c, d) == (caller, callee) and s
        }
        result.append(
            EdgeStats(
                caller=caller, callee=callee, phases=per_phase(key), total=total, subsets=subsets
            )
        )
    return result


def injected_totals(snapshot: Snapshot) -> dict[str, dict[str, int]]:
    """Per proxy, the faults its filters injected (proxies that injected none left out)."""
    totals: dict[str, dict[str, int]] = {}
    for proxy, values in snapshot.items():
        injected = dict.fromkeys(FAULT_COUNTERS, 0)
        for key, value in values.items():
            stat = fault_stat(key)
            if stat is not None:
                injected[stat] += value
        if any(injected.values()):
            totals[proxy] = injected
    return totals
