"""Bring-up of the shop app: ``--mesh envoy`` (the harness's bootstraps) beside
``--mesh istio`` (etcd + kube-apiserver + istiod + pilot-agent in the run's namespace).

Usage: ``python bench/istio_bringup.py [SCENARIO] [ROUNDS] [PUSHES]`` (default
``scenarios/retries-mask-transient-errors.yaml``, 2 rounds, 10 pushes) after ``harness
toolchain install``. Each round deploys the scenario once per mesh (no load), with a request
through the ingress as the end of bring-up, and tears it down. Under istio, before the
teardown, it makes ``PUSHES`` policy changes (an EnvoyFilter on catalog's sidecars whose
value changes each time) and times each from the API write until every catalog proxy
acknowledged the new configuration (istiod's /debug/syncz nonces). Prints a Markdown table:
medians, the istio/envoy ratio, the istio steps (seconds from the start of its deployment)
and the push times (median, p95, max over every round).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.kube.render import JsonObject
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.istio import IstioDeployment
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario import load_scenario


def policy_change(namespace: str, value: int) -> JsonObject:
    """An EnvoyFilter on catalog's sidecars that changes their inbound listener each time."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "bench-push", "namespace": namespace},
        "spec": {
            "workloadSelector": {"labels": {"app": "catalog"}},
            "configPatches": [
                {
                    "applyTo": "NETWORK_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "filterChain": {
                                "filter": {"name": "envoy.filters.network.http_connection_manager"}
                            }
                        },
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                "http_connection_manager.v3.HttpConnectionManager",
                                "server_name": f"bench-{value}",
                            }
                        },
                    },
                }
            ],
        },
    }


def pushes(deployment: IstioDeployment, count: int) -> list[float]:
    catalog = [inst.name for inst in deployment.instances_of("catalog")]
    return [
        deployment.apply_policy([policy_change(deployment.namespace, i)], catalog).seconds
        for i in range(count)
    ]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    scenario = load_scenario(
        sys.argv[1] if len(sys.argv) > 1 else "scenarios/retries-mask-transient-errors.yaml"
    )
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    push_count = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    push_times: list[float] = []
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
                    if isinstance(deployment, IstioDeployment):
                        push_times += pushes(deployment, push_count)
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
    if push_times:
        print(
            f"| istio: policy push, API write → every catalog proxy SYNCED "
            f"(n={len(push_times)}) | median {statistics.median(push_times):.2f} s "
            f"| p95 {quantile(push_times, 0.95):.2f} s | max {max(push_times):.2f} s |"
        )


if __name__ == "__main__":
    main()
