"""The control plane of a ``--mesh istio`` run: etcd, kube-apiserver (Istio's CRDs
Established) and istiod, started through the run's supervisor on the namespace's loopback
(fixed ports: the namespace is private), stopped by PID.

:func:`istio_control_plane` yields an :class:`IstioControlPlane`: the API server's client
(:class:`~harness.platforms.local.istio.api.KubeApi`) plus the run's sidecars and their
sync state with istiod.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import kubernetes.client
import yaml

from harness.controlplane.istiod import ENVIRONMENT as ISTIOD_ENVIRONMENT
from harness.controlplane.istiod import ISTIO_NAMESPACE, OUTBOUND_CLUSTER_STAT_NAME
from harness.controlplane.kube import (
    ADMIN_USER,
    _apiserver_argv,
    _client,
    _close,
    _etcd_argv,
    _kubeconfig,
)
from harness.controlplane.process import http_probe
from harness.errors import ControlPlaneError
from harness.kube.render import JsonObject
from harness.platforms.local.forward import TcpToUnix
from harness.platforms.local.istio.api import ISTIO_KINDS, KubeApi
from harness.platforms.local.istio.proxies import AgentSetup, add_addresses, start_sidecar
from harness.platforms.local.istio.sync import rejected_updates, syncz, wait_synced
from harness.platforms.local.istio.workloads import (
    APISERVER_PORT,
    ETCD_PEER_PORT,
    ETCD_PORT,
    ISTIOD_PORTS,
    LOCALHOST,
    POLL_S,
    READY_TIMEOUT_S,
    SYNC_TIMEOUT_S,
    Log,
    Sidecar,
    Workload,
    quiet,
    tail,
)
from harness.platforms.local.sandbox import Sandbox
from harness.toolchain import ISTIO_RELEASE, KUBERNETES_VERSION, Toolchain, installed

__all__ = ["IstioControlPlane", "IstioTimings", "istio_control_plane", "read_crd_file"]

STOP_GRACE_S: Final = 2.0  # etcd, kube-apiserver and istiod ignore SIGTERM for > 10 s
CRD_PARALLEL: Final = 4
# istiod waits this long after a config change for more before it pushes (its default:
# 100 ms, at most 10 s); a run's changes come one at a time, so a short wait gets each to
# the proxies sooner (docs/benchmarks.md: push times).
PUSH_ENVIRONMENT: Final = {
    "PILOT_DEBOUNCE_AFTER": "20ms",
    "PILOT_DEBOUNCE_MAX": "1s",
}


@dataclass(frozen=True)
class IstioTimings:
    """Seconds from the start of :func:`istio_control_plane`."""

    apiserver_ready_s: float
    crds_established_s: float
    istiod_ready_s: float


class IstioControlPlane(KubeApi):
    """etcd + kube-apiserver + istiod running in a sandbox; valid inside
    :func:`istio_control_plane`."""

    def __init__(
        self,
        sandbox: Sandbox,
        directory: Path,
        log_dir: Path,
        toolchain: Toolchain,
        client: kubernetes.client.ApiClient,
        credentials: tuple[str, str, Path],
        timings: IstioTimings,
        pids: Mapping[str, int],
        log: Log,
    ) -> None:
        server, token, ca_file = credentials  # through the forward, from the host
        super().__init__(server, token, ca_file, log_dir)
        self.sandbox = sandbox
        self.directory = directory
        self.toolchain = toolchain
        self.client = client
        self.timings = timings
        self.pids = dict(pids)
        self.versions = {"istio": ISTIO_RELEASE, "kubernetes": KUBERNETES_VERSION}
        self.sidecars: dict[str, Sidecar] = {}
        self._log = log
        self._addresses: set[str] = set()

    def add_address(self, *ips: str) -> None:
        """Put ``ips`` (from the mesh network) on the namespace's loopback (one ``ip``)."""
        add_addresses(self.sandbox, ips, self._addresses)

    def start_sidecar(
        self,
        workload: Workload,
        envoy_binary: str,
        socket_dir: Path,
        root_cert: str,
        *,
        router: bool = False,
    ) -> Sidecar:
        """Start ``pilot-agent proxy sidecar`` (``router``: ``proxy router``, a gateway) for
        ``workload`` (its Pod must exist)."""
        setup = AgentSetup(
            self.sandbox,
            self.toolchain,
            self.directory,
            self.log_dir,
            envoy_binary,
            socket_dir,
            root_cert,
        )
        token = self.token(workload.namespace, workload.service)
        sidecar = start_sidecar(setup, workload, token, router=router)
        self.sidecars[workload.name] = sidecar
        return sidecar

    def respawn(self, name: str) -> int:
        """Start ``istiod`` or ``kube-apiserver`` again (after a kill) with the same flags,
        appending to its log, and wait until it is ready; its new PID (also in ``pids``,
        which the shutdown stops)."""
        if self.sandbox.running(self.pids[name])[0]:
            raise ControlPlaneError(f"{name} (pid {self.pids[name]}) is still running")
        ca_file = self.directory / "apiserver-ca.crt"
        if name == "istiod":
            credentials = (self._token, ca_file)
            _spawn_istiod(
                self.sandbox, self.toolchain, self.directory, self.log_dir, self.pids, credentials
            )
            _wait_istiod(self.sandbox, self.pids, self.log_dir)
        elif name == "kube-apiserver":
            argv = _apiserver_argv(
                self.toolchain.path("kube-apiserver"),
                self.directory,
                APISERVER_PORT,
                ETCD_PORT,
                self.directory / "tokens.csv",
            )
            log = self.log_dir / "kube-apiserver.log"
            self.pids[name] = self.sandbox.spawn(argv, log_path=log)
            ready = f"{self.server}/readyz"
            _wait_apiserver(self.sandbox, ready, self._token, ca_file, self.pids, self.log_dir)
        else:
            raise ControlPlaneError(f"no control-plane process {name!r} to start again")
        return self.pids[name]

    def syncz(self) -> list[dict[str, Any]]:
        """istiod's ``/debug/syncz``: one entry per connected proxy with each type's status."""
        return syncz(self.sandbox)

    def rejected_updates(self, sidecar: Sidecar) -> dict[str, int]:
        """Envoy's ``*.update_rejected`` counters of ``sidecar`` that are not zero."""
        return rejected_updates(sidecar)

    def wait_synced(self, names: Sequence[str], timeout_s: float = SYNC_TIMEOUT_S) -> float:
        """Wait until istiod shows each sidecar in ``names`` SYNCED; returns the seconds it
        took. A dead agent or a rejected update (a NACK) fails at once, naming it and why."""
        return wait_synced(self.sandbox, self.sidecars, names, timeout_s)


def read_crd_file(path: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in ``path``, parsed with libyaml when PyYAML has it
    (8 s in pure Python on this machine, under 2 s with libyaml)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds = [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]
    wrong = [doc.get("kind") for doc in crds if doc.get("kind") != "CustomResourceDefinition"]
    if wrong:
        raise ControlPlaneError(f"{path} holds non-CRD documents: {wrong}")
    return crds


def _wait_apiserver(
    sandbox: Sandbox, url: str, token: str, ca_file: Path, pids: Mapping[str, int], logs: Path
) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        _check_running(sandbox, pids, logs)
        seen = http_probe(request, context)
        if seen is None:
            return
        last = seen
        time.sleep(POLL_S)
    raise ControlPlaneError(
        f"kube-apiserver was not ready within {READY_TIMEOUT_S:.0f} s ({last}); "
        f"log {logs / 'kube-apiserver.log'}:\n{tail(logs / 'kube-apiserver.log')}"
    )


def _wait_istiod(sandbox: Sandbox, pids: Mapping[str, int], logs: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    url = f"http://{LOCALHOST}:{ISTIOD_PORTS['http']}/ready"
    while time.monotonic() < deadline:
        _check_running(sandbox, pids, logs)
        status, body = sandbox.http_get(url, timeout=2.0)
        if status == 200:
            return
        last = f"{status} {body[:200]}"
        time.sleep(POLL_S)
    raise ControlPlaneError(
        f"istiod was not ready within {READY_TIMEOUT_S:.0f} s ({last}); "
        f"log {logs / 'istiod.log'}:\n{tail(logs / 'istiod.log')}"
    )


def _check_running(sandbox: Sandbox, pids: Mapping[str, int], logs: Path) -> None:
    for name, pid in pids.items():
        running, code = sandbox.running(pid)
        if not running:
            raise ControlPlaneError(
                f"{name} exited with {code} (log {logs / f'{name}.log'}):\n"
                + tail(logs / f"{name}.log")
            )


def _istiod_argv(binary: Path, kubeconfig: Path, directory: Path) -> list[str]:
    mesh = {
        "defaultConfig": {"discoveryAddress": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}"},
        "outboundClusterStatName": OUTBOUND_CLUSTER_STAT_NAME,
    }
    mesh_file = directory / "mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(mesh, sort_keys=False))
    networks_file = directory / "meshNetworks.yaml"
    networks_file.write_text("networks: {}\n")
    return [
        str(binary),
        "discovery",
        f"--kubeconfig={kubeconfig}",
        f"--meshConfig={mesh_file}",
        f"--networksConfig={networks_file}",
        f"--httpAddr={LOCALHOST}:{ISTIOD_PORTS['http']}",
        f"--grpcAddr={LOCALHOST}:{ISTIOD_PORTS['grpc']}",
        f"--secureGRPCAddr={LOCALHOST}:{ISTIOD_PORTS['secure']}",
        # No HTTPS server: istiod then serves its webhooks (/validate) on the HTTP port.
        "--httpsAddr=",
        f"--monitoringAddr={LOCALHOST}:{ISTIOD_PORTS['monitor']}",
        f"--ctrlz_address={LOCALHOST}",
        f"--ctrlz_port={ISTIOD_PORTS['z']}",
        "--profile=false",
        "--log_output_level=default:info",
    ]


def stop_processes(sandbox: Sandbox, pids: Mapping[str, int]) -> None:
    """SIGTERM, a short grace, SIGKILL — by PID, through the supervisor."""
    alive = [pid for pid in pids.values() if sandbox.alive and sandbox.running(pid)[0]]
    for pid in alive:
        with contextlib.suppress(Exception):
            sandbox.signal(pid, "SIGTERM")
    deadline = time.monotonic() + STOP_GRACE_S
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if sandbox.running(pid)[0]]
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(Exception):
            sandbox.signal(pid, "SIGKILL")


_ISTIO_NAMESPACE_OBJECT: JsonObject = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": ISTIO_NAMESPACE},
}


def _spawn_etcd_and_apiserver(
    sandbox: Sandbox, toolchain: Toolchain, directory: Path, log_dir: Path, pids: dict[str, int]
) -> str:
    """Start etcd and kube-apiserver in the sandbox (PIDs into ``pids``); the admin token."""
    token = secrets.token_urlsafe(32)
    token_file = directory / "tokens.csv"
    token_file.touch(mode=0o600)
    token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    pids["etcd"] = sandbox.spawn(
        _etcd_argv(toolchain.path("etcd"), directory / "etcd", ETCD_PORT, ETCD_PEER_PORT),
        log_path=log_dir / "etcd.log",
    )
    argv = _apiserver_argv(
        toolchain.path("kube-apiserver"), directory, APISERVER_PORT, ETCD_PORT, token_file
    )
    pids["kube-apiserver"] = sandbox.spawn(argv, log_path=log_dir / "kube-apiserver.log")
    return token


@contextlib.contextmanager
def istio_control_plane(
    sandbox: Sandbox,
    directory: Path,
    log_dir: Path,
    *,
    toolchain: Toolchain | None = None,
    log: Log = quiet,
    while_istiod_starts: Callable[[IstioControlPlane], None] | None = None,
) -> Iterator[IstioControlPlane]:
    """etcd, kube-apiserver (Istio's CRDs Established) and istiod, ready, in ``sandbox``.

    ``while_istiod_starts`` runs once istiod is spawned, before it is ready (its informers
    pick up whatever is applied meanwhile): the time to apply a scenario's objects overlaps
    istiod's start-up.

    ``directory`` holds certificates, etcd's data, sockets and the sidecars' working
    directories; keep it short (Unix socket paths are limited to 107 bytes) and inside the
    run's scratch directory. On exit every process it started is stopped by PID.
    """
    toolchain = toolchain or installed()
    directory.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    bridge: TcpToUnix | None = None
    client: kubernetes.client.ApiClient | None = None
    plane: IstioControlPlane | None = None
    started = time.monotonic()
    try:
        token = _spawn_etcd_and_apiserver(sandbox, toolchain, directory, log_dir, pids)
        # Istio's CRDs are a 1 MB YAML file: parse it while the API server starts.
        crd_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crds")
        crds = crd_reader.submit(read_crd_file, toolchain.path("crd-all.gen.yaml"))
        crd_reader.shutdown(wait=False)
        api_socket = directory / "apiserver.sock"
        sandbox.forward(api_socket, LOCALHOST, APISERVER_PORT)
        bridge = TcpToUnix(str(api_socket))
        server = f"https://{LOCALHOST}:{bridge.port}"
        ca_file = directory / "apiserver-ca.crt"
        log(f"kube-apiserver {KUBERNETES_VERSION}: starting in the run's namespace")
        _wait_apiserver(sandbox, f"{server}/readyz", token, ca_file, pids, log_dir)
        apiserver_ready = time.monotonic() - started
        log(f"kube-apiserver ready in {apiserver_ready:.1f} s")
        client = _client(server, ca_file, token)
        plane = IstioControlPlane(
            sandbox,
            directory,
            log_dir,
            toolchain,
            client,
            (server, token, ca_file),
            IstioTimings(apiserver_ready, 0.0, 0.0),
            pids,
            log,
        )
        plane.apply([_ISTIO_NAMESPACE_OBJECT])
        # istiod starts its informers of Istio's kinds when their CRDs appear: start it
        # first, and apply the CRDs while it starts.
        _spawn_istiod(sandbox, toolchain, directory, log_dir, pids, (token, ca_file))
        _apply_crds(plane, crds.result())
        established = time.monotonic() - started
        log(f"istiod {ISTIO_RELEASE}: starting")
        if while_istiod_starts is not None:
            while_istiod_starts(plane)
        _wait_istiod(sandbox, pids, log_dir)
        ready = time.monotonic() - started
        log(f"istiod ready {ready:.1f} s after start")
        plane.timings = IstioTimings(apiserver_ready, established, ready)
        plane.pids = pids  # shared: a restarted process (a fault's revert) is stopped too
        yield plane
    finally:
        _shut_down(sandbox, plane, pids, client, bridge, directory)


def _spawn_istiod(
    sandbox: Sandbox,
    toolchain: Toolchain,
    directory: Path,
    log_dir: Path,
    pids: dict[str, int],
    credentials: tuple[str, Path],
) -> None:
    """Start istiod against the API server (a kubeconfig with the admin token)."""
    token, ca_file = credentials
    kubeconfig = _kubeconfig(
        directory / "kubeconfig", f"https://{LOCALHOST}:{APISERVER_PORT}", ca_file, token
    )
    istiod_dir = directory / "istiod"
    istiod_dir.mkdir(exist_ok=True)
    pids["istiod"] = sandbox.spawn(
        _istiod_argv(toolchain.path("pilot-discovery"), kubeconfig, istiod_dir),
        log_path=log_dir / "istiod.log",
        env={**ISTIOD_ENVIRONMENT, **PUSH_ENVIRONMENT, "KUBECONFIG": str(kubeconfig)},
        cwd=istiod_dir,
    )


def _apply_crds(plane: IstioControlPlane, crds: Sequence[Mapping[str, Any]]) -> None:
    """Apply the CRDs of the Istio kinds a run writes (:data:`ISTIO_KINDS`: 8 of Istio's
    15), a few at a time, and wait until they are Established."""
    used = [dict(crd) for crd in crds if crd["spec"]["names"]["kind"] in ISTIO_KINDS]
    missing = ISTIO_KINDS - {crd["spec"]["names"]["kind"] for crd in used}
    if missing:
        raise ControlPlaneError(f"Istio's CRD file has no definition of {sorted(missing)}")
    plane.apply(used, parallel=CRD_PARALLEL)
    plane.wait_established({crd["metadata"]["name"] for crd in used})


def _shut_down(
    sandbox: Sandbox,
    plane: IstioControlPlane | None,
    pids: dict[str, int],
    client: kubernetes.client.ApiClient | None,
    bridge: TcpToUnix | None,
    directory: Path,
) -> None:
    """Stop the sidecars, then istiod, kube-apiserver and etcd (by PID); close the client
    and the host side of the API server's forward; drop etcd's data."""
    sidecar_pids = {} if plane is None else {n: s.pid for n, s in plane.sidecars.items()}
    if sandbox.alive:
        stop_processes(sandbox, sidecar_pids)
        stop_processes(sandbox, dict(reversed(list(pids.items()))))
    if client is not None:
        _close(client)
    if bridge is not None:
        bridge.close()
    shutil.rmtree(directory / "etcd", ignore_errors=True)
