"""The shop app under ``--mesh istio``: :class:`IstioDeployment` brings up the control plane
(:mod:`.plane`), applies the rendered policy and what controllers would add
(:mod:`.objects`) through the API (:mod:`.api`), starts every sidecar and the gateway
(:mod:`.proxies`) and waits until istiod reports them SYNCED (:mod:`.sync`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from harness.errors import ControlPlaneError, PlatformError
from harness.journal import PolicyPush
from harness.kube.render import (
    GATEWAY_PORT,
    SERVICE_PORT,
    JsonObject,
    RenderOptions,
    render,
    run_namespace,
)
from harness.mesh.envoy import Addr
from harness.platforms.base import (
    ControlPlaneInfo,
    EdgeProxy,
    InstanceInfo,
    ProcessKind,
    toxic_edges,
)
from harness.platforms.local.istio.admission import istiod_refusals
from harness.platforms.local.istio.api import object_ref
from harness.platforms.local.istio.objects import (
    endpoint_slice,
    fault_envoy_filter,
    observe_envoy_filter,
    sidecar_resource,
    source_bind_filter,
)
from harness.platforms.local.istio.outage import IstioControlPlaneFaults
from harness.platforms.local.istio.plane import IstioControlPlane, istio_control_plane
from harness.platforms.local.istio.proxies import CERTS_DIR
from harness.platforms.local.istio.sync import snapshot, wait_pushed
from harness.platforms.local.istio.workloads import (
    APP_PORT,
    GATEWAY_ACCOUNT,
    MESH_NETWORK,
    Workload,
    mesh_address,
)
from harness.platforms.local.platform import (
    PROCESS_SIGNAL_TIMEOUT_S,
    LocalDeployment,
    Mesh,
    _Proxy,
)
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import DestinationPolicy, Scenario, ToxicFault
from harness.toolchain import ISTIO_RELEASE, KUBERNETES_VERSION

__all__ = ["IstioDeployment", "unsupported_faults"]

GATEWAY_IP_INDEX: Final = 1  # 198.18.0.1: the ingress gateway
EGRESS_NETWORK: Final = ipaddress.ip_network("127.20.0.0/16")  # per-instance egress binds
APPLY_PARALLEL: Final = 4  # requests in flight to the API server while deploying
# The toxic proxies' addresses: mesh_address(TOXIC_IP_BASE + n), outside any pod's.
TOXIC_IP_BASE: Final = 1000


def unsupported_faults(scenario: Scenario) -> list[str]:
    """The scenario's faults ``--mesh istio`` cannot inject, each with why.

    A ``toxic`` fault's proxy becomes the target instance's address in its Service's
    EndpointSlice, which every caller of the Service reads: so the edge's source must be the
    target's only caller (true of every edge of the shop app).
    """
    topology = scenario.app.topology
    problems = []
    for fault in scenario.faults:
        if isinstance(fault, ToxicFault):
            callers = set(topology.callers_of(fault.target.service))
            if fault.target.service == topology.entry:
                callers.add("ingress")
            others = sorted(callers - {fault.source})
            if others:
                problems.append(
                    f"{fault.name}: toxic on {fault.source} → {fault.target.service}, which "
                    f"{', '.join(others)} also call (under Istio every caller reads the "
                    "same endpoints)"
                )
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
                "--mesh istio cannot inject these faults (run them with --mesh envoy): "
                + "; ".join(problems)
            )
        super().__init__(scenario, run_dir, sandbox, sock_dir, envoy_binary)
        self.ingress = Addr(mesh_address(GATEWAY_IP_INDEX), GATEWAY_PORT)
        self.ingress_url = f"http://{self.ingress.host}:{self.ingress.port}"
        self.namespace = run_namespace(sandbox.run_id)
        self._certs: dict[str, Path] = {}  # proxy → its OUTPUT_CERTS directory
        topology = scenario.app.topology
        self.workloads = {
            inst.name: Workload(
                inst.name,
                inst.service,
                self.namespace,
                inst.ip,
                i + 2,
                topology.service(inst.service).variant_of(inst.index).pod_labels,
            )
            for i, inst in enumerate(self.instances)
        }
        self.plane: IstioControlPlane | None = None
        self.timings: dict[str, float] = {}
        self._stack = contextlib.ExitStack()
        self.pushes: list[PolicyPush] = []
        self._applied: list[JsonObject] = []  # the objects the API server accepted
        self._paused: dict[str, list[int]] = {}  # instance → its paused Envoy PIDs

    def _plan_instances(self) -> tuple[InstanceInfo, ...]:
        app = self.scenario.app
        planned: list[InstanceInfo] = []
        index = GATEWAY_IP_INDEX
        for service in app.topology.service_names:
            spec = app.topology.service(service)
            for r in range(app.replicas_of(service)):
                index += 1
                ip = mesh_address(index)
                name = spec.instance_name(r)
                version = spec.variant_of(r).version  # fault targets select by it
                planned.append(
                    InstanceInfo(name, service, r, ip, SERVICE_PORT, APP_PORT, version=version)
                )
        return tuple(planned)

    def _plan_toxic_proxies(self) -> dict[tuple[str, str], EdgeProxy]:
        """As on the local envoy mesh, but each proxy listens on an address of the mesh
        network (the API server refuses loopback endpoints) on the Service port."""
        planned: dict[tuple[str, str], EdgeProxy] = {}
        for source, target in toxic_edges(self.scenario, packet_filter=True):
            instances = self.instances_of(target.service)
            for inst in instances[: target.count(len(instances))]:
                if (source, inst.name) not in planned:
                    listen = Addr(mesh_address(TOXIC_IP_BASE + len(planned)), SERVICE_PORT)
                    planned[(source, inst.name)] = EdgeProxy(
                        f"{source}->{inst.name}",
                        source,
                        inst.name,
                        listen,
                        Addr(inst.ip, inst.inbound_port),
                    )
        return planned

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
        self.control_plane_faults = IstioControlPlaneFaults(
            plane, self.scenario.app.topology, self.namespace, self._applied
        )
        self.timings.update(
            apiserver_ready_s=plane.timings.apiserver_ready_s,
            crds_established_s=plane.timings.crds_established_s,
            istiod_ready_s=plane.timings.istiod_ready_s,
        )
        _refuse_what_istiod_refuses(self.sandbox, self._applied)
        self.timings["objects_validated_s"] = time.monotonic() - begun
        if self.toxic_proxies:
            self._start_toxiproxy()
        self._start_proxies(plane, gateway, begun)

    def _run_objects(self, gateway: Workload) -> list[JsonObject]:
        """What a cluster's controllers and the harness add beside the rendered policy:
        Sidecars, EndpointSlices (through the toxic proxies), the harness's EnvoyFilters
        (but the fault filters: see :meth:`_fault_filters`)."""
        topology = self.scenario.app.topology
        extra: list[JsonObject] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": GATEWAY_ACCOUNT, "namespace": self.namespace},
            }
        ]
        for workload in self.workloads.values():
            extra.append(sidecar_resource(workload, self._egress(workload).host))
        access, fields = self.run_dir / "access", self.scenario.mesh.access_log
        extra.append(source_bind_filter(gateway))
        extra.append(
            observe_envoy_filter(gateway, str(access / "ingress.jsonl"), "ingress", fields)
        )
        for workload in self.workloads.values():
            extra.append(source_bind_filter(workload))
            log = str(access / f"{workload.name}.jsonl")
            extra.append(observe_envoy_filter(workload, log, workload.service, fields))
        via = {edge.instance: edge.listen.host for edge in self.toxic_proxies.values()}
        for service in topology.service_names:
            members = [w for w in self.workloads.values() if w.service == service]
            extra.append(endpoint_slice(self.namespace, service, members, via))
        return extra

    def _fault_filters(self) -> list[JsonObject]:
        """The inbound fault filters (off until a fault flips their runtime keys). Applied
        once every proxy is SYNCED, as a measured policy change (:meth:`apply_policy`)."""
        topology = self.scenario.app.topology
        filters: list[JsonObject] = []
        for service in topology.service_names:
            sources = [*topology.callers_of(service)]
            if service == topology.entry:
                sources.append("ingress")
            filters.append(fault_envoy_filter(self.namespace, service, sources))
        return filters

    def apply_destination_policy(self, service: str, policy: DestinationPolicy) -> PolicyPush:
        """Re-apply ``service``'s VirtualService as the scenario's, with its policy replaced
        by ``policy`` (a traffic shift's weights), to every caller's sidecar: how a rollout
        step is a policy push under Istio (:mod:`harness.faults.traffic`)."""
        destinations = {**self.scenario.mesh.destinations, service: policy}
        mesh = self.scenario.mesh.model_copy(update={"destinations": destinations})
        changed = self.scenario.model_copy(update={"mesh": mesh})
        options = RenderOptions.for_run(self.sandbox.run_id)
        objects = [
            m.to_dict()
            for m in render(changed, options)
            if m.kind == "VirtualService" and m.name == service
        ]
        callers = self.scenario.app.topology.callers_of(service)
        affected = [inst.name for inst in self.instances if inst.service in callers]
        return self.apply_policy(objects, affected)

    def apply_policy(self, objects: Sequence[JsonObject], affected: Sequence[str]) -> PolicyPush:
        """Apply ``objects`` and wait until istiod got them to every proxy in ``affected``
        (instance names): the push time, recorded for the journal. An object the API server
        or istiod's validation refuses (checked in a cluster's order: the CRD schema, then
        istiod's webhook), or a proxy that rejects the result (a NACK), is a
        ControlPlaneError naming the objects and the reason."""
        if self.plane is None:
            raise PlatformError("the control plane is not running")
        change = "apply " + ", ".join(object_ref(item) for item in objects)
        before = snapshot(self.sandbox)
        at, begun = time.time(), time.monotonic()
        self.plane.apply(objects, parallel=APPLY_PARALLEL)  # the CRD schemas first,
        _refuse_what_istiod_refuses(self.sandbox, objects)  # then istiod's webhook
        try:
            wait_pushed(self.sandbox, self.plane.sidecars, affected, before)
        except ControlPlaneError as exc:
            raise ControlPlaneError(f"{change}: {exc}") from None
        push = PolicyPush(
            change=change, at=at, proxies=sorted(affected), seconds=time.monotonic() - begun
        )
        self.pushes.append(push)
        return push

    def _apply_objects(self, plane: IstioControlPlane, gateway: Workload) -> None:
        """The rendered objects and the run's own (:meth:`_run_objects`), the Pods; each
        instance's (and toxic proxy's) address on ``lo``."""
        manifests = [
            m.to_dict() for m in render(self.scenario, RenderOptions.for_run(self.sandbox.run_id))
        ]
        plane.apply(manifests[:1])  # the Namespace first: everything else lives in it
        self._applied = [*manifests[1:], *self._run_objects(gateway)]
        plane.apply(self._applied, parallel=APPLY_PARALLEL)
        workloads = (gateway, *self.workloads.values())
        plane.add_address(*(workload.ip for workload in workloads))
        plane.add_address(*(edge.listen.host for edge in self.toxic_proxies.values()))
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
            self._certs[inst.name] = sidecar.directory / CERTS_DIR
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
        self._certs["ingress"] = sidecar.directory / CERTS_DIR
        self.timings["sidecars_started_s"] = time.monotonic() - begun
        synced = plane.wait_synced([gateway.name, *self.workloads])
        self.timings["proxies_synced_s"] = time.monotonic() - begun
        self.timings["sync_wait_s"] = synced
        self.apply_policy(self._fault_filters(), list(self.workloads))
        self.timings["fault_filters_pushed_s"] = time.monotonic() - begun
        self._wait_ready()
        self.timings["ready_s"] = time.monotonic() - begun

    # ------------------------------------------------------------------ sidecar faults
    # The sidecar is a container of two processes: pilot-agent (the PID the harness knows)
    # and its child Envoy, which carries the traffic. A kill or pause acts on both, as on a
    # pod's istio-proxy container; a restart starts the agent again, which fetches a new
    # certificate and configuration from istiod (waited for: SYNCED).

    def _envoys_of(self, agent: int) -> list[int]:
        """The agent's children (its Envoy), from the namespace's own ``/proc`` (every
        thread's list: Go starts a child from whichever thread runs the goroutine)."""
        code, out, _ = self.sandbox.run(["sh", "-c", f"cat /proc/{agent}/task/*/children"])
        return [int(pid) for pid in out.split()] if code == 0 else []

    def _signal_envoys(self, pids: list[int], signal: str, done: str) -> None:
        """Send ``signal`` (``KILL``, ``STOP``, ``CONT``) to ``pids`` inside the namespace and
        wait until each is ``done`` (``gone``, ``stopped``, ``running``)."""
        if not pids:
            return
        # The shell's own kill: no procps needed in the namespace.
        self.sandbox.run(["sh", "-c", f"kill -{signal} {' '.join(map(str, pids))}"])
        deadline = time.monotonic() + PROCESS_SIGNAL_TIMEOUT_S
        for pid in pids:
            while not _is(self._ns_state(pid), done):
                if time.monotonic() > deadline:
                    raise PlatformError(f"Envoy {pid} not {done} after SIG{signal}")
                time.sleep(0.02)

    def _ns_state(self, pid: int) -> str | None:
        code, out, _ = self.sandbox.run(["cat", f"/proc/{pid}/stat"])
        if code != 0 or ")" not in out:
            return None
        state = out.rsplit(")", 1)[1].split()[0]
        return None if state in ("Z", "X") else state

    def kill_process(self, instance: str, process: ProcessKind) -> int:
        if process != "sidecar":
            return super().kill_process(instance, process)
        envoys = self._envoys_of(self.proxies[instance].pid)
        pid = super().kill_process(instance, process)
        self._signal_envoys(envoys, "KILL", "gone")
        return pid

    def pause_process(self, instance: str, process: ProcessKind) -> int:
        if process != "sidecar":
            return super().pause_process(instance, process)
        envoys = self._envoys_of(self.proxies[instance].pid)
        self._paused[instance] = envoys
        self._signal_envoys(envoys, "STOP", "stopped")
        return super().pause_process(instance, process)

    def resume_process(self, instance: str, process: ProcessKind) -> int:
        if process != "sidecar":
            return super().resume_process(instance, process)
        pid = super().resume_process(instance, process)
        self._signal_envoys(self._paused.pop(instance, []), "CONT", "running")
        return pid

    def restart_process(self, instance: str, process: ProcessKind) -> int:
        if process != "sidecar" or self.plane is None:
            return super().restart_process(instance, process)
        old = self.proxies[instance].pid
        if self.sandbox.state(old) is not None:
            raise PlatformError(f"{instance} sidecar (pid {old}) is still running")
        sidecar = self.plane.sidecars[instance]
        pid = self.sandbox.spawn(
            list(sidecar.argv), log_path=sidecar.log, env=dict(sidecar.env), cwd=sidecar.directory
        )
        self.plane.sidecars[instance] = dataclasses.replace(sidecar, pid=pid)
        self.proxies[instance] = _Proxy(instance, sidecar.admin, pid, sidecar.log)
        inst = self.instance(instance)
        self._await_ready(
            pid,
            sidecar.log,
            lambda: (
                sidecar.admin.ready() and self.sandbox.wait_tcp(inst.ip, inst.inbound_port, 1.0)
            ),
        )
        self.plane.wait_synced([instance])
        self.disrupted.discard((instance, process))
        return pid

    def control_plane(self) -> ControlPlaneInfo | None:
        return ControlPlaneInfo(
            versions={"istio": ISTIO_RELEASE, "kubernetes": KUBERNETES_VERSION},
            timings=dict(self.timings),
            pushes=tuple(self.pushes),
        )

    def _identity_files(self, proxy: str) -> tuple[Path, Path, Path]:
        """The certificate istiod's CA signed for ``proxy`` (pilot-agent's OUTPUT_CERTS)."""
        certs = self._certs[proxy]
        return certs / "cert-chain.pem", certs / "key.pem", certs / "root-cert.pem"

    def close(self) -> None:
        """Stop the control plane (by PID) and the host side of its forwards."""
        self._stack.close()


def _is(state: str | None, done: str) -> bool:
    if done == "gone":
        return state is None
    if done == "stopped":
        return state in ("T", "t")
    return state is not None and state not in ("T", "t")


def _refuse_what_istiod_refuses(sandbox: Sandbox, objects: Sequence[JsonObject]) -> None:
    """istiod's validation webhook on every Istio object (as a cluster's API server would
    call it); a refusal is a ControlPlaneError naming each object and istiod's reason."""
    refused = istiod_refusals(sandbox, objects)
    if refused:
        raise ControlPlaneError("istiod's validation refused " + "; ".join(refused))
