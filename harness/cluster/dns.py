"""Cluster DNS for the local cluster: CoreDNS as a node process on the node's address.

Pods resolve ``<service>.<namespace>.svc.cluster.local`` (istiod's address for the
sidecars, the app's dependencies) through CoreDNS's ``kubernetes`` plugin, which watches the
API as the user ``harness:cluster-dns`` (read-only on Services, EndpointSlices, Pods,
Namespaces). It runs beside the kubelet, not as a pod, so it needs no image; the kubelet
points every pod's ``resolv.conf`` at it (``clusterDNS``). There is no upstream: names
outside the cluster do not resolve (pods reach nothing outside the node's namespace).

CoreDNS is pinned and installed like toxiproxy: ``go install`` (see :data:`COREDNS_INSTALL`),
found in ``$HARNESS_COREDNS``, on PATH, or in ``$(go env GOPATH)/bin``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from harness.cluster.node import NODE_IP
from harness.errors import ClusterError, ToolMissingError
from harness.platforms.local.toxiproxy import go_bin_dirs

__all__ = [
    "COREDNS_INSTALL",
    "COREDNS_VERSION",
    "DNS_USER",
    "allow_dns_reads",
    "corefile",
    "find_coredns",
]

COREDNS_VERSION = "v1.15.0"
COREDNS_INSTALL = f"go install github.com/coredns/coredns@{COREDNS_VERSION}"
COREDNS_ENV = "HARNESS_COREDNS"
DNS_USER = "harness:cluster-dns"
DNS_PORT = 53
RBAC_GROUP = "rbac.authorization.k8s.io"


def _is_pinned_coredns(path: str) -> bool:
    try:
        done = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=10.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return f"CoreDNS-{COREDNS_VERSION.lstrip('v')}" in done.stdout


def find_coredns() -> str:
    """The pinned CoreDNS binary, or :class:`ToolMissingError` naming how to install it."""
    explicit = os.environ.get(COREDNS_ENV)
    candidates: list[str | None] = [explicit] if explicit else []
    if not explicit:
        candidates += [shutil.which("coredns")]
        candidates += [str(directory / "coredns") for directory in go_bin_dirs()]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _is_pinned_coredns(candidate):
            return candidate
    where = f"{COREDNS_ENV}={explicit}" if explicit else "PATH and $(go env GOPATH)/bin"
    raise ToolMissingError(
        f"CoreDNS {COREDNS_VERSION} (the local cluster's DNS) is not in {where}: {COREDNS_INSTALL}"
    )


def corefile(kubeconfig: Path) -> str:
    """CoreDNS's configuration: the cluster's zone from the API, on the node's address."""
    return "\n".join(
        [
            f".:{DNS_PORT} {{",
            f"    bind {NODE_IP}",
            "    errors",
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {",
            f"        kubeconfig {kubeconfig} local",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            "    }",
            "}",
            "",
        ]
    )


def _rbac_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": DNS_USER},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["services", "endpoints", "pods", "namespaces"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": DNS_USER},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": DNS_USER,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DNS_USER}],
    }
    return role, binding


def allow_dns_reads(client: kubernetes.client.ApiClient) -> None:
    """Let CoreDNS's user read what its ``kubernetes`` plugin watches (server-side apply)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    role, binding = _rbac_objects()
    try:
        rbac.patch_cluster_role(
            DNS_USER,
            role,
            field_manager="harness",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        rbac.patch_cluster_role_binding(
            DNS_USER,
            binding,
            field_manager="harness",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        raise ClusterError(
            f"the API server refused CoreDNS's RBAC: {exc.status} {exc.reason}"
        ) from None
