"""What ``--platform kube`` is told on the command line, and what it refuses before anything
exists. Light on purpose (no Kubernetes client): the runner and the CLI import it always.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import PlatformError
from harness.scenario.models import (
    HttpFault,
    KillFault,
    PartitionFault,
    PauseFault,
    Scenario,
    ToxicFault,
    TrafficShiftFault,
)

__all__ = [
    "DEFAULT_INGRESS_URL",
    "KUBE_FAULTS",
    "KubeOptions",
    "check_kube_support",
    "partition_services",
    "process_fault_services",
    "unsupported_on_kube",
]

# The fault kinds --platform kube injects (docs/faults.md, "On Kubernetes").
KUBE_FAULTS = (HttpFault, KillFault, PauseFault, PartitionFault, ToxicFault, TrafficShiftFault)

# kind-config.yaml maps the gateway's NodePort 30080 to this address; `cluster up --local`
# forwards the same port on loopback into its network namespace.
DEFAULT_INGRESS_URL = "http://127.0.0.1:30080"


@dataclass(frozen=True)
class KubeOptions:
    """The cluster of a ``--platform kube`` run."""

    kubeconfig: Path | None = None  # default: $KUBECONFIG, then ~/.kube/config
    context: str | None = None  # default: the kubeconfig's current-context
    allow_contexts: tuple[str, ...] = field(default_factory=tuple)  # beyond kind / harness-made
    ingress_url: str = DEFAULT_INGRESS_URL


def unsupported_on_kube(scenario: Scenario) -> list[str]:
    """What ``--platform kube`` cannot run yet, each with why (empty: it can)."""
    problems = [
        f"faults[{i}] {fault.name or fault.kind}: kind {fault.kind!r} (on kube only 'http', "
        "'kill', 'pause', 'partition', 'toxic' and 'trafficShift' faults are injected so far)"
        for i, fault in enumerate(scenario.faults)
        if not isinstance(fault, KUBE_FAULTS)
    ]
    problems += [
        f"faults[{i}] {fault.name or fault.kind}: a toxic from 'ingress' (the gateway's pod "
        "is shared by every run, so the harness does not steer it through a run's toxiproxy; "
        "use a service of the app as the source)"
        for i, fault in enumerate(scenario.faults)
        if isinstance(fault, ToxicFault) and fault.source == "ingress"
    ]
    kinds = {type(fault) for fault in scenario.faults}
    if {ToxicFault, PartitionFault} <= kinds:
        problems.append(
            "faults: a partition beside a toxic fault (on kube a toxic edge's traffic reaches "
            "the callee from the toxiproxy pod, which the partition's rules do not match yet)"
        )
    if scenario.probes:
        problems.append("probes: scenario probes are not sent on kube yet")
    problems += [
        f"{'.'.join(map(str, path))}: {what} (not on kube yet)"
        for path, what in scenario.control_plane_uses()
        if path[0] != "faults"  # each fault is named above
    ]
    return problems


def process_fault_services(scenario: Scenario) -> frozenset[str]:
    """The services a ``kill`` or ``pause`` fault targets: their pods get the process
    helper container (:mod:`harness.platforms.kube.processes`)."""
    return frozenset(
        fault.target.service
        for fault in scenario.faults
        if isinstance(fault, (KillFault, PauseFault))
    )


def partition_services(scenario: Scenario) -> frozenset[str]:
    """The services on either side of a ``partition``: their pods' helper container gets
    NET_ADMIN, for nft in the pod's own network namespace."""
    return frozenset(
        service
        for fault in scenario.faults
        if isinstance(fault, PartitionFault)
        for service in (fault.from_.service, fault.to.service)
    )


def check_kube_support(scenario: Scenario) -> None:
    """Refuse (exit 2) a scenario ``--platform kube`` cannot run, before anything exists."""
    problems = unsupported_on_kube(scenario)
    if problems:
        raise PlatformError(
            f"scenario {scenario.metadata.name!r} cannot run on --platform kube: "
            + "; ".join(problems)
            + ". Run it on the local platform (--mesh envoy or --mesh istio)."
        )
