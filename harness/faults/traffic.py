"""Progressive delivery: a traffic shift to a subset, stepped, reverted to the stable route.

Under ``--mesh envoy`` every two-destination weighted route carries a
``runtime_key_prefix`` (:mod:`harness.mesh.routing`), so a weight is one runtime key per
cluster in each caller's sidecar: the shift sets the subset's weight and the other
destination's ``100 - weight`` with ``POST /runtime_modify`` (from the next request on, as
HTTP faults do), each step sets them again, and the revert removes the overrides and reads
``/runtime`` back, which restores the scenario's own weights. The callers are the target
service's callers (the gateway's route is not bound to the mesh, as in Istio).

Evidence: requests the callers' sidecars sent on the subset's cluster since the shift.
"""

from __future__ import annotations

import time

from harness.errors import FaultError, HarnessError
from harness.faults.base import CounterDeltas, no_effect, ramp_start, took_effect
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.mesh.routing import subset_cluster_name, weight_key
from harness.mesh.stats import ATTEMPTS, sum_cluster_counters
from harness.platforms.base import Deployment
from harness.scenario.models import TrafficShiftFault
from harness.scenario.traffic import shifted_routes


class TrafficShiftInjector:
    """Shift one destination's weighted routes towards ``fault.subset`` in its callers."""

    def __init__(
        self,
        fault: TrafficShiftFault,
        name: str,
        callers: dict[str, AdminApi],
        pairs: list[tuple[str, str]],
    ) -> None:
        """``pairs``: per shifted route, (the subset's weight key, the other one's)."""
        self.fault = fault
        self.callers = callers
        self.pairs = pairs
        cluster = subset_cluster_name(fault.target.service, fault.subset)
        self.counters = CounterDeltas(
            lambda: {
                "subset_requests": sum_cluster_counters(self.callers.values(), cluster, [ATTEMPTS])[
                    ATTEMPTS
                ]
            }
        )
        start = ramp_start(fault.steps)
        self.weight = int(fault.weight if start is None else start)
        self.record = FaultEntry(
            name=name,
            kind="trafficShift",
            phase=fault.phase,
            targets=sorted(callers),
            detail={"subset": fault.subset, "weight": str(self.weight), "cluster": cluster},
        )

    def _values(self, weight: int) -> dict[str, int | str]:
        values: dict[str, int | str] = {}
        for mine, other in self.pairs:
            values[mine] = weight
            values[other] = 100 - weight
        return values

    def inject(self) -> None:
        self.counters.start()
        values = self._values(self.weight)
        for name, admin in self.callers.items():
            admin.runtime_modify(values)
            current = admin.runtime()
            wrong = {k: current.get(k) for k, v in values.items() if current.get(k) != str(v)}
            if wrong:
                raise FaultError(f"fault {self.record.name}: {name} did not take {wrong}")

    def adjust(self, percentage: float) -> None:
        """Ramp step: the subset's weight becomes ``percentage`` from the next request on."""
        self.weight = int(percentage)
        values = self._values(self.weight)
        for admin in self.callers.values():
            admin.runtime_modify(values)
        self.record.detail.setdefault("steps", []).append({"at": time.time(), "weight": percentage})

    def revert(self) -> bool:
        clear: dict[str, int | str] = {key: "" for pair in self.pairs for key in pair}
        verified = True
        for admin in self.callers.values():
            try:
                admin.runtime_modify(clear)
                left = set(admin.runtime()) & set(clear)
            except HarnessError:
                verified = False
                continue
            verified = verified and not left
        return verified

    def evidence(self) -> dict[str, int]:
        try:
            return self.counters.deltas()
        except HarnessError:
            return {}

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        where = f" on {self.fault.target.service} subset {self.fault.subset}"
        if evidence.get("subset_requests", 0) <= 0:
            return no_effect(self.record.name, f"{where}: no request reached the subset")
        return took_effect(self.record.name, where, evidence)


def from_scenario(
    fault: TrafficShiftFault, name: str, deployment: Deployment
) -> TrafficShiftInjector:
    scenario = deployment.scenario
    service = fault.target.service
    policy = scenario.mesh.destinations[service]
    pairs = []
    for index in shifted_routes(policy.http, fault.subset):
        (other,) = [d.subset for d in policy.http[index].route if d.subset != fault.subset]
        pairs.append((weight_key(service, index, fault.subset), weight_key(service, index, other)))
    callers = {
        inst.name: deployment.admin(inst.name)
        for caller in scenario.app.topology.callers_of(service)
        for inst in deployment.instances_of(caller)
    }
    if not callers:
        raise FaultError(f"fault {name}: {service!r} has no caller inside the mesh to shift")
    return TrafficShiftInjector(fault, name, callers, pairs)
