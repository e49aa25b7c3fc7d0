"""The scenario as Kubernetes + Istio objects (the renderer shared by ``--mesh istio`` and the
Kubernetes platform).

>>> from harness.kube import render, to_yaml
"""

from harness.kube.render import Manifest, RenderError, RenderOptions, render, to_yaml

__all__ = ["Manifest", "RenderError", "RenderOptions", "render", "to_yaml"]
