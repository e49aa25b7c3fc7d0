"""A sidecar's Envoy admin API on Kubernetes, through the API server's pod proxy.

``/api/v1/namespaces/<ns>/pods/<pod>:15000/proxy/<path>`` reaches port 15000 of the pod
from the API server, with the caller's credentials: no port-forward, no route from the
harness to the pod network. It works the same on kind and on the local cluster. The
client is :class:`~harness.platforms.local.istio.workloads.IstioEnvoyAdmin` with another
transport, so istiod's stat names are normalised as under ``--mesh istio``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

from harness.errors import PlatformError
from harness.platforms.local.istio.workloads import IstioEnvoyAdmin

__all__ = ["ENVOY_ADMIN_PORT", "PodProxyAdmin", "pod_proxy_path"]

ENVOY_ADMIN_PORT: Final = 15000  # pilot-agent's default proxyAdminPort


def pod_proxy_path(namespace: str, pod: str, port: int, path: str) -> str:
    """The API server's proxy path for ``path`` (with its query) on ``pod``'s ``port``."""
    return (
        f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/"
        f"{urllib.parse.quote(pod)}:{port}/proxy{path}"
    )


class PodProxyAdmin(IstioEnvoyAdmin):
    """Envoy's admin API of one pod, e.g. ``PodProxyAdmin(api, "shop-1", "catalog-0")``.

    ``api`` is a ``kubernetes.client.ApiClient`` built from the run's pinned kubeconfig."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        pod: str,
        *,
        name: str = "",
        port: int = ENVOY_ADMIN_PORT,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(f"{namespace}/{pod}:{port}", name=name or pod, timeout=timeout)
        self.api, self.namespace, self.pod, self.port = api, namespace, pod, port

    def with_timeout(self, timeout: float) -> PodProxyAdmin:
        return PodProxyAdmin(
            self.api, self.namespace, self.pod, name=self.name, port=self.port, timeout=timeout
        )

    def request(self, method: str, path: str) -> tuple[int, str]:
        resource = pod_proxy_path(self.namespace, self.pod, self.port, path)
        try:
            serialized = self.api.param_serialize(
                method=method, resource_path=resource, auth_settings=["BearerToken"]
            )
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            body = response.read()
        except Exception as exc:  # urllib3 and the client raise many kinds; one at the seam
            raise PlatformError(f"Envoy admin of {self.name} unreachable: {exc}") from exc
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return int(response.status), text
