"""Bring-up of the shop app: ``--mesh envoy`` (the harness's bootstraps) beside
``--mesh istio`` (etcd + kube-apiserver + istiod + pilot-agent in the run's namespace).

Usage: ``python bench/istio_bringup.py [SCENARIO] [ROUNDS]`` (default
``scenarios/retries-mask-transient-errors.yaml``, 2 rounds) after ``harness toolchain
install``. Each round deploys the scenario once per mesh (no load), with a request through
the ingress as the end of bring-up, and tears it down. Prints a Markdown table: medians,
the istio/envoy ratio, and the istio steps (seconds from the start of its deployment).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario import load_scenario


def main() -> None:
    scenario = load_scenario(
        sys.argv[1] if len(sys.argv) > 1 else "scenarios/retries-mask-transient-errors.yaml"
    )
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    totals: dict[Mesh, list[float]] = {Mesh.ENVOY: [], Mesh.ISTIO: []}
    steps: dict[str, list[float]] = {}
    base = Path(tempfile.mkdtemp(prefix="bench-istio-"))
    try:
        for round_ in range(rounds):
            for mesh in (Mesh.ENVOY, Mesh.ISTIO):
                run_dir = base / f"bench-{mesh.value}-{round_}"
                begun = time.monotonic()
                platform = LocalPlatform(Isolation.NAMESPACE, mesh)
                with platform.deploy(scenario, run_dir) as deployment:
                    totals[mesh].append(time.monotonic() - begun)
                    info = deployment.control_plane()
                    for name, value in info.timings.items() if info else ():
                        steps.setdefault(name, []).append(value)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    envoy, istio = statistics.median(totals[Mesh.ENVOY]), statistics.median(totals[Mesh.ISTIO])
    print(f"| measure | median of {rounds} | min | max |")
    print("|---|---|---|---|")
    for mesh, values in totals.items():
        print(
            f"| bring-up, --mesh {mesh.value} | {statistics.median(values):.1f} s "
            f"| {min(values):.1f} s | {max(values):.1f} s |"
        )
    print(f"| ratio istio / envoy | {istio / envoy:.1f}× | | |")
    for name, values in steps.items():
        print(
            f"| istio: {name} | {statistics.median(values):.1f} s "
            f"| {min(values):.1f} s | {max(values):.1f} s |"
        )


if __name__ == "__main__":
    main()
