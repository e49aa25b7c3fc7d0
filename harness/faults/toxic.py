"""L4 toxics through toxiproxy, between a caller's sidecars and the callee's instances.

At deploy time the local platform starts one toxiproxy server in the run's sandbox and, for
every edge a toxic fault targets (``source`` service → one target instance), a proxy
``<source>-><instance>`` in front of that instance's sidecar inbound; only the source's
sidecars reach the instance through it. The injector adds the toxic to each targeted proxy
and reads it back, ramps its toxicity (``steps``), and removes it, reading back that it is
gone.

Evidence, and what it proves: toxiproxy has no per-toxic counters (its optional Prometheus
byte counters are only added when a connection closes, and the caller's sidecar keeps its
connections open), so the injector combines (1) the toxic read back from the API on every
targeted proxy while the fault is on, with (2) the caller sidecars' own per-endpoint counters
(``/clusters``) for the proxy addresses: requests and connections that crossed the toxic
proxy since the injection, and how many of them failed or timed out. Together they show
that traffic went through the toxic while it was on; with a toxicity below 1 a connection
may still have been spared (toxiproxy rolls the dice per connection, not per request).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from harness.errors import FaultError, HarnessError
from harness.faults.base import CounterDeltas, no_effect, ramp_start, select_instances, took_effect
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.mesh.envoy import outbound_cluster_name
from harness.mesh.stats import HOST_COUNTERS, host_counters
from harness.platforms.base import Deployment, EdgeProxy
from harness.platforms.local.toxiproxy import Toxic, Toxiproxy, ToxiproxyError
from harness.scenario.models import ToxicFault, ToxicKind

# The evidence's names of the callers' per-endpoint counters for the toxic proxies.
_HOST_STATS = dict(
    zip(
        HOST_COUNTERS,
        ("requests_via_proxy", "connections_via_proxy", "errors_via_proxy", "timeouts_via_proxy"),
        strict=True,
    )
)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def toxic_attributes(fault: ToxicFault) -> dict[str, int]:
    """The scenario's typed fields as toxiproxy attributes (ms, KB/s, bytes; slicer delay µs)."""
    values: dict[str, int | None]
    match fault.toxic:
        case ToxicKind.LATENCY:
            values = {"latency": _ms(fault.latency), "jitter": _ms(fault.jitter)}
        case ToxicKind.BANDWIDTH:
            values = {"rate": fault.rate}
        case ToxicKind.SLOW_CLOSE:
            values = {"delay": _ms(fault.delay)}
        case ToxicKind.TIMEOUT | ToxicKind.RESET_PEER:
            values = {"timeout": _ms(fault.timeout) or 0}  # 0: forever / reset at once
        case ToxicKind.SLICER:
            values = {
                "average_size": fault.average_size,
                "size_variation": fault.size_variation,
                "delay": None if fault.delay is None else round(fault.delay * 1_000_000),
            }
        case ToxicKind.LIMIT_DATA:
            values = {"bytes": fault.bytes}
    return {key: value for key, value in values.items() if value is not None}


class ToxicInjector:
    """Inject one ``kind: toxic`` fault on the toxic proxies of its edges."""

    def __init__(
        self,
        fault: ToxicFault,
        name: str,
        api: Toxiproxy,
        edges: Sequence[EdgeProxy],
        callers: dict[str, AdminApi],
    ) -> None:
        self.fault = fault
        self.api = api
        self.edges = tuple(edges)
        self.callers = callers
        self.cluster = outbound_cluster_name(fault.target.service)
        self.toxic = Toxic(
            name=name,
            type=fault.toxic.value,
            stream=fault.stream,
            toxicity=fault.toxicity,
            attributes=toxic_attributes(fault),
        )
        self.record = FaultEntry(
            name=name,
            kind="toxic",
            phase=fault.phase,
            targets=sorted(edge.instance for edge in self.edges),
            detail={
                "toxic": self.toxic.json(),
                "source": fault.source,
                "proxies": {e.name: f"{e.listen.host}:{e.listen.port}" for e in self.edges},
            },
        )
        self._listens = {(e.listen.host, e.listen.port) for e in self.edges}
        self.counters = CounterDeltas(self._host_counters)

    # ------------------------------------------------------------------ counters

    def _host_counters(self) -> dict[str, int]:
        """The callers' per-endpoint counters for the toxic proxies, summed."""
        totals = dict.fromkeys(_HOST_STATS.values(), 0)
        for admin in self.callers.values():
            counted = host_counters(admin.clusters(), self.cluster, self._listens)
            for stat, value in counted.items():
                totals[_HOST_STATS[stat]] += value
        return totals

    @contextmanager
    def _api_errors(self) -> Iterator[None]:
        """Toxiproxy's refusals, as this fault's errors."""
        try:
            yield
        except ToxiproxyError as exc:
            raise FaultError(f"fault {self.record.name}: {exc}") from exc

    def _present(self) -> int:
        """How many targeted proxies show the toxic as configured."""
        present = 0
        for edge in self.edges:
            current = self.api.toxic(edge.name, self.toxic.name)
            if current is not None and current.matches(self.toxic):
                present += 1
        return present

    # ------------------------------------------------------------------ lifecycle

    def inject(self) -> None:
        self.counters.start()
        with self._api_errors():
            for edge in self.edges:
                existing = self.api.toxic(edge.name, self.toxic.name)
                if existing is not None and (
                    existing.type != self.toxic.type or existing.stream != self.toxic.stream
                ):
                    self.api.remove_toxic(edge.name, self.toxic.name)
                    existing = None
                if existing is None:
                    self.api.add_toxic(edge.name, self.toxic)
                else:  # idempotent: a second inject sets the same toxic again
                    self.api.update_toxic(
                        edge.name,
                        self.toxic.name,
                        toxicity=self.toxic.toxicity,
                        attributes=self.toxic.attributes,
                    )
                current = self.api.toxic(edge.name, self.toxic.name)
                if current is None or not current.matches(self.toxic):
                    raise FaultError(
                        f"fault {self.record.name}: toxiproxy shows {current} on {edge.name}, "
                        f"expected {self.toxic}"
                    )

    def adjust(self, percentage: float) -> None:
        """Ramp step: ``percentage`` % of connections get the toxic (toxiproxy re-rolls the
        dice for every open connection when the toxicity changes)."""
        toxicity = percentage / 100.0
        with self._api_errors():
            for edge in self.edges:
                current = self.api.update_toxic(edge.name, self.toxic.name, toxicity=toxicity)
                if abs(current.toxicity - toxicity) > 1e-6:
                    raise FaultError(
                        f"fault {self.record.name}: {edge.name} kept toxicity "
                        f"{current.toxicity}, expected {toxicity}"
                    )
        self.toxic = Toxic(
            self.toxic.name, self.toxic.type, self.toxic.stream, toxicity, self.toxic.attributes
        )
        self.record.detail.setdefault("steps", []).append(
            {"at": time.time(), "percentage": percentage}
        )

    def revert(self) -> bool:
        verified = True
        for edge in self.edges:
            try:
                self.api.remove_toxic(edge.name, self.toxic.name)
                left = [t.name for t in self.api.toxics(edge.name)]
            except ToxiproxyError:
                verified = False  # the API is gone: nothing can prove the toxic went away
                continue
            verified = verified and self.toxic.name not in left
        return verified

    def evidence(self) -> dict[str, int]:
        evidence: dict[str, int] = {"proxies": len(self.edges)}
        try:
            evidence["toxics_present"] = self._present()
        except ToxiproxyError:
            evidence["toxics_present"] = 0
        # A caller that cannot answer: the toxic read back is the evidence left.
        with contextlib.suppress(HarnessError):
            evidence.update(self.counters.deltas())
        return evidence

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        where = ", ".join(edge.name for edge in self.edges)
        what = f"{self.toxic.type} toxic ({self.toxic.stream}, toxicity {self.toxic.toxicity:g})"
        problems = []
        present, total = evidence.get("toxics_present", 0), evidence.get("proxies", 0)
        if present < total or total == 0:
            problems.append(f"the toxic was on {present} of {total} proxies when read back")
        # Under mTLS a toxic that breaks connections (reset_peer, timeout, a partition's
        # emulation) can stop every one inside its TLS handshake: no request is ever sent on
        # them, yet the caller's connections crossed the proxy and met the toxic.
        crossed = evidence.get("requests_via_proxy", 0) + evidence.get("connections_via_proxy", 0)
        if crossed <= 0:
            problems.append("no request or connection crossed the toxic proxies while it was on")
        if problems:
            return no_effect(self.record.name, f" on {where}: {'; '.join(problems)}")
        counts = {key: evidence.get(key, 0) for key in _HOST_STATS.values()}
        return took_effect(self.record.name, f" on {where}: {what}", counts)


def from_scenario(fault: ToxicFault, name: str, deployment: Deployment) -> ToxicInjector:
    """The injector for ``fault`` on the toxic proxies the platform made for its edges."""
    chosen = select_instances(deployment, fault.target, name)
    toxics = deployment.toxics
    if toxics is None:
        raise FaultError(
            f"fault {name}: this deployment has no toxiproxy (the platform starts it at deploy "
            "time when the scenario has toxic faults)"
        )
    found = {inst.name: toxics.edge(fault.source, inst.name) for inst in chosen}
    missing = [instance for instance, edge in found.items() if edge is None]
    if missing:
        raise FaultError(
            f"fault {name}: no toxic proxy for {fault.source} → {', '.join(missing)} "
            "(the platform plans them from the scenario's toxic faults at deploy time)"
        )
    edges = [edge for edge in found.values() if edge is not None]
    caller_names = (
        ["ingress"]
        if fault.source == "ingress"
        else [inst.name for inst in deployment.instances_of(fault.source)]
    )
    callers = {caller: deployment.admin(caller) for caller in caller_names}
    injector = ToxicInjector(fault, name, toxics.api, edges, callers)
    start = ramp_start(fault.steps)
    if start is not None:
        first = start / 100.0
        toxic = injector.toxic
        injector.toxic = Toxic(toxic.name, toxic.type, toxic.stream, first, toxic.attributes)
        injector.record.detail["toxic"] = injector.toxic.json()
    return injector
