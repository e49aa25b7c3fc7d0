"""A 1 Hz sampler of every sidecar's counters and endpoint health, for the report's timelines.

While the load runs, a background thread scrapes each proxy's admin API about once a second:
one ``/stats`` call per proxy (only the counters the timelines need) and, on the proxies
that call other services, one ``/clusters?format=json`` call for endpoint health. It turns
the scrapes into a :class:`~harness.journal.MeshTimeline`::

    sampler = MeshSampler.for_deployment(deployment, t0=journal.load_started_at,
                                         counters=EDGE_COUNTERS)
    with sampler:                      # start() … stop()
        run_the_phases()
    journal.mesh_timeline = sampler.timeline()

Value ``i`` of a series is the increase since the previous scrape, at ``t[i]`` seconds after
``t0`` (Prometheus' ``increase()`` convention); the first scrape is the baseline and has no
sample. A proxy that does not answer (killed, paused, restarting) never stops the sampler:
its share of that sample is 0, the sample's time is listed under ``gaps[proxy]``, its
endpoint health is ``"unknown"``, and once it answers again the increase since its last
good scrape is counted (a counter that went down means a restart: its new value is the
increase).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from harness.journal import EdgeSeries, MeshTimeline
from harness.mesh.stats import FAULT_LABELS, cluster_hosts, edge_stat, fault_stat, stat_pattern

if TYPE_CHECKING:
    from harness.platforms.base import Deployment

SCRAPE_TIMEOUT_S = 0.5
"""Per admin call: a paused (SIGSTOP) proxy must not hold the sampler for long."""
INGRESS = "ingress"


class ProxyAdmin(Protocol):
    """The part of a proxy's admin API the sampler reads (:class:`EnvoyAdmin` has it)."""

    def counters(self, pattern: str | None = None) -> dict[str, int]: ...

    def clusters(self) -> dict[str, Any]: ...


def endpoint_health(status: Mapping[str, Any]) -> str:
    """``"ejected"`` (outlier detection), ``"unhealthy"``, ``"draining"``… or ``"healthy"``."""
    if status.get("failed_outlier_check"):
        return "ejected"
    if any(value is True for key, value in status.items() if key.startswith("failed_")):
        return "unhealthy"
    eds = str(status.get("eds_health_status", "HEALTHY"))
    return "healthy" if eds == "HEALTHY" else eds.lower()


@dataclass(frozen=True)
class Scrape:
    """What one round of admin calls returned; ``None`` where a proxy did not answer."""

    t: float  # seconds since t0
    counters: Mapping[str, Mapping[str, int] | None]
    clusters: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    ms: float = 0.0  # how long the round took


class MeshTimelineBuilder:
    """Turns successive :class:`Scrape` s into a :class:`MeshTimeline` (no I/O, no threads).

    ``service_of`` maps a proxy to its service (the ingress proxy is the caller
    ``"ingress"``); ``endpoint_names`` maps an endpoint ``(ip, port)`` to its instance.
    """

    def __init__(
        self,
        service_of: Mapping[str, str],
        endpoint_names: Mapping[tuple[str, int], str],
        counters: Sequence[str],
    ) -> None:
        self.service_of = service_of
        self.endpoint_names = endpoint_names
        self.counters = tuple(counters)
        self._wanted = frozenset(self.counters)
        self._last: dict[str, Mapping[str, int]] = {}  # proxy → last good counters
        self._t: list[float] = []
        self._ms: list[float] = []
        self._edges: dict[tuple[str, str], dict[str, list[int]]] = {}
        self._injected: dict[str, dict[str, list[int]]] = {}
        self._endpoints: dict[str, list[str]] = {}
        self._gaps: dict[str, list[float]] = {}
        self._errors: dict[str, str] = {}
        self._baseline_taken = False

    @property
    def samples(self) -> int:
        return len(self._t)

    def add(self, scrape: Scrape) -> None:
        """Take the baseline (first call) or record one sample of increases."""
        self._errors.update(scrape.errors)
        if not self._baseline_taken:
            self._baseline_taken = True
            for proxy, values in scrape.counters.items():
                if values is not None:
                    self._last[proxy] = values
            return
        index = len(self._t)
        self._t.append(round(scrape.t, 3))
        self._ms.append(round(scrape.ms, 2))
        failed = sorted(
            {p for p, v in scrape.counters.items() if v is None}
            | {p for p, v in scrape.clusters.items() if v is None}
        )
        for proxy in failed:
            self._gaps.setdefault(proxy, []).append(self._t[-1])
        for proxy, values in scrape.counters.items():
            if values is not None:
                self._add_counters(proxy, values, index)
        for table in (*self._edges.values(), *self._injected.values()):
            for column in table.values():
                column.extend([0] * (index + 1 - len(column)))
        self._add_health(scrape.clusters, index)

    def note_error(self, source: str, message: str) -> None:
        self._errors[source] = message

    def _add_counters(self, proxy: str, values: Mapping[str, int], index: int) -> None:
        previous = self._last.get(proxy)
        self._last[proxy] = values
        if previous is None:
            return  # no baseline for this proxy yet: this scrape becomes its baseline
        caller = self.service_of.get(proxy, proxy)
        for key, value in values.items():
            before = previous.get(key, 0)
            increase = value - before if value >= before else value  # down = restarted
            if not increase:
                continue
            parsed = edge_stat(key)
            if parsed is not None:
                callee, stat = parsed
                if stat not in self._wanted:
                    continue
                series = self._edges.get((caller, callee))
                if series is None:
                    series = {name: [0] * index for name in self.counters}
                    self._edges[(caller, callee)] = series
                _bump(series[stat], index, increase)
                continue
            injected = fault_stat(key)
            for label, stat in FAULT_LABELS.items():
                if injected == stat:
                    per_stat = self._injected.setdefault(
                        proxy, {name: [0] * index for name in FAULT_LABELS}
                    )
                    _bump(per_stat[label], index, increase)

    def _add_health(self, clusters: Mapping[str, Mapping[str, Any] | None], index: int) -> None:
        seen: dict[str, str] = {}
        for proxy, data in clusters.items():
            if data is None:
                continue
            for cluster, (ip, port), host in cluster_hosts(data):
                if not cluster.startswith("outbound|"):
                    continue
                instance = self.endpoint_names.get((ip, port), f"{ip}:{port}")
                seen[f"{proxy}→{instance}"] = endpoint_health(host.get("health_status", {}))
        for key in seen.keys() - self._endpoints.keys():
            self._endpoints[key] = ["unknown"] * index
        for key, values in self._endpoints.items():
            values.append(seen.get(key, "unknown"))

    def timeline(self) -> MeshTimeline:
        """The timeline so far; instances that injected nothing are left out."""
        edges = [
            EdgeSeries(
                caller=caller,
                callee=callee,
                counters={name: list(values) for name, values in series.items()},
            )
            for (caller, callee), series in sorted(self._edges.items())
        ]
        injected = {
            proxy: {label: list(values) for label, values in per_stat.items()}
            for proxy, per_stat in sorted(self._injected.items())
            if any(any(values) for values in per_stat.values())
        }
        return MeshTimeline(
            t=list(self._t),
            edges=edges,
            endpoints={key: list(values) for key, values in sorted(self._endpoints.items())},
            injected=injected,
            gaps={proxy: list(times) for proxy, times in sorted(self._gaps.items())},
            scrape_errors=dict(sorted(self._errors.items())),
            scrape_ms=list(self._ms),
        )


def _bump(values: list[int], index: int, increase: int) -> None:
    values.extend([0] * (index + 1 - len(values)))
    values[index] += increase


class MeshSampler:
    """Scrape ``admins`` about every ``interval`` seconds in a background thread.

    Stops at :meth:`stop` or by itself after ``max_duration`` seconds. ``health_proxies``
    (default: all) are the proxies whose ``/clusters`` endpoint health is read.
    """

    def __init__(
        self,
        admins: Mapping[str, ProxyAdmin],
        *,
        t0: float,
        service_of: Mapping[str, str],
        endpoint_names: Mapping[tuple[str, int], str],
        counters: Sequence[str],
        health_proxies: Sequence[str] | None = None,
        interval: float = 1.0,
        max_duration: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.admins = dict(admins)
        self.t0 = t0
        self.interval = interval
        self.max_duration = max_duration
        self.pattern = stat_pattern(counters)
        self.health_proxies = tuple(self.admins if health_proxies is None else health_proxies)
        self._clock = clock
        self._builder = MeshTimelineBuilder(service_of, endpoint_names, counters)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._expired = False

    @classmethod
    def for_deployment(
        cls,
        deployment: Deployment,
        *,
        t0: float,
        counters: Sequence[str],
        interval: float = 1.0,
        max_duration: float = 3600.0,
    ) -> MeshSampler:
        """A sampler over every proxy of a deployment (short admin timeouts)."""
        admins = {
            name: deployment.admin(name, timeout=SCRAPE_TIMEOUT_S)
            for name in deployment.proxy_names()
        }
        topology = deployment.scenario.app.topology
        service_of = {inst.name: inst.service for inst in deployment.instances}
        service_of.setdefault(INGRESS, INGRESS)
        callers = [INGRESS] + [
            inst.name for inst in deployment.instances if topology.service(inst.service).calls
        ]
        return cls(
            admins,
            t0=t0,
            service_of=service_of,
            endpoint_names=deployment.endpoint_names(),
            counters=counters,
            health_proxies=[name for name in callers if name in admins],
            interval=interval,
            max_duration=max_duration,
        )

    # ------------------------------------------------------------------ scraping

    def scrape(self) -> Scrape:
        """One round: every proxy's counters, the callers' endpoint health. Never raises."""
        started = time.perf_counter()
        t = self._clock() - self.t0
        counters: dict[str, Mapping[str, int] | None] = {}
        clusters: dict[str, Mapping[str, Any] | None] = {}
        errors: dict[str, str] = {}
        for name, admin in self.admins.items():
            try:
                counters[name] = admin.counters(self.pattern)
            except Exception as exc:  # a dying proxy must not stop the sampler
                counters[name] = None
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            if name in self.health_proxies:
                try:
                    clusters[name] = admin.clusters()
                except Exception as exc:
                    clusters[name] = None
                    errors[name] = f"{type(exc).__name__}: {exc}"
        for name in self.health_proxies:
            clusters.setdefault(name, None)
        return Scrape(
            t=t,
            counters=counters,
            clusters=clusters,
            errors=errors,
            ms=(time.perf_counter() - started) * 1000.0,
        )

    def _record(self, scrape: Scrape) -> None:
        with self._lock:
            self._builder.add(scrape)

    def _loop(self, started: float) -> None:
        next_at = started
        try:
            while True:
                next_at += self.interval
                now = time.monotonic()
                next_at = max(next_at, now)  # fell behind: skip, do not burst
                if self._stop.wait(next_at - now):
                    return
                if time.monotonic() - started >= self.max_duration:
                    self._expired = True
                    return
                self._record(self.scrape())
        except Exception as exc:  # a bug here must show in the journal, not kill the run
            with self._lock:
                self._builder.note_error("sampler", f"stopped early: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take the baseline scrape now (everything after this call is counted), then sample
        in the background."""
        if self._thread is not None:
            raise RuntimeError("the sampler was already started")
        started = time.monotonic()
        self._record(self.scrape())
        self._thread = threading.Thread(
            target=self._loop, args=(started,), name="mesh-sampler", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> MeshTimeline:
        """Stop the thread, take a last (maybe short) sample, return the timeline.

        The last sample covers the time since the previous one, so the totals are complete.
        """
        if self._thread is None:
            return self.timeline()
        self._stop.set()
        self._thread.join(timeout=self.interval + SCRAPE_TIMEOUT_S * 2 * len(self.admins) + 1)
        if not self._thread.is_alive() and not self._expired:
            with contextlib.suppress(Exception):  # scrape() never raises; add() is pure
                self._record(self.scrape())
        return self.timeline()

    def timeline(self) -> MeshTimeline:
        with self._lock:
            return self._builder.timeline()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "MeshSampler",
    "MeshTimelineBuilder",
    "ProxyAdmin",
    "Scrape",
    "endpoint_health",
    "stat_pattern",
]
