"""Bring-up of the local single-node cluster (``harness cluster up --local``).

Usage: ``python bench/cluster_up.py [ROUNDS]`` (default 3) after ``harness toolchain
install`` and ``apt-get install containerd runc containernetworking-plugins``; needs root.

Each round brings a cluster up from nothing in a fresh state directory (new namespaces,
certificates, empty etcd, empty containerd) and records, from the start of ``up()``: the API
server's ``/readyz`` through the host forwarder, the node Ready, ``up()`` returned (the
``default`` ServiceAccount exists); then a reuse (``up()`` again on the running cluster:
what a second ``harness cluster up`` costs), a first pod Running (a static Go binary
imported with ``ctr``, ``imagePullPolicy: Never``), and ``down()``. Rounds run one after
another in one process, so "cold" here means fresh state with the binaries in the page
cache; the first round after a reboot would read ~600 MB of binaries from disk first.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes.client

from harness.cluster import local
from harness.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_cluster_local import IMAGE, build_tiny_image


def _first_pod(cluster: local.LocalCluster) -> float:
    client = cluster.api_client()
    core = kubernetes.client.CoreV1Api(client)
    container = {"name": "tiny", "image": IMAGE, "imagePullPolicy": "Never"}
    started = time.monotonic()
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "first"}, "spec": {"containers": [container]}}
    )
    deadline = started + 180.0
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod("first", "default")
        if pod.status is not None and pod.status.phase == "Running":
            client.close()  # type: ignore[no-untyped-call]
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit("the first pod was not Running within 180 s")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rows: dict[str, list[float]] = {
        "kube-apiserver /readyz (via the forwarder)": [],
        "node Ready": [],
        "up() returned (default ServiceAccount)": [],
        "up() again (reuse)": [],
        "first pod Running (after create)": [],
        "down()": [],
    }
    with tempfile.TemporaryDirectory(prefix="harness-bench-cluster-") as scratch:
        image = build_tiny_image(Path(scratch))
        for index in range(rounds):
            directory = Path(scratch) / f"state-{index}"
            cluster = local.up(
                directory=directory, sandbox_image=IMAGE, images=[image], ingress_port=free_port()
            )
            timings = cluster.state.timings
            rows["kube-apiserver /readyz (via the forwarder)"].append(timings["api_ready_s"])
            rows["node Ready"].append(timings["node_ready_s"])
            rows["up() returned (default ServiceAccount)"].append(timings["up_s"])
            again = time.monotonic()
            local.up(directory=directory, sandbox_image=IMAGE)
            rows["up() again (reuse)"].append(time.monotonic() - again)
            rows["first pod Running (after create)"].append(_first_pod(cluster))
            stopping = time.monotonic()
            local.down(directory=directory)
            rows["down()"].append(time.monotonic() - stopping)
    print(f"load average at the end: {os.getloadavg()}")
    print(f"| measure | median of {rounds} | min | max |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s "
            f"| {max(values):.2f} s |"
        )


if __name__ == "__main__":
    main()
