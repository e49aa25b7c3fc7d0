"""What the pinned istiod programs for a scenario: every proxy role's Envoy ``/config_dump``.

The istiod side of the differential fidelity check (:mod:`harness.mesh.fidelity`). One
control plane (:func:`~harness.platforms.local.istio.istio_control_plane`) serves many
scenarios: each gets a namespace of its own holding the objects ``harness.kube.render``
writes (exactly what ``--mesh istio`` applies), the Pods, EndpointSlices and ``Sidecar``
objects an ``--mesh istio`` run adds, and **one** pilot-agent + Envoy per proxy role (one
instance per service, and the ingress gateway). Replicas only add endpoints, which decide
no resilience field, so one instance per service shows every role's configuration.

The dump is read from each real Envoy's admin ``/config_dump`` once istiod reports the
proxy SYNCED (every xDS type acknowledged): that is the configuration Envoy accepted and
runs, and it is printed by the same Envoy code as the translation's side. The sidecars are
stopped (by PID) before the next scenario's start, so at most one scenario's proxies run.

The ``EnvoyFilter`` objects an ``--mesh istio`` run adds (the inbound fault filters and the
source-bind patch of the outbound clusters) are applied too: a patch that disturbed a
resilience field would show as a difference.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness.errors import ControlPlaneError, PlatformError
from harness.kube.render import JsonObject, RenderOptions, render
from harness.mesh.admin import EnvoyAdmin
from harness.mesh.envoy import EnvoyCommand, fault_sources_of
from harness.mesh.fidelity import INGRESS, Difference, differences, translation_bootstraps
from harness.mesh.identity import write_mesh_identities
from harness.platforms.local.istio import (
    IstioControlPlane,
    Sidecar,
    Workload,
    endpoint_slice,
    fault_envoy_filter,
    istio_control_plane,
    mesh_address,
    sidecar_resource,
    source_bind_filter,
)
from harness.platforms.local.istio.deployment import EGRESS_NETWORK
from harness.platforms.local.istio.plane import stop_processes
from harness.platforms.local.istio.workloads import GATEWAY_ACCOUNT, READY_TIMEOUT_S, Log, quiet
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import Scenario

INGRESS_ROLE: Final = INGRESS
# Addresses per scenario: scenario ``k`` uses MESH_NETWORK indices from 4096 + 64k (the
# gateway) on, which keeps clear of an --mesh istio run's (instances from 1, toxic proxies
# from 1000) and of each other; 64 leaves room for the gateway and MAX_SERVICES services.
_INDEX_BASE: Final = 4096
_INDEX_STRIDE: Final = 64
_GATEWAY_LABEL: Final = "harness/gateway"


@dataclass(frozen=True)
class RoleDumps:
    """One scenario's Envoy ``/config_dump`` per proxy role (service name or ``ingress``)."""

    namespace: str
    dumps: Mapping[str, dict[str, Any]]


def scenario_namespace(slot: int, scenario: Scenario) -> str:
    return f"hf{slot}-{scenario.metadata.name}"[:63].rstrip("-")


def _workloads(slot: int, scenario: Scenario, namespace: str) -> dict[str, Workload]:
    """One workload per role; the gateway first."""
    base = _INDEX_BASE + _INDEX_STRIDE * slot
    services = scenario.app.topology.service_names
    if len(services) + 1 > _INDEX_STRIDE:
        raise ControlPlaneError(
            f"{scenario.metadata.name}: {len(services)} services; the fidelity check plans "
            f"at most {_INDEX_STRIDE - 1} per scenario"
        )
    roles = {
        INGRESS_ROLE: Workload(
            f"{INGRESS_ROLE}-{slot}",
            GATEWAY_ACCOUNT,
            namespace,
            mesh_address(base),
            base,
            {"istio": "ingressgateway", _GATEWAY_LABEL: namespace},
        )
    }
    for offset, service in enumerate(services, start=1):
        index = base + offset
        roles[service] = Workload(
            f"{service}-{slot}", service, namespace, mesh_address(index), index
        )
    return roles


def _objects(scenario: Scenario, namespace: str, roles: Mapping[str, Workload]) -> list[Any]:
    """The rendered objects (Namespace first) and what an --mesh istio run adds to them."""
    # Each namespace's Gateway selects only its own gateway: Gateway selectors match pods
    # in every namespace, so a shared selector would mix the scenarios' ingress routes.
    options = RenderOptions(
        namespace=namespace, run_id=namespace, gateway_selector={_GATEWAY_LABEL: namespace}
    )
    manifests = render(scenario, options)
    extra: list[JsonObject] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": GATEWAY_ACCOUNT, "namespace": namespace},
        }
    ]
    topology = scenario.app.topology
    for role, workload in roles.items():
        extra.append(source_bind_filter(workload))
        if role != INGRESS_ROLE:
            extra.append(sidecar_resource(workload, str(EGRESS_NETWORK[workload.index])))
            extra.append(endpoint_slice(namespace, role, [workload]))
            sources = fault_sources_of(topology, role)
            extra.append(fault_envoy_filter(namespace, role, sources))
    return [*manifests, *extra]


def istiod_dumps(
    plane: IstioControlPlane, scenario: Scenario, slot: int, envoy: str, socket_dir: Path
) -> RoleDumps:
    """Apply ``scenario`` in a namespace of its own, start one proxy per role, wait until
    istiod reports each SYNCED, and read every Envoy's ``/config_dump``; the proxies are
    stopped before this returns. ``slot`` (0, 1, ...) must differ between the scenarios
    one control plane serves."""
    namespace = scenario_namespace(slot, scenario)
    roles = _workloads(slot, scenario, namespace)
    objects = _objects(scenario, namespace, roles)
    plane.apply(objects[:1])
    plane.apply(objects[1:], parallel=4)
    plane.add_address(*(w.ip for w in roles.values()))
    for role, workload in roles.items():
        plane.add_pod(workload, sidecar=role != INGRESS_ROLE)
    root = plane.root_certificate(namespace)
    started: dict[str, Sidecar] = {}
    try:
        for role, workload in roles.items():
            started[role] = plane.start_sidecar(
                workload, envoy, socket_dir, root, router=role == INGRESS_ROLE
            )
        plane.wait_synced([w.name for w in roles.values()])
        dumps = {role: _config_dump(sidecar) for role, sidecar in started.items()}
    finally:
        stop_processes(plane.sandbox, {s.workload.name: s.pid for s in started.values()})
        for sidecar in started.values():
            plane.sidecars.pop(sidecar.workload.name, None)
    return RoleDumps(namespace, dumps)


def _config_dump(sidecar: Sidecar) -> dict[str, Any]:
    # With the endpoints: istiod decides auto-mTLS per endpoint (harness.mesh.fidelity).
    status, body = sidecar.admin.request("GET", "/config_dump?include_eds")
    if status != 200:
        raise ControlPlaneError(
            f"{sidecar.workload.name}: Envoy's /config_dump answered {status}: {body[:200]}"
        )
    data: dict[str, Any] = json.loads(body)
    return data


def translation_dumps(
    scenario: Scenario, envoy: str, directory: Path, namespace: str = "default"
) -> dict[str, Any]:
    """Load every role's bootstrap from :mod:`harness.mesh.envoy` into a real Envoy (on the
    host: every listener on a free loopback port, the admin API on a Unix socket) and read
    its ``/config_dump`` back; every Envoy is stopped (by PID) before this returns. The mesh
    certificates are made for ``namespace`` (istiod's side's, so SNI and SANs compare) in a
    private temporary directory, removed before this returns.

    Loading them, rather than reading the bootstrap dicts, means Envoy parsed and accepted
    them, and both sides of the comparison are printed by the same Envoy code."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hrn-") as secrets_dir:
        accounts = [(INGRESS, GATEWAY_ACCOUNT)]
        accounts += [(service, service) for service in scenario.app.topology.service_names]
        tls = write_mesh_identities(Path(secrets_dir) / "mtls", namespace, accounts)
        bootstraps = translation_bootstraps(scenario, str(directory), tls)
        return _load_and_dump(bootstraps, envoy, directory)


def _load_and_dump(bootstraps: dict[str, Any], envoy: str, directory: Path) -> dict[str, Any]:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role, bootstrap in bootstraps.items():
            config = directory / f"{role}.json"
            config.write_text(json.dumps(bootstrap))
            command = EnvoyCommand(str(config), str(directory / f"{role}.log"))
            processes[role] = subprocess.Popen(
                command.argv(envoy),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return {role: _read_dump(role, process, directory) for role, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_dump(role: str, process: subprocess.Popen[bytes], directory: Path) -> dict[str, Any]:
    admin = EnvoyAdmin(str(directory / f"{role}.sock"), name=f"translation {role}")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not admin.ready():
        if process.poll() is not None:
            log = directory / f"{role}.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise PlatformError(
                f"Envoy refused the translation's bootstrap of {role} "
                f"(exit {process.returncode}): {tail}"
            )
        if time.monotonic() > deadline:
            raise PlatformError(f"the translation's Envoy for {role} never became ready")
        time.sleep(0.05)
    status, body = admin.request("GET", "/config_dump")
    if status != 200:
        raise PlatformError(f"translation {role}: /config_dump answered {status}: {body[:200]}")
    data: dict[str, Any] = json.loads(body)
    return data


def check_fidelity(
    scenarios: Sequence[Scenario], envoy: str, work: Path, *, log: Log = quiet
) -> dict[str, list[Difference]]:
    """Every scenario's differences between istiod and the translation (empty: they agree),
    with one control plane for all of them, in a sandbox of its own; nothing survives."""
    run_id = f"fidelity-{secrets.token_hex(4)}"
    scratch = Path(tempfile.mkdtemp(prefix="hrn-"))
    found: dict[str, list[Difference]] = {}
    sandbox = Sandbox.start(run_id, work / "logs", Isolation.NAMESPACE, scratch)
    try:
        with istio_control_plane(sandbox, scratch / "cp", work / "logs", log=log) as plane:
            for slot, scenario in enumerate(scenarios):
                istio = istiod_dumps(plane, scenario, slot, envoy, scratch)
                mine = translation_dumps(
                    scenario, envoy, work / "translation" / str(slot), istio.namespace
                )
                found[scenario.metadata.name] = differences(scenario, istio.dumps, mine)
                log(f"{scenario.metadata.name}: {len(found[scenario.metadata.name])} differences")
    finally:
        sandbox.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return found
