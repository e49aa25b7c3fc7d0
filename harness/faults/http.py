"""HTTP delay / abort through the Envoy fault filter's runtime keys (local platform).

Each targeted instance's sidecar has fault filters on its inbound listener — one for any
caller and one per caller service — that are off until their runtime keys are set with
``POST /runtime_modify``. Envoy applies them from the next request on; the revert removes the
admin-layer overrides and reads ``/runtime`` back to prove none is left.
"""

from __future__ import annotations

import time

from harness.errors import FaultError, HarnessError
from harness.faults.base import (
    CounterDeltas,
    clear_runtime,
    no_effect,
    ramp_start,
    select_instances,
    took_effect,
)
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.mesh.envoy import fault_keys, percent_to_runtime
from harness.mesh.stats import inbound_fault_counters
from harness.platforms.base import Deployment
from harness.scenario.models import HttpFault


class HttpFaultInjector:
    """Inject one ``kind: http`` fault into the inbound sidecars of ``targets``."""

    def __init__(
        self, fault: HttpFault, name: str, targets: dict[str, AdminApi], target_service: str
    ) -> None:
        self.fault = fault
        self.targets = targets
        self.keys = fault_keys(fault.source)
        self.counters = CounterDeltas(
            lambda: inbound_fault_counters(self.targets.values(), target_service)
        )
        self.values: dict[str, int | str] = {}
        start = ramp_start(fault.steps)  # a ramp's first step sets the starting share
        if fault.abort is not None:
            share = fault.abort.percentage.value if start is None else start
            self.values[self.keys.abort_percent] = percent_to_runtime(share)
            self.values[self.keys.abort_http_status] = fault.abort.http_status
        if fault.delay is not None:
            share = fault.delay.percentage.value if start is None else start
            self.values[self.keys.delay_percent] = percent_to_runtime(share)
            self.values[self.keys.delay_duration_ms] = max(1, round(fault.delay.fixed_delay * 1000))
        self.record = FaultEntry(
            name=name,
            kind="http",
            phase=fault.phase,
            targets=sorted(targets),
            detail={
                "runtime": {k: str(v) for k, v in self.values.items()},
                "source": fault.source or "any",
            },
        )

    def inject(self) -> None:
        self.counters.start()
        for name, admin in self.targets.items():
            admin.runtime_modify(self.values)
            current = admin.runtime()
            wrong = {k: current.get(k) for k, v in self.values.items() if current.get(k) != str(v)}
            if wrong:
                raise FaultError(f"fault {self.record.name}: {name} did not take {wrong}")

    def adjust(self, percentage: float) -> None:
        """Ramp step: hit ``percentage`` % of requests from the next request on."""
        values: dict[str, int | str] = {}
        if self.fault.abort is not None:
            values[self.keys.abort_percent] = percent_to_runtime(percentage)
        if self.fault.delay is not None:
            values[self.keys.delay_percent] = percent_to_runtime(percentage)
        for admin in self.targets.values():
            admin.runtime_modify(values)
        self.values.update(values)
        self.record.detail.setdefault("steps", []).append(
            {"at": time.time(), "percentage": percentage}
        )

    def revert(self) -> bool:
        return clear_runtime(self.targets.values(), self.keys.all())

    def evidence(self) -> dict[str, int]:
        try:
            return self.counters.deltas()
        except HarnessError:
            return {}

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        problems = []
        abort, delay = self.fault.abort, self.fault.delay
        if abort and abort.percentage.value > 0 and evidence.get("aborts_injected", 0) <= 0:
            problems.append("no abort was injected")
        if delay and delay.percentage.value > 0 and evidence.get("delays_injected", 0) <= 0:
            problems.append("no delay was injected")
        where = ", ".join(self.record.targets)
        if problems:
            return no_effect(self.record.name, f" on {where}: {'; '.join(problems)}")
        return took_effect(self.record.name, f" on {where}", evidence)


def from_scenario(fault: HttpFault, name: str, deployment: Deployment) -> HttpFaultInjector:
    chosen = select_instances(deployment, fault.target, name)
    admins = {inst.name: deployment.admin(inst.name) for inst in chosen}
    return HttpFaultInjector(fault, name, admins, fault.target.service)
