"""Objects into the run's API server: server-side apply, Pod status as a kubelet would write
it, ServiceAccount tokens and istiod's root certificate — plain HTTPS through the forward.

Every refusal is a :class:`~harness.errors.ControlPlaneError` naming the object and the
server's reason.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from harness.controlplane.kube import (
    FIELD_MANAGER,
    established_names,
    object_ref,
    refusal_message,
    wait_established,
)
from harness.errors import ControlPlaneError
from harness.kube.render import PORT_NAME, SERVICE_PORT, JsonObject, Manifest
from harness.platforms.local.istio.workloads import POLL_S, READY_TIMEOUT_S, Workload

__all__ = ["ISTIO_KINDS", "RESOURCES", "ApiRefusal", "KubeApi", "object_ref"]

TOKEN_AUDIENCE: Final = "istio-ca"

# kind -> (URL prefix, plural, namespaced) for the objects the harness applies.
RESOURCES: Final[Mapping[str, tuple[str, str, bool]]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "CustomResourceDefinition": (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
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
    "ServiceEntry": ("/apis/networking.istio.io/v1", "serviceentries", True),
    "PeerAuthentication": ("/apis/security.istio.io/v1", "peerauthentications", True),
    "AuthorizationPolicy": ("/apis/security.istio.io/v1", "authorizationpolicies", True),
}

# The Istio kinds a run writes: the only CRDs the run's API server needs (istiod starts the
# informers of the others if their CRDs ever appear).
ISTIO_KINDS: Final = frozenset(
    kind
    for kind, (prefix, _, _) in RESOURCES.items()
    if prefix.endswith(".istio.io/v1") or prefix.endswith(".istio.io/v1alpha3")
)


def _api_path(manifest: Mapping[str, Any]) -> str:
    kind = str(manifest["kind"])
    if kind not in RESOURCES:
        raise ControlPlaneError(f"the harness does not know where to apply a {kind}")
    prefix, plural, namespaced = RESOURCES[kind]
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


class KubeApi:
    """The run's kube-apiserver as the harness writes to it (``server`` is the host side of
    the forward, ``token`` the admin token, ``ca_file`` the server's CA)."""

    def __init__(self, server: str, token: str, ca_file: Path, log_dir: Path) -> None:
        self.server = server
        self._token = token
        self._tls = ssl.create_default_context(cafile=str(ca_file))
        self.log_dir = log_dir

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
        self.call(
            "PATCH",
            f"{_api_path(body)}?fieldManager={FIELD_MANAGER}&force=true",
            body,
            "application/apply-patch+yaml",  # JSON is YAML
            object_ref(body),
        )

    def call(
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
            raise ApiRefusal(exc.code, refusal_message(exc.code, text, text, what)) from None
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
        self.call(
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
                config = self.call(
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
        answer = self.call(
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

    def wait_established(self, names: set[str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the CustomResourceDefinitions ``names`` are Established."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

        def established() -> set[str]:
            answer = self.call("GET", path, None, "application/json", "CustomResourceDefinitions")
            return established_names(answer.get("items") or [])

        wait_established(names, established, time.monotonic() + timeout_s, POLL_S / 2)
