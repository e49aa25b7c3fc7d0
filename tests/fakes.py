"""In-memory stand-ins for the runner's collaborators, for millisecond tests of its loop.

A FAKE, by design: :class:`FakeDeployment` implements :class:`harness.platforms.base.Deployment`
without any process (Locust is "spawned" by writing one sample line), and
:class:`RecordingInjector` writes down every call the runner makes. The real platform and
injectors are tested against Envoy, toxiproxy and nft in the integration tests; these test
only the orchestration (timeline, guard, reverts on errors and signals).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.platforms.base import (
    ControlPlaneFaults,
    InstanceInfo,
    PacketFilter,
    ProbeReply,
    ProbeRequest,
    ProcessKind,
    ToxicEdges,
)
from harness.scenario.models import Fault, Scenario


class FakeAdmin:
    """An admin API with no counters and no clusters."""

    def ready(self) -> bool:
        return True

    def counters(self, pattern: str | None = None) -> dict[str, int]:
        return {}

    def clusters(self) -> dict[str, Any]:
        return {}

    def runtime(self) -> dict[str, str]:
        return {}

    def runtime_modify(self, values: dict[str, int | str]) -> None:
        pass


@dataclass
class FakeDeployment:
    """A deployment of ``scenario`` that exists only in memory.

    ``spawn`` writes one request sample to ``samples_path`` and an empty log (what the runner
    waits for and reads); ``on_running`` runs at each liveness check, e.g. to raise a signal.
    """

    scenario: Scenario
    run_dir: Path
    on_running: Callable[[int], None] = lambda calls: None
    platform: str = "fake"
    isolation: str = "none"
    isolation_note: str = "in memory"
    ingress_url: str = "http://fake.invalid"
    toxics: ToxicEdges | None = None
    packet_filter: PacketFilter | None = None
    control_plane_faults: ControlPlaneFaults | None = None
    calls: list[str] = field(default_factory=list)
    stopped_at: float | None = None  # when the runner stopped the load generator
    probe_reply: Callable[[ProbeRequest], ProbeReply] = lambda request: ProbeReply(
        0, "", "fake: no network"
    )
    probes_sent: list[ProbeRequest] = field(default_factory=list)
    _running_checks: int = 0

    @property
    def instances(self) -> tuple[InstanceInfo, ...]:
        app = self.scenario.app
        return tuple(
            InstanceInfo(f"{service}-{r}", service, r, "192.0.2.1", 15006, 8080)
            for service in app.topology.service_names
            for r in range(app.replicas_of(service))
        )

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]:
        return tuple(inst for inst in self.instances if inst.service == service)

    def packet_filters(self, instances: Sequence[InstanceInfo]) -> dict[str, PacketFilter]:
        return {"run": self.packet_filter} if self.packet_filter is not None else {}

    def proxy_names(self) -> tuple[str, ...]:
        return ()  # no proxy: the sampler has nothing to scrape

    def endpoint_names(self) -> dict[tuple[str, int], str]:
        return {}

    def admin(self, proxy: str, *, timeout: float | None = None) -> AdminApi:
        return FakeAdmin()

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        return {}

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        self.calls.append(f"spawn {log_name}")
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs" / log_name).write_text("")
        sample = {"t": time.time(), "ms": 1.0, "status": 200, "ok": True, "err": None, "rid": ""}
        with open(self.run_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(sample) + "\n")
        return 4242

    def stop(self, pid: int, *, grace: float) -> int | None:
        self.calls.append(f"stop {pid}")
        self.stopped_at = time.time()
        return 0

    def running(self, pid: int) -> bool:
        self._running_checks += 1
        self.on_running(self._running_checks)
        return True

    def process_pid(self, instance: str, process: ProcessKind) -> int:
        return 1

    def process_state(self, pid: int) -> str | None:
        return "S"

    def send_probes(self, requests: Sequence[ProbeRequest]) -> list[ProbeReply]:
        """Fake: ``probe_reply`` answers each request (default: no network, no answer)."""
        self.probes_sent.extend(requests)
        return [self.probe_reply(request) for request in requests]

    def kill_process(self, instance: str, process: ProcessKind) -> int:
        return 1

    def restart_process(self, instance: str, process: ProcessKind) -> int:
        return 1

    def pause_process(self, instance: str, process: ProcessKind) -> int:
        return 1

    def resume_process(self, instance: str, process: ProcessKind) -> int:
        return 1


@dataclass
class Call:
    at: float
    fault: str
    action: str  # inject | adjust | evidence | revert
    value: float | None = None


class RecordingInjector:
    """An injector that does nothing but write down, in a shared list, what it was asked."""

    def __init__(
        self, fault: Fault, name: str, log: list[Call], *, fail_inject: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self.fail_inject = fail_inject
        self.record = FaultEntry(
            name=name, kind=fault.kind, phase=fault.phase, targets=["fake-0"], detail={}
        )

    def _note(self, action: str, value: float | None = None) -> None:
        self.log.append(Call(time.time(), self.name, action, value))

    def inject(self) -> None:
        self._note("inject")
        if self.fail_inject:
            raise RuntimeError(f"{self.name}: inject failed")

    def adjust(self, percentage: float) -> None:
        self._note("adjust", percentage)

    def revert(self) -> bool:
        self._note("revert")
        return True

    def evidence(self) -> dict[str, int]:
        self._note("evidence")
        return {"hits": 1}

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        return True, f"fault {self.name} took effect"


def recording_factory(
    log: list[Call], failing: frozenset[str] = frozenset()
) -> Callable[[Fault, str, Any], RecordingInjector]:
    """A :data:`harness.faults.InjectorFactory` of recording injectors; those named in
    ``failing`` raise on inject."""

    def build(fault: Fault, name: str, deployment: Any) -> RecordingInjector:
        return RecordingInjector(fault, name, log, fail_inject=name in failing)

    return build
