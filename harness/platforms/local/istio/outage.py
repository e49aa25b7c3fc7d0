"""Control-plane faults and configuration changes of a ``--mesh istio`` run: the
:class:`~harness.platforms.base.ControlPlaneFaults` surface of an ``IstioDeployment``.

istiod and the API server are processes of the run's supervisor (:mod:`.plane`): a kill is
SIGKILL by PID and a restart the same command line again, waited for until ready; a pause
is SIGSTOP / SIGCONT. What the proxies hold is read where they keep it: istiod's
``/debug/syncz`` (what it sent and what each proxy acknowledged), Envoy's
``control_plane.connected_state`` (its xDS stream to pilot-agent, which proxies it to
istiod) and ``/certs`` (the workload certificate istiod's CA signed).

A configuration change is a response header added to one service's VirtualService routes:
harmless to traffic, and visible in each caller's route configuration.
"""

from __future__ import annotations

import copy
import datetime
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from harness.app.topology import Topology
from harness.errors import HarnessError, PlatformError
from harness.kube.render import SERVICE_PORT, JsonObject
from harness.platforms.base import ControlPlaneComponent
from harness.platforms.local.istio.plane import IstioControlPlane
from harness.platforms.local.istio.sync import sent_nonces, snapshot, sync_state, syncz
from harness.platforms.local.istio.workloads import ISTIOD_PORTS, Sidecar

__all__ = ["IstioControlPlaneFaults", "route_with_header"]

PROCESS_NAMES: Final[Mapping[ControlPlaneComponent, str]] = {
    "istiod": "istiod",
    "apiserver": "kube-apiserver",
}
SIGNAL_WAIT_S: Final = 10.0
# istiod may be paused: a short timeout keeps the supervisor (one request at a time) free.
SYNCZ_TIMEOUT_S: Final = 0.5
GATEWAY_PROXY: Final = "ingress"


def route_with_header(
    existing: JsonObject | None, namespace: str, service: str, header: str, value: str
) -> JsonObject:
    """``service``'s VirtualService with ``header: value`` added to each HTTP route's
    response headers: the rendered one when the scenario has it (its timeout and retries
    kept), else one that only routes to the service (Istio's defaults, as without one)."""
    if existing is None:
        existing = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {
                "hosts": [service],
                "http": [
                    {
                        "name": service,
                        "route": [
                            {"destination": {"host": service, "port": {"number": SERVICE_PORT}}}
                        ],
                    }
                ],
            },
        }
    changed: dict[str, Any] = copy.deepcopy(dict(existing))
    for route in changed["spec"]["http"]:
        headers = route.setdefault("headers", {}).setdefault("response", {})
        headers.setdefault("add", {})[header] = value
    return changed


class IstioControlPlaneFaults:
    """istiod and the API server of one run, and what its proxies hold."""

    def __init__(
        self,
        plane: IstioControlPlane,
        topology: Topology,
        namespace: str,
        applied: Sequence[JsonObject],
    ) -> None:
        self.plane = plane
        self.sandbox = plane.sandbox
        self.topology = topology
        self.namespace = namespace
        self.applied = applied  # the objects the API server accepted at deploy time
        self.xds_port = ISTIOD_PORTS["secure"]

    # ------------------------------------------------------------------ processes

    def pid(self, component: ControlPlaneComponent) -> int:
        return self.plane.pids[PROCESS_NAMES[component]]

    def state(self, component: ControlPlaneComponent) -> str | None:
        return self.sandbox.state(self.pid(component))

    def _signal(self, component: ControlPlaneComponent, signal: str, done: str) -> int:
        pid = self.pid(component)
        self.sandbox.signal(pid, signal)
        deadline = time.monotonic() + SIGNAL_WAIT_S
        while True:
            state = self.sandbox.state(pid)
            stopped = state in ("T", "t")
            if {"gone": state is None, "stopped": stopped, "running": not stopped}[done]:
                return pid
            if time.monotonic() > deadline:
                raise PlatformError(f"{component} (pid {pid}) not {done} after {signal}")
            time.sleep(0.02)

    def kill(self, component: ControlPlaneComponent) -> int:
        return self._signal(component, "SIGKILL", "gone")

    def restart(self, component: ControlPlaneComponent) -> int:
        return self.plane.respawn(PROCESS_NAMES[component])

    def pause(self, component: ControlPlaneComponent) -> int:
        return self._signal(component, "SIGSTOP", "stopped")

    def resume(self, component: ControlPlaneComponent) -> int:
        return self._signal(component, "SIGCONT", "running")

    # ------------------------------------------------------------------ the proxies

    def _named(self) -> dict[str, Sidecar]:
        """Proxy name as the run knows it (``ingress``, ``catalog-0``) → its sidecar."""
        return {
            (GATEWAY_PROXY if name.startswith("istio-ingressgateway") else name): sidecar
            for name, sidecar in self.plane.sidecars.items()
        }

    def proxies(self) -> tuple[str, ...]:
        return tuple(sorted(self._named()))

    def connected(self) -> dict[str, int]:
        states: dict[str, int] = {}
        for name, sidecar in self._named().items():
            try:
                found = sidecar.admin.counters(r"^control_plane\.connected_state$")
            except HarnessError:
                continue  # a paused or restarting proxy is a gap
            states[name] = found.get("control_plane.connected_state", 0)
        return states

    def not_synced(self) -> list[str] | None:
        try:
            entries = {str(e.get("proxy", "")): e for e in syncz(self.sandbox, SYNCZ_TIMEOUT_S)}
        except (HarnessError, ValueError):
            return None
        return sorted(
            name
            for name, sidecar in self._named().items()
            if sidecar.workload.proxy_id not in entries
            or sync_state(entries[sidecar.workload.proxy_id])[0] != "SYNCED"
        )

    def wait_synced(self, timeout_s: float) -> float:
        return self.plane.wait_synced(list(self.plane.sidecars), timeout_s)

    def certificate_seconds_left(self) -> dict[str, int]:
        left: dict[str, int] = {}
        now = datetime.datetime.now(datetime.UTC)
        for name, sidecar in self._named().items():
            try:
                status, body = sidecar.admin.request("GET", "/certs")
            except HarnessError:
                continue
            if status != 200:
                continue
            try:
                certificates = json.loads(body).get("certificates", [])
            except ValueError:
                continue
            expiries = [
                datetime.datetime.fromisoformat(str(cert["expiration_time"]))
                for item in certificates
                for cert in item.get("cert_chain", [])
                if cert.get("expiration_time")
            ]
            if expiries:
                left[name] = int((min(expiries) - now).total_seconds())
        return left

    # ------------------------------------------------------------------ a change

    def affected_by(self, service: str) -> tuple[str, ...]:
        callers = set(self.topology.callers_of(service))
        return tuple(
            name for name, sidecar in self._named().items() if sidecar.workload.service in callers
        )

    def write_route_header(self, service: str, header: str, value: str) -> dict[str, Any]:
        try:
            before: dict[str, Any] = dict(snapshot(self.sandbox, SYNCZ_TIMEOUT_S))
        except (HarnessError, ValueError):
            before = {}  # istiod is down: whatever it sends once back is newer
        existing = next(
            (
                item
                for item in self.applied
                if item.get("kind") == "VirtualService" and _name(item) == service
            ),
            None,
        )
        self.plane.apply([route_with_header(existing, self.namespace, service, header, value)])
        return before

    def route_pending(
        self, service: str, header: str, value: str, before: dict[str, Any]
    ) -> list[str]:
        named = self._named()
        affected = self.affected_by(service)
        try:
            entries = {str(e.get("proxy", "")): e for e in syncz(self.sandbox, SYNCZ_TIMEOUT_S)}
        except (HarnessError, ValueError):
            return list(affected)
        pending = []
        for name in affected:
            proxy = named[name].workload.proxy_id
            entry = entries.get(proxy)
            if (
                entry is None
                or sync_state(entry)[0] != "SYNCED"
                or (proxy in before and sent_nonces(entry) == before[proxy])
                or not _routes_hold(named[name], header, value)
            ):
                pending.append(name)
        return pending


def _name(item: JsonObject) -> str:
    metadata: Any = item.get("metadata") or {}
    return str(metadata.get("name", ""))


def _routes_hold(sidecar: Sidecar, header: str, value: str) -> bool:
    """Whether the proxy's route configuration adds ``header: value`` (its config dump)."""
    try:
        status, body = sidecar.admin.request("GET", "/config_dump?resource=dynamic_route_configs")
    except HarnessError:
        return False
    if status != 200:
        return False
    try:
        text = json.dumps(json.loads(body))  # one spelling: {"key": "...", "value": "..."}
    except ValueError:
        return False
    return json.dumps({"key": header, "value": value})[1:-1] in text
