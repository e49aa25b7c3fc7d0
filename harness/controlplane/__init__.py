"""A real control plane for ``--mesh istio``: etcd + kube-apiserver (and next, istiod).

The binaries come from the pinned toolchain (:mod:`harness.toolchain`,
``harness toolchain install``).
"""

from harness.controlplane.kube import (
    ControlPlaneTimings,
    KubeControlPlane,
    api_error,
    apply_crds,
    kube_control_plane,
)

__all__ = [
    "ControlPlaneTimings",
    "KubeControlPlane",
    "api_error",
    "apply_crds",
    "kube_control_plane",
]
