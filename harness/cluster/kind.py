"""``harness cluster up|down|status`` on kind: a kind cluster with Istio and the harness's images.

Steps of :func:`up`, each idempotent (a second ``up`` changes nothing that is right):

1. the cluster ``harness`` from ``kind-config.yaml`` (the repo root's file, generated from
   :data:`KIND_CONFIG`: one node at a pinned ``kindest/node`` digest, the ingress NodePort
   30080 mapped to ``127.0.0.1:30080``), reused when it exists;
2. its kubeconfig written to ``~/.cache/harness/clusters/kind-harness/kubeconfig`` (the
   user's ``~/.kube/config`` is not touched); context ``kind-harness``, admitted by the guard
   as kind on loopback;
3. the images (``app``, ``pilot``, ``proxyv2``; :mod:`harness.cluster.images`, no Docker
   build) loaded with ``kind load image-archive``;
4. Istio from its charts (:mod:`harness.cluster.istio_install`), then istiod and the gateway
   Ready.

``--dry-run`` prints every command and every object instead (image tags are content digests
known only once built: they print as ``<digest>``). Where kind cannot create a cluster —
no Docker daemon, or a machine whose containers cannot be privileged, as on the project's
CI machines (no ``CAP_SYS_RESOURCE``) — :func:`kind_problem` says so before anything runs,
and the error names ``harness cluster up --local``.

``down`` deletes the kind cluster only if the harness created it (``state.json`` beside the
kubeconfig says so); a cluster it merely reused is left alone.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from harness.cluster.istio_install import (
    INGRESS_NODE_PORT,
    IstioImages,
    install_mesh,
    print_istio_plan,
)
from harness.doctor import CHECKS
from harness.errors import PlatformError, ToolMissingError
from harness.platforms.kube.context import pin_context
from harness.toolchain import Toolchain, installed

__all__ = [
    "KIND_CLUSTER",
    "KIND_CONFIG",
    "KIND_CONTEXT",
    "KIND_VERSION",
    "NODE_IMAGE",
    "KindStatus",
    "down",
    "kind_config_yaml",
    "kind_problem",
    "status",
    "up",
]

KIND_VERSION: Final = "v0.33.0"
KIND_INSTALL: Final = f"go install sigs.k8s.io/kind@{KIND_VERSION}"
KIND_CLUSTER: Final = "harness"
KIND_CONTEXT: Final = f"kind-{KIND_CLUSTER}"
# One of the node images built for kind v0.33.0, by digest as its release notes require
# (https://github.com/kubernetes-sigs/kind/releases/tag/v0.33.0, "Images pre-built for this
# release"); 1.35 is the newest minor whose kubelet still runs on cgroup v1 hosts by config.
NODE_IMAGE: Final = (
    "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0"
)
KIND_CONFIG: Final[Mapping[str, Any]] = {
    "kind": "Cluster",
    "apiVersion": "kind.x-k8s.io/v1alpha4",
    "name": KIND_CLUSTER,
    "nodes": [
        {
            "role": "control-plane",
            "image": NODE_IMAGE,
            # The ingress gateway's NodePort, on the host's loopback only (the analogue of
            # `harness cluster up --local`'s forward).
            "extraPortMappings": [
                {
                    "containerPort": INGRESS_NODE_PORT,
                    "hostPort": INGRESS_NODE_PORT,
                    "listenAddress": "127.0.0.1",
                    "protocol": "TCP",
                }
            ],
        }
    ],
}
LOADED_IMAGES: Final = ("app", "pilot", "proxyv2")
KIND_NEEDS: Final = ("privileged containers", "docker daemon")  # harness doctor's checks
STATE_DIR_NAME: Final = "kind-harness"

Log = Callable[[str], None]


def kind_config_yaml() -> str:
    """``kind-config.yaml`` as the repo root holds it (a test keeps the two identical)."""
    header = (
        f"# kind {KIND_VERSION} ({KIND_INSTALL}); `harness cluster up` creates this cluster.\n"
        f"# Node image: built for kind {KIND_VERSION} (its release notes), pinned by digest.\n"
        f"# The ingress gateway's NodePort {INGRESS_NODE_PORT} is reachable at "
        f"127.0.0.1:{INGRESS_NODE_PORT}.\n"
    )
    return header + yaml.safe_dump(dict(KIND_CONFIG), sort_keys=False)


def state_directory() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harness" / "clusters" / STATE_DIR_NAME


def find_kind() -> str:
    """``$HARNESS_KIND``, ``kind`` on PATH, or ``~/go/bin/kind``."""
    for candidate in (
        os.environ.get("HARNESS_KIND"),
        shutil.which("kind"),
        str(Path.home() / "go" / "bin" / "kind"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ToolMissingError(
        f"`kind` is not installed: {KIND_INSTALL} (or, where Docker cannot run kind's "
        "privileged nodes, use `harness cluster up --local`)"
    )


def kind_problem() -> str | None:
    """Why kind cannot create a cluster here, or None when nothing stands in its way. The
    same probes as ``harness doctor`` (the capability bounding set, ``docker info``): no
    container is started."""
    checks = {check.name: check for check in CHECKS}
    for name in KIND_NEEDS:
        probe = checks[name].probe()
        if not probe.ok:
            return probe.detail
    try:
        find_kind()
    except ToolMissingError as exc:
        return str(exc)
    return None


def _cannot(problem: str) -> PlatformError:
    return PlatformError(
        f"kind cannot create a cluster here: {problem}. Use `harness cluster up --local` "
        "(a real single-node cluster from the pinned toolchain, no Docker) instead"
    )


@dataclass(frozen=True)
class Plan:
    """What ``up`` does: shell commands, and the objects it applies."""

    commands: list[list[str]]
    objects: list[dict[str, Any]]


def _run(argv: list[str], what: str, log: Log) -> str:
    log(f"$ {shlex.join(argv)}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise PlatformError(f"{what} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def _cluster_exists(kind: str) -> bool:
    done = subprocess.run(
        [kind, "get", "clusters"], capture_output=True, text=True, timeout=60, check=False
    )
    return KIND_CLUSTER in done.stdout.split()


def _create_cluster(kind: str, directory: Path, log: Log) -> None:
    config = directory / "kind-config.yaml"
    config.write_text(kind_config_yaml())
    argv = [kind, "create", "cluster", "--config", str(config), "--kubeconfig",
            str(directory / "kubeconfig"), "--wait", "120s"]  # fmt: skip
    try:
        _run(argv, "kind create cluster", log)
    except PlatformError as exc:
        raise _cannot(str(exc)) from None
    state = {"made_by": "harness", "kind_cluster": KIND_CLUSTER, "kind_version": KIND_VERSION}
    (directory / "state.json").write_text(json.dumps(state) + "\n")


def _built_images(log: Log) -> dict[str, Any]:
    # harness.cluster.images builds the images from host files (no Docker daemon needed).
    images = importlib.import_module("harness.cluster.images")
    names = images.with_optional_images(LOADED_IMAGES, log)
    built: dict[str, Any] = images.build_images(names=names, log=log)
    return built


def up(*, dry_run: bool = False, toolchain: Toolchain | None = None, log: Log = print) -> None:
    """Create or reuse the kind cluster, load the images, install Istio, wait for it."""
    toolchain = toolchain or installed()
    directory = state_directory()
    if dry_run:
        _print_plan(toolchain, log)
        return
    problem = kind_problem()
    if problem is not None:
        raise _cannot(problem)
    kind = find_kind()
    directory.mkdir(parents=True, exist_ok=True)
    if _cluster_exists(kind):
        log(f"kind cluster {KIND_CLUSTER}: exists, reused")
        kubeconfig = _run([kind, "get", "kubeconfig", "--name", KIND_CLUSTER], "kubeconfig", log)
        (directory / "kubeconfig").touch(mode=0o600)
        (directory / "kubeconfig").write_text(kubeconfig)
    else:
        _create_cluster(kind, directory, log)
    built = _built_images(log)
    for image in built.values():
        _run([kind, "load", "image-archive", str(image.path), "--name", KIND_CLUSTER],
             f"kind load {image.ref}", log)  # fmt: skip
    images = IstioImages(pilot=built["pilot"].ref, proxyv2=built["proxyv2"].ref)
    context = pin_context(directory / "kubeconfig", context=KIND_CONTEXT)
    install_mesh(context, toolchain, images, log=log)
    log(f"ready: context {KIND_CONTEXT} in {directory / 'kubeconfig'}; "
        f"ingress http://127.0.0.1:{INGRESS_NODE_PORT}")  # fmt: skip


def _print_plan(toolchain: Toolchain, log: Log) -> None:
    directory = state_directory()
    kind = "kind"
    log(f"# kind-config.yaml\n{kind_config_yaml()}")
    commands = [
        [kind, "get", "clusters"],
        [kind, "create", "cluster", "--config", str(directory / "kind-config.yaml"),
         "--kubeconfig", str(directory / "kubeconfig"), "--wait", "120s"],
        *([kind, "load", "image-archive", f"<{name}.tar>", "--name", KIND_CLUSTER]
          for name in LOADED_IMAGES),
    ]  # fmt: skip
    for argv in commands:
        log(f"$ {shlex.join(argv)}")
    print_istio_plan(toolchain, log)


@dataclass(frozen=True)
class KindStatus:
    exists: bool
    made_by_harness: bool
    kubeconfig: Path
    problem: str | None  # why kind cannot run here, if it cannot


def status() -> KindStatus:
    """Whether the kind cluster exists and whether the harness made it (no API call)."""
    directory = state_directory()
    problem = kind_problem()
    exists = False
    if problem is None:
        exists = _cluster_exists(find_kind())
    return KindStatus(exists, _made_by_harness(directory), directory / "kubeconfig", problem)


def _made_by_harness(directory: Path) -> bool:
    try:
        state = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("made_by") == "harness"


def down(*, log: Log = print) -> bool:
    """Delete the kind cluster if the harness created it; True when something was deleted."""
    directory = state_directory()
    if not _made_by_harness(directory):
        log(f"no kind cluster made by the harness (no {directory / 'state.json'}): nothing to do")
        return False
    kind = find_kind()
    _run([kind, "delete", "cluster", "--name", KIND_CLUSTER], "kind delete cluster", log)
    for name in ("kubeconfig", "kind-config.yaml", "state.json"):
        (directory / name).unlink(missing_ok=True)
    return True
