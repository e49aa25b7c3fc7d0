"""What every platform offers the runner: deploy an app with its mesh, then tear it down."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.scenario.models import Scenario


@dataclass(frozen=True)
class InstanceInfo:
    """One app instance (a pod, on kind) and where its sidecar listens."""

    name: str  # e.g. "catalog-0"
    service: str
    index: int
    ip: str
    inbound_port: int
    app_port: int


class Deployment(Protocol):
    """A running app with its mesh; the runner drives load and faults through it."""

    platform: str
    isolation: str
    instances: tuple[InstanceInfo, ...]
    ingress_url: str

    def instances_of(self, service: str) -> tuple[InstanceInfo, ...]: ...

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        """Start a process beside the app (e.g. Locust), where it can reach the ingress;
        ``env`` adds to the environment, or with ``replace_env`` is all of it."""
        ...

    def stop(self, pid: int, *, grace: float) -> int | None:
        """Stop a process started with :meth:`spawn`; returns its exit code."""
        ...

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        """Counters of every proxy, keyed by proxy name ("ingress", "catalog-0", ...)."""
        ...


class Platform(Protocol):
    name: str

    def deploy(self, scenario: Scenario, run_dir: Path) -> AbstractContextManager[Deployment]:
        """Deploy the scenario's app and mesh; tear everything down when the block ends."""
        ...
