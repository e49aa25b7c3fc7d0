"""Fault injectors: each records its intent, injects, proves its effect and reverts.

One module per fault kind; :func:`build_injector` picks it from the scenario's ``kind``:

====================  ========================================  ==========================
kind                  how (local platform)                      evidence of effect
====================  ========================================  ==========================
``http``              Envoy fault filter runtime keys           aborts/delays injected
``toxic``             toxiproxy between caller and callee       toxic present, bytes/conns
``partition``         nftables in the run's network namespace   rule packet counters
``kill`` / ``pause``  signals to the instance's processes       process state
====================  ========================================  ==========================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.faults.base import Adjustable, Injector, UndoJournal, applied, select_instances
from harness.faults.http import HttpFaultInjector
from harness.scenario.models import (
    Fault,
    HttpFault,
    KillFault,
    PartitionFault,
    PauseFault,
    ToxicFault,
)

if TYPE_CHECKING:
    from harness.platforms.local.platform import LocalDeployment


def build_injector(fault: Fault, name: str, deployment: LocalDeployment) -> Injector:
    """The injector for one scenario fault on a running deployment."""
    if isinstance(fault, HttpFault):
        from harness.faults import http

        return http.from_scenario(fault, name, deployment)
    if isinstance(fault, ToxicFault):
        from harness.faults import toxic

        return toxic.from_scenario(fault, name, deployment)
    if isinstance(fault, PartitionFault):
        from harness.faults import partition

        return partition.from_scenario(fault, name, deployment)
    if isinstance(fault, KillFault | PauseFault):
        from harness.faults import process

        return process.from_scenario(fault, name, deployment)
    raise TypeError(f"no injector for fault kind {fault.kind!r}")


__all__ = [
    "Adjustable",
    "HttpFaultInjector",
    "Injector",
    "UndoJournal",
    "applied",
    "build_injector",
    "select_instances",
]
