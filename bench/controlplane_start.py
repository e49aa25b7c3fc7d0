"""Start-up of the real control plane: kube-apiserver ready, Istio's CRDs, istiod ready.

Usage: ``python bench/controlplane_start.py [ROUNDS]`` (default 3) after
``harness toolchain install``.

Each round starts etcd + kube-apiserver from nothing (fresh certificates, empty etcd),
applies Istio's CRDs and waits until they are Established, then starts istiod and waits for
its ``/ready``, then stops everything. Times are seconds from the start of the round's
control plane (istiod: from its own start). The anchor for the whole bring-up is kind +
Istio cold, about 2 minutes; these machines are noisy, so read medians.
"""

from __future__ import annotations

import statistics
import sys
import time

from harness.controlplane import istiod, kube_control_plane


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rows: dict[str, list[float]] = {
        "kube-apiserver /readyz": [],
        "Istio CRDs applied": [],
        "Istio CRDs Established": [],
        "istiod /ready (after its start)": [],
        "stop etcd + kube-apiserver": [],
    }
    for _ in range(rounds):
        with kube_control_plane() as kube:
            rows["kube-apiserver /readyz"].append(kube.timings.apiserver_ready_s)
            rows["Istio CRDs applied"].append(kube.timings.crds_applied_s or 0.0)
            rows["Istio CRDs Established"].append(kube.timings.crds_established_s or 0.0)
            with istiod(kube) as pilot:
                rows["istiod /ready (after its start)"].append(pilot.timings.ready_s)
            stopping = time.monotonic()
        rows["stop etcd + kube-apiserver"].append(time.monotonic() - stopping)
    print(f"| measure | median of {rounds} | min | max |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s "
            f"| {max(values):.2f} s |"
        )


if __name__ == "__main__":
    main()
