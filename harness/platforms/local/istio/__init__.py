"""``--mesh istio`` on the local platform: a real control plane and pilot-agent sidecars, all
inside the run's sandbox (design: docs/architecture.md, "--mesh istio on the local platform").

Modules, bottom up (each imports only from those before it):

* :mod:`.workloads` — fixed addresses and ports, :class:`Workload`, :class:`Sidecar`
* :mod:`.objects` — builders of the Sidecars, EndpointSlices and EnvoyFilters the run adds
* :mod:`.api` — server-side apply, Pod status, tokens, root certificate (plain HTTPS)
* :mod:`.admission` — istiod's validation webhook asked about every Istio object
* :mod:`.proxies` — pilot-agent + Envoy processes, pod addresses on ``lo``
* :mod:`.sync` — SYNCED / NACK from istiod's ``/debug/syncz`` and Envoy's counters;
  push times of policy changes
* :mod:`.plane` — etcd + kube-apiserver + istiod bring-up and shutdown
* :mod:`.deployment` — :class:`IstioDeployment`, the :class:`~harness.platforms.base.Deployment`
"""

from harness.platforms.local.istio.deployment import (
    IstioDeployment,
    unsupported_faults,
)
from harness.platforms.local.istio.objects import (
    endpoint_slice,
    fault_envoy_filter,
    fault_filter,
    sidecar_resource,
    source_bind_filter,
)
from harness.platforms.local.istio.plane import (
    IstioControlPlane,
    IstioTimings,
    istio_control_plane,
    read_crd_file,
)
from harness.platforms.local.istio.sync import sync_state
from harness.platforms.local.istio.workloads import MESH_NETWORK, Sidecar, Workload, mesh_address

__all__ = [
    "MESH_NETWORK",
    "IstioControlPlane",
    "IstioDeployment",
    "IstioTimings",
    "Sidecar",
    "Workload",
    "endpoint_slice",
    "fault_envoy_filter",
    "fault_filter",
    "istio_control_plane",
    "mesh_address",
    "read_crd_file",
    "sidecar_resource",
    "source_bind_filter",
    "sync_state",
    "unsupported_faults",
]
