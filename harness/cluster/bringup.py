"""``harness cluster up|down|status``: the two paths to a cluster with Istio, behind one call.

* kind (default): :mod:`harness.cluster.kind` — Docker + kind, ``kind-config.yaml``;
* ``--local``: :mod:`harness.cluster.local` — a real single-node Kubernetes from the pinned
  toolchain in a network namespace (no Docker), the images from :mod:`harness.cluster.images`
  imported into its containerd (the ``pause`` image is its sandbox image), then the same
  Istio install (:func:`harness.cluster.istio_install.install_mesh`).

Both write a kubeconfig the context guard admits without an API call (kind: a ``kind-*``
context on loopback; local: the ``harness`` marker + its ``state.json``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from harness.cluster import kind
from harness.cluster.istio_install import IstioImages, install_mesh, print_istio_plan
from harness.platforms.kube.context import pin_context
from harness.toolchain import installed

__all__ = ["cluster_down", "cluster_status", "cluster_up"]

LOCAL_IMAGES = ("app", "pilot", "proxyv2", "pause")
Log = Callable[[str], None]


def _module(name: str) -> ModuleType:
    # The local cluster and the image builder are separate modules of this package, loaded
    # when their path is taken (the kind path needs neither).
    return importlib.import_module(f"harness.cluster.{name}")


def cluster_up(*, local: bool, dry_run: bool, log: Log) -> None:
    """Bring up (or reuse) a cluster with Istio; ``dry_run`` prints every step instead."""
    if not local:
        kind.up(dry_run=dry_run, log=log)
        return
    toolchain = installed()
    if dry_run:
        log(f"# build the images {', '.join(LOCAL_IMAGES)} (harness.cluster.images)")
        log("# harness.cluster.local.up(sandbox_image=<pause ref>, images=<the four tars>)")
        print_istio_plan(toolchain, log)
        return
    builder = _module("images")
    names = builder.with_optional_images(LOCAL_IMAGES, log)
    built = builder.build_images(names=names, log=log)
    cluster = _module("local").up(
        sandbox_image=built["pause"].ref,
        images=[image.path for image in built.values()],
        toolchain=toolchain,
        log=log,
    )
    context = pin_context(cluster.kubeconfig, context=cluster.state.context)
    images = IstioImages(pilot=built["pilot"].ref, proxyv2=built["proxyv2"].ref)
    install_mesh(context, toolchain, images, log=log)


def cluster_down(*, local: bool, log: Log) -> bool:
    """Take down the cluster the harness made; True when something was removed."""
    if local:
        return bool(_module("local").down(log=log))
    return kind.down(log=log)


def cluster_status(*, local: bool) -> tuple[bool, list[str]]:
    """(healthy, lines to print)."""
    if local:
        found = _module("local").status()
        lines = [f"local cluster: {found.directory}", f"exists: {found.exists}"]
        lines += [f"api ready: {found.api_ready}"]
        lines += [
            f"  {name}: {'running' if up else 'GONE'}" for name, up in found.processes.items()
        ]
        return bool(found.healthy), lines
    state = kind.status()
    lines = [f"kind cluster {kind.KIND_CLUSTER}: {'exists' if state.exists else 'absent'}"]
    lines.append(f"made by the harness: {state.made_by_harness} (kubeconfig {state.kubeconfig})")
    if state.problem:
        lines.append(f"kind cannot run here: {state.problem}")
    return state.exists, lines
