"""A real Kubernetes API for the harness: etcd + kube-apiserver on loopback, nothing else.

No kubelet, no controller-manager, no scheduler: the API server stores and validates objects
(Istio's CRDs included) and serves watches, which is all istiod needs. Admission plugins that
wait for a controller (ServiceAccount, ResourceQuota, ...) are off, and the endpoint
reconciler is ``none`` (it would publish the loopback address, which the API refuses).

Usage::

    from harness.controlplane import kube_control_plane

    with kube_control_plane() as kube:           # etcd + apiserver ready, Istio CRDs Established
        core = kubernetes.client.CoreV1Api(kube.client)
        print(kube.timings.apiserver_ready_s)
    # both processes stopped by PID, the temporary directory removed

The processes carry ``environment`` (e.g. ``HARNESS_RUN_ID``) so ``harness cleanup`` can find
them if the harness itself dies.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException

from harness.controlplane.certs import write_serving_certificates, write_signing_key
from harness.controlplane.process import LOOPBACK, ChildProcess, http_probe
from harness.errors import ControlPlaneError
from harness.ports import free_port
from harness.toolchain import KUBERNETES_VERSION, Toolchain, installed

__all__ = [
    "ControlPlaneTimings",
    "KubeControlPlane",
    "api_error",
    "apply_crds",
    "established_names",
    "kube_control_plane",
    "object_ref",
    "refusal_message",
    "wait_established",
]

SERVICE_CIDR = "10.96.0.0/16"  # never routed: only stored in Service objects
READY_TIMEOUT_S = 90.0  # a cold start on a busy 2-core machine: ~5 s idle, far more loaded
ESTABLISHED_TIMEOUT_S = 60.0
POLL_S = 0.1
ESTABLISHED_POLL_S = 0.2
APPLY_WORKERS = 4
FIELD_MANAGER = "harness"
ADMIN_USER = "harness-admin"
# On by default in kube-apiserver, but each needs a controller (or webhook server) that does
# not run here: pods would be refused until a "default" ServiceAccount exists, which nobody
# creates; quota would never be computed; webhooks have no server; ...
DISABLED_ADMISSION = (
    "ServiceAccount",
    "ResourceQuota",
    "DefaultStorageClass",
    "DefaultIngressClass",
    "StorageObjectInUseProtection",
    "PersistentVolumeClaimResize",
    "RuntimeClass",
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
    "ClusterTrustBundleAttest",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
)

# Admission plugins a real cluster (harness.cluster.local) keeps on.
NODE_ADMISSION = ("ServiceAccount", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ControlPlaneTimings:
    """Seconds from the start of :func:`kube_control_plane`."""

    apiserver_ready_s: float  # /readyz answered ok (etcd started alongside)
    crds_applied_s: float | None  # Istio's CRDs accepted (server-side apply)
    crds_established_s: float | None  # every one of them Established


@dataclass(frozen=True)
class KubeControlPlane:
    """A running etcd + kube-apiserver; valid inside :func:`kube_control_plane`."""

    server: str  # https://127.0.0.1:<port>
    token: str  # bearer token of a system:masters user
    ca_file: Path  # the CA of the serving certificate
    kubeconfig: Path  # server, CA and token for istiod / kubectl
    directory: Path  # temporary; removed on exit
    client: kubernetes.client.ApiClient
    timings: ControlPlaneTimings
    pids: Mapping[str, int] = field(default_factory=dict)  # "etcd", "kube-apiserver"
    versions: Mapping[str, str] = field(default_factory=dict)


def refusal_message(status: int | None, body: str | bytes | None, reason: str, what: str) -> str:
    """One sentence for an API refusal: ``what`` (e.g. ``VirtualService default/cart``), the
    status and the server's message (which names the rejected field), else ``reason``."""
    message = reason
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = json.loads(body or "").get("message", reason)
    return f"the API server refused {what}: {status} {message}"


def object_ref(manifest: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` of an object's JSON body, for messages."""
    metadata = manifest["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{manifest['kind']} {where}{metadata['name']}"


def api_error(exc: ApiException, what: str) -> ControlPlaneError:
    """Translate the client's exception once, here: status, reason and the server's message
    for ``what`` (see :func:`refusal_message`)."""
    return ControlPlaneError(refusal_message(exc.status, exc.body, exc.reason or "", what))


def _wait_ready(
    url: str, token: str, ca_file: Path, processes: Sequence[ChildProcess], timeout_s: float
) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            code = process.exited()
            if code is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {code} while the API server was starting "
                    f"(log {process.log}):\n{process.tail()}"
                )
        seen = http_probe(request, context)
        if seen is None:
            return
        last = seen
        time.sleep(POLL_S)
    raise ControlPlaneError(
        f"kube-apiserver was not ready within {timeout_s:.0f} s ({url}: {last}); "
        f"log {processes[-1].log}:\n{processes[-1].tail()}"
    )


def _kubeconfig(path: Path, server: str, ca_file: Path, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "harness",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": ADMIN_USER}}],
        "current-context": "harness",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _client(server: str, ca_file: Path, token: str) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = server
    configuration.ssl_ca_cert = str(ca_file)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return kubernetes.client.ApiClient(configuration)


def _close(client: kubernetes.client.ApiClient) -> None:
    client.close()  # type: ignore[no-untyped-call]  # the generated client leaves it untyped


def read_crds(path: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in a multi-document YAML file (empty documents skipped)."""
    crds = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    wrong = [doc.get("kind") for doc in crds if doc.get("kind") != "CustomResourceDefinition"]
    if wrong:
        raise ControlPlaneError(f"{path} holds non-CRD documents: {wrong}")
    return crds


def _apply_crd(api: kubernetes.client.ApiextensionsV1Api, crd: Mapping[str, Any]) -> None:
    name = crd["metadata"]["name"]
    try:
        api.patch_custom_resource_definition(
            name,
            dict(crd),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        raise api_error(exc, f"CustomResourceDefinition {name}") from None


def _established(api: kubernetes.client.ApiextensionsV1Api) -> set[str]:
    """Names of the Established CRDs. Read as raw JSON: the list is about 1 MB, and turning it
    into the client's models each poll costs more than the API server's answer."""
    try:
        # With _preload_content=False the client returns the raw response (its types say not).
        answer: Any = api.list_custom_resource_definition(_preload_content=False)
    except ApiException as exc:
        raise api_error(exc, "listing CustomResourceDefinitions") from None
    return established_names(json.loads(answer.data).get("items") or [])


def established_names(crds: Sequence[Mapping[str, Any]]) -> set[str]:
    """The names of the Established CustomResourceDefinitions among ``crds`` (JSON bodies)."""
    return {
        item["metadata"]["name"]
        for item in crds
        if any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
    }


def apply_crds(
    client: kubernetes.client.ApiClient,
    crds: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = ESTABLISHED_TIMEOUT_S,
) -> tuple[float, float]:
    """Apply ``crds`` server-side and wait until every one is Established; returns the
    seconds the applies took and the seconds until all were Established (from the start)."""
    api = kubernetes.client.ApiextensionsV1Api(client)
    begun = time.monotonic()
    # A few at a time: the API server spends each one's time on schema work it can overlap
    # (Istio's 15: about 4.5 s one by one, 2.8 s four at a time, on a loaded 2-core machine).
    with ThreadPoolExecutor(APPLY_WORKERS) as pool:
        for future in [pool.submit(_apply_crd, api, crd) for crd in crds]:
            future.result()  # the first refusal, named, after all have been tried
    applied = time.monotonic() - begun
    deadline = time.monotonic() + timeout_s
    names = {crd["metadata"]["name"] for crd in crds}
    wait_established(names, lambda: _established(api), deadline, ESTABLISHED_POLL_S)
    return applied, time.monotonic() - begun


def wait_established(
    names: set[str], established: Callable[[], set[str]], deadline: float, poll_s: float
) -> None:
    """Poll ``established()`` (the names of the Established CRDs, read by any transport)
    until it holds all of ``names``; past ``deadline`` (monotonic) a ControlPlaneError names
    the missing ones."""
    while pending := names - established():
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"CustomResourceDefinitions not Established in time: {sorted(pending)}"
            )
        time.sleep(poll_s)


def _etcd_argv(etcd: Path, data: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://{LOOPBACK}:{client_port}"
    peer_url = f"http://{LOOPBACK}:{peer_port}"
    return [
        str(etcd),
        "--name=harness",
        f"--data-dir={data}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=harness={peer_url}",
        "--initial-cluster-state=new",
        # Throw-away data in a temporary directory: durability buys nothing, fsync costs.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_argv(
    apiserver: Path,
    directory: Path,
    port: int,
    etcd_port: int,
    token_file: Path,
    *,
    node: str | None = None,
) -> list[str]:
    """The API server's flags. ``node``: the address of a real node's network (the local
    cluster of :mod:`harness.cluster.local`): the server listens on every address there,
    advertises ``node`` (a kubelet and pods reach it), keeps the ``kubernetes`` Service's
    endpoints and admits with the ServiceAccount plugin (a controller-manager runs), and
    authorizes kubelets with the Node authorizer."""
    ips = (LOOPBACK, "10.96.0.1", *((node,) if node else ()))
    serving = write_serving_certificates(directory, name="apiserver", ips=ips)
    sa_key, sa_pub = write_signing_key(directory, "service-accounts")
    disabled: tuple[str, ...] = DISABLED_ADMISSION
    if node is not None:  # their controller and webhook servers (istiod's injector) run there
        disabled = tuple(name for name in DISABLED_ADMISSION if name not in NODE_ADMISSION)
    return [
        str(apiserver),
        f"--etcd-servers=http://{LOOPBACK}:{etcd_port}",
        f"--bind-address={LOOPBACK if node is None else '0.0.0.0'}",
        f"--advertise-address={node or LOOPBACK}",
        f"--secure-port={port}",
        f"--cert-dir={directory}",
        f"--tls-cert-file={serving.certificate}",
        f"--tls-private-key-file={serving.key}",
        f"--token-auth-file={token_file}",
        f"--authorization-mode={'RBAC' if node is None else 'Node,RBAC'}",
        f"--service-account-key-file={sa_pub}",
        f"--service-account-signing-key-file={sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # The reconciler would write the advertise address (loopback) into the `kubernetes`
        # EndpointSlice, which the API itself refuses; nothing here needs that Service.
        f"--endpoint-reconciler-type={'none' if node is None else 'lease'}",
        f"--disable-admission-plugins={','.join(disabled)}",
        # One client (the harness) and istiod: flow control only adds start-up work.
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=1",
    ]


@contextlib.contextmanager
def kube_control_plane(
    toolchain: Toolchain | None = None,
    *,
    istio_crds: bool = True,
    environment: Mapping[str, str] | None = None,
    log: Log = _quiet,
) -> Iterator[KubeControlPlane]:
    """Start etcd and kube-apiserver on free loopback ports, wait for ``/readyz``, apply
    Istio's CRDs (``istio_crds``) and wait until they are Established; on exit stop both by
    PID and remove the temporary directory.

    Raises :class:`~harness.errors.ToolMissingError` naming ``harness toolchain install`` when
    the toolchain is not installed, :class:`~harness.errors.ControlPlaneError` with the log's
    tail when a process dies or is not ready in time.
    """
    toolchain = toolchain or installed()
    apiserver = toolchain.path("kube-apiserver")
    etcd = toolchain.path("etcd")
    crd_file = toolchain.path("crd-all.gen.yaml") if istio_crds else None
    extra = dict(environment or {})
    with contextlib.ExitStack() as stack:
        directory = Path(tempfile.mkdtemp(prefix="harness-kube-"))
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        started = time.monotonic()
        token = secrets.token_urlsafe(32)
        token_file = directory / "tokens.csv"
        token_file.touch(mode=0o600)
        token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        etcd_port, peer_port, port = free_port(), free_port(), free_port()
        etcd_argv = _etcd_argv(etcd, directory / "etcd", etcd_port, peer_port)
        processes = [ChildProcess("etcd", etcd_argv, directory / "etcd.log", extra)]
        stack.callback(processes[0].stop)  # callbacks run last-in first-out: etcd stops last
        # The API server retries etcd until it answers: no need to wait for etcd first.
        argv = _apiserver_argv(apiserver, directory, port, etcd_port, token_file)
        processes.append(
            ChildProcess("kube-apiserver", argv, directory / "kube-apiserver.log", extra)
        )
        stack.callback(processes[1].stop)
        server = f"https://{LOOPBACK}:{port}"
        ca_file = directory / "apiserver-ca.crt"
        log(f"kube-apiserver {KUBERNETES_VERSION}: starting on {server} (etcd :{etcd_port})")
        _wait_ready(f"{server}/readyz", token, ca_file, processes, READY_TIMEOUT_S)
        ready = time.monotonic() - started
        log(f"kube-apiserver ready in {ready:.1f} s")
        client = _client(server, ca_file, token)
        stack.callback(_close, client)
        applied = established = None
        if crd_file is not None:
            crds = read_crds(crd_file)
            begun = time.monotonic() - started
            applying, establishing = apply_crds(client, crds)
            applied, established = begun + applying, begun + establishing
            log(f"{len(crds)} Istio CRDs Established {established:.1f} s after start")
        yield KubeControlPlane(
            server=server,
            token=token,
            ca_file=ca_file,
            kubeconfig=_kubeconfig(directory / "kubeconfig", server, ca_file, token),
            directory=directory,
            client=client,
            timings=ControlPlaneTimings(ready, applied, established),
            pids={process.name: process.popen.pid for process in processes},
            versions={"kubernetes": KUBERNETES_VERSION},
        )
