"""``--platform kube``: the scenario's app and mesh policy in a Kubernetes cluster with Istio.

:class:`KubeDeployment` (a :class:`~harness.platforms.base.Deployment`) applies the run's
objects (:func:`.objects.run_objects`) into a namespace of its own, waits until every pod is
Ready, every sidecar SYNCED in istiod's ``/debug/syncz`` (the last configuration istiod sent
it, acknowledged) and a request crosses the mesh through the ingress gateway, and then
serves the runner: Envoy admin APIs through a port-forward per proxy (:mod:`.admin`),
Locust on this machine against the gateway's address on loopback, each proxy's access log
read back from its pod's log, ``kill`` / ``pause`` / ``partition`` faults through the helper
container of the pods they target (:mod:`.processes`), ``toxic`` faults through the run's
toxiproxy pod (:mod:`.toxics`), and ``trafficShift`` steps as policy pushes.

What the platform does not inject yet is refused before anything is applied
(:func:`unsupported_on_kube`), with exit 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harness.errors import PlatformError
from harness.journal import PolicyPush
from harness.kube.render import RUN_ID_LABEL, RenderOptions, render
from harness.mesh.admin import AdminApi
from harness.mesh.stats import SCRAPE_PATTERN
from harness.platforms.base import (
    ControlPlaneFaults,
    ControlPlaneInfo,
    InstanceInfo,
    PacketFilter,
    ProbeReply,
    ProbeRequest,
    ProcessKind,
    ToxicEdges,
)
from harness.platforms.kube.admin import PortForwardAdmin, PortForwardHttp
from harness.platforms.kube.objects import (
    APP_PORT,
    INBOUND_PORT,
    KubeImages,
    MeshEndpoints,
    run_objects,
)
from harness.platforms.kube.options import (
    check_kube_support,
    partition_services,
    process_fault_services,
)
from harness.platforms.kube.processes import (
    CHAOS_CONTAINER,
    PROXY_CONTAINER,
    PodPacketFilter,
    ProcessTable,
)
from harness.platforms.kube.toxics import TOXIPROXY_POD, KubeToxics, toxic_sources
from harness.platforms.local.istio.sync import sent_nonces, sync_state
from harness.platforms.local.toxiproxy import TOXIPROXY_INSTALL
from harness.scenario.models import DestinationPolicy, Scenario

__all__ = ["KubeDeployment", "KubeTarget", "deployed"]

READY_TIMEOUT_S: Final = 300.0  # image unpacking and first pushes on a loaded 2-core node
POLL_S: Final = 0.5
ISTIO_NAMESPACE: Final = "istio-system"  # istiod and the ingress gateway (harness cluster up)
GATEWAY_NAMESPACE: Final = ISTIO_NAMESPACE
GATEWAY_SELECTOR: Final = "istio=ingressgateway"
ISTIOD_DEBUG_PORT: Final = 8080  # /debug/syncz
PUSH_TIMEOUT_S: Final = 60.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class KubeTarget:
    """The cluster a run deploys to: an API client of the pinned context, where its ingress
    gateway answers on this machine, and the images the cluster holds."""

    api: Any  # kubernetes.client.ApiClient of the pinned kubeconfig
    context: str
    ingress_url: str  # e.g. http://127.0.0.1:30080 (kind's extraPortMappings, or --local's)
    images: KubeImages
    apply: Callable[[Sequence[dict[str, Any]]], None]  # server-side apply, field manager harness
    delete_namespace: Callable[[str], None]


@dataclass
class _Host:
    """Processes the run starts on this machine (Locust)."""

    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)


class KubeDeployment:
    """The running app in the cluster; the runner drives load and faults through it."""

    platform = "kube"
    isolation = "kube"
    toxics: ToxicEdges | None = None
    packet_filter: PacketFilter | None = None
    control_plane_faults: ControlPlaneFaults | None = None

    def __init__(
        self, scenario: Scenario, run_dir: Path, run_id: str, target: KubeTarget, log: Log
    ) -> None:
        check_kube_support(scenario)
        if toxic_sources(scenario) and target.images.toxiproxy is None:
            raise PlatformError(
                f"scenario {scenario.metadata.name!r} has toxic faults, and there is no "
                f"toxiproxy image: install toxiproxy ({TOXIPROXY_INSTALL}), then run "
                "`harness cluster up` again (it builds and loads the image)"
            )
        self.scenario = scenario
        self.run_dir = run_dir
        self.run_id = run_id
        self.target = target
        self.log = log
        self.rendered = render(scenario, RenderOptions.for_run(run_id))
        self.namespace = self.rendered[0].name
        self.isolation_note = (
            f"namespace {self.namespace} of kube context {target.context!r}; "
            f"ingress {target.ingress_url}"
        )
        self.ingress_url = target.ingress_url
        self.instances = self._plan_instances()
        self.scratch_dir: Path | None = None
        self.namespaces: dict[str, str] = {}
        self.app_seed: int | None = None
        self.timings: dict[str, float] = {}
        self._pods: dict[str, Any] = {}  # instance → its Pod (once Ready)
        self._gateway: str | None = None
        self._host = _Host()
        self._started_at = time.time()
        self._core: Any = None
        self._admins: dict[tuple[str, float], PortForwardAdmin] = {}
        self._collected = False
        self._processes: ProcessTable | None = None
        self._disrupted: dict[tuple[str, ProcessKind], int] = {}  # → handle of the process
        self._last_counters: dict[str, dict[str, int]] = {}
        self._carried: dict[str, dict[str, int]] = {}
        self._toxics: KubeToxics | None = None
        self._istiod: PortForwardHttp | None = None
        self.pushes: list[PolicyPush] = []

    # ------------------------------------------------------------------ plan and start

    def _plan_instances(self) -> tuple[InstanceInfo, ...]:
        planned: list[InstanceInfo] = []
        for service in self.scenario.app.topology.service_names:
            spec = self.scenario.app.topology.service(service)
            for r in range(spec.replicas):
                name, version = spec.instance_name(r), spec.variant_of(r).version
                planned.append(
                    InstanceInfo(name, service, r, "", INBOUND_PORT, APP_PORT, version=version)
                )
        return tuple(planned)

    @property
    def core(self) -> Any:
        if self._core is None:
            import kubernetes.client

            self._core = kubernetes.client.CoreV1Api(self.target.api)
        return self._core

    def start(self) -> None:
        begun = time.monotonic()
        for directory in ("logs", "access"):
            (self.run_dir / directory).mkdir(parents=True, exist_ok=True)
        self._check_istiod()
        endpoints = MeshEndpoints()  # the cluster's DNS names istiod's Service
        objects = run_objects(
            self.scenario,
            self.rendered,
            images=self.target.images,
            endpoints=endpoints,
            seed=self.app_seed,
        )
        (self.run_dir / "logs" / "objects.json").write_text(json.dumps(objects, indent=1))
        self.target.apply(objects[:1])  # the Namespace: everything else lives in it
        self.namespaces = {"kube": self.namespace}
        self.target.apply(objects[1:])
        self.timings["objects_applied_s"] = time.monotonic() - begun
        if toxic_sources(self.scenario):
            # Before any pod is Ready: no connection may open before its edge's DNAT rule.
            self._toxics = KubeToxics(self.core, self.namespace, self.scenario)
            self.toxics = self._toxics.set_up(
                self.instances, begun + READY_TIMEOUT_S, _refuse_hopeless
            )
            self.timings["toxic_edges_s"] = time.monotonic() - begun
        self._wait_pods(begun)
        self.timings["pods_ready_s"] = time.monotonic() - begun
        names = [inst.name for inst in self.instances]
        self._wait_synced(names, begun + READY_TIMEOUT_S, "the run's configuration")
        self.timings["proxies_synced_s"] = time.monotonic() - begun
        self._gateway = self._gateway_pod()
        self._wait_through_ingress(begun)
        self.timings["ready_s"] = time.monotonic() - begun
        self.log(f"kube: ready in {self.timings['ready_s']:.1f}s ({self.namespace})")

    def _check_istiod(self) -> None:
        """istiod must run (``harness cluster up`` installs it): else a clear error now,
        not pods that never become Ready."""
        pods = self.core.list_namespaced_pod(ISTIO_NAMESPACE, label_selector="app=istiod")
        for pod in pods.items:
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                return
        raise PlatformError(
            f"istiod is not Ready in namespace {ISTIO_NAMESPACE} of kube context "
            f"{self.target.context!r}: run `harness cluster up` (it installs Istio)"
        )

    def _wait_pods(self, begun: float) -> None:
        wanted = {inst.name for inst in self.instances}
        deadline = begun + READY_TIMEOUT_S
        last = ""
        while True:
            pods = self.core.list_namespaced_pod(self.namespace).items
            ready = {}
            waiting = []
            for pod in pods:
                name = pod.metadata.name
                ok = any(
                    c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
                )
                if ok and name in wanted:
                    ready[name] = pod
                else:
                    waiting.append(f"{name}: {_pod_state(pod)}")
            if set(ready) == wanted:
                break
            last = "; ".join(sorted(waiting)) or "no pods yet"
            _refuse_hopeless(pods)
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"pods not Ready after {READY_TIMEOUT_S:g}s in {self.namespace}: {last}"
                )
            time.sleep(POLL_S)
        self._pods = {name: pod for name, pod in ready.items()}
        self.instances = tuple(
            InstanceInfo(
                inst.name,
                inst.service,
                inst.index,
                str(self._pods[inst.name].status.pod_ip),
                inst.inbound_port,
                inst.app_port,
                version=inst.version,
            )
            for inst in self.instances
        )

    def _gateway_pod(self) -> str:
        pods = self.core.list_namespaced_pod(GATEWAY_NAMESPACE, label_selector=GATEWAY_SELECTOR)
        for pod in pods.items:
            if pod.status.phase == "Running":
                return str(pod.metadata.name)
        raise PlatformError(
            f"no ingress gateway pod ({GATEWAY_SELECTOR}) runs in {GATEWAY_NAMESPACE}: "
            "run `harness cluster up` (it installs Istio's gateway chart)"
        )

    def _wait_through_ingress(self, begun: float) -> None:
        import urllib.error
        import urllib.request

        deadline = begun + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            try:
                url = f"{self.ingress_url}/product/0"
                with urllib.request.urlopen(url, timeout=5.0) as response:
                    if response.status == 200:
                        return
                    last = str(response.status)
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(POLL_S)
        raise PlatformError(f"the app does not answer through {self.ingress_url}: {last}")

    # ------------------------------------------------------------------ what the runner reads

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]:
        return tuple(inst for inst in self.instances if inst.service == service)

    def proxy_names(self) -> tuple[str, ...]:
        return ("ingress", *(inst.name for inst in self.instances))

    def endpoint_names(self) -> dict[tuple[str, int], str]:
        return {(inst.ip, inst.inbound_port): inst.name for inst in self.instances}

    def admin(self, proxy: str, *, timeout: float | None = None) -> AdminApi:
        """``proxy``'s admin API through a port-forward kept open for the run (one per proxy
        and timeout: the mesh sampler's short timeout, the run loop's default)."""
        key = (proxy, timeout or 5.0)
        admin = self._admins.get(key)
        if admin is None:
            if proxy == "ingress":
                if self._gateway is None:
                    raise PlatformError("the ingress gateway's pod is not known yet")
                namespace, pod = GATEWAY_NAMESPACE, self._gateway
            else:
                namespace, pod = self.namespace, proxy
            admin = PortForwardAdmin(self.core, namespace, pod, name=proxy, timeout=key[1])
            self._admins[key] = admin
        return admin

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        """Every proxy's counters. A sidecar that a fault killed or paused keeps its last
        reading; a restarted one continues from the counters of the one that was killed."""
        snapshot: dict[str, dict[str, int]] = {}
        for name in self.proxy_names():
            if (name, "sidecar") in self._disrupted:
                snapshot[name] = dict(self._last_counters.get(name, {}))
            else:
                snapshot[name] = self._read_counters(name)
        return snapshot

    def _read_counters(self, proxy: str) -> dict[str, int]:
        values = self.admin(proxy).counters(SCRAPE_PATTERN)
        for key, value in self._carried.get(proxy, {}).items():
            values[key] = values.get(key, 0) + value
        self._last_counters[proxy] = values
        return values

    def _carry_counters(self, proxy: str) -> None:
        """Before a sidecar dies: its counters now, carried over to the Envoy the kubelet
        starts in its place."""
        with contextlib.suppress(PlatformError):
            now = self.admin(proxy).counters(SCRAPE_PATTERN)
            carried = dict(self._carried.get(proxy, {}))
            for key, value in now.items():
                carried[key] = carried.get(key, 0) + value
            self._carried[proxy] = carried
            self._last_counters[proxy] = dict(carried)

    def control_plane(self) -> ControlPlaneInfo | None:
        """The cluster's control plane as found (the API server's version, istiod's image),
        the run's deployment timings, and its policy pushes."""
        versions = {"istio": "unknown", "kubernetes": "unknown"}
        with contextlib.suppress(Exception):  # the client's errors: the record says unknown
            import kubernetes.client

            code = kubernetes.client.VersionApi(self.target.api).get_code()
            versions["kubernetes"] = str(code.git_version)
        with contextlib.suppress(Exception):
            pods = self.core.list_namespaced_pod(ISTIO_NAMESPACE, label_selector="app=istiod")
            versions["istio"] = str(pods.items[0].spec.containers[0].image)  # istiod's
        recorded = ("objects_applied_s", "proxies_synced_s", "ready_s")
        timings = {k: v for k, v in self.timings.items() if k in recorded}
        return ControlPlaneInfo(versions=versions, timings=timings, pushes=tuple(self.pushes))

    # ------------------------------------------------------------------ policy pushes

    def apply_destination_policy(self, service: str, policy: DestinationPolicy) -> PolicyPush:
        """Re-apply ``service``'s VirtualService with ``policy`` (a traffic shift's weights)
        and wait until istiod got it to every caller's sidecar, as under ``--mesh istio``:
        a rollout step is a policy push (:mod:`harness.faults.traffic`)."""
        destinations = {**self.scenario.mesh.destinations, service: policy}
        mesh = self.scenario.mesh.model_copy(update={"destinations": destinations})
        changed = self.scenario.model_copy(update={"mesh": mesh})
        objects: list[dict[str, Any]] = [
            json.loads(json.dumps(m.to_dict()))
            for m in render(changed, RenderOptions.for_run(self.run_id))
            if m.kind == "VirtualService" and m.name == service
        ]
        for obj in objects:  # labelled as every object of the run (harness cleanup)
            obj["metadata"].setdefault("labels", {})[RUN_ID_LABEL] = self.run_id
        callers = self.scenario.app.topology.callers_of(service)
        affected = sorted(inst.name for inst in self.instances if inst.service in callers)
        change = "apply " + ", ".join(f"VirtualService/{o['metadata']['name']}" for o in objects)
        before = self._sync_nonces()
        at, begun = time.time(), time.monotonic()
        self.target.apply(objects)
        self._wait_synced(affected, time.monotonic() + PUSH_TIMEOUT_S, change, before)
        push = PolicyPush(change=change, at=at, proxies=affected, seconds=time.monotonic() - begun)
        self.pushes.append(push)
        return push

    def _syncz(self) -> list[dict[str, Any]]:
        """istiod's ``/debug/syncz`` (its debug port, through a port-forward)."""
        if self._istiod is None:
            pods = self.core.list_namespaced_pod(ISTIO_NAMESPACE, label_selector="app=istiod")
            running = [p.metadata.name for p in pods.items if p.status.phase == "Running"]
            if not running:
                raise PlatformError(f"no istiod pod runs in {ISTIO_NAMESPACE}")
            self._istiod = PortForwardHttp(
                self.core, ISTIO_NAMESPACE, running[0], ISTIOD_DEBUG_PORT, timeout=10.0
            )
        status, body = self._istiod.request("GET", "/debug/syncz", what="istiod debug")
        if status != 200:
            raise PlatformError(f"istiod's /debug/syncz answered {status}: {body[:200]}")
        entries: list[dict[str, Any]] = json.loads(body) or []
        return entries

    def _wait_synced(
        self,
        instances: Sequence[str],
        deadline: float,
        what: str,
        before: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Every sidecar in ``instances`` SYNCED in istiod's ``/debug/syncz`` (the last
        config istiod sent acknowledged, as ``istioctl proxy-status`` reads it) and, with
        ``before`` (:meth:`_sync_nonces` taken before a change), sent a newer one; a NACK
        fails at once. ``what`` names the wait in its errors."""
        wanted = {f"{name}.{self.namespace}": name for name in instances}
        while True:
            pending = dict.fromkeys(wanted, "not connected to istiod")
            for entry in self._syncz():
                proxy = str(entry.get("proxy", ""))
                if proxy not in wanted:
                    continue
                state, detail = sync_state(entry)
                if state == "NACK":
                    raise PlatformError(f"{what}: {wanted[proxy]} rejected it: {detail}")
                if state != "SYNCED":
                    pending[proxy] = detail or state
                elif before is not None and sent_nonces(entry) == before.get(proxy, {}):
                    pending[proxy] = "not yet sent the change"
                else:
                    del pending[proxy]
            if not pending:
                return
            if time.monotonic() > deadline:
                late = "; ".join(f"{wanted[p]}: {why}" for p, why in sorted(pending.items()))
                raise PlatformError(f"{what} not SYNCED with istiod in time: {late}")
            time.sleep(POLL_S / 5)

    def _sync_nonces(self) -> dict[str, dict[str, str]]:
        return {str(e.get("proxy", "")): sent_nonces(e) for e in self._syncz()}

    # ------------------------------------------------------------------ Locust, on this machine

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        full = dict(env) if replace_env else {**os.environ, **env}
        log = (self.run_dir / "logs" / log_name).open("ab")
        with log:
            proc = subprocess.Popen(
                argv, env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._host.procs[proc.pid] = proc
        return proc.pid

    def stop(self, pid: int, *, grace: float) -> int | None:
        proc = self._host.procs[pid]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def running(self, pid: int) -> bool:
        proc = self._host.procs.get(pid)
        return proc is not None and proc.poll() is None

    # ------------------------------------------------------------------ process faults

    @property
    def processes(self) -> ProcessTable:
        if self._processes is None:
            self._processes = ProcessTable(self.core, self.namespace)
        return self._processes

    def _check_process_target(self, instance: str) -> None:
        service = next((i.service for i in self.instances if i.name == instance), None)
        if service not in process_fault_services(self.scenario):
            raise PlatformError(
                f"{instance}: no process fault targets service {service!r}, so its pod has "
                f"no {CHAOS_CONTAINER} container"
            )

    def packet_filters(self, instances: Sequence[InstanceInfo]) -> dict[str, PacketFilter]:
        """Each instance's own pod: nft in its network namespace, from its helper container
        (a pod's chain matches the packets that pod receives)."""
        allowed = partition_services(self.scenario)
        filters: dict[str, PacketFilter] = {}
        for inst in instances:
            if inst.service not in allowed:
                raise PlatformError(
                    f"{inst.name}: no partition names service {inst.service!r}, so its pod "
                    f"has no {CHAOS_CONTAINER} container with NET_ADMIN"
                )
            filters[f"pod {inst.name}"] = PodPacketFilter(self.core, self.namespace, inst.name)
        return filters

    def process_pid(self, instance: str, process: ProcessKind) -> int:
        """A handle (see :mod:`.processes`) on the current main process of the instance's
        app or sidecar container."""
        self._check_process_target(instance)
        return self.processes.current(instance, process)

    def process_state(self, pid: int) -> str | None:
        return self.processes.state(pid)

    def kill_process(self, instance: str, process: ProcessKind) -> int:
        """SIGKILL every process of the instance's app or sidecar container; the kubelet
        starts the container again by itself."""
        self._check_process_target(instance)
        if process == "sidecar":
            self._carry_counters(instance)
        handle = self.processes.signal(instance, process, "SIGKILL")
        self._disrupted[(instance, process)] = handle
        return handle

    def restart_process(self, instance: str, process: ProcessKind) -> int:
        """Wait until the kubelet's new container is Ready (it restarts a killed container
        itself: the harness cannot start it earlier or hold it down longer)."""
        handle = self._disrupted.get((instance, process))
        if handle is None:
            raise PlatformError(f"{instance} {process} was not killed by this run")
        new = self.processes.await_restarted(handle, READY_TIMEOUT_S)
        del self._disrupted[(instance, process)]
        return new

    def pause_process(self, instance: str, process: ProcessKind) -> int:
        """SIGSTOP every process of the instance's app or sidecar container (a hang)."""
        self._check_process_target(instance)
        if process == "sidecar":
            with contextlib.suppress(PlatformError):
                self._read_counters(instance)  # its last reading stands in while it hangs
        handle = self.processes.signal(instance, process, "SIGSTOP")
        self._disrupted[(instance, process)] = handle
        return handle

    def resume_process(self, instance: str, process: ProcessKind) -> int:
        """SIGCONT the processes a pause stopped."""
        handle = self._disrupted.get((instance, process))
        if handle is None:
            raise PlatformError(f"{instance} {process} was not paused by this run")
        self.processes.resume(handle)
        del self._disrupted[(instance, process)]
        return handle

    def send_probes(self, requests: Sequence[ProbeRequest]) -> list[ProbeReply]:
        raise PlatformError("scenario probes are not supported on --platform kube yet")

    # ------------------------------------------------------------------ the end

    def collect_logs(self) -> None:
        """Each proxy's access log (its lines of the ``istio-proxy`` container's log) into
        ``access/<proxy>.jsonl``, and every container's log into ``logs/``; the gateway's
        log only since this run began (it serves every run)."""
        self._collected = True
        for inst in self.instances:
            text = self._pod_log(self.namespace, inst.name, PROXY_CONTAINER, None)
            _write_access(self.run_dir / "access" / f"{inst.name}.jsonl", text)
            (self.run_dir / "logs" / f"{inst.name}.proxy.log").write_text(text)
            app = self._pod_log(self.namespace, inst.name, "app", None)
            (self.run_dir / "logs" / f"{inst.name}.app.log").write_text(app)
        if self._toxics is not None:
            text = self._pod_log(self.namespace, TOXIPROXY_POD, None, None)
            (self.run_dir / "logs" / "toxiproxy.log").write_text(text)
        if self._gateway is not None:
            since = max(1, int(time.time() - self._started_at) + 1)
            text = self._pod_log(GATEWAY_NAMESPACE, self._gateway, None, since)
            _write_access(self.run_dir / "access" / "ingress.jsonl", text)

    def _pod_log(self, namespace: str, pod: str, container: str | None, since: int | None) -> str:
        kwargs: dict[str, Any] = {}
        if container:
            kwargs["container"] = container
        if since:
            kwargs["since_seconds"] = since
        try:
            return str(self.core.read_namespaced_pod_log(pod, namespace, **kwargs))
        except Exception as exc:  # the client's ApiException and urllib3's errors
            return f"(log of {namespace}/{pod} unavailable: {exc})\n"

    def close(self) -> None:
        for pid, proc in list(self._host.procs.items()):
            if proc.poll() is None:
                self.stop(pid, grace=5.0)
        for admin in self._admins.values():
            admin.close()
        if self._toxics is not None:
            self._toxics.close()
        if self._istiod is not None:
            self._istiod.close()
        if not self._collected:
            with contextlib.suppress(Exception):
                self.collect_logs()
        self.target.delete_namespace(self.namespace)


def _write_access(path: Path, text: str) -> None:
    """The JSON access-log lines of a proxy's log (Envoy's own and pilot-agent's lines are
    not JSON objects with a ``dir``)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{") and '"dir"' in line:
            with contextlib.suppress(ValueError):
                json.loads(line)
                lines.append(line)
    path.write_text("".join(f"{line}\n" for line in lines))


def _pod_state(pod: Any) -> str:
    statuses = pod.status.container_statuses or []
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        if waiting is not None:
            return f"{status.name} {waiting.reason}"
        if not status.ready:
            return f"{status.name} not ready"
    return str(pod.status.phase)


HOPELESS: Final = frozenset({"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"})


def _refuse_hopeless(pods: Sequence[Any]) -> None:
    """A pod that can never start (its image is not in the cluster) ends the wait at once."""
    for pod in pods:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in HOPELESS:
                raise PlatformError(
                    f"pod {pod.metadata.name}: container {status.name} {waiting.reason} "
                    f"({waiting.message}); `harness cluster up` builds and loads the images"
                )


@contextlib.contextmanager
def deployed(
    scenario: Scenario, run_dir: Path, run_id: str, target: KubeTarget, seed: int | None, log: Log
) -> Iterator[KubeDeployment]:
    """Deploy; always collect the logs and delete the run's namespace at the end."""
    deployment = KubeDeployment(scenario, run_dir, run_id, target, log)
    deployment.app_seed = seed
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()
