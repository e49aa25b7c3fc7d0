"""A real control plane for ``--mesh istio``: etcd + kube-apiserver and istiod.

The binaries come from the pinned toolchain (:mod:`harness.toolchain`,
``harness toolchain install``).
"""

from harness.controlplane.istiod import ISTIO_NAMESPACE, Istiod, IstiodTimings, istiod
from harness.controlplane.kube import (
    ControlPlaneTimings,
    KubeControlPlane,
    api_error,
    apply_crds,
    kube_control_plane,
)

__all__ = [
    "ISTIO_NAMESPACE",
    "ControlPlaneTimings",
    "Istiod",
    "IstiodTimings",
    "KubeControlPlane",
    "api_error",
    "apply_crds",
    "istiod",
    "kube_control_plane",
]
