"""What every part of ``--mesh istio`` shares: the namespace's fixed addresses and ports, a
:class:`Workload` (an instance as Kubernetes sees it) and a running :class:`Sidecar`.

The floor of :mod:`harness.platforms.local.istio`: it imports nothing from its siblings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harness.mesh.admin import EnvoyAdmin

# The benchmarking range: never routed on the Internet, and not loopback, which the API
# server refuses in Pod IPs and EndpointSlices. Only ever assigned inside the run's namespace.
MESH_NETWORK: Final = ipaddress.ip_network("198.18.0.0/15")
LOCALHOST: Final = "127.0.0.1"
ETCD_PORT: Final = 2379
ETCD_PEER_PORT: Final = 2380
APISERVER_PORT: Final = 6443
ISTIOD_PORTS: Final[Mapping[str, int]] = {
    "http": 8080,  # /ready, /debug/syncz, /validate
    "grpc": 15010,
    "secure": 15012,  # mTLS xDS and the CA
    "monitor": 15014,
    "z": 9876,
}
# Every sidecar's Envoy admin and pilot-agent status port, per instance (one namespace).
ADMIN_PORT_BASE: Final = 16000
STATUS_PORT_BASE: Final = 17000
READY_TIMEOUT_S: Final = 120.0  # cold starts on a loaded 2-core machine
SYNC_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.1
APP_PORT: Final = 9080  # each app on its own 198.18 address; the sidecar forwards here
INSTANCE_LABEL: Final = "harness/instance"
GATEWAY_ACCOUNT: Final = "istio-ingressgateway"

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """A :data:`Log` that says nothing."""


def mesh_address(index: int) -> str:
    """The ``index``-th address of :data:`MESH_NETWORK` (1-based; .0 is never used)."""
    return str(MESH_NETWORK[index])


@dataclass(frozen=True)
class Workload:
    """One instance as Kubernetes sees it: a Pod with an address inside the namespace."""

    name: str  # the Pod's name, e.g. "frontend-0"
    service: str  # its ServiceAccount and Service, and label ``app``
    namespace: str
    ip: str  # from MESH_NETWORK
    index: int  # unique per run: picks the admin and status ports
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def admin_port(self) -> int:
        return ADMIN_PORT_BASE + self.index

    @property
    def status_port(self) -> int:
        return STATUS_PORT_BASE + self.index

    @property
    def proxy_id(self) -> str:
        """How istiod names the proxy in ``/debug/syncz``."""
        return f"{self.name}.{self.namespace}"


class IstioEnvoyAdmin(EnvoyAdmin):
    """The admin API of a sidecar istiod programs, with counters named as under
    ``--mesh envoy``.

    istiod ends every cluster's stat name with ``;`` (its tag-extraction delimiter):
    ``cluster.outbound|8080||catalog;.upstream_rq_retry``. Dropping it gives the names the
    observer, the runner, the fault injectors and the mesh SLOs read, so they work unchanged.
    ``pattern`` is matched against the normalised names (here, not by Envoy).
    """

    def counters(self, pattern: str | None = None) -> dict[str, int]:
        values = super().counters(None)
        normal = {key.replace(";.", ".", 1): value for key, value in values.items()}
        if pattern is None:
            return normal
        wanted = re.compile(pattern)
        return {key: value for key, value in normal.items() if wanted.search(key)}

    def clusters(self) -> dict[str, Any]:
        """``/clusters`` with each outbound cluster named as its stats are
        (``outbound|8080||catalog``, not ``...||catalog.<ns>.svc.cluster.local``)."""
        answer = super().clusters()
        for status in answer.get("cluster_statuses", []):
            status["name"] = short_cluster_name(str(status.get("name", "")))
        return answer


def short_cluster_name(name: str) -> str:
    """``outbound|8080||catalog.ns.svc.cluster.local`` → ``outbound|8080||catalog``."""
    parts = name.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[3].endswith(".svc.cluster.local"):
        parts[3] = parts[3].split(".", 1)[0]
    return "|".join(parts)


@dataclass(frozen=True)
class Sidecar:
    """A running pilot-agent (and its Envoy) for one workload."""

    workload: Workload
    pid: int
    admin: EnvoyAdmin  # over a Unix socket the supervisor forwards to the admin port
    log: Path
    directory: Path
    argv: list[str] = field(default_factory=list)  # how to start it again (a restart)
    env: Mapping[str, str] = field(default_factory=dict)


def tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
