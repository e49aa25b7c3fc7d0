"""The shop app under ``--mesh istio``: :class:`IstioDeployment` brings up the control plane
(:mod:`.plane`), applies the rendered policy and what controllers would add
(:mod:`.objects`) through the API (:mod:`.api`), starts every sidecar and the gateway
(:mod:`.proxies`) and waits until istiod reports them SYNCED (:mod:`.sync`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from harness.errors import PlatformError
from harness.kube.render import (
    APP_VERSION,
    GATEWAY_PORT,
    SERVICE_PORT,
    JsonObject,
    RenderOptions,
    render,
    run_namespace,
)
from harness.mesh.envoy import Addr
from harness.platforms.base import InstanceInfo
from harness.platforms.local.istio.objects import (
    endpoint_slice,
    fault_envoy_filter,
    sidecar_resource,
    source_bind_filter,
)
from harness.platforms.local.istio.plane import IstioControlPlane, istio_control_plane
from harness.platforms.local.istio.workloads import (
    APP_PORT,
    GATEWAY_ACCOUNT,
    MESH_NETWORK,
    Workload,
    mesh_address,
)
from harness.platforms.local.platform import ControlPlaneInfo, LocalDeployment, Mesh, _Proxy
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import KillFault, PauseFault, Scenario
from harness.toolchain import ISTIO_RELEASE, KUBERNETES_VERSION

__all__ = ["ISTIO_FAULT_KINDS", "IstioDeployment", "unsupported_faults"]

GATEWAY_IP_INDEX: Final = 1  # 198.18.0.1: the ingress gateway
EGRESS_NETWORK: Final = ipaddress.ip_network("127.20.0.0/16")  # per-instance egress binds
APPLY_PARALLEL: Final = 4  # requests in flight to the API server while deploying
# Fault kinds that work under --mesh istio (see IstioDeployment); the others are refused
# with exit 2 rather than faked.
ISTIO_FAULT_KINDS: Final = frozenset({"http", "partition", "kill", "pause"})


def unsupported_faults(scenario: Scenario) -> list[str]:
    """The scenario's faults ``--mesh istio`` cannot inject yet, each with why.

    * ``toxic``: the toxiproxy edges would have to be endpoints istiod knows.
    * ``kill``/``pause`` of a ``sidecar``: the process is pilot-agent, not Envoy.
    """
    problems = []
    for fault in scenario.faults:
        if fault.kind not in ISTIO_FAULT_KINDS:
            problems.append(f"{fault.name}: kind {fault.kind}")
        elif isinstance(fault, KillFault | PauseFault) and fault.process == "sidecar":
            problems.append(f"{fault.name}: {fault.kind} of the sidecar")
    return problems


class IstioDeployment(LocalDeployment):
    """The shop app with every sidecar (and the ingress gateway) programmed by a real istiod
    running in the run's namespace. Same interface as :class:`LocalDeployment`."""

    mesh = Mesh.ISTIO

    def __init__(
        self, scenario: Scenario, run_dir: Path, sandbox: Sandbox, sock_dir: Path, envoy_binary: str
    ) -> None:
        if sandbox.mode is not Isolation.NAMESPACE:
            raise PlatformError(
                "--mesh istio needs the run's private network namespace (pod addresses from "
                f"{MESH_NETWORK} exist only there); this run fell back to the host: "
                f"{sandbox.note}"
            )
        problems = unsupported_faults(scenario)
        if problems:
            raise PlatformError(
                "--mesh istio cannot inject these faults yet (run them with --mesh envoy): "
                + "; ".join(problems)
            )
        super().__init__(scenario, run_dir, sandbox, sock_dir, envoy_binary)
        self.ingress = Addr(mesh_address(GATEWAY_IP_INDEX), GATEWAY_PORT)
        self.ingress_url = f"http://{self.ingress.host}:{self.ingress.port}"
        self.namespace = run_namespace(sandbox.run_id)
        self.workloads = {
            inst.name: Workload(
                inst.name, inst.service, self.namespace, inst.ip, i + 2, {"version": APP_VERSION}
            )
            for i, inst in enumerate(self.instances)
        }
        self.plane: IstioControlPlane | None = None
        self.timings: dict[str, float] = {}
        self._stack = contextlib.ExitStack()

    def _plan_instances(self) -> tuple[InstanceInfo, ...]:
        app = self.scenario.app
        planned: list[InstanceInfo] = []
        index = GATEWAY_IP_INDEX
        for service in app.topology.service_names:
            for r in range(app.replicas_of(service)):
                index += 1
                ip = mesh_address(index)
                planned.append(
                    InstanceInfo(f"{service}-{r}", service, r, ip, SERVICE_PORT, APP_PORT)
                )
        return tuple(planned)

    def _egress(self, workload: Workload) -> Addr:
        return Addr(str(EGRESS_NETWORK[workload.index]), SERVICE_PORT)

    def start(self) -> None:
        begun = time.monotonic()
        for directory in ("logs", "access"):
            (self.run_dir / directory).mkdir(parents=True, exist_ok=True)
        gateway = Workload(
            "istio-ingressgateway-0",
            GATEWAY_ACCOUNT,
            self.namespace,
            self.ingress.host,
            GATEWAY_IP_INDEX,
            {"istio": "ingressgateway"},
        )

        def apply_objects(plane: IstioControlPlane) -> None:
            self._apply_objects(plane, gateway)
            self.timings["objects_applied_s"] = time.monotonic() - begun

        plane = self._stack.enter_context(
            istio_control_plane(
                self.sandbox,
                self._sock_dir / "cp",
                self.run_dir / "logs",
                while_istiod_starts=apply_objects,
            )
        )
        self.plane = plane
        self.timings.update(
            apiserver_ready_s=plane.timings.apiserver_ready_s,
            crds_established_s=plane.timings.crds_established_s,
            istiod_ready_s=plane.timings.istiod_ready_s,
        )
        self._start_proxies(plane, gateway, begun)

    def _apply_objects(self, plane: IstioControlPlane, gateway: Workload) -> None:
        """The rendered objects, and what a cluster's controllers would add: Sidecars,
        fault EnvoyFilters, Pods, EndpointSlices; each instance's address on ``lo``."""
        topology = self.scenario.app.topology
        manifests = render(self.scenario, RenderOptions.for_run(self.sandbox.run_id))
        extra: list[JsonObject] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": GATEWAY_ACCOUNT, "namespace": self.namespace},
            }
        ]
        for workload in self.workloads.values():
            extra.append(sidecar_resource(workload, self._egress(workload).host))
        for workload in (gateway, *self.workloads.values()):
            extra.append(source_bind_filter(workload))
        for service in topology.service_names:
            sources = [*topology.callers_of(service)]
            if service == topology.entry:
                sources.append("ingress")
            extra.append(fault_envoy_filter(self.namespace, service, sources))
        for service in topology.service_names:
            members = [w for w in self.workloads.values() if w.service == service]
            extra.append(endpoint_slice(self.namespace, service, members))
        plane.apply(manifests[:1])  # the Namespace first: everything else lives in it
        plane.apply([*manifests[1:], *extra], parallel=APPLY_PARALLEL)
        workloads = (gateway, *self.workloads.values())
        plane.add_address(*(workload.ip for workload in workloads))
        with ThreadPoolExecutor(max_workers=APPLY_PARALLEL, thread_name_prefix="pods") as pool:
            added = [
                pool.submit(plane.add_pod, workload, sidecar=workload is not gateway)
                for workload in workloads
            ]
            for future in added:
                future.result()
        # The egress addresses are in 127.0.0.0/8, which lo already serves whole.

    def _start_proxies(self, plane: IstioControlPlane, gateway: Workload, begun: float) -> None:
        topology = self.scenario.app.topology
        root = plane.root_certificate(self.namespace)
        self.timings["root_certificate_s"] = time.monotonic() - begun

        def start(workload: Workload) -> None:
            sidecar = plane.start_sidecar(workload, self._envoy, self._sock_dir, root)
            self.proxies[workload.name] = _Proxy(
                workload.name, sidecar.admin, sidecar.pid, sidecar.log
            )
            inst = self.instance(workload.name)
            spec = topology.service(inst.service)
            self._outbound[inst.name] = self._egress(workload)
            self.app_pids[inst.name] = self.sandbox.spawn(
                self._app_argv(inst, self._egress(workload), spec.calls),
                log_path=self.run_dir / "logs" / f"{inst.name}.app.log",
            )

        # Token requests and file writes overlap; the supervisor serialises the spawns.
        with ThreadPoolExecutor(max_workers=APPLY_PARALLEL, thread_name_prefix="pods") as pool:
            for future in [pool.submit(start, w) for w in self.workloads.values()]:
                future.result()
        sidecar = plane.start_sidecar(gateway, self._envoy, self._sock_dir, root, router=True)
        self.proxies["ingress"] = _Proxy("ingress", sidecar.admin, sidecar.pid, sidecar.log)
        self.timings["sidecars_started_s"] = time.monotonic() - begun
        synced = plane.wait_synced([gateway.name, *self.workloads])
        self.timings["proxies_synced_s"] = time.monotonic() - begun
        self.timings["sync_wait_s"] = synced
        self._wait_ready()
        self.timings["ready_s"] = time.monotonic() - begun

    def control_plane(self) -> ControlPlaneInfo | None:
        return ControlPlaneInfo(
            versions={"istio": ISTIO_RELEASE, "kubernetes": KUBERNETES_VERSION},
            timings=dict(self.timings),
        )

    def close(self) -> None:
        """Stop the control plane (by PID) and the host side of its forwards."""
        self._stack.close()
