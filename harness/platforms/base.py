"""The seam between the harness and a platform: what the runner, the injectors and the
sampler may ask of a running deployment, and nothing more.

:class:`Deployment` is all they call (``harness.platforms.local.LocalDeployment`` is one; a
test fake of forty lines is another). What only some platforms have sits behind narrow,
named surfaces that a deployment offers or leaves ``None``:

* :class:`ToxicEdges` — toxiproxy in front of the edges that need it (:func:`toxic_edges`
  decides which), for ``kind: toxic`` faults and host-mode partitions;
* :class:`PacketFilter` — run ``nft`` in the run's own network namespace (or a pod's), for
  partitions;
* :class:`ControlPlaneFaults` — a real control plane's processes and sync state, for
  ``controlPlane`` faults and ``configPropagation`` SLOs (``--mesh istio``).

A Kubernetes platform would offer the same surfaces differently (a toxiproxy pod, nft in a
pod's network namespace) without the injectors changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from harness.app.topology import DEFAULT_VERSION
from harness.journal import PolicyPush
from harness.mesh.admin import AdminApi
from harness.mesh.envoy import Addr
from harness.scenario.models import Fault, PartitionFault, Scenario, Target, ToxicFault

if TYPE_CHECKING:
    from harness.platforms.local.toxiproxy import Toxiproxy

ProcessKind = Literal["app", "sidecar"]
ControlPlaneComponent = Literal["istiod", "apiserver"]


@dataclass(frozen=True)
class InstanceInfo:
    """One app instance (a pod, on kind) and where its sidecar listens."""

    name: str  # e.g. "catalog-0"; with declared versions "reviews-v2-0"
    service: str
    index: int  # across the service's versions (ServiceSpec.variant_of)
    ip: str
    inbound_port: int
    app_port: int
    version: str = DEFAULT_VERSION  # the pod's ``version`` label


@dataclass(frozen=True)
class EdgeProxy:
    """A toxiproxy proxy on one edge: ``source``'s sidecars reach ``instance`` through it."""

    name: str  # "<source>-><instance>", also its name in toxiproxy
    source: str  # the calling service (or "ingress")
    instance: str
    listen: Addr
    upstream: Addr  # the instance's sidecar inbound


def toxic_edge_of(fault: Fault, *, packet_filter: bool) -> tuple[str, Target] | None:
    """The edge (calling service, target instances) on which ``fault`` acts through a toxic
    proxy, or ``None``: toxic faults always; partitions only where the platform cannot
    filter packets (they are then emulated with a toxic, see harness.faults.partition)."""
    if isinstance(fault, ToxicFault):
        return fault.source, fault.target
    if isinstance(fault, PartitionFault) and not packet_filter:
        return fault.from_.service, fault.to
    return None


def toxic_edges(scenario: Scenario, *, packet_filter: bool) -> list[tuple[str, Target]]:
    """Every edge of the scenario that needs a toxic proxy (the platform plans them at
    deploy time, before any fault is injected)."""
    edges = (toxic_edge_of(fault, packet_filter=packet_filter) for fault in scenario.faults)
    return [edge for edge in edges if edge is not None]


@dataclass(frozen=True)
class ControlPlaneInfo:
    """What the journal records of a real control plane (``--mesh istio``)."""

    versions: dict[str, str]  # "istio", "kubernetes"
    timings: dict[str, float]  # seconds from the start of the deployment
    pushes: tuple[PolicyPush, ...] = ()  # policy changes and their push times


@dataclass(frozen=True)
class ProbeRequest:
    """One request of a scenario probe (``probes:``): to a service's sidecar as an identity
    (a service of the run, ``ingress``, or ``plaintext``), carrying ``rid`` as its
    x-request-id; ``turn`` counts the probe's requests (to spread them over instances)."""

    to: str
    identity: str
    method: str
    path: str
    rid: str
    turn: int = 0


@dataclass(frozen=True)
class ProbeReply:
    """What came back: ``status`` 0 for no HTTP answer (``error`` says why); ``body`` is the
    start of the answer (at most 64 characters)."""

    status: int
    body: str = ""
    error: str | None = None


class ToxicEdges(Protocol):
    """Toxic proxies in front of some edges, and the toxiproxy API that configures them."""

    @property
    def api(self) -> Toxiproxy:
        """The toxiproxy server's API."""
        ...

    def edge(self, source: str, instance: str) -> EdgeProxy | None:
        """The proxy through which ``source``'s sidecars reach ``instance``, if planned."""
        ...


@dataclass(frozen=True)
class PlannedToxicEdges:
    """A toxiproxy server and the edge proxies a platform made on it at deploy time (a
    :class:`ToxicEdges`): (source, instance) → its proxy."""

    api: Toxiproxy
    proxies: Mapping[tuple[str, str], EdgeProxy]

    def edge(self, source: str, instance: str) -> EdgeProxy | None:
        return self.proxies.get((source, instance))


class PacketFilter(Protocol):
    """Commands (``nft``) run inside a network namespace that the run's traffic crosses:
    the run's own (local), or a pod's (kube: ``argv[0]`` is then the image's ``nft``)."""

    def run(
        self, argv: list[str], *, timeout: float = 30.0, input_text: str | None = None
    ) -> tuple[int, str, str]:
        """``(exit code, stdout, stderr)`` of ``argv`` run in the namespace."""
        ...


class ControlPlaneFaults(Protocol):
    """The control plane of a mesh that has one: its processes, and what its proxies hold."""

    def pid(self, component: ControlPlaneComponent) -> int:
        """The PID of the component's current process."""
        ...

    def state(self, component: ControlPlaneComponent) -> str | None:
        """The kernel's state letter of the component (``T``: stopped), None when gone."""
        ...

    def kill(self, component: ControlPlaneComponent) -> int:
        """SIGKILL the component and wait until it is gone; its PID."""
        ...

    def restart(self, component: ControlPlaneComponent) -> int:
        """Start a killed component again and wait until it is ready; the new PID."""
        ...

    def pause(self, component: ControlPlaneComponent) -> int: ...

    def resume(self, component: ControlPlaneComponent) -> int: ...

    @property
    def xds_port(self) -> int:
        """The port on which the proxies' agents reach istiod (xDS, certificates)."""
        ...

    def proxies(self) -> tuple[str, ...]:
        """Every proxy the control plane programs (``ingress`` and the sidecars)."""
        ...

    def connected(self) -> dict[str, int]:
        """Each proxy's Envoy ``control_plane.connected_state`` (1: its xDS stream is up)."""
        ...

    def not_synced(self) -> list[str] | None:
        """The proxies istiod does not show SYNCED; None when istiod does not answer."""
        ...

    def wait_synced(self, timeout_s: float) -> float:
        """Wait until every proxy is SYNCED with istiod; the seconds it took."""
        ...

    def certificate_seconds_left(self) -> dict[str, int]:
        """Each proxy's workload certificate: seconds until it expires (Envoy's ``/certs``)."""
        ...

    def affected_by(self, service: str) -> tuple[str, ...]:
        """The sidecars that apply ``service``'s VirtualService (its callers' instances)."""
        ...

    def write_route_header(self, service: str, header: str, value: str) -> dict[str, Any]:
        """Add a response header to ``service``'s VirtualService routes through the API
        server (raises :class:`~harness.errors.PlatformError` when it cannot be written);
        the sync state before the write, for :meth:`route_pending`."""
        ...

    def route_pending(
        self, service: str, header: str, value: str, before: dict[str, Any]
    ) -> list[str]:
        """The affected proxies that have not yet acknowledged a configuration newer than
        ``before`` holding the header (empty: it arrived everywhere)."""
        ...


class Deployment(Protocol):
    """A running app with its mesh; the runner drives load and faults through it."""

    @property
    def platform(self) -> str: ...

    @property
    def isolation(self) -> str: ...

    @property
    def isolation_note(self) -> str:
        """How the deployment is isolated, in a sentence for the journal."""
        ...

    @property
    def scenario(self) -> Scenario: ...

    @property
    def instances(self) -> tuple[InstanceInfo, ...]: ...

    @property
    def ingress_url(self) -> str: ...

    @property
    def toxics(self) -> ToxicEdges | None:
        """Toxic proxies, when the scenario needs them (see :func:`toxic_edges`)."""
        ...

    @property
    def packet_filter(self) -> PacketFilter | None:
        """``None`` where the run has no network namespace of its own."""
        ...

    @property
    def control_plane_faults(self) -> ControlPlaneFaults | None:
        """``None`` where the mesh has no control plane (``--mesh envoy``)."""
        ...

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]: ...

    def packet_filters(self, instances: Sequence[InstanceInfo]) -> dict[str, PacketFilter]:
        """Where nft filters the traffic to and from ``instances``: the run's one network
        namespace (``{"run": ...}``), or each instance's own (its pod, on kube); empty where
        the platform filters no packets (partitions are then emulated with toxiproxy)."""
        ...

    def proxy_names(self) -> tuple[str, ...]:
        """Every Envoy of the mesh: ``"ingress"`` and one sidecar per instance."""
        ...

    def endpoint_names(self) -> dict[tuple[str, int], str]:
        """The instance behind each address a caller's sidecar may see for it."""
        ...

    def admin(self, proxy: str, *, timeout: float | None = None) -> AdminApi:
        """The admin API of one proxy (``timeout`` per call, default the client's)."""
        ...

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        """Counters of every proxy, keyed by proxy name ("ingress", "catalog-0", ...)."""
        ...

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        """Start a process beside the app (e.g. Locust), where it can reach the ingress;
        ``env`` adds to the environment, or with ``replace_env`` is all of it."""
        ...

    def stop(self, pid: int, *, grace: float) -> int | None:
        """Stop a process started with :meth:`spawn`; returns its exit code."""
        ...

    def running(self, pid: int) -> bool: ...

    def process_pid(self, instance: str, process: ProcessKind) -> int:
        """The PID of an instance's app or sidecar (the current one, after restarts)."""
        ...

    def process_state(self, pid: int) -> str | None:
        """The kernel's state letter of a process (``T``: stopped), None when it is gone."""
        ...

    def send_probes(self, requests: Sequence[ProbeRequest]) -> list[ProbeReply]:
        """Send scenario probes from inside the deployment, one reply per request."""
        ...

    def kill_process(self, instance: str, process: ProcessKind) -> int: ...

    def restart_process(self, instance: str, process: ProcessKind) -> int: ...

    def pause_process(self, instance: str, process: ProcessKind) -> int: ...

    def resume_process(self, instance: str, process: ProcessKind) -> int: ...

    @property
    def namespaces(self) -> dict[str, str]:
        """Where the run lives, for the journal and ``harness cleanup``: the local
        sandbox's kernel namespaces, or ``{"kube": <namespace>}``."""
        ...

    @property
    def scratch_dir(self) -> Path | None:
        """A directory of the run's outside the report (removed at the end), if any."""
        ...

    def control_plane(self) -> ControlPlaneInfo | None:
        """A real control plane's versions, timings and pushes; None where the harness
        programs the mesh itself."""
        ...

    def collect_logs(self) -> None:
        """Bring the proxies' access logs into the run's ``access/`` directory, where the
        judge reads them (a no-op where the proxies write them there themselves)."""
        ...


class Platform(Protocol):
    name: str

    def deploy(self, scenario: Scenario, run_dir: Path) -> AbstractContextManager[Deployment]:
        """Deploy the scenario's app and mesh; tear everything down when the block ends."""
        ...


__all__ = [
    "ControlPlaneComponent",
    "ControlPlaneFaults",
    "ControlPlaneInfo",
    "Deployment",
    "EdgeProxy",
    "InstanceInfo",
    "PacketFilter",
    "PlannedToxicEdges",
    "Platform",
    "ProbeReply",
    "ProbeRequest",
    "ProcessKind",
    "ToxicEdges",
    "toxic_edge_of",
    "toxic_edges",
]
