"""Progressive delivery: a traffic shift to a subset, stepped, reverted to the stable route.

Under ``--mesh envoy`` every two-destination weighted route carries a
``runtime_key_prefix`` (:mod:`harness.mesh.routing`), so a weight is one runtime key per
cluster in each caller's sidecar: the shift sets the subset's weight and the other
destination's ``100 - weight`` with ``POST /runtime_modify`` (from the next request on, as
HTTP faults do), each step sets them again, and the revert removes the overrides and reads
``/runtime`` back, which restores the scenario's own weights. The callers are the target
service's callers (the gateway's route is not bound to the mesh, as in Istio).

Under ``--mesh istio`` (a deployment that is a :class:`PolicyApplier`) each weight change
re-applies the destination's VirtualService with the new weights through the platform's
policy-push path, which waits until every caller's sidecar acknowledged it (a
``PolicyPush`` in the journal); the revert re-applies the scenario's own.

Evidence: requests the callers' sidecars sent on the subset's cluster since the shift.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from harness.errors import FaultError, HarnessError
from harness.faults.base import CounterDeltas, clear_runtime, no_effect, ramp_start, took_effect
from harness.journal import FaultEntry, PolicyPush
from harness.mesh.admin import AdminApi
from harness.mesh.routing import subset_cluster_name, weight_key
from harness.mesh.stats import ATTEMPTS, sum_cluster_counters
from harness.platforms.base import Deployment
from harness.scenario.models import DestinationPolicy, TrafficShiftFault
from harness.scenario.traffic import shifted_routes


class RuntimeWeights:
    """``--mesh envoy``: the weights as runtime keys in every caller's sidecar."""

    def __init__(self, callers: dict[str, AdminApi], pairs: list[tuple[str, str]]) -> None:
        """``pairs``: per shifted route, (the subset's weight key, the other one's)."""
        self.callers = callers
        self.pairs = pairs

    def _values(self, weight: int) -> dict[str, int | str]:
        values: dict[str, int | str] = {}
        for mine, other in self.pairs:
            values[mine] = weight
            values[other] = 100 - weight
        return values

    def set(self, weight: int, *, check: bool) -> None:
        values = self._values(weight)
        for name, admin in self.callers.items():
            admin.runtime_modify(values)
            if not check:
                continue
            current = admin.runtime()
            wrong = {k: current.get(k) for k, v in values.items() if current.get(k) != str(v)}
            if wrong:
                raise FaultError(f"{name} did not take {wrong}")

    def clear(self) -> bool:
        return clear_runtime(self.callers.values(), (key for pair in self.pairs for key in pair))


@runtime_checkable
class PolicyApplier(Protocol):
    """A deployment programmed by a control plane (``--mesh istio``), which re-applies a
    destination's VirtualService and waits until its callers acknowledged it."""

    def apply_destination_policy(self, service: str, policy: DestinationPolicy) -> PolicyPush: ...


class PolicyWeights:
    """``--mesh istio``: each weight change re-applies the VirtualService (a policy push,
    in the journal's ``control_plane.pushes``); the revert re-applies the scenario's own."""

    def __init__(
        self, applier: PolicyApplier, service: str, policy: DestinationPolicy, subset: str
    ) -> None:
        self.applier = applier
        self.service = service
        self.policy = policy
        self.subset = subset

    def _shifted(self, weight: int) -> DestinationPolicy:
        routes = list(self.policy.http)
        for index in shifted_routes(routes, self.subset):
            destinations = [
                dest.model_copy(
                    update={"weight": weight if dest.subset == self.subset else 100 - weight}
                )
                for dest in routes[index].route
            ]
            routes[index] = routes[index].model_copy(update={"route": destinations})
        return self.policy.model_copy(update={"http": routes})

    def set(self, weight: int, *, check: bool) -> None:
        del check  # apply_policy waits for every caller's acknowledgement
        self.applier.apply_destination_policy(self.service, self._shifted(weight))

    def clear(self) -> bool:
        try:
            self.applier.apply_destination_policy(self.service, self.policy)
        except HarnessError:
            return False
        return True


class TrafficShiftInjector:
    """Shift one destination's weighted routes towards ``fault.subset`` in its callers."""

    def __init__(
        self,
        fault: TrafficShiftFault,
        name: str,
        callers: dict[str, AdminApi],
        weights: RuntimeWeights | PolicyWeights,
    ) -> None:
        self.fault = fault
        self.callers = callers
        self.weights = weights
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

    def inject(self) -> None:
        self.counters.start()
        try:
            self.weights.set(self.weight, check=True)
        except FaultError as exc:
            raise FaultError(f"fault {self.record.name}: {exc}") from None

    def adjust(self, percentage: float) -> None:
        """Ramp step: the subset's weight becomes ``percentage`` from the next request on."""
        self.weight = int(percentage)
        self.weights.set(self.weight, check=False)
        self.record.detail.setdefault("steps", []).append({"at": time.time(), "weight": percentage})

    def revert(self) -> bool:
        return self.weights.clear()

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
    callers = {
        inst.name: deployment.admin(inst.name)
        for caller in scenario.app.topology.callers_of(service)
        for inst in deployment.instances_of(caller)
    }
    if not callers:
        raise FaultError(f"fault {name}: {service!r} has no caller inside the mesh to shift")
    if isinstance(deployment, PolicyApplier):
        weights: RuntimeWeights | PolicyWeights = PolicyWeights(
            deployment, service, policy, fault.subset
        )
    else:
        pairs = []
        for index in shifted_routes(policy.http, fault.subset):
            (other,) = [d.subset for d in policy.http[index].route if d.subset != fault.subset]
            pairs.append(
                (weight_key(service, index, fault.subset), weight_key(service, index, other))
            )
        weights = RuntimeWeights(callers, pairs)
    return TrafficShiftInjector(fault, name, callers, weights)
