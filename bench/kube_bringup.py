"""``--platform kube`` bring-up on the local cluster, stage by stage, beside ``--mesh istio``.

Usage: ``python bench/kube_bringup.py [ROUNDS]`` (default 2) after ``harness toolchain
install`` and the apt packages of ``.ci/run``; needs root, and port 30080 need not be free
(each round's cluster forwards its ingress from a free port).

Each round, from nothing (a fresh state directory: new namespaces, certificates, etcd,
containerd; the images already built and cached):

1. **cluster up**: ``harness.cluster.local.up`` until the node is Ready and the ``default``
   ServiceAccount exists (images imported);
2. **Istio ready**: Istio's charts rendered and applied, istiod and the gateway Ready
   (``harness.cluster.istio_install.install_mesh``);
3. **app ready**: the retry scenario's app deployed by ``KubePlatform`` — objects applied,
   every pod Ready, a request answered through the gateway (``KubeDeployment.timings``);

then, in the same round, the same app under ``--mesh istio`` on the local platform (its own
etcd, kube-apiserver and istiod in the run's namespace), the side-by-side reference: both on
the same machine at the same moment, so the ratio means more than either figure.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.cluster import local
from harness.cluster.images import build_images
from harness.cluster.istio_install import IstioImages, install_mesh
from harness.platforms.kube.context import pin_context
from harness.platforms.kube.options import KubeOptions
from harness.platforms.kube.platform import KubePlatform
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import Mesh
from harness.ports import free_port
from harness.scenario import load_scenario
from harness.toolchain import installed

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios/retries-mask-transient-errors.yaml"


def one_round(scratch: Path, index: int, rows: dict[str, list[float]]) -> None:
    toolchain = installed()
    built = build_images(names=("app", "pilot", "proxyv2", "pause"))
    directory = scratch / f"c{index}"
    begun = time.monotonic()
    cluster = local.up(
        directory=directory,
        sandbox_image=built["pause"].ref,
        images=[image.path for image in built.values()],
        ingress_port=free_port(),
        toolchain=toolchain,
    )
    rows["cluster up (node Ready, images in)"].append(time.monotonic() - begun)
    try:
        mesh = time.monotonic()
        images = IstioImages(pilot=built["pilot"].ref, proxyv2=built["proxyv2"].ref)
        install_mesh(pin_context(cluster.kubeconfig), toolchain, images)
        rows["Istio ready (istiod + gateway)"].append(time.monotonic() - mesh)
        scenario = load_scenario(SCENARIO)
        platform = KubePlatform(KubeOptions(kubeconfig=cluster.kubeconfig))
        run_dir = scratch / f"kube-run-{index}"
        run_dir.mkdir()
        with platform.deploy(scenario, run_dir) as deployment:
            rows["app ready on kube (7 pods + ingress)"].append(deployment.timings["ready_s"])
        rows["total: cluster + Istio + app"].append(time.monotonic() - begun)
    finally:
        local.down(directory=directory)
    run_dir = scratch / f"istio-run-{index}"
    run_dir.mkdir()
    started = time.monotonic()
    with LocalPlatform(mesh=Mesh.ISTIO).deploy(load_scenario(SCENARIO), run_dir):
        rows["reference: --mesh istio on the local platform"].append(time.monotonic() - started)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rows: dict[str, list[float]] = {
        "cluster up (node Ready, images in)": [],
        "Istio ready (istiod + gateway)": [],
        "app ready on kube (7 pods + ingress)": [],
        "total: cluster + Istio + app": [],
        "reference: --mesh istio on the local platform": [],
    }
    with tempfile.TemporaryDirectory(prefix="hkb-") as scratch:  # short: kubelet sockets
        for index in range(rounds):
            one_round(Path(scratch), index, rows)
    print(f"load average at the end: {os.getloadavg()}")
    print(f"| stage | median of {rounds} | min | max |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.1f} s | {min(values):.1f} s "
            f"| {max(values):.1f} s |"
        )
    ratio = statistics.median(rows["total: cluster + Istio + app"]) / statistics.median(
        rows["reference: --mesh istio on the local platform"]
    )
    print(f"kube from nothing / --mesh istio deploy: {ratio:.1f}x")


if __name__ == "__main__":
    main()
